"""remat: the transformer prior and StyleGAN2 give the same numbers with their blocks
rematerialised, and the blocks really are behind ``remat`` in the traced gradient.
(The U-Net's case is in tests/diffusion/test_unet.py.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from zoo.gan.stylegan2 import build_networks
from zoo.nn.transformer import TokenDecoder


def _same(results):
    (loss0, grads0), (loss1, grads1) = results
    np.testing.assert_allclose(loss1, loss0, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(grads1), jax.tree.leaves(grads0), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _check(build, loss_of):
    """(loss, grads) with remat off and on; the jaxpr of the gradient has remat iff on."""
    results = []
    for on in (False, True):
        graph, params, rest = nnx.split(build(on), nnx.Param, ...)

        def loss(p, graph=graph, rest=rest):
            return loss_of(nnx.merge(graph, p, rest))

        results.append(jax.value_and_grad(loss)(params))
        assert ("remat" in str(jax.make_jaxpr(jax.grad(loss))(params))) == on
    _same(results)


@pytest.mark.slow  # two transformers differentiated: 7 s on 2 cores
def test_the_transformer_with_remat_gives_the_same_loss_and_gradients():
    prefix = jnp.array([[1], [2]])
    image = jnp.asarray(np.random.default_rng(0).integers(0, 16, (2, 8)))
    key = jax.random.key(3)

    def build(on):
        return TokenDecoder(
            16, 9, prefix_vocab_size=4, prefix_len=1, dim=16, depth=2, num_heads=2,
            dropout=0.1, remat=on, rngs=nnx.Rngs(0),
        )  # fmt: skip

    def loss_of(model):
        logits, _ = model(prefix, image, dropout_key=key)
        return jnp.mean(jax.nn.log_softmax(logits)[..., 0])

    _check(build, loss_of)


@pytest.mark.slow  # second-order gradients of two StyleGAN2 pairs
def test_stylegan2_with_remat_gives_the_same_losses_and_r1_gradients():
    """The generator's loss (noise on) and the discriminator's R1 term (a gradient of a
    gradient, through the rematerialised blocks)."""
    config = __import__("configs.stylegan2_digits", fromlist=["x"]).get_config("tiny")
    z = jax.random.normal(jax.random.key(0), (4, config.net.z_dim))
    s, c = config.data.image_size, config.data.channels
    images = jax.random.uniform(jax.random.key(1), (4, s, s, c), minval=-1, maxval=1)

    def networks(on):
        config.net.remat = on
        return build_networks(config, rngs=nnx.Rngs(0))

    def generator_loss(g):
        return jnp.mean(g(z, noise_key=jax.random.key(2)) ** 2)

    def r1(d):
        grad = jax.grad(lambda x: jnp.sum(d(x)))(images)
        return jnp.mean(jnp.sum(grad**2, axis=(1, 2, 3)))

    _check(lambda on: networks(on)[0], generator_loss)
    _check(lambda on: networks(on)[1], r1)
