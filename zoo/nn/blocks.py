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


def num_groups(channels: int, max_groups: int = 32, min_group_size: int = 1) -> int:
    """The largest group count <= max_groups that divides channels into groups of at least
    ``min_group_size`` channels (32 for C >= 32 * min_group_size, C % 32 == 0; 1 if none).

    Why a minimum: a residual block adds the timestep embedding as a per-channel constant
    just before a GroupNorm; a group of one channel normalises that constant away, so a
    narrow U-Net (C <= 32 with min_group_size 1) never sees t or a pooled condition.
    """
    fits = [
        g
        for g in range(1, min(max_groups, channels) + 1)
        if channels % g == 0 and channels // g >= min_group_size
    ]
    return max(fits, default=1)


def group_norm(
    channels: int,
    *,
    eps: float = 1e-6,
    min_group_size: int = 1,
    dtype=jnp.float32,
    rngs: nnx.Rngs,
) -> nnx.GroupNorm:
    """GroupNorm over ``num_groups(channels, min_group_size=min_group_size)`` groups, output
    in ``dtype``.

    ``eps`` is added to the variance: 1e-6 in DDPM and in the VAEs of VQGAN / latent
    diffusion, 1e-5 (PyTorch's default) in Stable Diffusion's U-Net. ``min_group_size``:
    1 keeps the 32 groups of the papers' wide models down to one channel per group; 4
    (the diffusion configs) keeps a conditioning bias alive in narrow ones (:func:`num_groups`).
    """
    groups = num_groups(channels, min_group_size=min_group_size)
    return nnx.GroupNorm(channels, groups, epsilon=eps, dtype=dtype, rngs=rngs)


def conv(
    in_ch: int,
    out_ch: int,
    kernel: int = 3,
    *,
    stride: int = 1,
    zero_init=False,
    padding=None,
    dtype,
    rngs,
) -> nnx.Conv:
    """``kernel x kernel`` convolution with padding 1 for kernel 3 (same size at stride 1);
    ``padding`` ("VALID", or nnx.Conv's per-side pairs) overrides that."""
    return nnx.Conv(
        in_ch,
        out_ch,
        (kernel, kernel),
        strides=stride,
        padding=((kernel // 2, kernel // 2),) * 2 if padding is None else padding,
        kernel_init=nnx.initializers.zeros if zero_init else DEFAULT_INIT,
        dtype=dtype,
        rngs=rngs,
    )


class ResBlock(nnx.Module):
    """DDPM residual block: x + conv(drop(act(norm(conv(act(norm(x))) + temb_proj(act(temb)))))).

    ``x: [B, H, W, in_ch]``, ``temb: [B, temb_dim]`` -> ``[B, H, W, out_ch]``. The
    shortcut is a 1x1 convolution when the channel count changes (DDPM's
    ``nin_shortcut``). With ``temb_dim=None`` the block has no time input. ``norm_eps``:
    the GroupNorms' epsilon (:func:`group_norm`).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int | None = None,
        *,
        temb_dim: int | None = None,
        dropout: float = 0.0,
        norm_eps: float = 1e-6,
        min_group_size: int = 1,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        out_ch = out_ch or in_ch
        norm = dict(eps=norm_eps, min_group_size=min_group_size, dtype=dtype, rngs=rngs)
        self.norm1 = group_norm(in_ch, **norm)
        self.conv1 = conv(in_ch, out_ch, dtype=dtype, rngs=rngs)
        self.temb_proj = (
            nnx.Linear(temb_dim, out_ch, kernel_init=DEFAULT_INIT, dtype=dtype, rngs=rngs)
            if temb_dim
            else None
        )
        self.norm2 = group_norm(out_ch, **norm)
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

    ``pad``: zeros before and after each spatial axis. The default (1, 1) is symmetric, as
    in diffusers' U-Nets and ADM; (0, 1) is the TF DDPM reference's "SAME" and the encoders
    of taming-transformers and latent diffusion (Stable Diffusion's VAE): it shifts the
    sampling grid by half a pixel, so weights trained with one are off under the other.
    """

    def __init__(
        self, channels: int, *, pad: tuple[int, int] = (1, 1), dtype=jnp.float32, rngs: nnx.Rngs
    ):
        self.pad = tuple(int(p) for p in pad)
        # Uneven padding: explicit zeros, then a VALID conv. XLA:CPU computes the kernel
        # gradient of a conv with uneven padding 20-40x slower (DESIGN.md, "Parallelism").
        padding = None if self.pad == (1, 1) else "VALID"
        self.conv = conv(channels, channels, stride=2, padding=padding, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.pad != (1, 1):
            x = jnp.pad(x, ((0, 0), self.pad, self.pad, (0, 0)))
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
        norm_eps: float = 1e-6,
        min_group_size: int = 1,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.norm = group_norm(
            channels, eps=norm_eps, min_group_size=min_group_size, dtype=dtype, rngs=rngs
        )
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
