"""Stride-2 transposed convolutions computed as their four sub-pixel phases.

A transposed (fractionally-strided) conv with stride 2 is a conv over the input
with a zero inserted between samples. Run that way (``lhs_dilation=2``), XLA
multiplies by the inserted zeros, and its gradient is slow: StyleGAN2's
upsampling conv took ~60x as long forward + backward as the same conv without
upsampling on an H200, and ``lax.conv_transpose``'s kernel gradient for one
DCGAN layer (batch 64, 16x16x256 -> 32x32x128, 5x5) takes 11 s against 0.5 s
for a plain conv on 2 CPU cores.
Each output parity (row, column) only meets every other kernel tap, so the same
result is one plain conv with a ``ceil(k/2) x ceil(k/2)`` window and 4x the
output channels, followed by a pixel shuffle.

Layout: ``x: [B, H, W, I]`` (NHWC), kernels ``[k, k, I, O]`` (HWIO), as
``jax.lax.conv_general_dilated`` / ``conv_transpose`` with those dimension numbers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

_DIMS = ("NHWC", "HWIO", "NHWC")
_LECUN_NORMAL = nnx.initializers.lecun_normal()  # nnx.ConvTranspose's defaults
_ZEROS = nnx.initializers.zeros_init()


def zero_insert_conv(x: jax.Array, kernel: jax.Array, groups: int = 1) -> jax.Array:
    """Full correlation of the zero-inserted ``x`` (sample i at 2i) with a ``k x k`` kernel.

    Equals ``conv_general_dilated(x, kernel, (1, 1), padding=k - 1, lhs_dilation=(2, 2),
    feature_group_count=groups)``: ``[B, H, W, I] -> [B, 2H + k - 2, 2W + k - 2, O]``.
    An output at even (odd) position meets only the kernel's even (odd) taps, over the
    inputs p - h .. p (h = (k - 1) / 2 for odd k), so it is computed as one plain conv
    per phase, stacked as output channels.
    """
    k, k2, ci, go = kernel.shape
    if k != k2:
        raise ValueError(f"kernel must be square, got {kernel.shape}")
    if go % groups:
        raise ValueError(f"{go} output channels do not split into {groups} groups")
    n_h, n_w = 2 * x.shape[1] + k - 2, 2 * x.shape[2] + k - 2
    if k % 2 == 0:
        # A leading zero tap makes k odd and shifts nothing: the result gains one trailing
        # row and column, cropped below.
        kernel = jnp.pad(kernel, ((1, 0), (1, 0), (0, 0), (0, 0)))
        k += 1
    h = (k - 1) // 2
    co = go // groups
    even = kernel[0::2]  # taps 0, 2, ..., k - 1: h + 1 of them
    odd = jnp.concatenate([jnp.zeros_like(kernel[:1]), kernel[1::2]])  # 0, taps 1, 3, ...
    rows = jnp.stack([even, odd])  # [2 (row phase), h + 1, k, I, G*O]
    even_c, odd_c = rows[:, :, 0::2], rows[:, :, 1::2]
    odd_c = jnp.concatenate([jnp.zeros_like(even_c[:, :, :1]), odd_c], axis=2)
    phases = jnp.stack([even_c, odd_c], axis=1)  # [2 (row), 2 (col), h+1, h+1, I, G*O]
    phases = phases.reshape(2, 2, h + 1, h + 1, ci, groups, co)
    # Output channels ordered (group, row phase, col phase, channel) so groups stay contiguous.
    w = phases.transpose(2, 3, 4, 5, 0, 1, 6).reshape(h + 1, h + 1, ci, groups * 4 * co)
    # Pad explicitly and run a VALID conv: XLA:CPU computes the kernel gradient of a conv
    # whose padding is neither zero nor (k - 1) / 2 per side ~40x slower (17 s against
    # 0.4 s for one GigaGAN layer on 2 cores).
    xp = jnp.pad(x, ((0, 0), (h, h), (h, h), (0, 0)))
    y = jax.lax.conv_general_dilated(
        xp, w, (1, 1), "VALID", dimension_numbers=_DIMS, feature_group_count=groups
    )  # [B, H + h, W + h, G * 4 * O]; window position p covers inputs p - h .. p
    b, hh, ww, _ = y.shape
    y = y.reshape(b, hh, ww, groups, 2, 2, co).transpose(0, 1, 4, 2, 5, 3, 6)
    y = y.reshape(b, 2 * hh, 2 * ww, groups * co)  # output 2p + r at row phase r
    return y[:, :n_h, :n_w]


def conv_transpose2x(x: jax.Array, kernel: jax.Array, padding: str = "SAME") -> jax.Array:
    """``jax.lax.conv_transpose(x, kernel, (2, 2), padding)`` (NHWC/HWIO), by sub-pixel phases.

    ``padding="SAME"`` gives ``[B, 2H, 2W, O]``, ``"VALID"`` ``[B, 2H + k - 2, ...]``;
    ``k >= 2``.
    """
    if kernel.shape[0] < 2:
        raise ValueError(f"kernel must be at least 2x2, got {kernel.shape}")
    y = zero_insert_conv(x, kernel)
    if padding == "VALID":
        return y
    if padding != "SAME":
        raise ValueError(f"padding must be 'SAME' or 'VALID', got {padding!r}")
    a = kernel.shape[0] // 2 - 1  # where lax.conv_transpose's SAME window starts
    return y[:, a : a + 2 * x.shape[1], a : a + 2 * x.shape[2]]


class ConvTranspose2x(nnx.Module):
    """Stride-2 transposed conv layer: ``[B, H, W, I] -> [B, 2H, 2W, O]`` (SAME padding).

    The same parameters (``kernel [k, k, I, O]``, optional ``bias [O]``) and outputs as
    ``nnx.ConvTranspose(I, O, (k, k), strides=(2, 2), padding="SAME")``, computed by
    :func:`conv_transpose2x`.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int,
        *,
        use_bias: bool = True,
        kernel_init=_LECUN_NORMAL,
        bias_init=_ZEROS,
        rngs: nnx.Rngs,
    ):
        if kernel_size < 2:
            raise ValueError(f"kernel_size must be >= 2, got {kernel_size}")
        self.in_features, self.out_features = in_features, out_features
        self.dtype = jnp.float32  # compute dtype (zoo.engine.precision)
        shape = (kernel_size, kernel_size, in_features, out_features)
        self.kernel = nnx.Param(kernel_init(rngs.params(), shape))
        self.bias = nnx.Param(bias_init(rngs.params(), (out_features,))) if use_bias else None

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(self.dtype)
        y = conv_transpose2x(x, self.kernel[...].astype(x.dtype))
        return y if self.bias is None else y + self.bias[...].astype(x.dtype)
