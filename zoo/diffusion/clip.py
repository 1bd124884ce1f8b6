"""A small CLIP (Radford et al. 2021) for ``shapes``, and its noise-aware variant (GLIDE).

Two towers map an image and a caption into one joint space of width ``embed_dim``; both
embeddings are L2-normalised, so their dot product is the cosine similarity, and the
contrastive logits are that similarity times a learned scale (``exp(log_scale)``, initialised
to 1/0.07 and clipped at 100, as in CLIP sec. 2.5).

- Image tower (:class:`ImageEncoder`): a conv stem, DDPM residual blocks
  (:class:`zoo.nn.blocks.ResBlock`) with a stride-2 downsample between levels, then the
  *flattened* final feature map through a linear layer. Flattening, not global pooling: the
  captions name the position ("at the top left"), and a mean over positions would discard it.
- Noise-aware image tower (GLIDE, Nichol et al. 2022, sec. 2.4): the same network also reads
  the diffusion timestep ``t`` (sinusoidal embedding -> MLP) in every residual block and as a
  bias on the stem's features. The residual blocks start as the identity (zero last conv), so
  the stem bias is what makes the output depend on ``t`` from the first step.
- Text tower: :class:`zoo.nn.text.TextEncoder`'s pooled feature (mean over real tokens) and a
  linear projection.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.nn.blocks import DEFAULT_INIT, Downsample, ResBlock, conv, group_norm
from zoo.nn.embeddings import timestep_embedding
from zoo.nn.text import TextEncoder

INIT_LOG_SCALE = math.log(1 / 0.07)  # CLIP's initial temperature 0.07
MAX_LOG_SCALE = math.log(100.0)  # CLIP clips the logit scale at 100


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """``x: [..., E]`` divided by its L2 norm over the last axis (``eps`` guards a zero row)."""
    x = x.astype(jnp.float32)  # embeddings and their similarities are float32 under any policy
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps))


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


class ImageEncoder(nnx.Module):
    """Images (optionally noised, with their timestep) -> unnormalised features ``[B, out_dim]``.

    Args:
      image_size: side S of the square input; divisible by ``2 ** (len(ch_mult) - 1)``.
      channels: input channels C.
      ch: width of the first level; level i has ``ch * ch_mult[i]`` channels.
      ch_mult: width multipliers, one level each; a stride-2 downsample between levels.
      num_res_blocks: residual blocks per level.
      out_dim: output width.
      noise_aware: read a timestep ``t`` (GLIDE's noised CLIP) or not.
      min_group_size: the fewest channels per GroupNorm group
        (:func:`~zoo.nn.blocks.num_groups`; 1 normalises ``t`` away at width <= 32).
    """

    def __init__(
        self,
        image_size: int,
        channels: int,
        ch: int,
        ch_mult: tuple[int, ...],
        num_res_blocks: int,
        out_dim: int,
        *,
        noise_aware: bool = False,
        min_group_size: int = 1,
        rngs: nnx.Rngs,
    ):
        for name, value in (("image_size", image_size), ("channels", channels), ("ch", ch)):
            _positive_int(f"ImageEncoder {name}", value)
        _positive_int("ImageEncoder num_res_blocks", num_res_blocks)
        _positive_int("ImageEncoder out_dim", out_dim)
        ch_mult = tuple(ch_mult)
        if not ch_mult:
            raise ValueError("ImageEncoder ch_mult must name at least one level")
        for m in ch_mult:
            _positive_int("ImageEncoder ch_mult entries", m)
        factor = 2 ** (len(ch_mult) - 1)
        if image_size % factor:
            raise ValueError(
                f"ImageEncoder image_size={image_size} is not divisible by {factor} "
                f"(one halving between each of the {len(ch_mult)} levels of ch_mult)"
            )
        self.noise_aware, self.ch = bool(noise_aware), ch
        temb_dim = 4 * ch if self.noise_aware else None  # DDPM's 4x width time embedding
        if self.noise_aware:
            self.temb1 = nnx.Linear(ch, temb_dim, kernel_init=DEFAULT_INIT, rngs=rngs)
            self.temb2 = nnx.Linear(temb_dim, temb_dim, kernel_init=DEFAULT_INIT, rngs=rngs)
            self.stem_temb = nnx.Linear(temb_dim, ch, kernel_init=DEFAULT_INIT, rngs=rngs)
        self.stem = conv(channels, ch, dtype=jnp.float32, rngs=rngs)
        blocks, downs, width = [], [], ch
        for level, mult in enumerate(ch_mult):
            for _ in range(num_res_blocks):
                blocks.append(
                    ResBlock(
                        width, ch * mult, temb_dim=temb_dim, min_group_size=min_group_size,
                        rngs=rngs,
                    )
                )  # fmt: skip
                width = ch * mult
            if level < len(ch_mult) - 1:
                downs.append(Downsample(width, rngs=rngs))
        self.blocks, self.downs = nnx.List(blocks), nnx.List(downs)
        self.num_res_blocks = num_res_blocks
        self.norm = group_norm(width, min_group_size=min_group_size, rngs=rngs)
        side = image_size // factor
        self.out = nnx.Linear(side * side * width, out_dim, rngs=rngs)

    def __call__(self, x: jax.Array, t: jax.Array | None = None) -> jax.Array:
        """``x: [B, S, S, C]`` float32 in [-1, 1] (or noised x_t), ``t: [B]`` int timestep
        indices (noise-aware only, else None) -> ``[B, out_dim]`` float32."""
        if self.noise_aware != (t is not None):
            raise ValueError(
                "a noise-aware image encoder needs the timestep t"
                if self.noise_aware
                else "this image encoder is not noise-aware: call it without t"
            )
        temb = None
        h = self.stem(x)
        if self.noise_aware:
            temb = self.temb2(nnx.silu(self.temb1(timestep_embedding(t, self.ch))))
            h = h + self.stem_temb(nnx.silu(temb))[:, None, None, :]
        for i, block in enumerate(self.blocks):
            h = block(h, temb)
            level = i // self.num_res_blocks
            if (i + 1) % self.num_res_blocks == 0 and level < len(self.downs):
                h = self.downs[level](h)
        h = nnx.silu(self.norm(h))
        return self.out(h.reshape(h.shape[0], -1))


class CLIP(nnx.Module):
    """Image and text towers with a joint embedding of width ``embed_dim``.

    Args:
      image_size, channels, ch, ch_mult, num_res_blocks, noise_aware: the image tower
        (:class:`ImageEncoder`).
      vocab_size, max_len, text_dim, text_depth, text_heads: the text tower
        (:class:`zoo.nn.text.TextEncoder`; token id 0 is padding).
      embed_dim: width E of the joint space.
    """

    def __init__(
        self,
        *,
        image_size: int,
        channels: int,
        ch: int,
        ch_mult: tuple[int, ...],
        num_res_blocks: int,
        vocab_size: int,
        max_len: int,
        text_dim: int,
        text_depth: int,
        text_heads: int,
        embed_dim: int,
        noise_aware: bool = False,
        min_group_size: int = 1,
        rngs: nnx.Rngs,
    ):
        _positive_int("CLIP embed_dim", embed_dim)
        self.embed_dim, self.noise_aware = embed_dim, bool(noise_aware)
        self.image_encoder = ImageEncoder(
            image_size, channels, ch, ch_mult, num_res_blocks, embed_dim,
            noise_aware=noise_aware, min_group_size=min_group_size, rngs=rngs,
        )  # fmt: skip
        self.text_encoder = TextEncoder(
            vocab_size, max_len, text_dim, text_depth, text_heads, rngs=rngs
        )
        self.text_proj = nnx.Linear(text_dim, embed_dim, rngs=rngs)
        self.log_scale = nnx.Param(jnp.asarray(INIT_LOG_SCALE, jnp.float32))

    # Its own parameter is the logit scale, used in float32 under any compute dtype
    # (zoo.engine.precision); the towers compute in the policy's dtype.
    KEEPS_FLOAT32 = True

    def encode_image(self, x: jax.Array, t: jax.Array | None = None) -> jax.Array:
        """``x: [B, S, S, C]`` in [-1, 1] (x_t for a noise-aware model, with ``t: [B]`` int
        timestep indices; None otherwise) -> ``[B, E]`` unit-norm float32."""
        return l2_normalize(self.image_encoder(x, t))

    def encode_text(self, tokens: jax.Array) -> jax.Array:
        """``tokens: [B, L]`` int ids (0 = padding) -> ``[B, E]`` unit-norm float32."""
        _, pooled, _ = self.text_encoder(tokens)
        return l2_normalize(self.text_proj(pooled))

    def logit_scale(self) -> jax.Array:
        """The scalar multiplying cosine similarities into logits: ``exp(log_scale)`` <= 100.

        The clip is a ``minimum`` on ``log_scale``, so past 100 the scale gets no gradient
        (CLIP: "clipped to prevent scaling the logits by more than 100")."""
        return jnp.exp(jnp.minimum(self.log_scale[...], MAX_LOG_SCALE))

    def __call__(
        self, x: jax.Array, tokens: jax.Array, t: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(image embeddings ``[B, E]``, text embeddings ``[B', E]``, logit scale ``[]``)."""
        return self.encode_image(x, t), self.encode_text(tokens), self.logit_scale()


def clip_from_config(config, *, vocab_size: int, max_len: int, rngs: nnx.Rngs) -> CLIP:
    """The :class:`CLIP` of ``config.clip`` for ``config.data``'s images (see clip_objective)."""
    c, data = config.clip, config.data
    return CLIP(
        image_size=int(data.image_size),
        channels=int(data.get("channels", 3)),
        ch=c.ch,
        ch_mult=tuple(c.ch_mult),
        num_res_blocks=c.num_res_blocks,
        vocab_size=vocab_size,
        max_len=max_len,
        text_dim=c.text_dim,
        text_depth=c.text_depth,
        text_heads=c.text_heads,
        embed_dim=c.embed_dim,
        noise_aware=c.noise_aware,
        # 1 when absent: a run saved before the field existed keeps the network it trained.
        min_group_size=int(c.get("min_group_size", 1)),
        rngs=rngs,
    )
