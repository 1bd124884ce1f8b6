"""Equalised learning rate (ProGAN sec. 4.1) and the [1, 3, 3, 1] resampling filters."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from zoo.nn.equalized import (
    EqualizedConv,
    EqualizedDense,
    blur,
    downsample2x,
    lrelu,
    upsample2x,
)


def RNGS(seed: int = 0) -> nnx.Rngs:  # noqa: N802 - reads like the nnx.Rngs it returns
    return nnx.Rngs(jax.random.key(seed, impl="rbg"))


@pytest.mark.parametrize("fan_in", [16, 256, 1024])
def test_dense_scale_lives_in_the_forward_pass(fan_in):
    layer = EqualizedDense(fan_in, 512, rngs=RNGS())
    assert abs(float(jnp.std(layer.kernel[...])) - 1.0) < 0.05  # stored: unit std, any fan_in
    x = jax.random.normal(jax.random.key(1), (256, fan_in))
    assert abs(float(jnp.std(layer(x))) - 1.0) < 0.1  # forward: unit std out


@pytest.mark.parametrize("in_ch,k", [(4, 3), (64, 3), (32, 1)])
def test_conv_scale_lives_in_the_forward_pass(in_ch, k):
    layer = EqualizedConv(in_ch, 64, k, rngs=RNGS())
    assert abs(float(jnp.std(layer.kernel[...])) - 1.0) < 0.1
    x = jax.random.normal(jax.random.key(1), (8, 8, 8, in_ch))
    y = layer(x)
    assert y.shape == (8, 8, 8, 64)
    # Interior pixels see the full fan-in (the border sees zero padding).
    assert abs(float(jnp.std(y[:, 1:-1, 1:-1])) - 1.0) < 0.12


def test_lr_mul_scales_stored_weights_bias_and_gradient():
    x = jax.random.normal(jax.random.key(1), (4, 8))
    fast = EqualizedDense(8, 3, bias_init=1.0, rngs=RNGS())
    slow = EqualizedDense(8, 3, bias_init=1.0, lr_mul=0.01, rngs=RNGS())
    # Same init key: stored kernel is N(0,1)/lr_mul and the bias bias_init/lr_mul, so
    # both layers compute the same function.
    np.testing.assert_allclose(slow.kernel[...] * 0.01, fast.kernel[...], rtol=1e-5)
    np.testing.assert_allclose(slow.bias[...], 100.0, rtol=1e-6)
    np.testing.assert_allclose(slow(x), fast(x), rtol=1e-4, atol=1e-5)

    def grads(layer):
        return nnx.grad(lambda m: jnp.sum(m(x) ** 2))(layer)

    g_fast, g_slow = grads(fast), grads(slow)
    # d/d(stored) = lr_mul * d/d(effective): the effective weight moves lr_mul^2 as fast.
    np.testing.assert_allclose(g_slow.kernel[...], 0.01 * g_fast.kernel[...], rtol=1e-3, atol=1e-7)
    np.testing.assert_allclose(g_slow.bias[...], 0.01 * g_fast.bias[...], rtol=1e-3, atol=1e-7)


def test_conv_down_halves_and_matches_blur_then_strided_conv():
    x = jax.random.normal(jax.random.key(2), (2, 8, 8, 3))
    for k in (1, 3):
        layer = EqualizedConv(3, 5, k, down=True, rngs=RNGS())
        y = layer(x)
        assert y.shape == (2, 4, 4, 5)
    # A 1x1 down conv is downsample2x followed by a 1x1 channel mix.
    one = EqualizedConv(3, 5, 1, down=True, use_bias=False, rngs=RNGS())
    mix = one.kernel[...][0, 0] * one.weight_gain
    np.testing.assert_allclose(one(x), downsample2x(x) @ mix, rtol=1e-4, atol=1e-5)


def test_resampling_filters():
    const = jnp.full((1, 8, 8, 2), 3.0)
    # The filter sums to one: a constant stays constant away from the zero-padded border.
    np.testing.assert_allclose(blur(const)[:, 2:-2, 2:-2], 3.0, rtol=1e-6)
    up, down = upsample2x(const), downsample2x(const)
    assert up.shape == (1, 16, 16, 2) and down.shape == (1, 4, 4, 2)
    np.testing.assert_allclose(up[:, 2:-2, 2:-2], 3.0, rtol=1e-6)  # gain 4 restores the mean
    np.testing.assert_allclose(down[:, 1:-1, 1:-1], 3.0, rtol=1e-6)
    # Depthwise: channels do not mix.
    x = jnp.zeros((1, 6, 6, 2)).at[0, 3, 3, 0].set(1.0)
    assert float(jnp.abs(blur(x)[..., 1]).max()) == 0.0
    # The [1,3,3,1]/8 kernel in each direction: the response to a delta sums to 1, peak 9/64.
    np.testing.assert_allclose(blur(x)[..., 0].sum(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(blur(x)[..., 0].max(), 9 / 64, rtol=1e-6)
    with pytest.raises(ValueError, match="even"):
        downsample2x(jnp.zeros((1, 5, 5, 1)))


def test_lrelu_keeps_unit_second_moment_and_bad_args_raise():
    x = jax.random.normal(jax.random.key(3), (100_000,))
    # E[lrelu(x)^2] = 2 * (1 + 0.2^2) / 2 = 1.04 for x ~ N(0, 1): about unit.
    assert abs(float(jnp.mean(lrelu(x) ** 2)) - 1.04) < 0.03
    with pytest.raises(ValueError, match="odd"):
        EqualizedConv(3, 3, 2, rngs=RNGS())
    with pytest.raises(ValueError, match="lr_mul"):
        EqualizedDense(3, 3, lr_mul=0.0, rngs=RNGS())
