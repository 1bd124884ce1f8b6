"""experiments/evals/checkpoint_quality.py: sample quality of a run's newest checkpoint."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from configs import dcgan_digits
from tests.diffusion.test_unclip import clip_run, decoder_config, one_step, prior_run  # noqa: F401
from zoo.main import run

ROOT = Path(__file__).resolve().parents[2]


def quality(*args):
    return subprocess.run(
        [sys.executable, "experiments/evals/checkpoint_quality.py", *map(str, args)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.mark.slow  # a tiny run, then the script three times in fresh processes
def test_checkpoint_quality_keeps_the_runs_sampler_unless_told(tmp_path):
    workdir = tmp_path / "ddpm"
    train = subprocess.run(
        [sys.executable, "-m", "zoo.main", "--config=configs/ddpm_digits.py:tiny",
         f"--workdir={workdir}", "--config.diffusion.sampler=ancestral"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert train.returncode == 0, train.stderr[-2000:]
    # The old script replaced every DDPM's sampler with DDIM unless told otherwise.
    for args, sampler in (((), "ancestral"), (("--sampler", "dpm_solver_pp"), "dpm_solver_pp")):
        proc = quality(workdir, "--num", 8, *args)
        assert proc.returncode == 0, proc.stderr[-2000:]
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        assert out["sampler"] == sampler and out["step"] == 6 and "fd" in out
    proc = quality(workdir, "--num", 8, "--set", "diffusion.condition='text'", "--exact_bpd", 8)
    assert proc.returncode != 0 and "--exact_bpd is the bound of an unconditional" in proc.stderr
    # CLIP guidance needs a caption model: one line, no traceback (it was a ValueError trace).
    proc = quality(workdir, "--num", 8, "--clip_run", workdir, "--clip_guidance", 5)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "steers a pixel-space caption model" in proc.stderr
    proc = quality(workdir, "--num", 8, "--clip_run", workdir)
    assert proc.returncode != 0 and "--clip_run and --clip_guidance > 0 go together" in proc.stderr


@pytest.mark.slow  # a decoder step, then the script in a fresh process
def test_the_sampler_flag_reaches_unclips_decoder(clip_run, prior_run, tmp_path):  # noqa: F811
    """It used to be ignored for the unCLIP decoder (and prior): DDIM ran, silently."""
    run(one_step(decoder_config(clip_run, prior_run)), str(tmp_path))
    proc = quality(tmp_path, "--num", 4, "--sampler", "dpm_solver_pp")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["sampler"] == "dpm_solver_pp" and "caption_match" in out


def test_the_sampler_flag_on_a_run_without_one_is_an_error(tmp_path):
    config = dcgan_digits.get_config("tiny")
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    proc = quality(tmp_path, "--sampler", "ddim")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "a 'dcgan' run has no diffusion sampler to replace" in proc.stderr
