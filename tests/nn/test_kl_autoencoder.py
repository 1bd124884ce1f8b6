"""Latent diffusion's KL autoencoder: its KL against float64 references, the reparameterised
sample, the scale factor, and training through the stage-1 tokenizer objective."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import autoencoder_shapes, transformer_digits
from zoo import registry
from zoo.autoregressive.tokenizer_objective import tokenizer_from_config
from zoo.engine.objective import Context
from zoo.engine.state import split_modules
from zoo.engine.step import Models
from zoo.main import run
from zoo.nn.kl_autoencoder import (
    LOGVAR_RANGE,
    DiagonalGaussian,
    KLAutoencoder,
    gaussian_kl,
    latent_scale_factor,
)

CASES = [(0.0, 0.0), (1.5, 0.0), (0.0, -2.0), (-0.7, 1.3), (2.0, -5.0)]  # (mean, logvar)


def tiny_autoencoder(**changes) -> KLAutoencoder:
    config = autoencoder_shapes.get_config("tiny")
    config.autoencoder.update(changes)
    return tokenizer_from_config(config)


def images(n: int, seed: int = 0) -> jax.Array:
    return jax.random.uniform(jax.random.key(seed), (n, 16, 16, 3), minval=-1, maxval=1)


def set_moments_bias(model: KLAutoencoder, mean_bias, logvar_bias) -> None:
    """Shift the encoder's output moments, so the posterior is not the initial ~N(0, 1)."""
    model.moments_conv.bias[...] = jnp.concatenate(
        [jnp.asarray(mean_bias, jnp.float32), jnp.asarray(logvar_bias, jnp.float32)]
    )


@pytest.mark.parametrize("mean, logvar", CASES)
def test_gaussian_kl_matches_float64_quadrature(mean, logvar):
    # KL(q || p) = int q log(q / p) dz, by the trapezoid rule on +-12 std around the mean.
    std = math.exp(0.5 * logvar)
    z = np.linspace(mean - 12 * std, mean + 12 * std, 200_001)
    log_q = -0.5 * ((z - mean) / std) ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)
    log_p = -0.5 * z**2 - 0.5 * math.log(2 * math.pi)
    reference = np.trapezoid(np.exp(log_q) * (log_q - log_p), z)
    got = gaussian_kl(jnp.float32(mean), jnp.float32(logvar))
    np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-7)


def test_gaussian_kl_matches_a_monte_carlo_estimate_and_broadcasts():
    rng = np.random.default_rng(0)
    mean = np.array([[0.3, -1.0], [2.0, 0.0]])
    logvar = np.array([[-1.0, 0.5], [0.0, -3.0]])
    n = 200_000
    z = mean + np.exp(0.5 * logvar) * rng.standard_normal((n, 2, 2))
    # log q(z) - log p(z); the 2 pi terms cancel.
    log_ratio = -0.5 * ((z - mean) ** 2 / np.exp(logvar) + logvar) + 0.5 * z**2
    estimate, stderr = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(n)
    got = np.asarray(gaussian_kl(jnp.asarray(mean), jnp.asarray(logvar)))
    assert got.shape == (2, 2)
    assert np.all(np.abs(got - estimate) < 5 * stderr + 1e-6), (got, estimate, stderr)
    # Broadcasting: a [2, 1] mean against a [2] logvar.
    assert gaussian_kl(jnp.zeros((2, 1)), jnp.zeros(2)).shape == (2, 2)


def test_gaussian_kl_is_zero_at_the_prior_and_positive_elsewhere():
    assert float(gaussian_kl(jnp.zeros(()), jnp.zeros(()))) == 0.0
    np.testing.assert_array_equal(gaussian_kl(jnp.zeros((3, 4)), jnp.zeros((3, 4))), 0.0)
    off = gaussian_kl(jnp.array([1e-2, 0.0, 0.5]), jnp.array([0.0, 1e-2, -0.5]))
    assert bool(jnp.all(off > 0))


def test_latent_scale_factor_gives_unit_variance_on_its_data():
    scaled = 3.7 * jax.random.normal(jax.random.key(0), (64, 4, 4, 4)) + 1.2
    factor = latent_scale_factor(scaled)
    assert factor.shape == () and factor.dtype == jnp.float32
    np.testing.assert_allclose(factor, 1 / 3.7, rtol=0.02)
    # On an autoencoder's latents: the scaled latents' std, in float64, is 1.
    model = tiny_autoencoder()
    latents = model.encode_latents(images(16))
    factor = latent_scale_factor(latents)
    np.testing.assert_allclose(np.std(np.asarray(latents, np.float64) * float(factor)), 1, 1e-5)


def test_posterior_sample_has_the_encoders_mean_and_variance():
    model = tiny_autoencoder()
    set_moments_bias(model, [0.5, -1.0, 0.0, 2.0], [-3.0, -1.0, 0.5, 1.5])
    x = images(1)
    q = model.encode(x)
    assert q.mean.shape == q.logvar.shape == (1, 8, 8, 4)
    n = 512
    keys = jax.random.split(jax.random.key(1), n)  # one key per example
    z = np.asarray(model.encode_latents(jnp.repeat(x, n, axis=0), key=keys), np.float64)
    mean, var = np.asarray(q.mean[0], np.float64), np.exp(np.asarray(q.logvar[0], np.float64))
    # 256 latent elements: 5 standard errors bounds every one (a mean's is sqrt(var / n), a
    # variance's about var sqrt(2 / n)).
    assert np.all(np.abs(z.mean(0) - mean) < 5 * np.sqrt(var / n))
    assert np.all(np.abs(z.var(0) / var - 1) < 5 * math.sqrt(2 / n))
    # The variances differ per channel as set: the sample is not the prior's.
    np.testing.assert_allclose(z.var(0).mean((0, 1)), np.exp([-3.0, -1.0, 0.5, 1.5]), rtol=0.5)
    # Without a key: the mean, as stage 2 encodes deterministically.
    np.testing.assert_array_equal(model.encode_latents(x), q.mean)


def test_logvar_is_clipped_to_its_range():
    model = tiny_autoencoder()
    set_moments_bias(model, jnp.zeros(4), jnp.array([100.0, -100.0, 100.0, 0.0]))
    q = model.encode(images(2))
    assert LOGVAR_RANGE == (-30.0, 20.0)
    np.testing.assert_array_equal(q.logvar[..., 0], 20.0)
    np.testing.assert_array_equal(q.logvar[..., 1], -30.0)
    assert bool(jnp.all(jnp.isfinite(q.kl())))


def test_gradients_reach_the_encoder_and_the_logvar_through_the_sample():
    model = tiny_autoencoder()
    x, keys = images(2), jax.random.split(jax.random.key(3), 2)
    graph, params, rest = nnx.split(model, nnx.Param, ...)

    def grads(key):
        def loss(p):  # the image term alone, no KL
            m = nnx.merge(graph, p, rest, copy=True)
            return jnp.mean(m.reconstruct(x, key=key).image ** 2)

        return jax.grad(loss)(params)

    def logvar_bias(g):  # the log-variance half of the moments' bias
        return g["moments_conv"]["bias"][...][4:]

    sampled, mean_only = grads(keys), grads(None)
    assert float(jnp.abs(sampled["encoder"]["conv_in"]["kernel"][...]).sum()) > 0
    # Reparameterised: the image depends on the log-variance through the sample only.
    assert float(jnp.abs(logvar_bias(sampled)).sum()) > 0
    np.testing.assert_array_equal(logvar_bias(mean_only), 0.0)


def test_reconstruction_follows_the_stage_one_contract():
    model = tiny_autoencoder()
    x, keys = images(3), jax.random.split(jax.random.key(0), 3)
    rec = model.reconstruct(x, key=keys)
    assert rec.image.shape == x.shape and rec.indices is None and rec.code_probs is None
    np.testing.assert_allclose(rec.image, model.decoder.conv_out(rec.features), atol=1e-6)
    q = model.encode(x)
    np.testing.assert_allclose(rec.loss, jnp.mean(gaussian_kl(q.mean, q.logvar)), rtol=1e-6)
    assert set(rec.stats) == {"latent_std", "posterior_std"}
    # Per-example keys give the same draws however the batch is split.
    np.testing.assert_allclose(
        model.reconstruct(x[1:], key=keys[1:]).image, rec.image[1:], atol=1e-5
    )
    # key=None decodes the mean: the deterministic round trip the eval and figure use.
    np.testing.assert_allclose(model.reconstruct(x, key=None).image, model.autoencode(x), 1e-6)
    assert model.decode(jnp.zeros((1, 3, 5, 4))).shape == (1, 6, 10, 3)
    assert isinstance(q, DiagonalGaussian) and model.factor == 2


def test_kl_term_weighs_the_mean_kl_by_latents_per_pixel_value():
    # The paper's loss sums L1 over pixels and the KL over latents per image (weight 1e-6);
    # with the mean L1 here, its KL term is kl_weight * mean KL * (h w z) / (H W C).
    x = images(4)
    ids = jnp.arange(4, dtype=jnp.int32)
    ctx = Context(rng=jax.random.key(1), step=jnp.int32(3), substep=jnp.int32(0), example_ids=ids)
    totals = {}
    for weight in (0.0, 0.5):
        config = autoencoder_shapes.get_config("tiny")
        config.vq_loss.disc_weight = 0.0
        config.autoencoder.kl_weight = weight
        objective = registry.build_objective(config)
        graphs, params, rest = split_modules(objective.modules)
        batch = {"image": x, "example_id": ids}
        totals[weight], aux = objective.players[0].loss(Models(graphs, params, rest), batch, ctx)
    assert float(aux["kl_weight"]) == 0.5 and float(aux["kl"]) > 0
    ratio = (8 * 8 * 4) / (16 * 16 * 3)
    np.testing.assert_allclose(totals[0.5] - totals[0.0], 0.5 * aux["kl"] * ratio, rtol=1e-4)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("autoencoder.kl_weight", -1e-6, "autoencoder.kl_weight must be finite and >= 0"),
        ("autoencoder.kl_weight", float("nan"), "autoencoder.kl_weight must be finite"),
        ("autoencoder.z_channels", 0, "autoencoder.z_channels must be >= 1, got 0"),
        ("vq_loss.disc_weight", -0.5, "vq_loss.disc_weight must be >= 0"),
        ("vq.num_codes", 16, "vq.num_codes: the klvae has no codebook"),
        ("vq.ch_mult", (1, 2, 2, 2, 2, 2), "not divisible by the downsampling factor 32"),
    ],
)
def test_bad_config_values_raise_before_building(field, value, message):
    config = autoencoder_shapes.get_config("tiny")
    group, name = field.split(".")
    config[group][name] = value
    with pytest.raises(ValueError, match=message):
        registry.build_objective(config)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The workdir of a 2-step run of ``autoencoder_shapes:tiny``, the PatchGAN from step 1."""
    config = autoencoder_shapes.get_config("tiny")
    config.vq_loss.disc_start = 1
    config.train.update(dict(steps=2, log_every=1, sample_every=2, eval_every=2))
    workdir = tmp_path_factory.mktemp("autoencoder_shapes")
    run(config, str(workdir))
    return workdir


def test_tiny_config_trains_through_the_tokenizer_objective(tiny_run):
    lines = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    first, second = (x for x in lines if "tokenizer/loss" in x)
    for line in (first, second):
        assert np.isfinite(line["tokenizer/loss"]) and line["tokenizer/kl"] > 0
        assert line["tokenizer/kl_weight"] == pytest.approx(1e-6)
    # The PatchGAN and VQGAN's adaptive weight from disc_start = 1, as for VQGAN.
    assert first["tokenizer/adaptive_weight"] == 0 and first["discriminator/d_loss"] == 0
    assert second["tokenizer/adaptive_weight"] > 0 and second["discriminator/d_loss"] > 0
    (evals,) = [x for x in lines if "eval/psnr" in x]
    assert np.isfinite(evals["eval/psnr"]) and evals["eval/kl"] > 0 and evals["eval/latent_std"] > 0
    assert "eval/usage" not in evals  # no codebook
    assert (tiny_run / "samples" / "reconstructions_step_0000002.png").exists()


def test_a_prior_refuses_the_autoencoder_run(tiny_run):
    config = transformer_digits.get_config("tiny")
    config.stages.tokenizer.workdir = str(tiny_run)
    with pytest.raises(ValueError, match="names a 'klvae' run; a prior needs a tokenizer run"):
        registry.build_objective(config)
