"""Whole runs in their own processes: device counts, pmap, SIGKILL/SIGTERM and exact resume."""

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

RUN_TINY = Path(__file__).with_name("run_tiny.py")
ROOT = Path(__file__).resolve().parents[2]


def command(workdir, *args):
    return [sys.executable, str(RUN_TINY), str(workdir), *map(str, args)]


def run_tiny(workdir, *args):
    out = subprocess.run(
        command(workdir, *args), capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def losses(workdir):
    """{(step, player): loss} from a run's metrics.jsonl."""
    lines = [json.loads(x) for x in open(Path(workdir) / "metrics.jsonl")]
    return {(x["step"], k): v for x in lines for k, v in x.items() if k.endswith("/loss")}


def assert_same_run(reference_dir, reference, other_dir, other):
    expected, got = losses(reference_dir), losses(other_dir)
    assert got.keys() == expected.keys()
    for key, loss in expected.items():
        assert got[key] == pytest.approx(loss, rel=1e-5, abs=1e-6), (other_dir.name, key)
    assert other["param_sum"] == pytest.approx(reference["param_sum"], rel=1e-5, abs=1e-5)


@pytest.mark.slow  # three or four whole runs in fresh processes per case
@pytest.mark.parametrize(
    "config, args",
    [
        # dropout: masks drawn per example, so splitting the batch changes nothing
        ("ddpm_digits", ("--dropout", 0.3)),
        # BatchNorm: statistics of the whole microbatch under pmap too
        ("dcgan_digits", ()),
        # VQGAN: EMA codebook, dead-code restarts, BatchNorm PatchGAN and the adaptive weight
        # (a ratio of gradient norms: per-device norms under pmap gave param sums 400.2227 vs
        # 400.1460 under jit). SGD, because Adam turns the float noise of gradients that are
        # zero in exact arithmetic (biases ahead of GroupNorm) into whole +-lr steps.
        ("vqgan_shapes", ("--set", "optim.name='sgd'")),
        # dVAE's diversity term: the entropy of the code distribution of the whole
        # microbatch, averaged over pmap's devices before the log (SGD, as for VQGAN: with
        # Adam the param sums differed, 355.710 vs 355.729, with the term off too)
        ("dvae_shapes", ("--set", "dvae.diversity_weight=0.5", "--set", "optim.name='sgd'")),
    ],
)
def test_one_device_eight_devices_and_pmap_agree_with_microbatches(tmp_path, config, args):
    common = ("--config", config, "--steps", 3, *args)
    one = run_tiny(tmp_path / "one", *common, "--microbatches", 2, "--devices", 1)
    assert one["devices"] == 1 and len(losses(tmp_path / "one")) >= 3
    for name, extra in (("eight", ()), ("pmap", ("--parallel", "pmap"))):
        other = run_tiny(tmp_path / name, *common, "--microbatches", 2, "--devices", 8, *extra)
        assert other["devices"] == 8
        assert_same_run(tmp_path / "one", one, tmp_path / name, other)
    if config == "ddpm_digits":  # no BatchNorm: microbatches equal the whole batch
        whole = run_tiny(tmp_path / "whole", *common, "--devices", 1)
        assert_same_run(tmp_path / "one", one, tmp_path / "whole", whole)


def wait_for(predicate, proc, timeout=300):
    start = time.time()
    while not predicate():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() - start < timeout, "timed out"
        time.sleep(0.05)


def saved_steps(workdir):
    root = Path(workdir) / "checkpoints"
    return sorted(int(p.name) for p in root.glob("*") if p.name.isdigit()) if root.exists() else []


@pytest.mark.slow  # two whole runs, one killed mid-way
def test_sigkill_then_resume_is_bit_identical(tmp_path):
    steps = 12
    reference = run_tiny(tmp_path / "straight", "--steps", steps)
    kill_after = random.Random().randint(2, 8)
    args = ("--steps", steps, "--checkpoint_every", 1)
    proc = subprocess.Popen(
        command(tmp_path / "killed", *args),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(
        lambda: (
            saved_steps(tmp_path / "killed") and saved_steps(tmp_path / "killed")[-1] >= kill_after
        ),
        proc,
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert saved_steps(tmp_path / "killed")[-1] < steps, "the run finished before the kill"
    resumed = run_tiny(tmp_path / "killed", *args)
    assert resumed["digest"] == reference["digest"]


def test_sigterm_leaves_a_checkpoint(tmp_path):
    proc = subprocess.Popen(
        command(tmp_path, "--steps", 100000),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = tmp_path / "metrics.jsonl"
    wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 3, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    steps = saved_steps(tmp_path)
    assert steps and 3 <= steps[-1] < 100000
    assert "SIGTERM received" in err


def test_main_end_to_end_leaves_every_artefact_and_resumes(tmp_path):
    def main(*overrides):
        cmd = [
            sys.executable,
            "-m",
            "zoo.main",
            "--config=configs/ddpm_digits.py:tiny",
            f"--workdir={tmp_path}",
            *overrides,
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert out.returncode == 0, out.stderr[-3000:]
        return out

    first = main()
    assert "train" in first.stderr and "step/s" in first.stderr or "s/step" in first.stderr
    assert saved_steps(tmp_path) == [3, 6]
    assert json.loads((tmp_path / "config.json").read_text())["model"] == "ddpm"
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert any("model/loss" in x for x in lines) and any("eval/fd" in x for x in lines)
    assert any("eval/bpd" in x for x in lines)
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert sorted(p.name for p in (tmp_path / "samples").glob("*.png")) == [
        "step_0000003.png",
        "step_0000006.png",
    ]
    second = main("--config.train.steps=8")
    assert "resumed from step 6" in second.stderr
    # the longer run stretches the cosine schedule: the resume says so
    assert "train.steps: 6 -> 8" in second.stderr
    assert "changes the run's numbers: train.steps" in second.stderr
    assert saved_steps(tmp_path)[-1] == 8
    steps = [
        x["step"]
        for x in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
        if "model/loss" in x
    ]
    assert steps == sorted(set(steps)) and steps[-1] == 8
