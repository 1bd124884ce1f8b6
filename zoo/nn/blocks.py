"""Convolutional building blocks of DDPM-style U-Nets (and VQGAN encoders/decoders).

All blocks take ``x: [B, H, W, C]`` (NHWC). Parameters are float32; convolutions
and matmuls run in ``dtype`` (e.g. bfloat16 on GPU). GroupNorm statistics and
normalisation are computed in float32 (flax promotes them) and the result is
cast to ``dtype``; softmax runs in float32 inside :mod:`zoo.nn.attention`.

Initialisation follows the DDPM reference (Ho et al. 2020, ``nn.default_init``):
``variance_scaling(1, "fan_avg", "uniform")`` weights, zero biases, and a zero
last layer on every residual branch (``init_scale=0``), so each residual block
and attention block is the identity at initialisation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.nn.attention import Impl, MultiHeadAttention
from zoo.nn.dropout import dropout

DEFAULT_INIT = nnx.initializers.variance_scaling(1.0, "fan_avg", "uniform")


def num_groups(channels: int, max_groups: int = 32) -> int:
    """The largest group count <= max_groups that divides channels (32 for C >= 32, C % 32 == 0)."""
    return max(g for g in range(1, min(max_groups, channels) + 1) if channels % g == 0)


def group_norm(channels: int, *, dtype=jnp.float32, rngs: nnx.Rngs) -> nnx.GroupNorm:
    """GroupNorm over ``num_groups(channels)`` groups, eps 1e-6 (DDPM), output in ``dtype``."""
    return nnx.GroupNorm(channels, num_groups(channels), epsilon=1e-6, dtype=dtype, rngs=rngs)


def conv(
    in_ch: int, out_ch: int, kernel: int = 3, *, stride: int = 1, zero_init=False, dtype, rngs
) -> nnx.Conv:
    """``kernel x kernel`` convolution with padding 1 for kernel 3 (same size at stride 1)."""
    return nnx.Conv(
        in_ch,
        out_ch,
        (kernel, kernel),
        strides=stride,
        padding=((kernel // 2, kernel // 2),) * 2,
        kernel_init=nnx.initializers.zeros if zero_init else DEFAULT_INIT,
        dtype=dtype,
        rngs=rngs,
    )


class ResBlock(nnx.Module):
    """DDPM residual block: x + conv(drop(act(norm(conv(act(norm(x))) + temb_proj(act(temb)))))).

    ``x: [B, H, W, in_ch]``, ``temb: [B, temb_dim]`` -> ``[B, H, W, out_ch]``. The
    shortcut is a 1x1 convolution when the channel count changes (DDPM's
    ``nin_shortcut``). With ``temb_dim=None`` the block has no time input.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int | None = None,
        *,
        temb_dim: int | None = None,
        dropout: float = 0.0,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        out_ch = out_ch or in_ch
        self.norm1 = group_norm(in_ch, dtype=dtype, rngs=rngs)
        self.conv1 = conv(in_ch, out_ch, dtype=dtype, rngs=rngs)
        self.temb_proj = (
            nnx.Linear(temb_dim, out_ch, kernel_init=DEFAULT_INIT, dtype=dtype, rngs=rngs)
            if temb_dim
            else None
        )
        self.norm2 = group_norm(out_ch, dtype=dtype, rngs=rngs)
        # Holds the rate and the train/eval switch; the mask is drawn per example from the
        # keys passed with each call (zoo.nn.dropout), so it does not depend on the layout.
        self.dropout = nnx.Dropout(dropout, rngs=None)
        self.conv2 = conv(out_ch, out_ch, zero_init=True, dtype=dtype, rngs=rngs)
        self.shortcut = conv(in_ch, out_ch, 1, dtype=dtype, rngs=rngs) if in_ch != out_ch else None

    def __call__(
        self, x: jax.Array, temb: jax.Array | None = None, *, dropout_key: jax.Array | None = None
    ) -> jax.Array:
        h = self.conv1(nnx.silu(self.norm1(x)))
        if self.temb_proj is not None:
            h = h + self.temb_proj(nnx.silu(temb))[:, None, None, :]
        h = nnx.silu(self.norm2(h))
        if self.dropout.rate > 0 and not self.dropout.deterministic:
            if dropout_key is None:
                raise ValueError(
                    "ResBlock has dropout > 0 and is in train mode: pass dropout_key, "
                    "or use nnx.view(model, deterministic=True) for evaluation."
                )
            h = dropout(h, self.dropout.rate, dropout_key)
        h = self.conv2(h)
        return (x if self.shortcut is None else self.shortcut(x)) + h


class Downsample(nnx.Module):
    """Stride-2 3x3 convolution: ``[B, H, W, C] -> [B, ceil(H/2), ceil(W/2), C]``.

    Padding is symmetric (1, 1), as in diffusers/ADM; the TF DDPM reference
    used "SAME" (0, 1) padding, which only shifts the sampling grid.
    """

    def __init__(self, channels: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.conv = conv(channels, channels, stride=2, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv(x)


class Upsample(nnx.Module):
    """Nearest-neighbour x2 then 3x3 convolution: ``[B, H, W, C] -> [B, 2H, 2W, C]``."""

    def __init__(self, channels: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.conv = conv(channels, channels, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        # repeat is exact nearest-neighbour and cheaper than jax.image.resize.
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        return self.conv(x)


class AttentionBlock(nnx.Module):
    """Self-attention over spatial positions with a residual: x + proj(attn(norm(x))).

    ``x: [B, H, W, C] -> [B, H, W, C]``; the H*W positions are the tokens. The
    output projection is zero-initialised, so the block starts as the identity.

    With ``context_dim``, the block also attends to a context sequence (text tokens), as in
    GLIDE (Nichol et al. 2022): the context ``[B, L, context_dim]`` is projected to ``C``
    channels and appended to the keys and values, so each position attends to the image and
    the text in one softmax; ``context_mask [B, L]`` (True = a real token) hides padding.
    """

    def __init__(
        self,
        channels: int,
        *,
        num_heads: int = 1,
        impl: Impl = "full",
        chunk_size: int = 64,
        context_dim: int | None = None,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.norm = group_norm(channels, dtype=dtype, rngs=rngs)
        self.attn = MultiHeadAttention(
            channels,
            num_heads=num_heads,
            impl=impl,
            chunk_size=chunk_size,
            zero_init_out=True,
            dtype=dtype,
            rngs=rngs,
        )
        self.context_proj = (
            nnx.Linear(context_dim, channels, kernel_init=DEFAULT_INIT, dtype=dtype, rngs=rngs)
            if context_dim
            else None
        )

    def __call__(
        self,
        x: jax.Array,
        context: jax.Array | None = None,
        context_mask: jax.Array | None = None,
    ) -> jax.Array:
        b, h, w, c = x.shape
        tokens = self.norm(x).reshape(b, h * w, c)
        if self.context_proj is None:
            if context is not None:
                raise ValueError("a context given to an AttentionBlock built without context_dim")
            return x + self.attn(tokens).reshape(b, h, w, c)
        if context is None:
            raise ValueError("this AttentionBlock attends to a context: pass context=[B, L, D]")
        keys = jnp.concatenate([tokens, self.context_proj(context).astype(tokens.dtype)], axis=1)
        mask = None
        if context_mask is not None:
            image_keys = jnp.ones((b, h * w), bool)
            mask = jnp.concatenate([image_keys, context_mask.astype(bool)], axis=1)
            mask = mask[:, None, None, :]  # [B, heads, queries, keys]
        return x + self.attn(tokens, keys, mask=mask).reshape(b, h, w, c)
