"""experiments/evals/tokenizer_quality.py: a tokenizer run's reconstructions at a checkpoint."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def quality(*args):
    return subprocess.run(
        [sys.executable, "experiments/evals/tokenizer_quality.py", *map(str, args)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.mark.slow  # a tiny run, then the script twice in fresh processes
def test_tokenizer_quality_reads_the_newest_or_a_given_checkpoint(tmp_path):
    workdir = tmp_path / "vqvae"
    train = subprocess.run(
        [sys.executable, "-m", "zoo.main", "--config=configs/vqvae_digits.py:tiny",
         f"--workdir={workdir}", "--config.train.checkpoint_every=2"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert train.returncode == 0, train.stderr[-2000:]
    for step, expected in ((0, 4), (2, 2)):
        proc = quality(workdir, "--step", step)
        assert proc.returncode == 0, proc.stderr[-2000:]
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        assert out["step"] == expected and out["images"] > 0
        assert 5 < out["psnr"] < 60 and 0 < out["usage"] <= 1 <= out["perplexity"]
    proc = quality(workdir, "--step", 3)
    assert proc.returncode != 0 and "no such checkpoint; it has [2, 4]" in proc.stderr
    proc = quality(tmp_path / "elsewhere")  # one line, no traceback
    assert proc.returncode != 0 and "is not a run directory" in proc.stderr
    assert "Traceback" not in proc.stderr
