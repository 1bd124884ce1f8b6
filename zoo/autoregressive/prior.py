"""The stage-2 transformer over a tokenizer's codes, with its conditioning.

One module for the three priors of the family; they differ in what conditions the image
tokens (a sequence is a prefix of P conditioning tokens, then the N = h w image tokens in
raster order, see :class:`zoo.nn.transformer.TokenDecoder`):

- ``condition="none"``: the prefix is one start token (taming transformers, unconditional).
- ``condition="class"``: the prefix is the class id; id ``num_classes`` is the null class
  (classifier-free guidance).
- ``condition="text"``, ``text_mode="prefix"`` (DALL-E, Ramesh et al. 2021): the prefix is
  the caption's tokens, one decoder for text and image; the all-padding caption is null.
- ``condition="text"``, ``text_mode="cross_attention"`` (Parti, Yu et al. 2022): a caption
  encoder (:class:`zoo.nn.text.TextEncoder`, trained with the decoder) whose per-token
  features the decoder cross-attends to; the prefix is one start token.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.nn.text import TextEncoder
from zoo.nn.transformer import TokenDecoder

CONDITIONS = ("none", "class", "text")
TEXT_MODES = ("prefix", "cross_attention")


class Prior(nnx.Module):
    """Conditioning + :class:`TokenDecoder` over ``grid = (h, w)`` codes of ``num_codes``.

    ``cond`` below is ``None`` (condition "none"), class ids ``[B]`` int, or caption token
    ids ``[B, text_len]`` int (0 = padding).
    """

    def __init__(
        self,
        *,
        num_codes: int,
        grid: tuple[int, int],
        condition: str,
        text_mode: str = "prefix",
        num_classes: int = 0,
        text_vocab: int = 0,
        text_len: int = 0,
        dim: int,
        depth: int,
        num_heads: int,
        dropout: float = 0.0,
        text_dim: int = 0,
        text_depth: int = 0,
        text_heads: int = 1,
        prefix_head: bool = False,
        remat: bool = False,
        rngs: nnx.Rngs,
    ):
        if condition not in CONDITIONS:
            raise ValueError(f"prior.condition={condition!r}; choose one of {CONDITIONS}")
        if condition == "text" and text_mode not in TEXT_MODES:
            raise ValueError(f"text_mode={text_mode!r}; choose one of {TEXT_MODES}")
        if condition == "class" and num_classes < 1:
            raise ValueError("prior.condition='class' needs data.num_classes > 0")
        self.condition, self.grid, self.num_codes = condition, tuple(grid), num_codes
        self.cross = condition == "text" and text_mode == "cross_attention"
        self.num_classes, self.text_len = num_classes, text_len
        prefix_vocab, prefix_len = 1, 1
        if condition == "class":
            prefix_vocab = num_classes + 1  # + the null class
        elif condition == "text" and not self.cross:
            prefix_vocab, prefix_len = text_vocab, text_len
        self.text_encoder = (
            TextEncoder(text_vocab, text_len, text_dim, text_depth, text_heads, rngs=rngs)
            if self.cross
            else None
        )
        self.decoder = TokenDecoder(
            num_codes,
            grid[0] * grid[1],
            prefix_vocab_size=prefix_vocab,
            prefix_len=prefix_len,
            dim=dim,
            depth=depth,
            num_heads=num_heads,
            context_dim=text_dim if self.cross else None,
            prefix_head=prefix_head and prefix_len > 1,
            dropout=dropout,
            remat=remat,
            rngs=rngs,
        )

    def null_condition(self, cond):
        """The "no condition" of classifier-free guidance, shaped like ``cond``."""
        if self.condition == "class":
            return jnp.full_like(cond, self.num_classes)
        if self.condition == "text":
            return jnp.zeros_like(cond)
        return cond

    def inputs(self, cond, batch_size: int, *, dropout_key=None):
        """``(prefix [B, P] int32, context [B, M, text_dim] | None, context_mask | None)``."""
        if self.condition == "class":
            return cond.astype(jnp.int32)[:, None], None, None
        if self.condition == "text" and not self.cross:
            return cond.astype(jnp.int32), None, None
        prefix = jnp.zeros((batch_size, 1), jnp.int32)
        if not self.cross:
            return prefix, None, None
        local, _, mask = self.text_encoder(cond.astype(jnp.int32), dropout_key=dropout_key)
        return prefix, local, mask

    def __call__(self, cond, tokens: jax.Array, *, dropout_key=None):
        """Teacher-forced logits for ``tokens: [B, N]`` int codes (raster order).

        Returns:
          image_logits: ``[B, N, num_codes]``, position i predicts ``tokens[:, i]``.
          prefix_logits: ``[B, P - 1, prefix_vocab]`` or None (DALL-E's text loss).
        """
        prefix, context, mask = self.inputs(cond, tokens.shape[0], dropout_key=dropout_key)
        return self.decoder(
            prefix, tokens[:, :-1], context=context, context_mask=mask, dropout_key=dropout_key
        )
