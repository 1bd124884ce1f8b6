"""GLIDE's pieces: attention to a caption, the text-conditioned U-Net, classifier-free
guidance and condition dropout in the DDPM objective, and glide_shapes:tiny."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import glide_shapes
from tests.diffusion.helpers import perturb_params
from zoo import registry
from zoo.data import shapes
from zoo.engine.objective import Context
from zoo.main import run
from zoo.nn.blocks import AttentionBlock

B, L, D = 2, 5, 6


def block_and_inputs():
    block = AttentionBlock(8, num_heads=2, context_dim=D, rngs=nnx.Rngs(0))
    # The output projection starts at zero (identity block): give it weights to test with.
    out = block.attn.out.kernel
    out[...] = jax.random.normal(jax.random.key(1), out[...].shape) * 0.3
    x = jax.random.normal(jax.random.key(2), (B, 4, 4, 8))
    context = jax.random.normal(jax.random.key(3), (B, L, D))
    return block, x, context


def test_attention_to_a_context_ignores_masked_tokens():
    block, x, context = block_and_inputs()
    mask = jnp.array([[True, True, False, False, False], [True, False, False, False, False]])
    y = block(x, context, mask)
    # a masked token's features do not matter
    changed = context.at[:, 2:].set(100.0)
    np.testing.assert_allclose(block(x, changed, mask), y, atol=1e-5)
    # a real token's do
    assert float(jnp.max(jnp.abs(block(x, context.at[:, 0].set(3.0), mask) - y))) > 1e-3
    # with every token masked, the block is self-attention over the image alone
    none = jnp.zeros((B, L), bool)
    tokens = block.norm(x).reshape(B, 16, 8)
    alone = x + block.attn(tokens).reshape(x.shape)
    np.testing.assert_allclose(block(x, context, none), alone, atol=1e-5)


def test_attention_block_context_errors():
    block, x, context = block_and_inputs()
    with pytest.raises(ValueError, match="pass context"):
        block(x)
    plain = AttentionBlock(8, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="without context_dim"):
        plain(x, context)


def tiny():
    config = glide_shapes.get_config("tiny")
    objective = registry.build_objective(config)
    return config, objective, objective.modules["model"]


def test_empty_caption_is_the_unconditional_input():
    # The null condition of guidance: all padding. The U-Net must then see no text at all,
    # so its output cannot depend on the caption encoder's weights.
    _, _, net = tiny()
    perturb_params(net.unet, 0.1, seed=1)
    x = jax.random.normal(jax.random.key(0), (3, 16, 16, 3))
    t = jnp.array([1, 20, 40])
    captions = jnp.asarray(shapes.caption_table()[0][:3])
    empty = jnp.zeros_like(captions)
    before = net(x, t, empty), net(x, t, captions)
    nnx.update(net.text, jax.tree.map(lambda p: p + 0.5, nnx.state(net.text, nnx.Param)))
    np.testing.assert_allclose(net(x, t, empty), before[0], atol=1e-5)
    # ...while a real caption's output does move
    assert float(jnp.max(jnp.abs(net(x, t, captions) - before[1]))) > 1e-4


class Recorder(nnx.Module):
    """Returns ``x * (1 + mean(cond))`` and records the conditions it was called with."""

    def __init__(self):
        self.seen = []

    def __call__(self, x, t, cond=None, *, dropout_key=None):
        self.seen.append(np.asarray(cond))
        c = jnp.mean(cond.reshape(cond.shape[0], -1).astype(jnp.float32), axis=1)
        return x * (1.0 + c)[:, None, None, None]


def test_condition_dropout_rate_matches_the_config():
    config, objective, _ = tiny()
    config.diffusion.condition_dropout = 0.3
    objective = registry.build_objective(config)
    net, n = Recorder(), 2000
    tokens = jnp.asarray(shapes.caption_table()[0])[jnp.arange(n) % shapes.NUM_CLASSES]
    batch = {"image": jnp.zeros((n, 16, 16, 3)), "tokens": tokens}
    ids = jnp.arange(n, dtype=jnp.int32)
    ctx = Context(jax.random.key(0), jnp.int32(0), jnp.int32(0), ids)
    objective.players[0].loss(lambda role, **kw: net, batch, ctx)
    (seen,) = net.seen
    dropped = np.all(seen == 0, axis=1)
    np.testing.assert_array_equal(seen[~dropped], np.asarray(tokens)[~dropped])
    assert abs(dropped.mean() - 0.3) < 0.04  # 2000 draws: std 0.01


def test_bad_text_conditioning_config_is_refused_before_any_compile():
    config = glide_shapes.get_config("tiny")
    config.data.name = "digits"
    with pytest.raises(ValueError, match="only data.name='shapes'"):
        registry.build_objective(config)
    config = glide_shapes.get_config("tiny")
    config.diffusion.condition_dropout = 1.0
    with pytest.raises(ValueError, match="condition_dropout"):
        registry.build_objective(config)
    config = glide_shapes.get_config("tiny")
    config.diffusion.condition = "none"
    config.diffusion.guidance_scale = 3.0
    with pytest.raises(ValueError, match="needs a condition"):
        registry.build_objective(config)


def test_tiny_config_trains_and_samples_carry_their_captions(tmp_path):
    config, objective, _ = tiny()
    config.train.update(dict(steps=1, log_every=1, sample_every=0, eval_every=0))
    config.eval.num_samples = 0
    state = run(config, str(tmp_path / "run"))
    assert int(state.step) == 1
    assert all(np.isfinite(np.asarray(p)).all() for p in jax.tree.leaves(state.params["model"]))
    models = lambda role, train=True, keep_state=True: nnx.view(  # noqa: E731
        objective.modules["model"], deterministic=True, raise_if_not_found=False
    )
    samples = objective.sample(models, jax.random.key(0), 4)
    assert samples["image"].shape == (4, 16, 16, 3)
    attributes = shapes.caption_table()[1][np.asarray(samples["label"])]
    for i, field in enumerate(("shape", "color", "position")):
        np.testing.assert_array_equal(samples[field], attributes[:, i])
