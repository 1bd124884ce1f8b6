"""Parts of GigaGAN (Kang et al. 2023) that only GigaGAN needs: the image pyramid, the
text-conditioned style mapping, per-layer noise and the attention block interleaved with the
convolutions.

Every weight is an equalised-learning-rate layer (``zoo.nn.equalized``): the paper (Sec. 3.2)
found attention in a StyleGAN generator trains stably only when its layers follow the same
equalised learning rate and unit-normal initialisation as the convolutions, which is why this
file does not use ``zoo.nn.attention.MultiHeadAttention`` (``nnx.Linear`` weights at their
natural scale would move ~10x faster under StyleGAN's Adam learning rate).
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.gan.noise import noise_images
from zoo.nn.attention import attention, query_key_scores
from zoo.nn.equalized import EqualizedDense, lrelu


def image_pyramid(images: jax.Array, num_scales: int) -> list[jax.Array]:
    """``images: [B, H, W, C]`` -> list of ``num_scales`` images, low to high, the last ``images``.

    Scale i has side ``H / 2**(num_scales - 1 - i)``, made by averaging 2^k x 2^k boxes (area
    downsampling), so real images have the structure of the generator's output.
    """
    if not isinstance(num_scales, numbers.Integral) or num_scales < 1:
        raise ValueError(f"num_scales must be a positive int, got {num_scales!r}")
    if images.ndim != 4:
        raise ValueError(f"images must be [B, H, W, C], got shape {images.shape}")
    b, h, w, c = images.shape
    f = 2 ** (num_scales - 1)
    if h % f or w % f:
        raise ValueError(f"{num_scales} scales need H and W divisible by {f}, got {h}x{w}")
    out = []
    for k in reversed(range(num_scales)):
        s = 2**k
        out.append(images.reshape(b, h // s, s, w // s, s, c).mean(axis=(2, 4)))
    return out


def channel_width(res: int, base: int, cap: int) -> int:
    """StyleGAN's width rule: ``min(channel_base // res, channel_max)``."""
    return max(1, min(base // res, cap))


def check_image_size(image_size) -> int:
    """``image_size`` as an int; ValueError unless it is a power of two >= 8."""
    if not isinstance(image_size, numbers.Integral) or image_size < 8:
        raise ValueError(f"GigaGAN needs image_size >= 8, got {image_size!r}")
    if image_size & (image_size - 1):
        raise ValueError(f"GigaGAN needs a power-of-two image_size, got {image_size}")
    return int(image_size)


def caption_tokens(cond: dict | None, batch: int) -> jax.Array:
    """``cond["tokens"]`` ``[B, L]`` int32; None (or no "tokens") is the empty caption."""
    if cond is None or "tokens" not in cond:
        return jnp.zeros((batch, 1), jnp.int32)  # all padding: t_global = 0, no local tokens
    tokens = jnp.asarray(cond["tokens"])
    if tokens.ndim != 2 or tokens.shape[0] != batch:
        raise ValueError(f"cond['tokens'] must be [B={batch}, L], got shape {tokens.shape}")
    return tokens


def normalize_2nd_moment(x: jax.Array, eps: float = 1e-8) -> jax.Array:
    """``x: [..., D]`` scaled to unit root-mean-square over the last axis (StyleGAN)."""
    return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + eps)


class StyleMapping(nnx.Module):
    """``w = M(z, t_global)`` (Sec. 3.3): ``z: [B, z_dim]``, ``t: [B, text_dim]`` -> ``[B, w_dim]``.

    As in StyleGAN2-ADA's conditional mapping, the text vector is first embedded to ``w_dim``;
    z and the embedding are each normalised to unit second moment (so neither dominates by
    scale), concatenated, and passed through ``num_layers`` equalised dense layers with leaky
    ReLU; ``lr_mul`` (StyleGAN: 0.01) slows the mapping down relative to synthesis.
    """

    def __init__(
        self,
        z_dim: int,
        text_dim: int,
        w_dim: int,
        num_layers: int,
        *,
        lr_mul: float = 0.01,
        rngs: nnx.Rngs,
    ):
        if num_layers < 1:
            raise ValueError(f"mapping num_layers must be >= 1, got {num_layers}")
        self.embed = EqualizedDense(text_dim, w_dim, rngs=rngs)
        dims = [z_dim + w_dim] + [w_dim] * num_layers
        self.layers = nnx.List(
            [
                EqualizedDense(a, b, lr_mul=lr_mul, rngs=rngs)
                for a, b in zip(dims[:-1], dims[1:], strict=True)
            ]
        )

    def __call__(self, z: jax.Array, t_global: jax.Array) -> jax.Array:
        x = jnp.concatenate(
            [normalize_2nd_moment(z), normalize_2nd_moment(self.embed(t_global))], axis=-1
        )
        for layer in self.layers:
            x = lrelu(layer(x))
        return x


class NoiseInjection(nnx.Module):
    """StyleGAN's per-pixel noise: ``x + strength * n``, ``n ~ N(0, 1)`` of shape ``[B, H, W, 1]``.

    ``strength`` is a learned scalar that starts at 0 (StyleGAN2), so a fresh generator ignores
    the noise. ``keys``: ``[B]`` per-sample keys, None adds nothing (deterministic output);
    sample b's noise comes from ``fold_in(keys[b], index)`` (:mod:`zoo.gan.noise`).
    """

    def __init__(self):
        self.strength = nnx.Param(jnp.zeros(()))
        self.dtype = jnp.float32  # compute dtype (zoo.engine.precision)

    def __call__(self, x: jax.Array, keys: jax.Array | None, index: int = 0) -> jax.Array:
        x = x.astype(self.dtype)
        if keys is None:
            return x
        noise = noise_images(keys, index, (*x.shape[1:3], 1), x.dtype)
        return x + self.strength[...].astype(x.dtype) * noise


def _heads(t: jax.Array, num_heads: int) -> jax.Array:
    """``[B, L, C] -> [B, L, heads, C / heads]``."""
    return t.reshape(t.shape[:2] + (num_heads, -1))


class L2SelfAttention(nnx.Module):
    """Self-attention over tokens with L2-distance logits: ``[B, N, C] -> [B, N, C]``.

    GigaGAN (Sec. 3.2) takes from ViTGAN (Lee et al. 2022) the Lipschitz-friendly attention
    ``softmax(-||q_i - k_j||^2 / sqrt(d))`` with tied query and key projections, in place of
    the dot product, to keep a large generator stable.
    """

    def __init__(self, channels: int, num_heads: int, *, rngs: nnx.Rngs):
        self.qk = EqualizedDense(channels, channels, rngs=rngs)  # tied W_q = W_k (ViTGAN)
        self.value = EqualizedDense(channels, channels, rngs=rngs)
        self.out = EqualizedDense(channels, channels, rngs=rngs)
        self.num_heads = num_heads

    def __call__(self, x: jax.Array) -> jax.Array:
        q = _heads(self.qk(x), self.num_heads)  # [B, N, h, d]; keys are the same vectors
        v = _heads(self.value(x), self.num_heads)
        sq = jnp.sum(jnp.square(q.astype(jnp.float32)), axis=-1)  # [B, N, h]
        dot = query_key_scores(q, q)
        # ||q_i - q_j||^2 = |q_i|^2 + |q_j|^2 - 2 q_i.q_j; the |q_i|^2 term is constant over j
        # and cancels in the softmax, so it is left out.
        logits = (2.0 * dot - sq.transpose(0, 2, 1)[:, :, None, :]) * q.shape[-1] ** -0.5
        p = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", p, v)
        return self.out(out.reshape(x.shape[:2] + (-1,)))


class CrossAttention(nnx.Module):
    """Image tokens ``x: [B, N, C]`` attend to text ``context: [B, L, text_dim]``: ``[B, N, C]``.

    Dot-product logits (the keys come from the text, not from x, so the tied-L2 form does not
    apply); ``mask: [B, L]`` bool, True at real (non-padding) tokens.
    """

    def __init__(self, channels: int, context_dim: int, num_heads: int, *, rngs: nnx.Rngs):
        self.query = EqualizedDense(channels, channels, rngs=rngs)
        self.key = EqualizedDense(context_dim, channels, rngs=rngs)
        self.value = EqualizedDense(context_dim, channels, rngs=rngs)
        self.out = EqualizedDense(channels, channels, rngs=rngs)
        self.num_heads = num_heads

    def __call__(self, x: jax.Array, context: jax.Array, mask: jax.Array) -> jax.Array:
        h = self.num_heads
        q, k, v = (
            _heads(self.query(x), h),
            _heads(self.key(context), h),
            _heads(self.value(context), h),
        )
        out = attention(q, k, v, mask=mask[:, None, None, :])
        return self.out(out.reshape(x.shape[:2] + (-1,)))


class AttentionBlock(nnx.Module):
    """GigaGAN's attention between convolutions: ``x: [B, H, W, C]`` -> ``[B, H, W, C]``.

    Pre-LayerNorm residual transformer block over the H*W positions: self-attention (image
    only), cross-attention to the local text features t_local, and an MLP (``mlp_ratio * C``
    wide, leaky ReLU), each added to x (paper Sec. 3.2, Fig. 4: interleaved self- and
    cross-attention).
    """

    def __init__(
        self,
        channels: int,
        context_dim: int,
        *,
        num_heads: int,
        mlp_ratio: int = 2,
        rngs: nnx.Rngs,
    ):
        if channels % num_heads:
            raise ValueError(f"channels={channels} is not divisible by num_heads={num_heads}")
        if mlp_ratio < 1:
            raise ValueError(f"mlp_ratio must be >= 1, got {mlp_ratio}")
        self.norm_self = nnx.LayerNorm(channels, rngs=rngs)
        self.self_attn = L2SelfAttention(channels, num_heads, rngs=rngs)
        self.norm_cross = nnx.LayerNorm(channels, rngs=rngs)
        self.cross_attn = CrossAttention(channels, context_dim, num_heads, rngs=rngs)
        self.norm_mlp = nnx.LayerNorm(channels, rngs=rngs)
        self.fc1 = EqualizedDense(channels, mlp_ratio * channels, rngs=rngs)
        self.fc2 = EqualizedDense(mlp_ratio * channels, channels, rngs=rngs)

    def __call__(self, x: jax.Array, t_local: jax.Array, mask: jax.Array) -> jax.Array:
        b, hh, ww, c = x.shape
        tokens = x.reshape(b, hh * ww, c)
        tokens = tokens + self.self_attn(self.norm_self(tokens))
        tokens = tokens + self.cross_attn(self.norm_cross(tokens), t_local, mask)
        tokens = tokens + self.fc2(lrelu(self.fc1(self.norm_mlp(tokens))))
        return tokens.reshape(b, hh, ww, c)
