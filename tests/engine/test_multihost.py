"""Multi-host runs: two CPU processes on localhost give the numbers of one process.

The start-up logic (which environment joins a multi-process run) is checked
in-process with ``jax.distributed.initialize`` replaced; the whole path
(``zoo.main.main`` -> ``jax.distributed.initialize`` -> gloo collectives ->
per-process data -> Orbax from both processes -> resume) by real processes
started with ``run_multihost.py``.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import pytest

from zoo.engine import distributed

RUNNER = Path(__file__).with_name("run_multihost.py")
ROOT = Path(__file__).resolve().parents[2]
COORDINATOR_VARS = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
# What jax's SlurmCluster looks for (SLURM_NTASKS is set per job in slurm()).
SLURM = dict(SLURM_JOB_ID="7", SLURM_STEP_NODELIST="node[1-2]", SLURM_PROCID="0", SLURM_LOCALID="0")


# -- start-up decisions, in-process ----------------------------------------------------
@pytest.fixture
def initialize(monkeypatch):
    """Record ``jax.distributed.initialize`` calls instead of making them."""
    calls = []
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    monkeypatch.setattr(jax, "process_index", lambda: 0)  # logged after initialising
    for name in (*COORDINATOR_VARS, *SLURM, "SLURM_NTASKS", "OMPI_MCA_orte_hnp_uri"):
        monkeypatch.delenv(name, raising=False)
    return calls


def slurm(monkeypatch, tasks):
    for name, value in {**SLURM, "SLURM_NTASKS": str(tasks)}.items():
        monkeypatch.setenv(name, value)


def test_single_machine_does_not_initialise(initialize):
    assert not distributed.maybe_initialize_distributed()
    assert initialize == []


def test_explicit_variables(initialize, monkeypatch):
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "localhost:1234")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_PROCESS_ID", "1")
    assert distributed.maybe_initialize_distributed()
    # jax reads the address from the environment itself.
    assert initialize == [dict(num_processes=2, process_id=1)]


def test_detected_cluster_initialises_without_arguments(initialize, monkeypatch):
    slurm(monkeypatch, tasks=2)
    assert distributed.detected_cluster() == ("SlurmCluster", 2)
    assert distributed.maybe_initialize_distributed()
    assert initialize == [{}]


def test_one_task_cluster_job_stays_single_process(initialize, monkeypatch):
    slurm(monkeypatch, tasks=1)
    assert not distributed.maybe_initialize_distributed()
    assert initialize == []


def test_already_initialised_is_left_alone(initialize, monkeypatch):
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "localhost:1234")
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: True)
    assert not distributed.maybe_initialize_distributed()
    assert initialize == []


def test_cpu_collectives_default_to_gloo():
    name = "jax_cpu_collectives_implementation"
    before = jax.config.jax_cpu_collectives_implementation
    try:
        jax.config.update(name, None)
        distributed.use_cpu_collectives()
        assert jax.config.jax_cpu_collectives_implementation == "gloo"
        jax.config.update(name, "mpi")
        distributed.use_cpu_collectives()
        assert jax.config.jax_cpu_collectives_implementation == "mpi"  # a choice stays
    finally:
        jax.config.update(name, before)


# -- the global batch from per-process shares, in-process --------------------------------
@pytest.mark.parametrize("substeps, microbatches", [(1, 1), (2, 1), (1, 2), (2, 2)])
def test_process_shares_assemble_the_single_process_batch(monkeypatch, substeps, microbatches):
    """What make_array_from_process_local_data builds from 2 processes == 1 process's batch."""
    from configs.ddpm_digits import get_config
    from zoo import data
    from zoo.engine.loop import Trainer

    cfg = get_config("tiny").data
    per_step = 8 * substeps * microbatches

    def host_batch(index, count):
        monkeypatch.setattr(jax, "process_index", lambda: index)
        source = data.make_source(
            cfg, seed=0, examples_per_step=per_step, process_index=index, process_count=count
        )
        fake = SimpleNamespace(source=source, substeps=substeps, microbatches=microbatches)
        return Trainer.host_batch(fake, 3)

    one = host_batch(0, 1)
    shares = [host_batch(i, 2) for i in range(2)]
    for key in ("image", "example_id"):
        glued = np.concatenate([s[key] for s in shares], axis=2)  # the sharded B axis
        np.testing.assert_array_equal(glued, one[key], err_msg=key)


# -- whole runs in 1 and 2 processes -------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def launch(config, workdir, reports, *, processes, devices, overrides, timeout=900, term=None):
    """Run ``run_multihost.py`` in ``processes`` processes; returns their reports.

    ``term = (i, ready)``: send process i SIGTERM once ``ready()`` is true.
    """
    env = {k: v for k, v in os.environ.items() if k not in COORDINATOR_VARS}
    port = free_port()
    procs, logs = [], []
    for i in range(processes):
        if processes > 1:
            env = {
                **env,
                "JAX_COORDINATOR_ADDRESS": f"localhost:{port}",
                "JAX_NUM_PROCESSES": str(processes),
                "JAX_PROCESS_ID": str(i),
            }
        log = open(Path(reports).with_suffix(f".{i}.log"), "w+")  # noqa: SIM115
        cmd = [sys.executable, str(RUNNER), config, str(workdir), str(reports)]
        cmd += [f"--devices={devices}", *overrides]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log))
        logs.append(log)
    start = time.time()
    try:
        # A process that dies leaves the others waiting in a collective: stop them.
        while any(p.poll() is None for p in procs):
            failed = [p for p in procs if p.returncode not in (None, 0)]
            assert not failed and time.time() - start < timeout, "a process failed or hung"
            if term is not None and term[1]():
                procs[term[0]].send_signal(signal.SIGTERM)
                term = None
            time.sleep(0.2)
        assert all(p.returncode == 0 for p in procs)
    except AssertionError:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        tails = []
        for i, log in enumerate(logs):
            log.seek(0)
            tails.append(f"--- process {i} (rc {procs[i].returncode}) ---\n{log.read()[-3000:]}")
        raise AssertionError("\n".join(tails)) from None
    stderr = []
    for log in logs:
        log.seek(0)
        stderr.append(log.read())
        log.close()
    out = []
    for i in range(processes):
        report = json.loads((Path(reports) / f"process_{i}.json").read_text())
        report["params"] = dict(np.load(Path(reports) / f"process_{i}.npz"))
        report["log"] = stderr[i]
        out.append(report)
    return out


def metrics(workdir):
    lines = [json.loads(x) for x in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in x.items() if k != "steps_per_sec"} for x in lines]


# Both runs: log every step, checkpoint and sample grids at 3 (and at each run's last step).
COMMON = [
    "--config.train.log_every=1",
    "--config.train.checkpoint_every=3",
    "--config.train.sample_every=3",
    "--config.eval.num_samples=0",  # no sample metrics: the digits FD first trains a net
]
RUNS = {
    "ddpm": (
        "configs/ddpm_digits.py:tiny",
        ["--config.data.batch_size=16", "--config.train.eval_every=5"],  # + held-out bits/dim
    ),
    "dcgan": ("configs/dcgan_digits.py:tiny", ["--config.train.eval_every=0"]),  # BatchNorm
}


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """``model -> report`` of 1 process x 4 devices, jit, 5 steps; each run once per module."""
    done = {}

    def reference(model):
        if model not in done:
            config, overrides = RUNS[model]
            path = tmp_path_factory.mktemp(f"{model}_one_process")
            overrides = [*COMMON, *overrides, "--config.train.steps=5"]
            (done[model],) = launch(
                config, path / "run", path / "report", processes=1, devices=4, overrides=overrides
            )
            done[model]["metrics"] = metrics(path / "run")
        return done[model]

    return reference


@pytest.mark.slow  # 2-4 min each on 2 idle cores (9 min seen under load): 2 launches x 2 processes
@pytest.mark.parametrize("model, parallel", [("ddpm", "jit"), ("ddpm", "pmap"), ("dcgan", "jit")])
def test_two_processes_match_one(model, parallel, one_process, tmp_path):
    """2 processes x 2 devices, 3 steps then resumed to 5 == 1 process x 4 devices, 5 steps.

    pmap is checked against the same jit reference (the engine's promise). DCGAN under
    pmap is not here: its BatchNorm statistics need the pmap axis (engine/state.py).
    """
    ref = one_process(model)
    config, overrides = RUNS[model]
    overrides = [*COMMON, *overrides, f"--config.parallel={parallel}"]
    first, second = (
        launch(
            config,
            tmp_path / "two",
            tmp_path / name,
            processes=2,
            devices=2,
            overrides=[*overrides, f"--config.train.steps={steps}"],
        )
        for name, steps in (("first", 3), ("resumed", 5))
    )
    # Layout: the reference did not initialise anything; the others formed one run.
    assert (ref["process_count"], ref["devices"], ref["distributed"]) == (1, 4, False)
    for r in first + second:
        assert (r["process_count"], r["devices"], r["local_devices"]) == (2, 4, 2)
        assert r["distributed"]

    # Data: each process read only its half of every step's global batch.
    for step in range(5):
        runs = first if step < 3 else second
        halves = [r["loaded"].pop(str(step)) for r in runs]
        assert len(halves[0]) == len(halves[1]) == len(ref["loaded"][str(step)]) // 2
        assert halves[0] + halves[1] == ref["loaded"][str(step)], step
    assert not any(r["loaded"] for r in first + second), "loaded steps it did not train"

    # Numbers: the same losses (and every other metric) and the same parameters.
    got, want = metrics(tmp_path / "two"), ref["metrics"]
    assert [x["step"] for x in got if any(k.endswith("/loss") for k in x)] == [1, 2, 3, 4, 5]
    # The 3-step launch also evaluated at its last step; the reference did not.
    got = [x for x in got if not (x["step"] == 3 and any(k.startswith("eval/") for k in x))]
    assert [sorted(x) for x in got] == [sorted(x) for x in want]
    for g, w in zip(got, want, strict=True):
        for k in w:
            assert g[k] == pytest.approx(w[k], rel=1e-5, abs=1e-6), (g["step"], k)
    # atol 1e-5: Adam moves a zero-initialised bias whose gradient is rounding noise
    # by about lr * sign(gradient), so such ~1e-6 entries differ by up to 5e-6 (measured).
    for r in second:
        assert r["params"].keys() == ref["params"].keys()
        for k, v in ref["params"].items():
            np.testing.assert_allclose(r["params"][k], v, rtol=1e-5, atol=1e-5, err_msg=k)

    # Writers: logs and sample grids from process 0 only; checkpoints from both.
    assert first[1]["grids"] == second[1]["grids"] == []
    assert ref["grids"] and first[0]["grids"] + second[0]["grids"] == ref["grids"]
    events = sorted(p.name for p in (tmp_path / "two" / "tb").glob("events.out.tfevents.*"))
    assert [name.split(".")[-2] for name in events] == [str(first[0]["pid"]), str(second[0]["pid"])]
    assert all("resumed from step 3" in r["log"] for r in second), second[0]["log"][-3000:]
    saved = tmp_path / "two" / "checkpoints"
    assert sorted(int(p.name) for p in saved.iterdir() if p.name.isdigit()) == [3, 5]
    for step in (3, 5):
        written = sorted(p.name for p in (saved / str(step) / "state").glob("ocdbt.process_*"))
        assert written == ["ocdbt.process_0", "ocdbt.process_1"]


@pytest.mark.slow  # about a minute on 2 idle cores
def test_sigterm_to_one_process_stops_both_at_the_same_step(tmp_path):
    """A preemption notice reaches one host only; all save the same step and exit cleanly.

    Before JAX's preemption service was used, the signalled process stopped alone and
    began a (collective) save while the other stepped on: the run hung.
    """
    metrics_file = tmp_path / "run" / "metrics.jsonl"

    def trained_a_few_steps():
        return metrics_file.exists() and len(metrics_file.read_text().splitlines()) >= 3

    config, overrides = RUNS["ddpm"]
    reports = launch(
        config,
        tmp_path / "run",
        tmp_path / "report",
        processes=2,
        devices=1,
        overrides=[
            *overrides,
            "--config.train.steps=100000",
            "--config.train.log_every=1",
            "--config.train.checkpoint_every=0",
            "--config.train.sample_every=0",
            "--config.train.eval_every=0",
        ],
        timeout=300,
        term=(1, trained_a_few_steps),
    )
    stopped = {r["step"] for r in reports}
    assert len(stopped) == 1 and 3 <= min(stopped) < 100000, stopped
    (step,) = stopped
    saved = tmp_path / "run" / "checkpoints"
    assert sorted(int(p.name) for p in saved.iterdir() if p.name.isdigit()) == [step]
    for r in reports:
        assert f"saved a checkpoint at step {step}" in r["log"], r["log"][-2000:]
