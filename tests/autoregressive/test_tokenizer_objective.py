"""The tokenizers' modules and losses: shapes, VQGAN's adaptive weight, config errors."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import dvae_shapes, vqgan_shapes
from zoo import registry
from zoo.autoregressive.tokenizer_objective import (
    _conv_with_kernel,
    adaptive_weight,
    tokenizer_from_config,
)
from zoo.engine.objective import Context
from zoo.engine.state import split_modules
from zoo.engine.step import Models
from zoo.nn.adversarial import discriminator_loss
from zoo.nn.blocks import conv


def test_adaptive_weight_against_a_hand_computed_case():
    kernel = jnp.arange(6.0).reshape(2, 3)
    a = jnp.array([[3.0, 0.0, 0.0], [0.0, 4.0, 0.0]])  # grad of the rec loss, norm 5
    b = jnp.array([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])  # grad of the GAN loss, norm 1
    w = adaptive_weight(lambda k: jnp.sum(a * k), lambda k: jnp.sum(b * k), kernel)
    np.testing.assert_allclose(w, 5.0 / (1.0 + 1e-4), rtol=1e-6)
    # Quadratic losses: grad of 0.5 c ||k||^2 is c k.
    w = adaptive_weight(
        lambda k: 0.5 * 2.0 * jnp.sum(k**2), lambda k: 0.5 * 0.5 * jnp.sum(k**2), kernel
    )
    np.testing.assert_allclose(
        w, 2.0 * np.linalg.norm(kernel) / (0.5 * np.linalg.norm(kernel) + 1e-4), rtol=1e-5
    )
    # A GAN loss that does not depend on the layer: clamped at 1e4, not inf.
    assert adaptive_weight(lambda k: jnp.sum(a * k), lambda k: 0.0 * jnp.sum(k), kernel) == 1e4
    # Detached: no gradient flows through the weight into the kernel.
    g = jax.grad(lambda k: adaptive_weight(lambda q: jnp.sum(k * q**2), lambda q: jnp.sum(q), k))
    np.testing.assert_array_equal(g(kernel), 0.0)


def test_conv_with_kernel_is_the_layer_with_another_kernel():
    layer = conv(4, 3, dtype=jnp.float32, rngs=nnx.Rngs(0))
    layer.bias[...] = jnp.arange(3.0)
    x = jax.random.normal(jax.random.key(1), (2, 5, 5, 4))
    np.testing.assert_allclose(_conv_with_kernel(layer, x, layer.kernel[...]), layer(x), atol=1e-5)
    other = 2.0 * layer.kernel[...]
    layer.kernel[...] = other
    np.testing.assert_allclose(_conv_with_kernel(layer, x, other), layer(x), atol=1e-5)


@pytest.mark.parametrize("module", [vqgan_shapes, dvae_shapes])
def test_tokenizer_codes_and_images_have_the_grid_shapes(module):
    config = module.get_config("tiny")
    tok = tokenizer_from_config(config)
    size, f = config.data.image_size, tok.factor
    assert f == 2 ** (len(config.vq.ch_mult) - 1)
    x = jax.random.uniform(jax.random.key(0), (2, size, size, 3), minval=-1, maxval=1)
    idx = tok.encode_indices(x)
    assert idx.shape == (2, size // f, size // f) and idx.dtype == jnp.int32
    assert 0 <= int(idx.min()) and int(idx.max()) < tok.num_codes
    assert tok.decode_indices(idx).shape == x.shape
    # A larger token grid decodes to a larger image (sliding-window samples).
    assert tok.decode_indices(jnp.zeros((1, 2, 6), jnp.int32)).shape == (1, 2 * f, 6 * f, 3)


def test_vq_tokenizer_training_pass_matches_its_codes():
    config = vqgan_shapes.get_config("tiny")
    tok = tokenizer_from_config(config)
    x = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3), minval=-1, maxval=1)
    codes = tok.encode_indices(x)  # before the training pass updates the EMA codebook
    rec = tok.reconstruct(x, key=jax.random.key(1))
    np.testing.assert_array_equal(rec.indices, codes)
    np.testing.assert_allclose(rec.image, tok.decoder.conv_out(rec.features), atol=1e-6)
    # Through the straight-through estimator the encoder gets a gradient from the image.
    graph, params, rest = nnx.split(tok, nnx.Param, ...)

    def loss(p):
        m = nnx.merge(graph, p, rest, copy=True)
        return jnp.mean(m.reconstruct(x, key=jax.random.key(1)).image ** 2)

    grads = jax.grad(loss)(params)
    assert float(jnp.abs(grads["encoder"]["conv_in"]["kernel"][...]).sum()) > 0


def test_dvae_hard_pass_decodes_single_codes_and_trains_the_encoder():
    config = dvae_shapes.get_config("tiny")
    tok = tokenizer_from_config(config)
    x = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3), minval=-1, maxval=1)
    key = jax.random.key(1)
    hard = tok.reconstruct(x, key=key, tau=0.5, hard=True)
    soft = tok.reconstruct(x, key=key, tau=0.5)
    # The hard pass decodes the one-hot of the Gumbel sample: some code's image, exactly.
    logits = tok.logits(x)
    sample = jnp.argmax(logits + jax.random.gumbel(key, logits.shape), axis=-1)
    np.testing.assert_allclose(hard.image, tok.decode_indices(sample), atol=1e-5)
    assert float(jnp.max(jnp.abs(soft.image - hard.image))) > 1e-3  # the soft one mixes codes
    graph, params, rest = nnx.split(tok, nnx.Param, ...)

    def loss(p):
        m = nnx.merge(graph, p, rest, copy=True)
        return jnp.mean(m.reconstruct(x, key=key, tau=0.5, hard=True).image ** 2)

    grads = jax.grad(loss)(params)  # straight-through: the soft sample's gradient
    assert float(jnp.abs(grads["encoder"]["conv_in"]["kernel"][...]).sum()) > 0


def test_tokenizer_config_errors():
    config = vqgan_shapes.get_config("tiny")
    config.vq_loss.perceptual_weight = 1.0
    with pytest.raises(ValueError, match="needs vq_loss.lpips_weights"):
        registry.build_objective(config)
    config = vqgan_shapes.get_config("tiny")
    config.vq.ch_mult = (1, 2, 2, 2, 2)  # f = 16
    config.data.image_size = 24
    with pytest.raises(ValueError, match="not divisible by the downsampling factor 16"):
        registry.build_objective(config)
    config = vqgan_shapes.get_config("tiny")
    config.vq_loss.reconstruction = "l3"
    with pytest.raises(ValueError, match="vq_loss.reconstruction='l3'"):
        registry.build_objective(config)


class TinyVQGAN(NamedTuple):
    """The tiny VQGAN objective split as the engine splits it, a batch and a Context."""

    players: dict
    graphs: Any
    params: dict
    rest: dict
    batch: dict
    ctx: Context

    def models(self) -> Models:
        return Models(self.graphs, self.params, self.rest)

    def fakes(self) -> jax.Array:
        tok = self.models()("tokenizer", train=False)
        return tok.decode_indices(tok.encode_indices(self.batch["image"]))


def tiny_vqgan(disc_start: int, step: int) -> TinyVQGAN:
    config = vqgan_shapes.get_config("tiny")
    config.vq_loss.disc_start = disc_start
    objective = registry.build_objective(config)
    graphs, params, rest = split_modules(objective.modules)
    x = jax.random.uniform(jax.random.key(0), (4, 16, 16, 3), minval=-1, maxval=1)
    ids = jnp.arange(4, dtype=jnp.int32)
    ctx = Context(
        rng=jax.random.key(1), step=jnp.int32(step), substep=jnp.int32(0), example_ids=ids
    )
    players = {p.name: p for p in objective.players}
    return TinyVQGAN(players, graphs, params, rest, {"image": x, "example_id": ids}, ctx)


def test_discriminator_sees_real_and_fake_in_one_batchnorm_batch():
    # Two calls normalise real and fake by their own BatchNorm statistics, which removes their
    # mean difference: a 2-layer PatchGAN on 16x16 shapes then never left d_loss = 2.
    t = tiny_vqgan(disc_start=0, step=1)
    value, _ = t.players["discriminator"].loss(t.models(), t.batch, t.ctx)
    x, fake = t.batch["image"], t.fakes()
    real_logits, fake_logits = jnp.split(t.models()("discriminator")(jnp.concatenate([x, fake])), 2)
    np.testing.assert_allclose(value, discriminator_loss(real_logits, fake_logits, "hinge"), 1e-5)
    separate = discriminator_loss(
        t.models()("discriminator")(x), t.models()("discriminator")(fake), "hinge"
    )
    assert abs(float(separate) - float(value)) > 1e-4


@pytest.mark.parametrize("step, runs", [(2, False), (3, True)])
def test_discriminator_pass_runs_only_from_disc_start(step, runs):
    # Before disc_start the discriminator's loss is 0 and its pass is skipped: its BatchNorm
    # statistics stay where they were (the old code ran it and moved them from step 0).
    t = tiny_vqgan(disc_start=3, step=step)

    def run():  # under jit, as in the engine: the branch is chosen by a traced step
        models = t.models()
        value, aux = t.players["discriminator"].loss(models, t.batch, t.ctx)
        return value, aux, models.updated_rest()["discriminator"]

    value, aux, updated = jax.jit(run)()
    before, after = jax.tree.leaves(t.rest["discriminator"]), jax.tree.leaves(updated)
    moved = any(not np.allclose(a, b) for a, b in zip(before, after, strict=True))
    assert moved == runs
    assert (float(value) > 0) == runs and float(aux["d_loss"]) == float(value)


def test_tokenizer_is_trained_against_the_discriminator_logits_it_trains():
    # The generator pass must see the fakes as the discriminator's pass does (beside the real
    # batch in one BatchNorm batch); alone, the fakes were normalised by their own statistics:
    # the old code's g_loss was -2.1 (fakes "real") while d_loss was 0 (fakes caught).
    t = tiny_vqgan(disc_start=0, step=1)
    _, aux = t.players["tokenizer"].loss(t.models(), t.batch, t.ctx)
    both = jnp.concatenate([t.batch["image"], t.fakes()])
    logits = t.models()("discriminator")(both)
    np.testing.assert_allclose(aux["g_loss"], -jnp.mean(jnp.split(logits, 2)[1]), rtol=1e-4)


def test_dvae_diversity_term_is_weight_times_the_gap_of_the_batch_code_distribution():
    x = jax.random.uniform(jax.random.key(0), (4, 16, 16, 3), minval=-1, maxval=1)
    ids = jnp.arange(4, dtype=jnp.int32)
    ctx = Context(rng=jax.random.key(1), step=jnp.int32(3), substep=jnp.int32(0), example_ids=ids)
    totals = {}
    for weight in (0.0, 0.5):
        config = dvae_shapes.get_config("tiny")
        config.dvae.diversity_weight = weight
        objective = registry.build_objective(config)
        graphs, params, rest = split_modules(objective.modules)
        models = Models(graphs, params, rest)
        batch = {"image": x, "example_id": ids}
        totals[weight], aux = objective.players[0].loss(models, batch, ctx)
    # the gap of the softmax averaged over all 4 x 8 x 8 tokens, by hand
    q = jax.nn.softmax(models("tokenizer", train=False).logits(x), axis=-1).reshape(-1, 16)
    p = np.asarray(q).mean(0)
    gap = np.log(16) + (p * np.log(p)).sum()
    np.testing.assert_allclose(aux["diversity_gap"], gap, rtol=1e-4)
    assert gap > 1e-3
    np.testing.assert_allclose(totals[0.5] - totals[0.0], 0.5 * gap, rtol=1e-3)
