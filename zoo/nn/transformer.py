"""A decoder-only transformer over [prefix tokens, image tokens]: the autoregressive prior.

One module serves the family's conditioning schemes: a single start token (unconditional) or
a class id as the prefix (Esser et al. 2021, taming transformers); P caption tokens as the
prefix, text and image modelled by one decoder (Ramesh et al. 2021, DALL-E; ``prefix_head``
adds its text loss); a text encoder's features cross-attended in every block (Yu et al. 2022,
Parti; ``context_dim``).

Layout: positions ``0..P-1`` hold the prefix, ``P..P+n-1`` the image tokens (a stage-1
tokenizer's codebook indices, raster order), each with its own token and learned position
tables. The output at position ``P-1+i`` predicts image token i; the prefix head's output at
``j < P-1`` predicts prefix token ``j+1``. Training feeds the image but its last token
(``n = N-1``) and scores ``image_logits [B, N, V]`` against the image ``[B, N]``.

Blocks are pre-LayerNorm as in GPT-2 (Radford et al. 2019), with its init: N(0, 0.02) for
embeddings and kernels, the projections into the residual stream scaled by
1/sqrt(number of residual branches). Sampling uses a KV cache (``init_cache``, ``prefill``,
``decode``): ``lax.dynamic_update_slice`` and a length mask keep every step the same shape,
so a whole sampling loop compiles once (``zoo.autoregressive.sampling``). The block and the
cache's types live in :mod:`zoo.nn.decoder_block`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from zoo.nn.attention import IMPLS, Impl
from zoo.nn.decoder_block import STD, DecoderBlock, DecoderCache, LayerCache, drop, linear, normal
from zoo.nn.dropout import fold_in
from zoo.nn.remat import remat


class TokenDecoder(nnx.Module):
    """GPT-style decoder of image tokens after a prefix of conditioning tokens.

    Args:
      vocab_size: V, the image codebook size.
      num_tokens: N, image tokens per sample (``h * w`` of the tokenizer's grid).
      prefix_vocab_size: size of the prefix vocabulary (1 for a start token, the number of
        classes, or the text vocabulary).
      prefix_len: P >= 1, prefix tokens per sample.
      dim: model width, divisible by ``num_heads``.
      depth: number of blocks (>= 1).
      num_heads: attention heads.
      context_dim: width of cross-attended context features; None = no cross-attention.
      prefix_head: also predict prefix token j+1 from position j (needs P >= 2).
      dropout: rate on the embeddings and every residual branch (train mode only).
      attention_impl: ``zoo.nn.attention`` implementation for training-time attention.
      dtype: compute dtype; parameters are float32 and logits are returned in float32.
      remat: recompute each block's activations in the training pass's backward pass
        (:mod:`zoo.nn.remat`); cached sampling is unaffected.
    """

    def __init__(
        self,
        vocab_size: int,
        num_tokens: int,
        *,
        prefix_vocab_size: int,
        prefix_len: int,
        dim: int,
        depth: int,
        num_heads: int,
        context_dim: int | None = None,
        prefix_head: bool = False,
        dropout: float = 0.0,
        attention_impl: Impl = "full",
        dtype=jnp.float32,
        remat: bool = False,
        rngs: nnx.Rngs,
    ):
        sizes = dict(vocab_size=vocab_size, num_tokens=num_tokens, dim=dim, depth=depth)
        sizes |= dict(prefix_vocab_size=prefix_vocab_size, prefix_len=prefix_len)
        sizes |= dict(num_heads=num_heads, context_dim=1 if context_dim is None else context_dim)
        for name, value in sizes.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"TokenDecoder {name} must be an int >= 1; got {value!r}")
        if dim % num_heads:
            raise ValueError(f"TokenDecoder dim={dim} is not divisible by num_heads={num_heads}")
        if prefix_head and prefix_len < 2:
            raise ValueError("TokenDecoder prefix_head needs prefix_len >= 2 (nothing to predict)")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"TokenDecoder dropout must lie in [0, 1); got {dropout}")
        if attention_impl not in IMPLS:
            raise ValueError(f"attention_impl must be one of {IMPLS}; got {attention_impl!r}")
        self.vocab_size, self.num_tokens = vocab_size, num_tokens
        self.prefix_vocab_size, self.prefix_len = prefix_vocab_size, prefix_len
        self.dim, self.num_heads, self.context_dim, self.dtype = dim, num_heads, context_dim, dtype
        self.max_len = prefix_len + num_tokens - 1  # the last image token is never an input
        self.remat = remat

        embed = dict(embedding_init=normal(STD), rngs=rngs)
        self.prefix_embed = nnx.Embed(prefix_vocab_size, dim, **embed)
        self.image_embed = nnx.Embed(vocab_size, dim, **embed)
        self.prefix_position = nnx.Param(normal(STD)(rngs.params(), (prefix_len, dim)))
        self.image_position = nnx.Param(normal(STD)(rngs.params(), (num_tokens, dim)))
        # GPT-2: residual-branch outputs scaled by 1/sqrt(number of branches), so the residual
        # stream's variance at init does not grow with depth.
        branches = depth * (2 if context_dim is None else 3)
        block = dict(
            context_dim=context_dim,
            dropout=dropout,
            residual_std=STD / math.sqrt(branches),
            attention_impl=attention_impl,
            dtype=dtype,
            rngs=rngs,
        )
        self.blocks = nnx.List([DecoderBlock(dim, num_heads, **block) for _ in range(depth)])
        self.norm = nnx.LayerNorm(dim, dtype=dtype, rngs=rngs)
        self.head = linear(dim, vocab_size, dtype=dtype, rngs=rngs)
        self.prefix_head = (
            linear(dim, prefix_vocab_size, dtype=dtype, rngs=rngs) if prefix_head else None
        )
        self.dropout = nnx.Dropout(dropout, rngs=None)  # on the embeddings (GPT-2's embd_pdrop)

    def __call__(
        self,
        prefix: jax.Array,
        image: jax.Array,
        *,
        context: jax.Array | None = None,
        context_mask: jax.Array | None = None,
        dropout_key: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array | None]:
        """Next-token logits for a whole sequence.

        Args:
          prefix: ``[B, P]`` int prefix tokens in ``[0, prefix_vocab_size)``.
          image: ``[B, n]`` int image tokens in ``[0, vocab_size)``, ``0 <= n <= N-1``.
          context: ``[B, M, context_dim]`` cross-attention features (models with context_dim).
          context_mask: ``[B, M]`` bool, True at real context tokens; None = all real.
          dropout_key: ``[B]`` PRNG keys (one per example) or one key, required when dropout > 0
            in train mode.

        Returns:
          image_logits: ``[B, n+1, vocab_size]`` float32; entry i predicts image token i.
          prefix_logits: ``[B, P-1, prefix_vocab_size]`` float32, entry j predicting prefix
            token j+1, or None without the prefix head.
        """
        self._check_prefix(prefix)
        if image.ndim != 2 or image.shape[0] != prefix.shape[0] or not _is_int(image):
            raise ValueError(
                f"image must be [B, n] integer tokens; got {image.dtype} {image.shape}"
            )
        if image.shape[1] > self.num_tokens - 1:
            raise ValueError(
                f"image has {image.shape[1]} tokens; the decoder reads at most "
                f"num_tokens - 1 = {self.num_tokens - 1} (the last token is only predicted)"
            )
        self._check_context(context, context_mask, prefix.shape[0])

        def key(i):
            return None if dropout_key is None else fold_in(dropout_key, i)

        x = jnp.concatenate([self._embed_prefix(prefix), self._embed_image(image, 0)], axis=1)
        x = drop(self.dropout, x, key(0))
        for i, block in enumerate(self.blocks):
            x = remat(block, self.remat)(
                x, context=context, context_mask=context_mask, dropout_key=key(i + 1)
            )
        h = self.norm(x)
        p = self.prefix_len
        image_logits = self.head(h[:, p - 1 :]).astype(jnp.float32)
        if self.prefix_head is None:
            return image_logits, None
        return image_logits, self.prefix_head(h[:, : p - 1]).astype(jnp.float32)

    def init_cache(self, batch_size: int, *, dtype=None) -> DecoderCache:
        """An empty KV cache for ``batch_size`` sequences (``dtype`` default: compute dtype).

        The context's entries stay None until :meth:`prefill` projects the context.
        """
        dtype = self.dtype if dtype is None else dtype
        kv = jnp.zeros(
            (batch_size, self.max_len, self.num_heads, self.dim // self.num_heads), dtype
        )
        return DecoderCache(tuple(LayerCache(kv, kv, None, None) for _ in self.blocks), None)

    def prefill(
        self,
        prefix: jax.Array,
        cache: DecoderCache,
        *,
        context: jax.Array | None = None,
        context_mask: jax.Array | None = None,
    ) -> tuple[jax.Array, DecoderCache]:
        """Runs ``prefix: [B, P]`` into an empty cache from :meth:`init_cache`.

        Projects the context's cross-attention keys/values once, for every later step.
        Returns the logits ``[B, vocab_size]`` float32 of image token 0, and the cache.
        """
        self._check_prefix(prefix)
        self._check_context(context, context_mask, prefix.shape[0])
        self._check_inference()
        if context is not None:
            layers = []
            for block, layer in zip(self.blocks, cache.layers, strict=True):
                k, v = (t.astype(layer.k.dtype) for t in block.context_kv(context))
                layers.append(layer._replace(context_k=k, context_v=v))
            real = jnp.ones(context.shape[:2], bool) if context_mask is None else context_mask
            cache = DecoderCache(tuple(layers), jnp.asarray(real, bool))
        return self._decode(self._embed_prefix(prefix), 0, cache)

    def decode(
        self, token: jax.Array, index: jax.Array, cache: DecoderCache
    ) -> tuple[jax.Array, DecoderCache]:
        """Feeds image token ``index`` (``token: [B]`` int; ``index``: int32 scalar in
        ``[0, N-2]``, may be traced) after :meth:`prefill` and tokens ``0..index-1``.

        Returns the logits ``[B, vocab_size]`` float32 of image token ``index + 1``, and the
        cache with this token's keys/values written.
        """
        self._check_inference()
        x = self._embed_image(token[:, None], index)
        return self._decode(x, self.prefix_len + index, cache)

    def _decode(self, x, start, cache: DecoderCache) -> tuple[jax.Array, DecoderCache]:
        """Tokens ``x: [B, L, dim]`` at positions ``start..``; logits of the last, new cache."""
        layers = []
        for block, layer in zip(self.blocks, cache.layers, strict=True):
            x, layer = block.decode(x, start, layer, cache.context_mask)
            layers.append(layer)
        logits = self.head(self.norm(x[:, -1])).astype(jnp.float32)
        return logits, cache._replace(layers=tuple(layers))

    def _embed_prefix(self, prefix: jax.Array) -> jax.Array:
        x = self.prefix_embed(prefix) + self.prefix_position[...]
        return x.astype(self.dtype)

    def _embed_image(self, image: jax.Array, start) -> jax.Array:
        """Image tokens ``[B, n]`` at image positions ``start..start+n-1`` (start may be traced)."""
        positions = lax.dynamic_slice_in_dim(self.image_position[...], start, image.shape[1])
        return (self.image_embed(image) + positions).astype(self.dtype)

    def _check_prefix(self, prefix: jax.Array) -> None:
        if prefix.ndim != 2 or prefix.shape[1] != self.prefix_len or not _is_int(prefix):
            raise ValueError(
                f"prefix must be [B, prefix_len={self.prefix_len}] integer tokens; "
                f"got {prefix.dtype} {prefix.shape}"
            )

    def _check_context(self, context, context_mask, batch: int) -> None:
        if self.context_dim is None:
            if context is not None or context_mask is not None:
                raise ValueError("context given to a TokenDecoder built without context_dim")
            return
        if context is None:
            raise ValueError(
                f"this TokenDecoder cross-attends: pass context [B, M, {self.context_dim}]"
            )
        if context.ndim != 3 or context.shape[0] != batch or context.shape[2] != self.context_dim:
            raise ValueError(
                f"context must be [B={batch}, M, {self.context_dim}] features; got {context.shape}"
            )
        if context_mask is not None and context_mask.shape != context.shape[:2]:
            raise ValueError(f"context_mask must be {context.shape[:2]}; got {context_mask.shape}")

    def _check_inference(self) -> None:
        """The cached path has no dropout: refuse to silently differ from train mode."""
        if self.dropout.rate > 0 and not self.dropout.deterministic:
            raise ValueError(
                "TokenDecoder.prefill/decode run without dropout: sample from "
                "nnx.view(model, deterministic=True)."
            )


def _is_int(x: jax.Array) -> bool:
    return jnp.issubdtype(x.dtype, jnp.integer)
