"""Every config file builds, and the tfds-backed CIFAR-10 config trains on tfds mock data."""

import json
from pathlib import Path

import pytest
import tensorflow_datasets as tfds

from configs import ddpm_cifar10
from zoo import registry
from zoo.main import run

# Their default variants are the papers' models (tens of millions of parameters): the tests
# build their tiny variants, and the model tests count the paper-size parameters abstractly.
PAPER_SCALE = {"ddpm_cifar10", "dcgan_lsun", "stylegan2_ffhq", "styleswin_ffhq"}
CONFIGS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "configs").glob("*.py"))


@pytest.mark.parametrize("name", CONFIGS)
def test_config_files_build_their_objective(name):
    module = __import__(f"configs.{name}", fromlist=["get_config"])
    for variant in (None, "tiny"):
        config = module.get_config(variant)
        assert f"python -m zoo.main --config=configs/{name}.py" in module.__doc__
        if variant == "tiny" or name not in PAPER_SCALE:  # paper models take long to init
            registry.build_objective(config).check()


def test_ddpm_cifar10_paper_settings():
    c = ddpm_cifar10.get_config()
    assert (c.unet.ch, tuple(c.unet.ch_mult), c.unet.num_res_blocks) == (128, (1, 2, 2, 2), 2)
    assert tuple(c.unet.attn_resolutions) == (16,) and c.unet.dropout == 0.1
    d = c.diffusion
    assert (d.schedule, d.timesteps, d.beta_start, d.beta_end) == ("linear", 1000, 1e-4, 0.02)
    assert (c.optim.name, c.optim.lr, c.optim.warmup_steps, c.optim.grad_clip) == (
        "adam",
        2e-4,
        5000,
        1.0,
    )
    assert (c.data.batch_size, c.ema_decay, c.data.name) == (128, 0.9999, "cifar10")


def test_ddpm_cifar10_tiny_trains_on_tfds_mock_data(tmp_path):
    c = ddpm_cifar10.get_config("tiny")
    with tfds.testing.mock_data(num_examples=32):
        state = run(c, str(tmp_path))
    assert int(state.step) == c.train.steps
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/bpd" in x for x in lines)
    assert (tmp_path / "samples" / f"step_{c.train.steps:07d}.png").exists()
