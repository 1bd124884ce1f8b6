"""experiments/launch/: each launcher runs the same `python -m zoo.main` with its arguments.

gcloud and srun are replaced by stand-ins on PATH that record what they were asked to run,
so the commands a pod slice or a SLURM job would run are checked without a cluster.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ROOT / "experiments" / "launch"
SCRIPTS = ("multi_gpu.sh", "tpu_pod.sh", "slurm.sbatch")


def launch(script, *args, fakes=None, env=None, tmp_path=None):
    """Runs ``script`` with stand-ins for ``fakes`` (commands that append argv to a log)."""
    environ = dict(os.environ, **(env or {}))
    log = None
    if fakes:
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir(parents=True)
        log = tmp_path / "calls.log"
        for name in fakes:
            fake = bin_dir / name
            fake.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "{name} $*" >> "{log}"\n')
            fake.chmod(0o755)
        environ["PATH"] = f"{bin_dir}{os.pathsep}{environ['PATH']}"
    proc = subprocess.run(
        ["bash", str(LAUNCH / script), *args],
        cwd=ROOT, env=environ, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    calls = log.read_text().splitlines() if log and log.exists() else []
    return proc, calls


@pytest.mark.parametrize("script", SCRIPTS)
def test_each_launcher_parses_and_explains_its_arguments(script):
    assert subprocess.run(["bash", "-n", str(LAUNCH / script)]).returncode == 0
    proc, _ = launch(script)
    assert proc.returncode == 2 and "usage:" in proc.stderr


def test_the_tpu_launcher_runs_zoo_main_on_every_worker(tmp_path):
    args = ("my-tpu", "us-central2-b", "configs/ddpm_cifar10.py", "/mnt/runs/c10")
    proc, calls = launch("tpu_pod.sh", *args, "--config.train.steps=10",
                         fakes=["gcloud"], tmp_path=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (call,) = calls
    assert call.startswith("gcloud compute tpus tpu-vm ssh my-tpu --zone=us-central2-b")
    assert "--worker=all" in call
    assert call.endswith(
        "cd zoo && python -m zoo.main --config=configs/ddpm_cifar10.py "
        "--workdir=/mnt/runs/c10 --config.train.steps=10"
    )
    _, calls = launch("tpu_pod.sh", *args, fakes=["gcloud"], env={"ZOO_SETUP": "1"},
                      tmp_path=tmp_path / "setup")  # fmt: skip
    setup, run = calls
    assert "git clone" in setup and "pip install -q -e 'zoo[tpu]'" in setup
    assert "python -m zoo.main" in run


def test_the_slurm_job_runs_zoo_main_once_per_node(tmp_path):
    proc, calls = launch("slurm.sbatch", "configs/ddpm_cifar10.py", "/shared/runs/c10",
                         "--config.parallel=pmap", fakes=["srun"], tmp_path=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert calls == [
        "srun python -m zoo.main --config=configs/ddpm_cifar10.py "
        "--workdir=/shared/runs/c10 --config.parallel=pmap"
    ]
    header = (LAUNCH / "slurm.sbatch").read_text()
    assert "#SBATCH --ntasks-per-node=1" in header and "#SBATCH --requeue" in header


@pytest.mark.slow  # a tiny DDPM run (~30 s on 2 cores)
def test_the_multi_gpu_launcher_trains_a_tiny_run_on_the_local_devices(tmp_path):
    workdir = tmp_path / "run"
    this_python = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    proc, _ = launch(
        "multi_gpu.sh", "configs/ddpm_digits.py:tiny", str(workdir), env={"PATH": this_python}
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (workdir / "metrics.jsonl").exists() and (workdir / "checkpoints").is_dir()
