"""Sub-pixel (phase) form of stride-2 transposed convolutions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from zoo.nn.subpixel import ConvTranspose2x, conv_transpose2x, zero_insert_conv

DIMS = ("NHWC", "HWIO", "NHWC")


def normal(seed, shape):
    return jax.random.normal(jax.random.key(seed), shape)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("groups", [1, 2])
def test_zero_insert_conv_equals_the_input_dilated_conv(k, groups):
    x, w = normal(0, (2, 5, 4, 6)), normal(1, (k, k, 6 // groups, 4))
    expected = jax.lax.conv_general_dilated(
        x, w, (1, 1), ((k - 1, k - 1),) * 2, lhs_dilation=(2, 2), dimension_numbers=DIMS,
        feature_group_count=groups,
    )  # fmt: skip
    got = zero_insert_conv(x, w, groups)
    assert got.shape == expected.shape == (2, 2 * 5 + k - 2, 2 * 4 + k - 2, 4)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k", [2, 3, 4, 5, 6])
@pytest.mark.parametrize("padding", ["SAME", "VALID"])
def test_conv_transpose2x_equals_lax_conv_transpose_with_gradients(k, padding):
    x, w = normal(0, (2, 4, 3, 5)), normal(1, (k, k, 5, 3))

    def loss(fn, x, w):
        return jnp.sum(jnp.sin(fn(x, w)))

    ref = lambda x, w: jax.lax.conv_transpose(x, w, (2, 2), padding, dimension_numbers=DIMS)  # noqa: E731
    ours = lambda x, w: conv_transpose2x(x, w, padding)  # noqa: E731
    np.testing.assert_allclose(ours(x, w), ref(x, w), rtol=1e-5, atol=1e-5)
    for a, b in zip(
        jax.grad(loss, (1, 2))(ours, x, w), jax.grad(loss, (1, 2))(ref, x, w), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_module_matches_nnx_conv_transpose_and_rejects_bad_input():
    layer = ConvTranspose2x(3, 4, 5, rngs=nnx.Rngs(0))
    layer.bias[...] = normal(2, (4,))
    ref = nnx.ConvTranspose(3, 4, (5, 5), strides=(2, 2), padding="SAME", rngs=nnx.Rngs(1))
    ref.kernel[...], ref.bias[...] = layer.kernel[...], layer.bias[...]
    x = normal(3, (2, 4, 4, 3))
    assert layer(x).shape == (2, 8, 8, 4)
    np.testing.assert_allclose(layer(x), ref(x), rtol=1e-5, atol=1e-5)
    assert ConvTranspose2x(3, 4, 4, use_bias=False, rngs=nnx.Rngs(0)).bias is None
    with pytest.raises(ValueError, match="kernel_size"):
        ConvTranspose2x(3, 4, 1, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="padding"):
        conv_transpose2x(x, layer.kernel[...], "FULL")
    with pytest.raises(ValueError, match="groups"):
        zero_insert_conv(x, jnp.ones((3, 3, 3, 5)), groups=2)
