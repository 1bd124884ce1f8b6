"""The convolutional autoencoder of VQGAN and latent diffusion's first stage.

- :class:`Encoder` / :class:`Decoder`: the taming-transformers autoencoder (Esser et al.
  2021, after the DDPM U-Net's blocks): residual blocks per resolution, self-attention at the
  listed resolutions and in the middle, ``len(ch_mult) - 1`` stride-2 down/up-samplings, so the
  downsampling factor is ``f = 2 ** (len(ch_mult) - 1)`` (:func:`downsampling_factor`).
  Rombach et al. (2022) use the same pair for the autoencoders of latent diffusion.
- :class:`Reconstruction`: what a stage-1 autoencoder's training pass returns, the contract
  between the autoencoders (``zoo.autoregressive.vq``, ``zoo.nn.kl_autoencoder``) and
  the objective that trains them (``zoo.autoregressive.tokenizer_objective``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.nn.blocks import AttentionBlock, Downsample, ResBlock, Upsample, conv, group_norm


def downsampling_factor(image_size: int, ch_mult) -> int:
    """``f = 2 ** (len(ch_mult) - 1)``, pixels per latent cell along each side.

    Raises ValueError when ``ch_mult`` is empty or not positive, or f does not divide
    ``image_size`` (pixels), before any module is built.
    """
    if not ch_mult or any(int(m) < 1 for m in ch_mult):
        raise ValueError(f"ch_mult must be a non-empty tuple of positive ints, got {ch_mult!r}")
    factor = 2 ** (len(ch_mult) - 1)
    if image_size % factor:
        raise ValueError(
            f"image_size={image_size} is not divisible by the downsampling factor {factor} "
            f"of ch_mult={tuple(ch_mult)} (2 ** (len(ch_mult) - 1))"
        )
    return factor


class Encoder(nnx.Module):
    """``x: [B, H, W, in_ch] -> [B, H/f, W/f, out_ch]`` with ``f = 2 ** (len(ch_mult) - 1)``.

    Args:
      in_ch: image channels; out_ch: output channels (z channels, or code logits).
      ch: base width; ch_mult: width multipliers per resolution level.
      num_res_blocks: residual blocks per level.
      attn_resolutions: resolutions (side length in pixels) with self-attention after
        each residual block.
      image_size: input side length (to place the attention layers).
      downsample_pad: zeros before/after each side in the stride-2 convolutions
        (:class:`~zoo.nn.blocks.Downsample`): (1, 1) by default; (0, 1) in taming's and
        latent diffusion's encoders, so Stable Diffusion's VAE weights need it.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        ch: int,
        ch_mult: tuple[int, ...],
        num_res_blocks: int,
        attn_resolutions: tuple[int, ...],
        image_size: int,
        downsample_pad: tuple[int, int] = (1, 1),
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        downsampling_factor(image_size, ch_mult)
        kw = dict(dtype=dtype, rngs=rngs)
        self.conv_in = conv(in_ch, ch, **kw)
        levels, width, res = [], ch, image_size
        for i, mult in enumerate(ch_mult):
            blocks, attns = [], []
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(width, ch * mult, **kw))
                width = ch * mult
                attns.append(AttentionBlock(width, **kw) if res in attn_resolutions else None)
            down = Downsample(width, pad=downsample_pad, **kw) if i < len(ch_mult) - 1 else None
            levels.append(_Level(blocks, attns, down))
            res = res // 2 if down is not None else res
        self.levels = nnx.List(levels)
        self.mid = _Middle(width, **kw)
        self.norm_out = group_norm(width, **kw)
        self.conv_out = conv(width, out_ch, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.conv_in(x)
        for level in self.levels:
            h = level(h)
        h = self.mid(h)
        return self.conv_out(nnx.silu(self.norm_out(h)))


class Decoder(nnx.Module):
    """``z: [B, h, w, in_ch] -> [B, h f, w f, out_ch]``, the mirror of :class:`Encoder`.

    ``features(z)`` returns the activations that enter the last convolution
    (``conv_out``): VQGAN's adaptive weight differentiates the losses with respect to
    that layer's kernel.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        ch: int,
        ch_mult: tuple[int, ...],
        num_res_blocks: int,
        attn_resolutions: tuple[int, ...],
        image_size: int,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        factor = downsampling_factor(image_size, ch_mult)
        kw = dict(dtype=dtype, rngs=rngs)
        width = ch * ch_mult[-1]
        self.conv_in = conv(in_ch, width, **kw)
        self.mid = _Middle(width, **kw)
        levels, res = [], image_size // factor
        for i in reversed(range(len(ch_mult))):
            blocks, attns = [], []
            # One block more per level than the encoder, as in the taming decoder.
            for _ in range(num_res_blocks + 1):
                blocks.append(ResBlock(width, ch * ch_mult[i], **kw))
                width = ch * ch_mult[i]
                attns.append(AttentionBlock(width, **kw) if res in attn_resolutions else None)
            up = Upsample(width, **kw) if i > 0 else None
            levels.append(_Level(blocks, attns, up))
            res = res * 2 if up is not None else res
        self.levels = nnx.List(levels)
        self.norm_out = group_norm(width, **kw)
        self.conv_out = conv(width, out_ch, **kw)

    def features(self, z: jax.Array) -> jax.Array:
        """The input of ``conv_out``: ``[B, H, W, ch * ch_mult[0]]``."""
        h = self.mid(self.conv_in(z))
        for level in self.levels:
            h = level(h)
        return nnx.silu(self.norm_out(h))

    def __call__(self, z: jax.Array) -> jax.Array:
        return self.conv_out(self.features(z))


class _Level(nnx.Module):
    """Residual blocks (each optionally followed by attention), then a resampling or None."""

    def __init__(self, blocks, attns, resample):
        self.blocks = nnx.List(blocks)
        self.attns = nnx.List(attns)
        self.resample = resample

    def __call__(self, h: jax.Array) -> jax.Array:
        for block, attn in zip(self.blocks, self.attns, strict=True):
            h = block(h)
            if attn is not None:
                h = attn(h)
        return h if self.resample is None else self.resample(h)


class _Middle(nnx.Module):
    """ResBlock, self-attention, ResBlock at the lowest resolution."""

    def __init__(self, width: int, *, dtype, rngs):
        self.block1 = ResBlock(width, width, dtype=dtype, rngs=rngs)
        self.attn = AttentionBlock(width, dtype=dtype, rngs=rngs)
        self.block2 = ResBlock(width, width, dtype=dtype, rngs=rngs)

    def __call__(self, h: jax.Array) -> jax.Array:
        return self.block2(self.attn(self.block1(h)))


class Reconstruction(NamedTuple):
    """What a stage-1 autoencoder's training pass (``reconstruct``) returns.

    features: ``[B, H, W, F]`` the input of the decoder's last convolution
        (``decoder.conv_out``), for VQGAN's adaptive weight.
    image: ``[B, H, W, C]`` reconstruction (unclipped), ``decoder.conv_out(features)``.
    indices: ``[B, h, w]`` int32 codes; None for the continuous (KL) autoencoder, which has
        no codes.
    loss: float32 scalar, the autoencoder's own term, unweighted (VQ: codebook +
        commitment; dVAE: the KL to the uniform prior in nats per token; KL autoencoder: the
        KL of q(z|x) to N(0, I) in nats per latent element).
    stats: float32 scalar metrics (VQ, dVAE: codebook usage, perplexity; KL autoencoder:
        latent and posterior standard deviations).
    code_probs: dVAE only: ``[K]`` float32, the encoder's code distribution averaged over
        the batch's tokens (for the diversity term); None otherwise.
    """

    features: jax.Array
    image: jax.Array
    indices: jax.Array | None
    loss: jax.Array
    stats: dict
    code_probs: jax.Array | None = None
