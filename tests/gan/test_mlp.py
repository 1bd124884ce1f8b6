"""The MLP GAN of Goodfellow et al. 2014: shapes, layer structure, config, validation."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from zoo.gan import mlp
from zoo.nn.adversarial import discriminator_loss, generator_loss


def _config(**net):
    c = ml_collections.ConfigDict()
    c.data = ml_collections.ConfigDict(dict(name="ring", image_size=32))
    c.net = mlp.net_config()
    c.net.update(net)
    return c


def _num_params(module) -> int:
    return sum(p.size for p in jax.tree.leaves(nnx.state(module, nnx.Param)))


def test_defaults_shapes_and_param_counts():
    g, d = mlp.build_networks(_config(), rngs=nnx.Rngs(0))
    assert g.z_dim == 16
    z = jax.random.normal(jax.random.key(1), (5, 16))
    points = g(z)
    assert points.shape == (5, 2) and points.dtype == jnp.float32
    logits = d(points)
    assert logits.shape == (5,) and logits.dtype == jnp.float32
    # G: 16->128->128->128->2; D: 2->128->128->128->1 (weights + biases).
    assert _num_params(g) == (16 * 128 + 128) + 2 * (128 * 128 + 128) + (128 * 2 + 2)
    assert _num_params(d) == (2 * 128 + 128) + 2 * (128 * 128 + 128) + (128 + 1)


def test_contract_arguments_are_accepted_and_ignored():
    g = mlp.MLPGenerator(4, 8, 1, 3, rngs=nnx.Rngs(0))
    d = mlp.MLPDiscriminator(3, 8, 2, rngs=nnx.Rngs(1))
    z = jnp.ones((2, 4))
    out = g(z, {"label": jnp.zeros(2, jnp.int32)}, noise_key=jax.random.key(0), truncation=0.5)
    np.testing.assert_array_equal(out, g(z))
    assert out.shape == (2, 3)
    np.testing.assert_array_equal(d(out, {"label": jnp.zeros(2, jnp.int32)}), d(out))


def test_activations_relu_in_g_leaky_in_d():
    """A negative pre-activation is zeroed in G and scaled by 0.2 in D (one hidden unit)."""
    g = mlp.MLPGenerator(1, 1, 1, 1, rngs=nnx.Rngs(0))
    d = mlp.MLPDiscriminator(1, 1, 1, rngs=nnx.Rngs(0))
    for m in (g, d):
        m.hidden[0].kernel[...] = jnp.ones((1, 1))
        m.out.kernel[...] = jnp.ones((1, 1))
    x = jnp.array([[-2.0], [3.0]])
    np.testing.assert_allclose(g(x)[:, 0], [0.0, 3.0])
    np.testing.assert_allclose(d(x), [-0.4, 3.0], rtol=1e-6)


def test_dim_from_data_config_and_losses_differentiate():
    c = _config(z_dim=3, hidden=16, depth=2)
    c.data.dim = 5
    g, d = mlp.build_networks(c, rngs=nnx.Rngs(0))
    z = jax.random.normal(jax.random.key(0), (4, 3))

    def g_loss(g):
        return generator_loss(d(g(z)), "non_saturating")

    def d_loss(d):
        return discriminator_loss(d(jnp.ones((4, 5))), d(g(z)), "minimax")

    for module, loss in ((g, g_loss), (d, d_loss)):
        grads = nnx.grad(loss)(module)
        leaves = jax.tree.leaves(grads)
        assert leaves and all(np.all(np.isfinite(x)) for x in leaves)
        assert any(np.any(x != 0) for x in leaves)


@pytest.mark.parametrize("field, value", [("z_dim", 0), ("hidden", -1), ("depth", 0)])
def test_bad_config_raises(field, value):
    with pytest.raises(ValueError, match=field):
        mlp.build_networks(_config(**{field: value}), rngs=nnx.Rngs(0))


def test_wrong_input_shape_raises():
    g, d = mlp.build_networks(_config(), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"\[B, 16\]"):
        g(jnp.zeros((2, 8)))
    with pytest.raises(ValueError, match=r"\[B, 2\]"):
        d(jnp.zeros((2, 3)))
