"""Equalised-learning-rate layers and the [1, 3, 3, 1] resampling filters of StyleGAN.

Equalised learning rate (Karras et al. 2018, ProGAN sec. 4.1): weights are
stored as ``N(0, 1) / lr_mul`` and multiplied at run time by
``lr_mul / sqrt(fan_in)`` (He's constant), so every layer's stored parameters
have the same scale and Adam's per-parameter step moves every layer at the same
relative speed. ``lr_mul`` < 1 (StyleGAN's mapping network uses 0.01) slows a
layer down: the gradient w.r.t. the stored weight is multiplied by ``lr_mul``
and its relative size by ``lr_mul**2``. Biases are stored as ``bias_init / lr_mul``
and multiplied by ``lr_mul``.

Resampling (StyleGAN2, Karras et al. 2020, sec. 2.2 and appendix B; filter from
Zhang 2019): a separable binomial low-pass filter ``[1, 3, 3, 1] / 8`` in each
direction, applied per channel (depthwise) before downsampling and after
upsampling, so that resampling does not alias. All functions take and return
NHWC arrays.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

_FILTER_1D = np.array([1.0, 3.0, 3.0, 1.0]) / 8.0
FILTER = np.outer(_FILTER_1D, _FILTER_1D)  # [4, 4], sums to 1
LRELU_GAIN = math.sqrt(2.0)


def lrelu(x: jax.Array, slope: float = 0.2, gain: float = LRELU_GAIN) -> jax.Array:
    """StyleGAN's activation: leaky ReLU (slope 0.2) times sqrt(2), which keeps unit variance."""
    return jax.nn.leaky_relu(x, slope) * gain


def blur(
    x: jax.Array, pad: tuple[int, int] = (2, 1), *, gain: float = 1.0, stride: int = 1
) -> jax.Array:
    """Depthwise [1, 3, 3, 1] x [1, 3, 3, 1] / 64 filter times ``gain``, subsampled by ``stride``.

    ``x: [B, H, W, C]``. ``pad = (before, after)`` pads H and W with zeros (negative
    values crop) before the 4x4 filter, so the output is
    ``[B, (H + before + after - 4) // stride + 1, ...]``; the default ``(2, 1)``
    keeps the size at stride 1. The filter is symmetric, so convolution and
    correlation agree.
    """
    p0, p1 = pad
    x = jax.lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (p0, p1, 0), (p0, p1, 0), (0, 0, 0)))
    # Separable and written as four shifted, weighted slices per axis: elementwise work
    # that XLA fuses, where a depthwise (feature_group_count = C) conv is slow on CPU
    # and GPU alike.
    taps = _FILTER_1D * math.sqrt(gain)

    def along(y, axis):
        n = (y.shape[axis] - len(taps)) // stride + 1
        span = (n - 1) * stride + 1
        return sum(
            float(t) * jax.lax.slice_in_dim(y, i, i + span, stride, axis)
            for i, t in enumerate(taps)
        )

    return along(along(x, 1), 2)


def upsample2x(x: jax.Array) -> jax.Array:
    """``[B, H, W, C] -> [B, 2H, 2W, C]``: zero-insertion then the blur filter with gain 4.

    Gain 4 (= up**2) restores the mean lost to the inserted zeros, so a constant
    image stays constant away from the border (StyleGAN2's ``upsample2d``).
    """
    b, h, w, c = x.shape
    up = jnp.zeros((b, h, 2, w, 2, c), x.dtype).at[:, :, 0, :, 0, :].set(x)
    up = up.reshape(b, 2 * h, 2 * w, c)  # sample (i, j) lands at (2i, 2j)
    return blur(up, (2, 1), gain=4.0)


def downsample2x(x: jax.Array) -> jax.Array:
    """``[B, H, W, C] -> [B, H/2, W/2, C]``: the blur filter evaluated at stride 2 (H, W even)."""
    if x.shape[1] % 2 or x.shape[2] % 2:
        raise ValueError(f"downsample2x needs even H and W, got {x.shape[1:3]}")
    return blur(x, (1, 1), stride=2)


class EqualizedDense(nnx.Module):
    """Dense layer with equalised learning rate: ``[..., in_features] -> [..., out_features]``.

    ``y = x @ (kernel * lr_mul / sqrt(in_features)) + bias * lr_mul`` with the stored
    ``kernel ~ N(0, 1) / lr_mul`` and ``bias = bias_init / lr_mul``. No activation.
    Computes in ``dtype`` (input and weights cast to it; the parameters stay float32).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        use_bias: bool = True,
        bias_init: float = 0.0,
        lr_mul: float = 1.0,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        if in_features < 1 or out_features < 1:
            raise ValueError(f"features must be >= 1, got {in_features} -> {out_features}")
        if lr_mul <= 0:
            raise ValueError(f"lr_mul must be > 0, got {lr_mul}")
        self.in_features, self.out_features = in_features, out_features
        self.lr_mul, self.dtype = lr_mul, dtype
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.kernel = nnx.Param(
            jax.random.normal(rngs.params(), (in_features, out_features)) / lr_mul
        )
        self.bias = (
            nnx.Param(jnp.full((out_features,), bias_init / lr_mul, jnp.float32))
            if use_bias
            else None
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(self.dtype)
        y = x @ (self.kernel[...] * self.weight_gain).astype(x.dtype)
        if self.bias is not None:
            y = y + (self.bias[...] * self.lr_mul).astype(y.dtype)
        return y


class EqualizedConv(nnx.Module):
    """2-D convolution with equalised learning rate: ``[B, H, W, in] -> [B, H', W', out]``.

    SAME padding (``kernel_size`` must be odd); ``H' = H``, or ``H / 2`` with
    ``down=True``, which blurs with the [1, 3, 3, 1] filter and then convolves at
    stride 2 (StyleGAN2's discriminator; H, W must be even). The stored kernel
    ``[k, k, in, out] ~ N(0, 1) / lr_mul`` is multiplied by
    ``lr_mul / sqrt(in * k * k)``; the bias starts at zero. No activation.
    Computes in ``dtype`` (input and weights cast to it; the parameters stay float32).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        use_bias: bool = True,
        lr_mul: float = 1.0,
        down: bool = False,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 1, got {kernel_size}")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"channels must be >= 1, got {in_channels} -> {out_channels}")
        if lr_mul <= 0:
            raise ValueError(f"lr_mul must be > 0, got {lr_mul}")
        self.kernel_size, self.down, self.lr_mul, self.dtype = kernel_size, down, lr_mul, dtype
        self.weight_gain = lr_mul / math.sqrt(in_channels * kernel_size**2)
        shape = (kernel_size, kernel_size, in_channels, out_channels)
        self.kernel = nnx.Param(jax.random.normal(rngs.params(), shape) / lr_mul)
        self.bias = nnx.Param(jnp.zeros((out_channels,))) if use_bias else None

    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        x = x.astype(self.dtype)
        w = (self.kernel[...] * self.weight_gain).astype(x.dtype)
        if self.down:
            if x.shape[1] % 2 or x.shape[2] % 2:
                raise ValueError(f"EqualizedConv(down=True) needs even H and W, got {x.shape}")
            # StyleGAN2's conv2d_resample: pad by k//2 + 1 each side, blur (H + 2k//2 - 1),
            # then a VALID stride-2 conv gives exactly H / 2.
            x = blur(x, (k // 2 + 1, k // 2 + 1))
            strides, padding = (2, 2), "VALID"
        else:
            strides, padding = (1, 1), ((k // 2, k // 2), (k // 2, k // 2))
        y = jax.lax.conv_general_dilated(
            x, w, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        if self.bias is not None:
            y = y + (self.bias[...] * self.lr_mul).astype(y.dtype)
        return y
