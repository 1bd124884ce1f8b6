"""The pre-LayerNorm decoder block of :class:`zoo.nn.transformer.TokenDecoder` and its KV cache.

A block is GPT-2's (Radford et al. 2019): causal self-attention, optional cross-attention to a
context (Parti), a 4x-wide GELU MLP, each a residual branch with per-example dropout. Init:
N(0, 0.02) for kernels, the projections into the residual stream scaled by ``residual_std``.
``decode`` runs new tokens against a :class:`LayerCache` whose buffers keep one shape for the
whole sampling loop (``lax.dynamic_update_slice`` and a position mask).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from zoo.nn.attention import Impl, MultiHeadAttention, attention
from zoo.nn.dropout import dropout, fold_in

STD = 0.02  # GPT-2's initialiser scale for embeddings and linear kernels


def normal(std: float):
    return nnx.initializers.normal(std)


def linear(din: int, dout: int, *, std: float = STD, dtype, rngs: nnx.Rngs) -> nnx.Linear:
    init = dict(kernel_init=normal(std), bias_init=nnx.initializers.zeros)
    return nnx.Linear(din, dout, **init, dtype=dtype, rngs=rngs)


def _attention_module(dim, num_heads, context_dim, out_std, impl, dtype, rngs):
    """MultiHeadAttention re-initialised the GPT-2 way (it draws DDPM's Xavier init itself)."""
    attn = MultiHeadAttention(
        dim, num_heads=num_heads, context_features=context_dim, impl=impl, dtype=dtype, rngs=rngs
    )
    for layer in (attn.query, attn.key, attn.value, attn.out):
        std = out_std if layer is attn.out else STD
        layer.kernel[...] = normal(std)(rngs.params(), layer.kernel.shape)
    return attn


def _heads(x: jax.Array, num_heads: int) -> jax.Array:
    """``[B, L, C]`` -> ``[B, L, heads, C / heads]``."""
    return x.reshape(x.shape[:2] + (num_heads, -1))


def _key_mask(context_mask: jax.Array | None) -> jax.Array | None:
    """``[B, M]`` bool -> ``[B, 1, 1, M]``: every head and query sees the same keys."""
    return None if context_mask is None else context_mask[:, None, None, :]


def drop(switch: nnx.Dropout, h: jax.Array, key: jax.Array | None) -> jax.Array:
    """Per-example dropout (``zoo.nn.dropout``) if ``switch`` has rate > 0 and is in train mode."""
    if switch.rate == 0 or switch.deterministic:
        return h
    if key is None:
        raise ValueError(
            "TokenDecoder has dropout > 0 and is in train mode: pass dropout_key, "
            "or use nnx.view(model, deterministic=True) for evaluation and sampling."
        )
    return dropout(h, switch.rate, key)


class LayerCache(NamedTuple):
    """One block's cached attention inputs, in the cache dtype.

    k, v: ``[B, T, heads, head_dim]`` self-attention keys/values of positions ``0..T-1``
      (``T = P + N - 1``, the longest input); slots past the newest token hold zeros and are
      masked out.
    context_k, context_v: ``[B, M, heads, head_dim]`` cross-attention keys/values of the
      context, projected once by ``prefill``; None before it or without cross-attention.
    """

    k: jax.Array
    v: jax.Array
    context_k: jax.Array | None
    context_v: jax.Array | None


class DecoderCache(NamedTuple):
    """A :class:`zoo.nn.transformer.TokenDecoder`'s KV cache: one :class:`LayerCache` per block.

    context_mask: ``[B, M]`` bool (True = a real context token); None before ``prefill`` or
    without cross-attention.
    """

    layers: tuple[LayerCache, ...]
    context_mask: jax.Array | None


class DecoderBlock(nnx.Module):
    """Pre-LN decoder block: ``x: [B, L, dim]`` -> ``[B, L, dim]``.

    Causal self-attention, cross-attention to ``context: [B, M, context_dim]`` when built with
    ``context_dim``, and a 4x-wide GELU MLP, each as a residual branch with dropout.
    ``residual_std`` initialises the projections that write into the residual stream.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        context_dim: int | None = None,
        dropout: float = 0.0,
        residual_std: float = STD,
        attention_impl: Impl = "full",
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.num_heads = num_heads

        def attention_module(context_features):
            return _attention_module(
                dim, num_heads, context_features, residual_std, attention_impl, dtype, rngs
            )

        cross = context_dim is not None
        self.norm1 = nnx.LayerNorm(dim, dtype=dtype, rngs=rngs)
        self.self_attn = attention_module(None)
        self.norm_cross = nnx.LayerNorm(dim, dtype=dtype, rngs=rngs) if cross else None
        self.cross_attn = attention_module(context_dim) if cross else None
        self.norm2 = nnx.LayerNorm(dim, dtype=dtype, rngs=rngs)
        self.fc1 = linear(dim, 4 * dim, dtype=dtype, rngs=rngs)
        self.fc2 = linear(4 * dim, dim, std=residual_std, dtype=dtype, rngs=rngs)
        # rngs=None: the key comes explicitly with each call (engine-derived, per example).
        self.dropout = nnx.Dropout(dropout, rngs=None)

    def __call__(
        self,
        x: jax.Array,
        *,
        context: jax.Array | None = None,
        context_mask: jax.Array | None = None,
        dropout_key: jax.Array | None = None,
    ) -> jax.Array:
        """The whole sequence ``x: [B, L, dim]`` at once (training, or sampling without a cache).

        ``context: [B, M, context_dim]``, ``context_mask: [B, M]`` bool (True = may be attended
        to; None = all); ``dropout_key``: ``[B]`` keys or one key, needed in train mode.
        """
        keys = (None,) * 3 if dropout_key is None else [fold_in(dropout_key, i) for i in range(3)]
        x = x + drop(self.dropout, self.self_attn(self.norm1(x), causal=True), keys[0])
        if self.cross_attn is not None:
            h = self.cross_attn(self.norm_cross(x), context, mask=_key_mask(context_mask))
            x = x + drop(self.dropout, h, keys[1])
        return x + drop(self.dropout, self._mlp(self.norm2(x)), keys[2])

    def context_kv(self, context: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Cross-attention keys and values ``[B, M, heads, head_dim]`` of ``context``."""
        k, v = self.cross_attn.key(context), self.cross_attn.value(context)
        return _heads(k, self.num_heads), _heads(v, self.num_heads)

    def decode(
        self, x: jax.Array, start: jax.Array, cache: LayerCache, context_mask: jax.Array | None
    ) -> tuple[jax.Array, LayerCache]:
        """New tokens ``x: [B, L, dim]`` at positions ``start..start+L-1``, attending to the
        cache; returns ``[B, L, dim]`` and the cache with their keys/values written. No dropout.
        """
        h = self.norm1(x)
        attn = self.self_attn

        def write(buffer, t):  # t: [B, L, dim] -> its heads stored at positions start..
            t = _heads(t, self.num_heads).astype(buffer.dtype)
            return lax.dynamic_update_slice_in_dim(buffer, t, start, axis=1)

        k, v = write(cache.k, attn.key(h)), write(cache.v, attn.value(h))
        # Causal and length mask in one: key slot t is visible to the query at position q iff
        # t <= q; slots past the newest token are still empty.
        q_pos = start + lax.broadcasted_iota(jnp.int32, (x.shape[1], k.shape[1]), 0)
        mask = lax.broadcasted_iota(jnp.int32, q_pos.shape, 1) <= q_pos
        x = x + self._attend(attn, h, k, v, mask)
        if self.cross_attn is not None:
            h = self.norm_cross(x)
            x = x + self._attend(
                self.cross_attn, h, cache.context_k, cache.context_v, _key_mask(context_mask)
            )
        return x + self._mlp(self.norm2(x)), cache._replace(k=k, v=v)

    def _attend(self, attn: MultiHeadAttention, h, k, v, mask) -> jax.Array:
        """``attn``'s forward pass with precomputed keys/values: ``h: [B, L, dim]`` queries."""
        q = _heads(attn.query(h), self.num_heads)
        k, v = k.astype(q.dtype), v.astype(q.dtype)
        out = attention(q, k, v, impl=attn.impl, chunk_size=attn.chunk_size, mask=mask)
        return attn.out(out.reshape(h.shape[:2] + (-1,)))

    def _mlp(self, h: jax.Array) -> jax.Array:
        return self.fc2(jax.nn.gelu(self.fc1(h)))
