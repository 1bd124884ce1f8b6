"""The "spatial transformer" of latent diffusion (Rombach et al. 2022, sec. 3.3 and app. E).

Stable Diffusion's U-Net replaces DDPM's self-attention block with a small transformer over
the feature map's positions that also reads a text context by cross-attention:

    h = proj_in(GroupNorm(x))                          # [B, H, W, C], a 1x1 conv (or linear)
    tokens = h as [B, H*W, C]
    for each block:
        tokens += SelfAttn(LayerNorm(tokens))
        tokens += CrossAttn(LayerNorm(tokens), context)  # keys/values from [B, L, context_dim]
        tokens += GEGLU-FFN(LayerNorm(tokens))           # C -> 2*4C, value * gelu(gate), 4C -> C
    out = x + proj_out(tokens as [B, H, W, C])

As in the paper's code, ``proj_out`` starts at zero so the block is the identity at
initialisation (a trained model loads its own ``proj_out``). Stable Diffusion 1.x:
one block, 8 heads, ``context_dim`` 768 (CLIP ViT-L/14's token features), a 1x1-conv
``proj_in``/``proj_out`` (SD 2.x: linear ones), GroupNorm eps 1e-6, LayerNorm eps 1e-5, no
query/key/value biases. The parameter names mirror the roles (``attn1`` self, ``attn2``
cross, ``ff``) so that :mod:`zoo.diffusion.diffusers_weights` maps them one to one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.nn.attention import Impl, MultiHeadAttention
from zoo.nn.blocks import DEFAULT_INIT, conv, group_norm


class GEGLUFeedForward(nnx.Module):
    """``[B, N, C] -> [B, N, C]``: ``out(value * gelu(gate))`` with ``[value, gate] = proj(x)``.

    GEGLU (Shazeer 2020): ``proj`` maps C to ``2 * mult * C``; its first half is the value,
    its second half the gate (the order diffusers' ``GEGLU`` splits in); gelu is the exact
    (erf) one.
    """

    def __init__(self, channels: int, *, mult: int = 4, dtype=jnp.float32, rngs: nnx.Rngs):
        inner = mult * channels
        dense = dict(kernel_init=DEFAULT_INIT, dtype=dtype, rngs=rngs)
        self.proj = nnx.Linear(channels, 2 * inner, **dense)
        self.out = nnx.Linear(inner, channels, **dense)

    def __call__(self, x: jax.Array) -> jax.Array:
        value, gate = jnp.split(self.proj(x), 2, axis=-1)
        return self.out(value * jax.nn.gelu(gate, approximate=False))


class TransformerBlock(nnx.Module):
    """Pre-norm self-attention, cross-attention and GEGLU feed-forward on ``[B, N, C]``.

    Without ``context_dim`` the cross-attention (``norm2``, ``attn2``) is left out.
    """

    def __init__(
        self,
        channels: int,
        *,
        num_heads: int,
        context_dim: int | None,
        layer_norm_eps: float = 1e-5,
        impl: Impl = "full",
        chunk_size: int = 64,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        def norm():
            return nnx.LayerNorm(channels, epsilon=layer_norm_eps, dtype=dtype, rngs=rngs)

        attn = dict(
            num_heads=num_heads,
            impl=impl,
            chunk_size=chunk_size,
            qkv_bias=False,
            dtype=dtype,
            rngs=rngs,
        )
        self.norm1 = norm()
        self.attn1 = MultiHeadAttention(channels, **attn)
        self.norm2 = norm() if context_dim else None
        self.attn2 = (
            MultiHeadAttention(channels, context_features=context_dim, **attn)
            if context_dim
            else None
        )
        self.norm3 = norm()
        self.ff = GEGLUFeedForward(channels, dtype=dtype, rngs=rngs)

    def __call__(
        self,
        x: jax.Array,
        context: jax.Array | None = None,
        context_mask: jax.Array | None = None,
    ) -> jax.Array:
        x = x + self.attn1(self.norm1(x))
        if self.attn2 is not None:
            mask = None
            if context_mask is not None:  # [B, L] -> [B, heads, queries, keys]
                mask = context_mask.astype(bool)[:, None, None, :]
            x = x + self.attn2(self.norm2(x), context.astype(x.dtype), mask=mask)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nnx.Module):
    """``x: [B, H, W, C] -> [B, H, W, C]``, attending to ``context: [B, L, context_dim]``.

    Args:
      channels: C (the transformer's width is C too, as in Stable Diffusion).
      num_heads: attention heads (C must divide by it); head width ``C / num_heads``.
      context_dim: width of the context tokens; None: self-attention and feed-forward only.
      depth: transformer blocks (1 in SD 1.x and 2.x).
      linear_projection: ``proj_in``/``proj_out`` as linear layers on the tokens (SD 2.x)
        instead of 1x1 convolutions (SD 1.x); the same function, a different weight layout.
      norm_eps: the GroupNorm's epsilon (1e-6); layer_norm_eps: the LayerNorms' (1e-5).
      impl, chunk_size: the attention implementation (:mod:`zoo.nn.attention`).
      zero_init_out: ``proj_out`` starts at zero, so the block starts as the identity.
    """

    def __init__(
        self,
        channels: int,
        *,
        num_heads: int = 8,
        context_dim: int | None = None,
        depth: int = 1,
        linear_projection: bool = False,
        norm_eps: float = 1e-6,
        layer_norm_eps: float = 1e-5,
        impl: Impl = "full",
        chunk_size: int = 64,
        zero_init_out: bool = True,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        if channels % num_heads:
            raise ValueError(f"channels {channels} are not divisible by num_heads={num_heads}")
        self.norm = group_norm(channels, eps=norm_eps, dtype=dtype, rngs=rngs)
        self.linear_projection = bool(linear_projection)
        out_init = nnx.initializers.zeros if zero_init_out else DEFAULT_INIT
        if self.linear_projection:
            dense = dict(dtype=dtype, rngs=rngs)
            self.proj_in = nnx.Linear(channels, channels, kernel_init=DEFAULT_INIT, **dense)
            self.proj_out = nnx.Linear(channels, channels, kernel_init=out_init, **dense)
        else:
            self.proj_in = conv(channels, channels, 1, dtype=dtype, rngs=rngs)
            self.proj_out = conv(
                channels, channels, 1, zero_init=zero_init_out, dtype=dtype, rngs=rngs
            )
        block = dict(
            num_heads=num_heads,
            context_dim=context_dim,
            layer_norm_eps=layer_norm_eps,
            impl=impl,
            chunk_size=chunk_size,
            dtype=dtype,
            rngs=rngs,
        )
        self.transformer_blocks = nnx.List(
            [TransformerBlock(channels, **block) for _ in range(depth)]
        )
        self.context_dim = context_dim

    def __call__(
        self,
        x: jax.Array,
        context: jax.Array | None = None,
        context_mask: jax.Array | None = None,
    ) -> jax.Array:
        """``x: [B, H, W, C]``; ``context: [B, L, context_dim]`` (required with a
        ``context_dim``); ``context_mask: [B, L]`` bool, True at tokens that may be attended
        (None: all). Returns ``[B, H, W, C]`` in the compute dtype."""
        if self.context_dim and context is None:
            raise ValueError("this SpatialTransformer attends to a context: pass context=[B, L, D]")
        if not self.context_dim and context is not None:
            raise ValueError("a context given to a SpatialTransformer built without context_dim")
        b, height, width, c = x.shape
        h = self.norm(x)
        if self.linear_projection:
            h = self.proj_in(h.reshape(b, height * width, c))
        else:
            h = self.proj_in(h).reshape(b, height * width, c)
        for block in self.transformer_blocks:
            h = block(h, context, context_mask)
        if self.linear_projection:
            h = self.proj_out(h).reshape(b, height, width, c)
        else:
            h = self.proj_out(h.reshape(b, height, width, c))
        return x + h
