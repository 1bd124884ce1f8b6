"""The NeRF MLP: the paper's size, density independent of view, output ranges."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from zoo.nerf.field import NeRFMLP, param_count


def test_paper_network_has_595844_parameters():
    # Appendix A / fig. 7: 63 -> 8 x 256 ReLU (input again after the fifth
    # layer) -> sigma + 256 feature; [feature, 27] -> 128 -> RGB. Counted in
    # zoo/nerf/field.py's docstring: 493,056 trunk + 66,049 heads + 36,739 view.
    net = NeRFMLP(rngs=nnx.Rngs(0))
    assert param_count(net) == 595_844
    assert net.trunk[5].in_features == 256 + 63 and net.trunk[4].in_features == 256
    assert net.view.in_features == 256 + 27 and net.view.out_features == 128


def _small(**kw):
    args = dict(depth=3, width=32, skip=1, pos_freqs=4, dir_freqs=2, view_width=16)
    args.update(kw)
    return NeRFMLP(**args, rngs=nnx.Rngs(0))


def test_density_ignores_direction_colour_does_not():
    net = _small()
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(-1, 1, (5, 7, 3)), jnp.float32)
    d1 = jnp.asarray(rng.normal(size=(5, 1, 3)), jnp.float32)  # one direction per ray
    d2 = jnp.asarray(rng.normal(size=(5, 1, 3)), jnp.float32)
    s1, c1 = net(x, d1)
    s2, c2 = net(x, d2)
    assert s1.shape == (5, 7) and c1.shape == (5, 7, 3)
    np.testing.assert_array_equal(s1, s2)
    assert np.abs(np.asarray(c1 - c2)).max() > 1e-4
    # Direction length does not matter (normalised inside).
    np.testing.assert_allclose(net(x, 3.0 * d1)[1], c1, atol=1e-6)


def test_output_ranges_and_finite_gradients():
    net = _small()
    x = jnp.asarray(np.random.default_rng(1).uniform(-3, 3, (64, 3)), jnp.float32)
    d = jnp.ones((64, 3))
    sigma, rgb = net(x, d)
    assert np.all(np.asarray(sigma) >= 0)
    assert np.all((np.asarray(rgb) >= 0) & (np.asarray(rgb) <= 1))

    def loss(model):
        s, c = model(x, d)
        return jnp.mean(c) + jnp.mean(s)

    grads = nnx.grad(loss)(net)
    leaves = jax.tree.leaves(nnx.state(grads, nnx.Param))
    assert all(np.all(np.isfinite(g)) for g in leaves)


def test_no_skip_and_bad_skip():
    assert _small(skip=None).trunk[2].in_features == 32
    for bad in (2, 5, -1):
        with pytest.raises(ValueError, match="skip"):
            _small(skip=bad)
