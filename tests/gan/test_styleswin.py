"""StyleSwin: generator shapes and contract, truncation, SPE, config validation, parameter count."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from zoo.gan import styleswin
from zoo.gan.styleswin import StyleSwinGenerator, net_config, sinusoidal_grid

# Equal widths at every stage: fewer distinct parameter shapes to compile at init.
TINY = dict(
    z_dim=16,
    w_dim=16,
    mapping_layers=2,
    channel_base=1024,
    max_channels=16,
    head_dim=8,
    min_heads=2,
    depth=2,
    window=4,
    mlp_ratio=2.0,
)


def _rngs(seed: int = 0) -> nnx.Rngs:
    return nnx.Rngs(jax.random.key(seed, impl="rbg"))  # compiles faster than threefry


@pytest.fixture(scope="module")
def generator():
    g = StyleSwinGenerator(image_size=16, channels=3, **TINY, rngs=_rngs())
    g.w_avg[...] = jnp.asarray(np.random.default_rng(1).standard_normal(16), jnp.float32)
    return g


@nnx.jit
def _generate(g, z, truncation=1.0, noise_key=None):  # truncation traced: one compile for all psi
    return g(z, truncation=truncation, noise_key=noise_key)


@nnx.jit
def _synthesis(g, ws):
    return g.synthesis(ws)


@nnx.jit
def _ws(g, z):
    return jnp.broadcast_to(g.mapping(z)[:, None], (z.shape[0], g.num_ws, g.w_dim))


Z = np.random.default_rng(0).standard_normal((2, 16)).astype(np.float32)


def test_output_shape_and_contract(generator):
    g = generator
    assert (g.z_dim, g.w_dim, g.num_ws) == (16, 16, 3 * 2)  # stages 4, 8, 16 x 2 blocks
    out = _generate(g, Z)
    assert out.shape == (2, 16, 16, 3) and out.dtype == jnp.float32
    assert np.isfinite(out).all() and not np.allclose(out[0], out[1], rtol=1e-3, atol=0)
    # noise_key is ignored (StyleSwin has no noise inputs): the same images with a key.
    np.testing.assert_array_equal(out, _generate(g, Z, noise_key=jax.random.key(3)))
    # __call__ = mapping -> broadcast to num_ws -> synthesis (truncation 1).
    np.testing.assert_allclose(_synthesis(g, _ws(g, Z)), out, rtol=1e-5, atol=1e-7)


def test_truncation_zero_gives_one_image(generator):
    out = _generate(generator, Z, truncation=0.0)
    np.testing.assert_allclose(out[0], out[1], rtol=1e-6, atol=1e-9)
    assert not np.allclose(out, _generate(generator, Z, truncation=0.5), rtol=1e-3, atol=0)


def test_every_w_steers_the_image(generator):
    """Each of the num_ws style vectors reaches the output."""
    g = generator
    ws = _ws(g, Z)
    base = _synthesis(g, ws)
    for i in range(g.num_ws):
        changed = _synthesis(g, ws.at[:, i].add(1.0))
        assert not np.allclose(changed, base, rtol=1e-3, atol=0), f"w {i} has no effect"


def test_gradients_are_finite_and_reach_attention_biases(generator):
    @nnx.jit
    def grads(g, z):
        return nnx.grad(lambda g: jnp.sum(g(z) ** 2))(g)

    flat = jax.tree_util.tree_flatten_with_path(grads(generator, Z))[0]
    assert all(np.isfinite(g).all() for _, g in flat)
    # Both halves (regular and shifted windows) of all 3 x 2 blocks get a bias gradient.
    tables = [g for path, g in flat if "bias_table" in jax.tree_util.keystr(path)]
    assert len(tables) == 3 * 2 * 2
    assert all(np.abs(g).max() > 0 for g in tables)


def test_bad_inputs_raise(generator):
    with pytest.raises(ValueError, match="ws must be"):
        generator.synthesis(jnp.zeros((1, 5, 16)))
    with pytest.raises(ValueError, match="unconditional"):
        generator.mapping(jnp.zeros((1, 16)), {"label": jnp.zeros((1,), jnp.int32)})


def test_modulated_trgb_adds_one_w_per_stage():
    g = nnx.eval_shape(
        lambda: StyleSwinGenerator(
            image_size=16, **{**TINY, "depth": 1}, to_rgb="modulated", rngs=nnx.Rngs(0)
        )
    )
    assert g.num_ws == 3 * 2


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(image_size=12), "power of two"),
        (dict(image_size=4), "power of two"),
        (dict(image_size=16, to_rgb="dense"), "to_rgb"),
        (dict(image_size=16, head_dim=16, min_heads=1), "halves"),  # 1 head cannot be split
    ],
)
def test_invalid_construction_raises(kw, match):
    args = {**TINY, **kw}
    with pytest.raises(ValueError, match=match):
        nnx.eval_shape(lambda: StyleSwinGenerator(**args, rngs=nnx.Rngs(0)))


def test_sinusoidal_grid():
    grid = np.asarray(sinusoidal_grid(4, 8, 6))
    assert grid.shape == (4, 8, 6)
    # Columns vary only along W, rows only along H; position 1 -> sin(1) in channel 0.
    np.testing.assert_allclose(grid[:, :, :3], np.broadcast_to(grid[:1, :, :3], (4, 8, 3)))
    np.testing.assert_allclose(grid[:, :, 3:], np.broadcast_to(grid[:, :1, 3:], (4, 8, 3)))
    np.testing.assert_allclose(grid[0, 0, 0], np.sin(1.0), rtol=1e-6)
    assert len({tuple(r) for r in grid.reshape(-1, 6).round(5)}) == 32  # all positions distinct


def _num_params(module) -> int:
    return sum(p.size for p in jax.tree.leaves(nnx.state(module, nnx.Param)))


def test_param_count_ffhq256():
    """The official FFHQ-256 networks (G_ and D_channel_multiplier 2): generator 48.93 M
    parameters (2.10 M in the mapping network) and 14 style vectors (7 stages x 2 blocks)."""
    g, d = nnx.eval_shape(lambda: styleswin.build_networks(_config(256), rngs=nnx.Rngs(0)))
    assert g.num_ws == 14
    assert _num_params(g.mapping_net) == 8 * (512 * 512 + 512)
    assert _num_params(g) == pytest.approx(48.93e6, rel=1e-3)
    assert _num_params(d) == pytest.approx(28.86e6, rel=1e-3)


def _config(image_size: int = 16, **net) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.data = ml_collections.ConfigDict(dict(image_size=image_size, channels=3, num_classes=0))
    c.net = net_config()
    c.net.update(net)
    return c


def test_build_networks_contract():
    num_ws = []

    def build_and_run():  # traced abstractly: no initialisation, no compilation
        g, d = styleswin.build_networks(_config(**TINY), rngs=nnx.Rngs(0))
        num_ws.append(g.num_ws)
        images = g(jnp.zeros((2, 16)))
        return images, d(images)

    images, logits = jax.eval_shape(build_and_run)
    assert num_ws == [6]
    assert images.shape == (2, 16, 16, 3)
    assert logits.shape == (2,) and logits.dtype == jnp.float32


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("window_size", 7, "window_size"),  # unknown field
        ("depth", 0, "net.depth"),
        ("to_rgb", "dense", "to_rgb"),
    ],
)
def test_build_networks_rejects_bad_net_fields(field, value, match):
    c = _config(**TINY)
    c.net[field] = value
    with pytest.raises(ValueError, match=match):
        nnx.eval_shape(lambda: styleswin.build_networks(c, rngs=nnx.Rngs(0)))


def test_build_networks_rejects_conditioning_and_bad_sizes():
    c = _config(**TINY)
    c.gan = ml_collections.ConfigDict(dict(condition="label"))
    with pytest.raises(ValueError, match="unconditional"):
        styleswin.build_networks(c, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="power of two"):
        styleswin.build_networks(_config(24, **TINY), rngs=nnx.Rngs(0))
