"""StyleGAN2 modulated convolution (eq. 1-3) and GigaGAN's adaptive kernel selection."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from zoo.nn.equalized import upsample2x
from zoo.nn.modulated import ModulatedConv, modulated_conv, modulated_conv_bank, select_kernel


def RNGS(seed: int = 0) -> nnx.Rngs:  # noqa: N802 - reads like the nnx.Rngs it returns
    return nnx.Rngs(jax.random.key(seed, impl="rbg"))


def normal(seed, shape):
    return jax.random.normal(jax.random.key(seed), shape)


def plain_conv(x, kernel):
    """Reference SAME conv of one batch with one HWIO kernel."""
    k = kernel.shape[0]
    return jax.lax.conv_general_dilated(
        x, kernel, (1, 1), ((k // 2, k // 2),) * 2, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


@pytest.mark.parametrize("style_scale", [0.05, 1.0, 20.0])
@pytest.mark.parametrize("per_sample", [False, True])
def test_demodulation_restores_unit_variance(style_scale, per_sample):
    x = normal(0, (4, 12, 12, 64))
    weight = normal(1, (4, 3, 3, 64, 32) if per_sample else (3, 3, 64, 32))
    styles = style_scale * jnp.exp(normal(2, (4, 64)))  # very uneven per-channel styles
    y = modulated_conv(x, weight, styles)
    std = jnp.std(y[:, 1:-1, 1:-1], axis=(1, 2))  # [B, O] per feature map, interior
    assert abs(float(jnp.mean(std)) - 1.0) < 0.1
    assert float(jnp.max(jnp.abs(std - 1.0))) < 0.35


def test_without_demodulation_output_scales_with_style():
    x, weight, styles = normal(0, (2, 6, 6, 8)), normal(1, (3, 3, 8, 5)), normal(2, (2, 8))
    y1 = modulated_conv(x, weight, styles, demodulate=False)
    y3 = modulated_conv(x, weight, 3.0 * styles, demodulate=False)
    np.testing.assert_allclose(y3, 3.0 * y1, rtol=1e-4, atol=1e-5)
    # With demodulation a global style scale cancels.
    np.testing.assert_allclose(
        modulated_conv(x, weight, 3.0 * styles), modulated_conv(x, weight, styles), atol=1e-4
    )


@pytest.mark.parametrize("demodulate", [False, True])
def test_grouped_path_equals_a_loop_of_plain_convs(demodulate):
    b = 3
    x, weight, styles = normal(0, (b, 7, 5, 4)), normal(1, (b, 3, 3, 4, 6)), normal(2, (b, 4))
    y = modulated_conv(x, weight, styles, demodulate=demodulate)
    assert y.shape == (b, 7, 5, 6)
    for i in range(b):
        w = weight[i] * styles[i][None, None, :, None]  # eq. 1
        if demodulate:
            w = w / jnp.sqrt(jnp.sum(w**2, axis=(0, 1, 2)) + 1e-8)  # eq. 3
        np.testing.assert_allclose(y[i : i + 1], plain_conv(x[i : i + 1], w), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("up", [False, True])
def test_shared_weight_trick_equals_per_sample_path(up):
    x, weight, styles = normal(0, (2, 4, 4, 3)), normal(1, (3, 3, 3, 5)), normal(2, (2, 3))
    shared = modulated_conv(x, weight, styles, up=up)
    grouped = modulated_conv(x, jnp.broadcast_to(weight, (2, *weight.shape)), styles, up=up)
    assert shared.shape == ((2, 8, 8, 5) if up else (2, 4, 4, 5))
    np.testing.assert_allclose(shared, grouped, rtol=1e-4, atol=1e-4)


def test_upsampling_with_a_delta_kernel_is_upsample2x():
    x = normal(0, (2, 4, 4, 3))
    delta = jnp.zeros((3, 3, 3, 3)).at[1, 1].set(jnp.eye(3))
    y = modulated_conv(x, delta, jnp.ones((2, 3)), demodulate=False, up=True)
    np.testing.assert_allclose(y, upsample2x(x), rtol=1e-5, atol=1e-6)


def test_select_kernel_is_a_softmax_mixture():
    bank = normal(0, (3, 3, 3, 2, 4))
    onehot = 1e4 * jax.nn.one_hot(jnp.array([2, 0]), 3)
    np.testing.assert_allclose(select_kernel(bank, onehot), bank[jnp.array([2, 0])], atol=1e-6)
    mixed = select_kernel(bank, jnp.zeros((1, 3)))  # uniform logits -> the mean kernel
    np.testing.assert_allclose(mixed[0], bank.mean(0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("up", [False, True])
@pytest.mark.parametrize("demodulate", [True, False])
def test_kernel_bank_path_equals_the_per_sample_kernel_conv(up, demodulate):
    # Soft (not one-hot) selection: conv with each sample's mixed kernel vs mixing N convs.
    bank, logits = normal(0, (3, 3, 3, 4, 5)), 2.0 * normal(1, (2, 3))
    x, styles = normal(2, (2, 6, 6, 4)), 1.0 + 0.3 * normal(3, (2, 4))
    direct = modulated_conv(x, select_kernel(bank, logits), styles, demodulate=demodulate, up=up)
    fast = modulated_conv_bank(x, bank, logits, styles, demodulate=demodulate, up=up)
    np.testing.assert_allclose(fast, direct, rtol=1e-4, atol=1e-4)

    def loss(fn, bank, logits):
        return jnp.sum(jnp.sin(fn(bank, logits)))

    g_direct = jax.grad(loss, (1, 2))(
        lambda b, lg: modulated_conv(x, select_kernel(b, lg), styles, demodulate=demodulate, up=up),
        bank,
        logits,
    )
    g_fast = jax.grad(loss, (1, 2))(
        lambda b, lg: modulated_conv_bank(x, b, lg, styles, demodulate=demodulate, up=up),
        bank,
        logits,
    )
    for a, b in zip(g_fast, g_direct, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="logits"):
        modulated_conv_bank(x, bank, logits[:, :2], styles)


def test_adaptive_kernel_selection_reduces_to_a_plain_modulated_conv():
    layer = ModulatedConv(4, 5, 3, 6, num_kernels=3, rngs=RNGS())
    # Force one-hot selection: zero selection weights, a bias that picks kernel 1.
    layer.kernel_select.kernel[...] = jnp.zeros_like(layer.kernel_select.kernel[...])
    layer.kernel_select.bias[...] = jnp.array([0.0, 1e4, 0.0])
    x, w = normal(0, (2, 6, 6, 4)), normal(1, (2, 6))
    kernel = layer.weight[...][1] * layer.weight_gain
    expected = modulated_conv(x, kernel, layer.affine(w))
    np.testing.assert_allclose(layer(x, w), expected, rtol=1e-4, atol=1e-4)
    # Unit styles (zero affine weights, bias 1) and no demodulation: a plain convolution.
    plain = ModulatedConv(4, 5, 3, 6, num_kernels=3, demodulate=False, rngs=RNGS())
    plain.kernel_select.kernel[...] = jnp.zeros_like(plain.kernel_select.kernel[...])
    plain.kernel_select.bias[...] = jnp.array([1e4, 0.0, 0.0])
    plain.affine.kernel[...] = jnp.zeros_like(plain.affine.kernel[...])
    np.testing.assert_allclose(
        plain(x, w), plain_conv(x, plain.weight[...][0] * plain.weight_gain), rtol=1e-4, atol=1e-4
    )


def test_module_shapes_init_and_errors():
    layer = ModulatedConv(4, 6, 3, 8, up=True, rngs=RNGS())
    assert layer(jnp.ones((2, 5, 5, 4)), jnp.ones((2, 8))).shape == (2, 10, 10, 6)
    np.testing.assert_allclose(layer.affine.bias[...], 1.0)  # styles start near 1
    assert layer.weight[...].shape == (3, 3, 4, 6) and layer.kernel_select is None
    with pytest.raises(ValueError, match="odd"):
        ModulatedConv(4, 6, 2, 8, rngs=RNGS())
    with pytest.raises(ValueError, match="num_kernels"):
        ModulatedConv(4, 6, 3, 8, num_kernels=0, rngs=RNGS())
    with pytest.raises(ValueError, match="input channels"):
        modulated_conv(jnp.ones((1, 4, 4, 3)), jnp.ones((3, 3, 2, 2)), jnp.ones((1, 3)))
    with pytest.raises(ValueError, match="styles"):
        modulated_conv(jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 2, 2)), jnp.ones((2, 2)))
