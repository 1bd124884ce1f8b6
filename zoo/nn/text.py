"""A small transformer text encoder for caption-conditioned generators.

Token ids ``[B, L]`` (0 = padding, as in ``zoo.data.text.WordTokenizer``) become per-token
features ``local`` (for cross-attention) and one pooled vector ``global_`` per caption (for
modulation), as in GigaGAN (Kang et al. 2023, Sec. 3.1: t_local and t_global from a text
encoder's output) and Imagen/LDM's use of per-token text embeddings.

The blocks are pre-LayerNorm (Xiong et al. 2020): x + attn(LN(x)), x + mlp(LN(x)), with a
final LayerNorm; attention ignores padding keys, so appending padding does not change the
features of the real tokens.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.nn.attention import MultiHeadAttention
from zoo.nn.dropout import dropout, fold_in

_EMBED_INIT = nnx.initializers.normal(0.02)  # GPT-2/BERT scale for token and position tables


class TextBlock(nnx.Module):
    """Pre-LN transformer block: ``x: [B, L, dim]`` -> ``[B, L, dim]``.

    ``mask: [B, 1, 1, L]`` bool, True where a key may be attended to. The MLP is 4x wide with
    GELU (Vaswani et al. 2017; GELU as in BERT/GPT-2).
    """

    def __init__(self, dim: int, num_heads: int, *, dropout: float = 0.0, rngs: nnx.Rngs):
        self.norm1 = nnx.LayerNorm(dim, rngs=rngs)
        self.attn = MultiHeadAttention(dim, num_heads=num_heads, rngs=rngs)
        self.norm2 = nnx.LayerNorm(dim, rngs=rngs)
        self.fc1 = nnx.Linear(dim, 4 * dim, rngs=rngs)
        self.fc2 = nnx.Linear(4 * dim, dim, rngs=rngs)
        # rngs=None: the key comes explicitly with each call (engine-derived, per step).
        self.dropout = nnx.Dropout(dropout, rngs=None)

    def _drop(self, h: jax.Array, key: jax.Array | None) -> jax.Array:
        if self.dropout.rate > 0 and not self.dropout.deterministic:
            if key is None:
                raise ValueError(
                    "TextEncoder has dropout > 0 and is in train mode: pass dropout_key, "
                    "or use nnx.view(model, deterministic=True) for evaluation."
                )
            return dropout(h, self.dropout.rate, key)
        return h

    def __call__(
        self, x: jax.Array, mask: jax.Array, *, dropout_key: jax.Array | None = None
    ) -> jax.Array:
        keys = (
            (None, None)
            if dropout_key is None
            else (fold_in(dropout_key, 0), fold_in(dropout_key, 1))
        )
        x = x + self._drop(self.attn(self.norm1(x), mask=mask), keys[0])
        h = self.fc2(jax.nn.gelu(self.fc1(self.norm2(x))))
        return x + self._drop(h, keys[1])


class TextEncoder(nnx.Module):
    """Token ids -> (per-token features, pooled feature, padding mask).

    Args:
      vocab_size: number of token ids (``WordTokenizer.vocab_size``); id 0 is padding.
      max_len: the longest token sequence accepted (size of the position table).
      dim: feature width; divisible by ``num_heads``.
      depth: number of transformer blocks (>= 1).
      num_heads: attention heads.
      dropout: dropout rate after attention and MLP in each block (train mode only).
    """

    def __init__(
        self,
        vocab_size: int,
        max_len: int,
        dim: int,
        depth: int,
        num_heads: int,
        *,
        dropout: float = 0.0,
        rngs: nnx.Rngs,
    ):
        for name, value, least in (
            ("vocab_size", vocab_size, 2),
            ("max_len", max_len, 1),
            ("dim", dim, 1),
            ("depth", depth, 1),
            ("num_heads", num_heads, 1),
        ):
            if not isinstance(value, int) or value < least:
                raise ValueError(f"TextEncoder {name} must be an int >= {least}; got {value!r}")
        if dim % num_heads:
            raise ValueError(f"TextEncoder dim={dim} is not divisible by num_heads={num_heads}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"TextEncoder dropout must lie in [0, 1); got {dropout}")
        self.vocab_size, self.max_len, self.dim = vocab_size, max_len, dim
        self.token_embed = nnx.Embed(vocab_size, dim, embedding_init=_EMBED_INIT, rngs=rngs)
        self.position_embed = nnx.Param(_EMBED_INIT(rngs.params(), (max_len, dim)))
        self.blocks = nnx.List(
            [TextBlock(dim, num_heads, dropout=dropout, rngs=rngs) for _ in range(depth)]
        )
        self.norm = nnx.LayerNorm(dim, rngs=rngs)
        self.dtype = jnp.float32  # compute dtype (zoo.engine.precision)

    def __call__(
        self, tokens: jax.Array, *, dropout_key: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Encode ``tokens: [B, L]`` int ids (L <= max_len; 0 = padding, anywhere).

        Args:
          tokens: ``[B, L]`` integer token ids in [0, vocab_size).
          dropout_key: ``[B]`` PRNG keys, one per example (or one key), required when
            dropout > 0 in train mode.

        Returns:
          local: ``[B, L, dim]`` float32 per-token features, zero at padding positions.
          global_: ``[B, dim]`` mean of ``local`` over the non-padding tokens (zero for a
            caption that is all padding).
          mask: ``[B, L]`` bool, True at non-padding tokens (``tokens != 0``); pass it to
            cross-attention as a key mask (``mask[:, None, None, :]``).
        """
        if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise ValueError(
                f"tokens must be [B, L] integer ids; got {tokens.dtype} {tokens.shape}"
            )
        if tokens.shape[1] > self.max_len:
            raise ValueError(
                f"tokens have length {tokens.shape[1]} > max_len={self.max_len} of this encoder"
            )
        mask = tokens != 0
        x = self.token_embed(tokens) + self.position_embed[...][: tokens.shape[1]]
        x = x.astype(self.dtype)
        key_mask = mask[:, None, None, :]  # [B, heads, queries, keys]: every query, same keys
        for i, block in enumerate(self.blocks):
            key = None if dropout_key is None else fold_in(dropout_key, i)
            x = block(x, key_mask, dropout_key=key)
        local = jnp.where(mask[..., None], self.norm(x).astype(jnp.float32), 0.0)
        count = jnp.maximum(mask.sum(axis=1, keepdims=True), 1).astype(local.dtype)
        global_ = local.sum(axis=1) / count
        return local, global_, mask
