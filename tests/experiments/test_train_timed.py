"""experiments/evals/train_timed.py: a config's sample metrics against training time."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def test_train_timed_writes_its_curve_and_samples(tmp_path):
    out = tmp_path / "timed"
    proc = subprocess.run(
        [sys.executable, "experiments/evals/train_timed.py", "--config", "configs/gan_ring.py:tiny",
         "--seconds", "600", "--eval_every", "1", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    steps = [point["step"] for point in result["curve"]]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 1  # one eval per step
    assert {"modes_covered", "high_quality"} <= set(result["curve"][-1])
    assert result["steps_per_s"] > 0
    assert json.loads((out / "curve.json").read_text())["curve"] == result["curve"]
    samples = np.load(out / "samples.npz")
    assert "point" in samples.files


def test_train_timed_rejects_a_missing_config(tmp_path):
    proc = subprocess.run(
        [sys.executable, "experiments/evals/train_timed.py", "--config", "configs/nope.py",
         "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0 and "no config file" in proc.stderr
