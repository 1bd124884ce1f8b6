"""DCGAN: shapes, tanh range, the paper's BatchNorm placement, parameter count, eval mode."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from zoo.gan import dcgan
from zoo.nn.subpixel import ConvTranspose2x


def _config(image_size=16, channels=1, **net):
    c = ml_collections.ConfigDict()
    c.data = ml_collections.ConfigDict(dict(name="digits", image_size=image_size))
    if channels is not None:
        c.data.channels = channels
    c.net = dcgan.net_config()
    c.net.update(dict(z_dim=8, g_base=8, d_base=8, max_channels=32, kernel_size=4))
    c.net.update(net)
    return c


def _rngs(seed: int = 0) -> nnx.Rngs:
    # rbg initialises in ~1/10 the time of threefry (fewer per-shape compiles), as in test_unet.
    return nnx.Rngs(jax.random.key(seed, impl="rbg"))


@nnx.jit
def _generate_and_judge(g, d, z):
    images = g(z)
    return images, d(images)


def _num_params(module) -> int:
    return sum(p.size for p in jax.tree.leaves(nnx.state(module, nnx.Param)))


@pytest.mark.parametrize("size, channels", [(16, 1), (64, 3)])
def test_shapes_and_tanh_range(size, channels):
    g, d = dcgan.build_networks(_config(size, channels, g_base=4, d_base=4), rngs=_rngs())
    z = 3.0 * jax.random.normal(jax.random.key(0), (3, 8))
    images, logits = _generate_and_judge(g, d, z)
    assert images.shape == (3, size, size, channels) and images.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(images))) <= 1.0
    assert float(jnp.std(images)) > 0.0
    assert logits.shape == (3,) and logits.dtype == jnp.float32
    assert np.all(np.isfinite(logits))


def test_layer_counts_and_widths_follow_the_resolution():
    c = _config(32, g_base=8, d_base=4, max_channels=16)
    g, d = nnx.eval_shape(lambda: dcgan.build_networks(c, rngs=nnx.Rngs(0)))
    # n = log2(32 / 4) = 3: projection + 2 transposed convs + output; 3 convs + linear in D.
    assert len(g.layers) == 4 and len(d.layers) == 3
    # G: 4x4 maps have 8 * 4 = 32 -> capped at 16, then 16, 8 (last hidden = g_base), then 1.
    assert g.layers[0].op.out_features == 16 * 16
    assert [layer.op.out_features for layer in g.layers[1:]] == [16, 8, 1]
    # D: d_base 4 -> 8 -> 16, flattened 4x4x16 into one unit.
    assert [layer.op.out_features for layer in d.layers] == [4, 8, 16]
    assert d.out.in_features == 4 * 4 * 16 and d.out.out_features == 1


@pytest.mark.parametrize("size", [8, 16, 64])
def test_batchnorm_everywhere_but_g_output_and_d_input(size):
    """Radford et al. 2016, sec. 3 (the survey's sentence inverts this)."""
    g, d = nnx.eval_shape(lambda: dcgan.build_networks(_config(size), rngs=nnx.Rngs(0)))
    *g_hidden, g_out = g.layers
    d_in, *d_hidden = d.layers
    assert g_out.norm is None and d_in.norm is None
    assert all(isinstance(layer.norm, nnx.BatchNorm) for layer in g_hidden + d_hidden)
    assert isinstance(g_out.op, ConvTranspose2x) and isinstance(d_in.op, nnx.Conv)
    # No BatchNorm hides anywhere else in the trees (e.g. on the D output unit).
    n = dcgan.num_stages(size)
    for module, expected in ((g, n), (d, n - 1)):
        found = [m for _, m in nnx.iter_graph(module) if isinstance(m, nnx.BatchNorm)]
        assert len(found) == expected
    # No pooling and only the projection / output unit are dense.
    for module in (g, d):
        dense = [m for _, m in nnx.iter_graph(module) if isinstance(m, nnx.Linear)]
        assert len(dense) == 1


def test_param_count_of_the_paper_64x64_model():
    """z 100, G 1024-512-256-128 at 4..32 px, D 128-256-512-1024, 5x5 kernels, RGB.

    G: 100*16*1024 + 2*1024 (BN) + 25*(1024*512 + 512*256 + 256*128) + 2*(512+256+128)
       + 25*128*3 + 3 = 18,855,043.
    D: 25*3*128 + 128 + 25*(128*256 + 256*512 + 512*1024) + 2*(256+512+1024)
       + 16*1024 + 1 = 17,232,897.
    """
    c = _config(64, 3)
    c.net = dcgan.net_config()
    g, d = nnx.eval_shape(lambda: dcgan.build_networks(c, rngs=nnx.Rngs(0)))
    assert g.z_dim == 100
    assert _num_params(g) == 18_855_043
    assert _num_params(d) == 17_232_897


def test_weights_initialised_from_n_0_002():
    c = _config(16, g_base=32, d_base=32, max_channels=64)
    g, d = dcgan.build_networks(c, rngs=_rngs())
    for module in (g.layers[1], d.layers[1]):
        w = np.asarray(module.op.kernel[...])
        assert abs(w.mean()) < 2e-3 and w.std() == pytest.approx(0.02, rel=0.05)
    assert np.all(np.asarray(d.layers[0].op.bias[...]) == 0)


def test_eval_mode_is_deterministic_and_per_sample():
    g, d = dcgan.build_networks(_config(8), rngs=_rngs())
    z = jax.random.normal(jax.random.key(1), (4, 8))
    g(z)  # one train-mode call moves the running statistics off their init
    g_eval = nnx.view(g, use_running_average=True, raise_if_not_found=False)
    d_eval = nnx.view(d, use_running_average=True, raise_if_not_found=False)
    a, b = g_eval(z), g_eval(z)
    np.testing.assert_array_equal(a, b)
    # Running statistics: a sample's output does not depend on its batch mates...
    np.testing.assert_allclose(g_eval(z[:2]), a[:2], atol=1e-6)
    np.testing.assert_allclose(d_eval(a[:2]), d_eval(a)[:2], atol=1e-6)
    # ...while batch statistics (train mode) make it depend on them.
    assert not np.allclose(g(z[:2]), g(z)[:2], atol=1e-4)


def test_contract_arguments_are_ignored():
    g, _ = dcgan.build_networks(_config(8), rngs=_rngs())
    g = nnx.view(g, use_running_average=True, raise_if_not_found=False)
    z = jnp.ones((2, 8))
    out = g(z, {"label": jnp.zeros(2, jnp.int32)}, noise_key=jax.random.key(0), truncation=0.7)
    np.testing.assert_array_equal(out, g(z))


@pytest.mark.parametrize(
    "data, net, match",
    [
        (dict(image_size=12), {}, "power of two"),
        (dict(image_size=4), {}, "power of two"),
        (dict(channels=None), {}, "channels"),
        ({}, dict(g_base=0), "g_base"),
        ({}, dict(kernel_size=1), "kernel_size"),
        ({}, dict(max_channels=-8), "max_channels"),
    ],
)
def test_bad_config_raises(data, net, match):
    c = _config(**data, **net)
    with pytest.raises(ValueError, match=match):
        nnx.eval_shape(lambda: dcgan.build_networks(c, rngs=nnx.Rngs(0)))


def test_wrong_input_shapes_raise():
    g, d = dcgan.build_networks(_config(8), rngs=_rngs())
    with pytest.raises(ValueError, match="z must be"):
        g(jnp.zeros((2, 7)))
    with pytest.raises(ValueError, match="images must be"):
        d(jnp.zeros((2, 16, 16, 1)))
