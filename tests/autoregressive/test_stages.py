"""Two-stage runs: tiny tokenizer runs written here, then the priors that load them."""

import json

import jax
import numpy as np
import pytest

from zoo import registry
from zoo.main import prepare, run


def config_of(name, **train):
    c = __import__(f"configs.{name}", fromlist=["get_config"]).get_config("tiny")
    c.train.update(dict(steps=2, log_every=1, sample_every=2, eval_every=2, checkpoint_every=2))
    c.train.update(train)
    c.eval.num_samples = 0  # no reference classifier: the sample metrics have their own tests
    return c


def metrics_of(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    """``tokenizers(name)``: the workdir of a 2-step run of a tiny tokenizer config, trained
    on first use (the vqgan's adversarial term is on from the second step)."""
    runs = {}

    def tokenizer(name):
        if name not in runs:
            workdir = tmp_path_factory.mktemp(name)
            config = config_of(name)
            if name == "vqgan_shapes":
                config.vq_loss.disc_start = 1
            run(config, str(workdir))
            runs[name] = workdir
        return runs[name]

    return tokenizer


@pytest.mark.parametrize(
    "name",
    ["vqvae_digits", pytest.param("vqgan_shapes", marks=pytest.mark.slow),
     pytest.param("dvae_shapes", marks=pytest.mark.slow)],
)  # fmt: skip
def test_tokenizers_train_and_report(tokenizers, name):
    workdir = tokenizers(name)
    lines = metrics_of(workdir)
    train = [x for x in lines if "tokenizer/loss" in x]
    assert [x["step"] for x in train] == [1, 2]
    evals = [x for x in lines if "eval/psnr" in x]
    assert len(evals) == 1 and np.isfinite(evals[0]["eval/psnr"])
    assert 0 < evals[0]["eval/usage"] <= 1
    assert (workdir / "samples" / "reconstructions_step_0000002.png").exists()


@pytest.mark.slow
def test_vqgan_adversarial_term_starts_at_disc_start(tokenizers):
    first, second = (x for x in metrics_of(tokenizers("vqgan_shapes")) if "tokenizer/loss" in x)
    # Step index 0 < disc_start = 1: no adversarial term, the discriminator's pass is skipped.
    assert first["tokenizer/adaptive_weight"] == 0 and first["tokenizer/g_loss"] == 0
    assert first["discriminator/loss"] == 0 and first["discriminator/d_loss"] == 0
    assert second["tokenizer/adaptive_weight"] > 0 and second["tokenizer/g_loss"] != 0
    assert second["discriminator/loss"] == second["discriminator/d_loss"] > 0


@pytest.mark.parametrize(
    "prior, tokenizer",
    [
        ("transformer_digits", "vqvae_digits"),
        pytest.param("dalle_shapes", "dvae_shapes", marks=pytest.mark.slow),
        pytest.param("parti_shapes", "vqgan_shapes", marks=pytest.mark.slow),
    ],
)
def test_prior_trains_on_the_frozen_tokenizer_of_a_stage_one_run(
    prior, tokenizer, tokenizers, tmp_path
):
    config = config_of(prior)
    config.stages.tokenizer.workdir = str(tokenizers(tokenizer))
    trainer = prepare(config, str(tmp_path))
    frozen_before = jax.tree.map(np.asarray, trainer.frozen)
    state = trainer.train()
    assert int(state.step) == 2
    # The tokenizer came from the stage-1 run, and training never changed it.
    record = json.loads((tmp_path / "stages.json").read_text())
    assert record["stages"]["tokenizer"]["workdir"] == str(tokenizers(tokenizer))
    assert all(
        np.array_equal(a, b)
        for a, b in zip(
            jax.tree.leaves(frozen_before), jax.tree.leaves(trainer.frozen), strict=True
        )
    )
    lines = metrics_of(tmp_path)
    assert any("eval/nll" in x and np.isfinite(x["eval/nll"]) for x in lines)
    # Samples: decoded token grids; the sliding-window figure is twice as wide.
    size = config.data.image_size
    samples = trainer.samples(state, 4)
    assert samples["image"].shape == (4, size, size, config.data.channels)
    assert np.all(np.abs(samples["image"]) <= 1)
    figure = trainer.figures(state)["sliding_window"]
    assert figure.shape[2:] == (size, 2 * size, config.data.channels)
    assert (tmp_path / "samples" / "sliding_window_step_0000002.png").exists()
    if prior != "transformer_digits":  # text: the attributes for the caption-match metric
        assert {"shape", "color", "position"} <= set(samples)


def test_stage_two_errors_name_the_field_to_fix(tokenizers, tmp_path):
    config = config_of("transformer_digits")
    with pytest.raises(
        ValueError,
        match=r"config.stages.tokenizer.workdir must name .*"
        r"e.g. --config.stages.tokenizer.workdir=runs/",
    ):
        registry.build_objective(config)
    config.stages.tokenizer.workdir = str(tmp_path / "missing")
    with pytest.raises(ValueError, match=r"config.stages.tokenizer.workdir=.*no such directory"):
        registry.build_objective(config)
    # A tokenizer trained on other images: its shapes do not fit this run's data.
    config.stages.tokenizer.workdir = str(tokenizers("vqvae_digits"))
    config.data.image_size = 16
    with pytest.raises(ValueError, match=r"data.image_size=16 but the tokenizer .*image_size=8"):
        registry.build_objective(config)
    config.data.image_size = 8
    # A run that is not a tokenizer at all.
    ddpm = config_of("ddpm_digits", steps=1, checkpoint_every=1, sample_every=0, eval_every=0)
    run(ddpm, str(tmp_path / "ddpm"))
    config.stages.tokenizer.workdir = str(tmp_path / "ddpm")
    with pytest.raises(ValueError, match=r"names a 'ddpm' run; a prior needs a tokenizer run"):
        registry.build_objective(config)
