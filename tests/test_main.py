"""Bad input gives a clear error before anything is built or compiled."""

import subprocess
import sys
from pathlib import Path

import jax
import pytest

from configs.ddpm_digits import get_config
from zoo import main as zoo_main
from zoo.engine import parallel

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def no_training(monkeypatch):
    """Fail the test if a bad config ever reaches the trainer."""

    def trainer(*args, **kwargs):
        raise AssertionError("a bad config reached the trainer")

    monkeypatch.setattr("zoo.engine.loop.Trainer", trainer)


def test_unknown_model(tmp_path):
    c = get_config("tiny")
    c.model = "dpm"
    with pytest.raises(ValueError, match="unknown model 'dpm'.*ddpm"):
        zoo_main.run(c, str(tmp_path))


def test_unknown_dataset(tmp_path):
    c = get_config("tiny")
    c.data.name = "not_a_dataset_anywhere"
    with pytest.raises(ValueError, match="not_a_dataset_anywhere"):
        zoo_main.run(c, str(tmp_path))


def test_missing_key(tmp_path):
    c = get_config("tiny")
    del c.train["steps"]
    with pytest.raises(ValueError, match="train.steps"):
        zoo_main.run(c, str(tmp_path))


def test_image_size_the_unet_cannot_halve(tmp_path):
    c = get_config("tiny")
    c.data.image_size = 6
    c.unet.ch_mult = (1, 2, 2)
    with pytest.raises(ValueError, match="image size 6 must be divisible"):
        zoo_main.run(c, str(tmp_path))


def test_unknown_variant():
    with pytest.raises(ValueError, match="unknown variant"):
        get_config("huge")


def test_batch_not_divisible_by_devices(monkeypatch):
    monkeypatch.setattr(jax, "device_count", lambda: 8)
    with pytest.raises(ValueError, match="not divisible by the 8 devices"):
        parallel.check_batch_layout(12, 1, "jit")
    with pytest.raises(ValueError, match="microbatches"):
        parallel.check_batch_layout(16, 3, "jit")
    with pytest.raises(ValueError, match="parallel=.pjit"):
        parallel.check_batch_layout(16, 1, "pjit")
    parallel.check_batch_layout(16, 2, "pmap")


def test_wrong_override_key_on_the_command_line(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "zoo.main",
            "--config=configs/ddpm_digits.py:tiny",
            f"--workdir={tmp_path / 'run'}",
            "--config.optim.lrr=0.1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert out.returncode != 0
    assert "lrr" in out.stderr
    assert not (tmp_path / "run").exists()
