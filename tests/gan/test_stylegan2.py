"""StyleGAN2 config F: shapes, truncation, style mixing, noise, minibatch stddev, sizes."""

import contextlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from zoo.engine.objective import Context
from zoo.engine.rng import example_keys
from zoo.gan.stylegan2 import build_networks, mix_styles, net_config, truncate
from zoo.gan.stylegan2_discriminator import minibatch_stddev


def RNGS(seed: int = 0) -> nnx.Rngs:  # noqa: N802 - reads like the nnx.Rngs it returns
    return nnx.Rngs(jax.random.key(seed, impl="rbg"))


def tiny_config(image_size=16, channels=3, condition="none", num_classes=0, **net):
    c = ml_collections.ConfigDict(
        dict(
            data=dict(image_size=image_size, channels=channels, num_classes=num_classes),
            gan=dict(condition=condition),
            net=net_config(),
        )
    )
    # 16x16: channels {4: 16, 8: 8, 16: 4}.
    c.net.update(dict(z_dim=8, w_dim=8, mapping_layers=2, channel_base=64, channel_max=16))
    c.net.update(net)
    return c


def build(config):
    # One compiled init instead of one dispatch per parameter: much faster on CPU.
    return nnx.jit(lambda: build_networks(config, rngs=RNGS()))()


@nnx.jit
def generate(g, z, cond=None, noise_key=None, truncation=1.0):
    return g(z, cond, noise_key=noise_key, truncation=truncation)


@nnx.jit
def synthesize(g, ws):
    return g.synthesis(ws)


@nnx.jit
def discriminate(d, images, cond=None):
    return d(images, cond)


@pytest.fixture(scope="module")
def nets():
    return build(tiny_config())


def z_of(seed, n=2):
    return jax.random.normal(jax.random.key(seed), (n, 8))


def test_shapes(nets):
    g, d = nets
    assert (g.z_dim, g.w_dim, g.num_ws) == (8, 8, 6)  # 2 log2(16) - 2
    assert g.w_avg[...].shape == (8,) and isinstance(g.w_avg, nnx.BatchStat)
    w = g.mapping(z_of(0))
    assert w.shape == (2, 8)
    images = generate(g, z_of(0))
    assert images.shape == (2, 16, 16, 3) and bool(jnp.all(jnp.isfinite(images)))
    logits = discriminate(d, images)
    assert logits.shape == (2,) and logits.dtype == jnp.float32
    with pytest.raises(ValueError, match="ws must be"):
        g.synthesis(jnp.zeros((2, 5, 8)))
    with pytest.raises(ValueError, match="images must be"):
        d(jnp.zeros((2, 8, 8, 3)))


def test_every_style_vector_is_used(nets):
    g, _ = nets
    w = g.mapping(z_of(1, 1))[0]
    # Example 0 is the base; example l + 1 perturbs only ws[:, l] (G has no batch coupling).
    ws = jnp.broadcast_to(w, (g.num_ws + 1, g.num_ws, 8))
    ws = ws + jnp.concatenate([jnp.zeros((1, g.num_ws)), jnp.eye(g.num_ws)])[..., None]
    images = synthesize(g, ws)
    change = jnp.max(jnp.abs(images[1:] - images[:1]), axis=(1, 2, 3))
    assert bool(jnp.all(change > 1e-4)), change


def test_truncation(nets):
    g, _ = nets
    w = g.mapping(z_of(2))
    w_avg = jax.random.normal(jax.random.key(9), (8,))
    np.testing.assert_allclose(truncate(w, w_avg, 0.0), jnp.broadcast_to(w_avg, w.shape))
    np.testing.assert_allclose(truncate(w, w_avg, 1.0), w, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(truncate(w, w_avg, 0.5), (w + w_avg) / 2, rtol=1e-5, atol=1e-6)
    g.w_avg[...] = w_avg
    try:
        a, b = generate(g, z_of(3), truncation=0.0), generate(g, z_of(4), truncation=0.0)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # both are G(w_avg)
        assert float(jnp.max(jnp.abs(generate(g, z_of(3)) - generate(g, z_of(4))))) > 1e-4
    finally:
        g.w_avg[...] = jnp.zeros(8)


def test_mix_styles():
    w1, w2 = jnp.ones((3, 2)), -jnp.ones((3, 2))
    ws = mix_styles(w1, w2, jnp.array([0, 2, 5]), 4)
    assert ws.shape == (3, 4, 2)
    expected = np.array([[-1, -1, -1, -1], [1, 1, -1, -1], [1, 1, 1, 1]], np.float32)
    np.testing.assert_array_equal(ws[..., 0], expected)
    np.testing.assert_array_equal(ws[..., 1], expected)


@contextlib.contextmanager
def noise_on(g):
    """Every noise strength 1 inside the block (they start at zero, as in the paper)."""
    layers = [layer for block in g.synthesis.blocks for layer in block]
    for layer in layers:
        layer.noise_strength[...] = jnp.ones_like(layer.noise_strength[...])
    try:
        yield
    finally:
        for layer in layers:
            layer.noise_strength[...] = jnp.zeros_like(layer.noise_strength[...])


def test_noise(nets):
    g, _ = nets
    z = z_of(5)
    key1, key2 = jax.random.key(1), jax.random.key(2)
    clean = generate(g, z)
    np.testing.assert_array_equal(clean, generate(g, z))  # noise_key=None: deterministic
    # Strengths start at zero (paper), so a key changes nothing until they are learned.
    np.testing.assert_allclose(generate(g, z, noise_key=key1), clean, atol=1e-6)
    with noise_on(g):
        a = generate(g, z, noise_key=key1)
        assert float(jnp.max(jnp.abs(a - generate(g, z)))) > 1e-3
        np.testing.assert_array_equal(a, generate(g, z, noise_key=key1))
        assert float(jnp.max(jnp.abs(a - generate(g, z, noise_key=key2)))) > 1e-3
        # One key is split into one key per sample.
        np.testing.assert_array_equal(a, generate(g, z, noise_key=jax.random.split(key1, 2)))
        with pytest.raises(ValueError, match="noise_key"):
            g(z, noise_key=jax.random.split(key1, 3))


def example_ctx(ids):
    return Context(jax.random.key(3), jnp.int32(0), jnp.int32(0), jnp.asarray(ids, jnp.int32))


def test_noise_is_per_sample(nets):
    """With the engine's per-example keys, a batch of 4 equals the same examples as two
    batches of 2 (how jit, pmap and microbatches split it): no noise draw is batch-shaped."""
    g, _ = nets
    z = z_of(7, 4)
    with noise_on(g):
        whole = generate(g, z, noise_key=example_keys(example_ctx([0, 1, 2, 3])))
        halves = [
            generate(g, z[np.array(ids)], noise_key=example_keys(example_ctx(ids)))
            for ids in ([0, 1], [2, 3])
        ]
        np.testing.assert_allclose(whole, jnp.concatenate(halves), rtol=1e-5, atol=1e-6)
        assert float(jnp.max(jnp.abs(whole - generate(g, z)))) > 1e-3  # the noise is on


def test_minibatch_stddev_groups():
    x = jax.random.normal(jax.random.key(0), (8, 2, 2, 4))
    y = minibatch_stddev(x, 4, 1)
    assert y.shape == (8, 2, 2, 5)
    np.testing.assert_array_equal(y[..., :4], x)
    xn = np.asarray(x)
    for m in range(2):  # groups are consecutive samples {4m, ..., 4m + 3}
        expected = np.mean(np.std(xn[4 * m : 4 * m + 4], axis=0))
        np.testing.assert_allclose(y[4 * m : 4 * m + 4, ..., 4], expected, rtol=1e-4)
    # so a batch split in two halves (two devices) gets the same statistics
    halves = jnp.concatenate([minibatch_stddev(x[:4], 4), minibatch_stddev(x[4:], 4)])
    np.testing.assert_allclose(halves, y, rtol=1e-6)
    # Batches smaller than / not divisible by the group size: G = largest divisor <= 4.
    np.testing.assert_allclose(minibatch_stddev(x[:3], 4)[..., 4], np.mean(np.std(xn[:3], 0)), 1e-4)
    six = minibatch_stddev(x[:6], 4)[..., 4]  # G = 3, groups {0, 1, 2} and {3, 4, 5}
    np.testing.assert_allclose(six[0], np.mean(np.std(xn[0:3], 0)), rtol=1e-4)
    assert float(jnp.max(minibatch_stddev(x[:1], 4)[..., 4])) < 1e-3  # one sample: ~0
    two = minibatch_stddev(x, 4, 2)  # 2 features, each over 2 channels
    assert two.shape == (8, 2, 2, 6)
    np.testing.assert_allclose(two[1, 0, 0, 5], np.mean(np.std(xn[:4, ..., 2:], 0)), 1e-4)


def test_class_conditional():
    g, d = build(tiny_config(8, 1, condition="label", num_classes=5))
    z, label = z_of(6), jnp.array([0, 3])
    images = generate(g, z, {"label": label})
    assert images.shape == (2, 8, 8, 1)
    w_a, w_b = g.mapping(z, {"label": label}), g.mapping(z, {"label": label[::-1]})
    assert float(jnp.max(jnp.abs(w_a - w_b))) > 1e-3
    la = discriminate(d, images, {"label": label})
    lb = discriminate(d, images, {"label": jnp.array([1, 4])})
    assert la.shape == (2,) and float(jnp.max(jnp.abs(la - lb))) > 1e-5
    with pytest.raises(ValueError, match="class-conditional"):
        g(z)
    with pytest.raises(ValueError, match="class-conditional"):
        d(images)


def test_unconditional_rejects_cond(nets):
    g, d = nets
    with pytest.raises(ValueError, match="unconditional"):
        g.mapping(z_of(0), {"label": jnp.array([0, 1])})


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(image_size=12), "power of two"),
        (dict(image_size=4), "image_size"),
        (dict(channels=2), "channels"),
        (dict(condition="text"), "condition"),
        (dict(condition="label"), "num_classes"),
        (dict(colour=1), "unknown"),
        (dict(mapping_lr_mul=0.0), "mapping_lr_mul"),
        (dict(channel_base=8), "0 channels"),
        (dict(mbstd_features=3), "mbstd_features"),
    ],
)
def test_invalid_config_raises(change, match):
    data = {k: change.pop(k) for k in ("image_size", "channels", "condition") if k in change}
    with pytest.raises(ValueError, match=match):
        build_networks(tiny_config(**data, **change), rngs=RNGS())


def param_count(module) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


@pytest.mark.parametrize(
    "size,base,g_params,d_params,num_ws",
    [
        # Official config F at 1024 (StyleGAN2-ADA's printout): G 30,370,060 with one noise
        # strength per layer; ours keeps one per channel (+5,568 - 17). D 29,012,513 exactly.
        (1024, 32768, 30_370_060 - 17 + 5_568, 29_012_513, 18),
        (256, 16384, 24_771_925, 24_001_089, 14),  # FFHQ-256, the net_config() defaults
    ],
)
def test_paper_parameter_counts(size, base, g_params, d_params, num_ws):
    c = tiny_config(size)
    c.net = net_config()
    c.net.channel_base = base
    g, d = nnx.eval_shape(lambda: build_networks(c, rngs=nnx.Rngs(0)))  # no real init
    assert (param_count(g), param_count(d), g.num_ws) == (g_params, d_params, num_ws)
