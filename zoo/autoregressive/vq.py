"""Image tokenizers: the convolutional encoder/decoder of VQGAN and the modules built on it.

- :class:`Encoder` / :class:`Decoder`: the taming-transformers autoencoder (Esser et al.
  2021, after the DDPM U-Net's blocks): residual blocks per resolution, self-attention at the
  listed resolutions and in the middle, ``len(ch_mult) - 1`` stride-2 down/up-samplings, so the
  downsampling factor is ``f = 2 ** (len(ch_mult) - 1)``.
- :class:`VQTokenizer`: VQ-VAE / VQGAN (van den Oord et al. 2017; Esser et al. 2021): encoder,
  1x1 projection to the code dimension, vector quantizer, 1x1 projection back, decoder.
- :class:`DiscreteVAE`: DALL-E's dVAE (Ramesh et al. 2021): the encoder outputs logits over K
  codes per cell; training decodes a Gumbel-softmax relaxation, tokenizing takes the argmax.

Both tokenizers expose the interface a stage-2 transformer needs:
``encode_indices(x) -> [B, h, w] int32`` and ``decode_indices(idx) -> [B, H, W, C]``, with
``num_codes`` and ``factor`` (pixels per token along each side).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.autoregressive.gumbel import gumbel_softmax, kl_to_uniform
from zoo.nn.blocks import AttentionBlock, Downsample, ResBlock, Upsample, conv, group_norm
from zoo.nn.quantizer import VectorQuantizer, codebook_stats, nearest_codes


def _check_sizes(image_size: int, ch_mult) -> int:
    """The downsampling factor f for ``ch_mult``, after checking it divides ``image_size``."""
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
        _check_sizes(image_size, ch_mult)
        kw = dict(dtype=dtype, rngs=rngs)
        self.conv_in = conv(in_ch, ch, **kw)
        levels, width, res = [], ch, image_size
        for i, mult in enumerate(ch_mult):
            blocks, attns = [], []
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(width, ch * mult, **kw))
                width = ch * mult
                attns.append(AttentionBlock(width, **kw) if res in attn_resolutions else None)
            down = Downsample(width, **kw) if i < len(ch_mult) - 1 else None
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
        factor = _check_sizes(image_size, ch_mult)
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
    """What a tokenizer's training pass returns.

    features: ``[B, H, W, F]`` the input of the decoder's last convolution
        (``decoder.conv_out``), for VQGAN's adaptive weight.
    image: ``[B, H, W, C]`` reconstruction (unclipped), ``decoder.conv_out(features)``.
    indices: ``[B, h, w]`` int32 codes.
    loss: float32 scalar, the tokenizer's own term (VQ: codebook + commitment; dVAE: the
        KL to the uniform prior, unweighted, in nats per token).
    stats: float32 scalar metrics (codebook usage, perplexity).
    code_probs: dVAE only: ``[K]`` float32, the encoder's code distribution averaged over
        the batch's tokens (for the diversity term); None for the VQ tokenizers.
    """

    features: jax.Array
    image: jax.Array
    indices: jax.Array
    loss: jax.Array
    stats: dict
    code_probs: jax.Array | None = None


class VQTokenizer(nnx.Module):
    """VQ-VAE / VQGAN: ``[B, H, W, C]`` images <-> ``[B, H/f, W/f]`` code indices.

    Args:
      channels: image channels.
      z_channels: encoder output channels; embed_dim: code vector size.
      num_codes: codebook size K; beta: commitment weight (0.25 in VQ-VAE).
      ema_decay: > 0 updates the codebook by EMA instead of gradients.
      restart_threshold: > 0 restarts dead codes (EMA codebooks only).
      arch: the :class:`Encoder`/:class:`Decoder` fields ``ch, ch_mult, num_res_blocks,
        attn_resolutions, image_size`` (the input side length in pixels).
    """

    def __init__(
        self,
        *,
        channels: int,
        z_channels: int,
        embed_dim: int,
        num_codes: int,
        beta: float = 0.25,
        ema_decay: float = 0.0,
        restart_threshold: float = 0.0,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
        **arch,
    ):
        self.factor = _check_sizes(arch["image_size"], arch["ch_mult"])
        self.num_codes = num_codes
        self.encoder = Encoder(channels, z_channels, dtype=dtype, rngs=rngs, **arch)
        self.quant_conv = conv(z_channels, embed_dim, 1, dtype=dtype, rngs=rngs)
        self.quantizer = VectorQuantizer(
            num_codes,
            embed_dim,
            beta=beta,
            ema_decay=ema_decay,
            restart_threshold=restart_threshold,
            rngs=rngs,
        )
        self.post_quant_conv = conv(embed_dim, z_channels, 1, dtype=dtype, rngs=rngs)
        self.decoder = Decoder(z_channels, channels, dtype=dtype, rngs=rngs, **arch)

    def quantize(self, x: jax.Array, *, key: jax.Array | None = None):
        """``x: [B, H, W, C]`` -> the quantizer's output on the encodings ``[B, h, w, D]``."""
        return self.quantizer(self.quant_conv(self.encoder(x)), key=key)

    def decode_codes(self, codes: jax.Array) -> jax.Array:
        """Quantized vectors ``[B, h, w, D]`` -> images ``[B, H, W, C]``."""
        return self.decoder(self.post_quant_conv(codes))

    def reconstruct(self, x: jax.Array, *, key: jax.Array | None = None, tau=None):
        """A training pass: :class:`Reconstruction` of ``x: [B, H, W, C]`` in [-1, 1].

        ``key``: for dead-code restarts (train mode); ``tau`` is the dVAE's, unused here.
        """
        q = self.quantize(x, key=key)
        features = self.decoder.features(self.post_quant_conv(q.quantized))
        image = self.decoder.conv_out(features)
        return Reconstruction(features, image, q.indices, q.loss, q.stats)

    def encode_indices(self, x: jax.Array) -> jax.Array:
        """``x: [B, H, W, C]`` in [-1, 1] -> ``[B, H/f, W/f]`` int32 codes.

        The nearest codes only: no codebook statistics change, whatever the mode.
        """
        z = self.quant_conv(self.encoder(x))
        flat = z.reshape(-1, z.shape[-1])
        return nearest_codes(flat, self.quantizer.codebook).reshape(z.shape[:-1])

    def decode_indices(self, indices: jax.Array) -> jax.Array:
        """``[B, h, w]`` int codes -> ``[B, h f, w f, C]`` images (unclipped)."""
        return self.decode_codes(self.quantizer.lookup(indices))


class DiscreteVAE(nnx.Module):
    """DALL-E's discrete VAE: logits over K codes per cell, decoded from a relaxed one-hot.

    Training (:meth:`reconstruct`) samples a Gumbel-softmax relaxation at temperature
    ``tau`` (soft, as in DALL-E), embeds it with the codebook ``[K, D]`` (a weighted sum of
    code vectors) and decodes; tokenizing takes the argmax of the logits.

    Args: ``channels``, ``num_codes`` and ``arch`` as :class:`VQTokenizer`; ``embed_dim`` is
    the code vector size D.
    """

    def __init__(
        self,
        *,
        channels: int,
        embed_dim: int,
        num_codes: int,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
        **arch,
    ):
        self.factor = _check_sizes(arch["image_size"], arch["ch_mult"])
        self.num_codes = num_codes
        self.encoder = Encoder(channels, num_codes, dtype=dtype, rngs=rngs, **arch)
        self.codebook = nnx.Embed(num_codes, embed_dim, rngs=rngs)
        self.decoder = Decoder(embed_dim, channels, dtype=dtype, rngs=rngs, **arch)

    def logits(self, x: jax.Array) -> jax.Array:
        """``x: [B, H, W, C]`` -> code logits ``[B, h, w, K]`` float32."""
        return self.encoder(x).astype(jnp.float32)

    def decoder_input(self, soft_codes: jax.Array) -> jax.Array:
        """``[B, h, w, K]`` code weights (one-hot or relaxed) -> ``[B, h, w, D]``."""
        return soft_codes @ self.codebook.embedding[...]

    def reconstruct(self, x: jax.Array, *, key: jax.Array, tau=1.0, hard: bool = False):
        """A training pass with the relaxation at temperature ``tau``: :class:`Reconstruction`.

        ``key``: one PRNG key, or ``[B]`` keys (one per example, so the draws do not depend
        on how the batch is split). ``hard``: decode the one-hot of the Gumbel sample with the
        soft sample's gradient (straight-through), so the decoder trains on single codes as
        it later decodes them. ``loss`` is the KL of the encoder's distribution to the
        uniform prior in nats per token (the ELB's KL term of eq. 3.1 over the tokens).
        """
        logits = self.logits(x)
        if jnp.ndim(key) == 1:
            soft = jax.vmap(lambda lg, k: gumbel_softmax(lg, k, tau, hard))(logits, key)
        else:
            soft = gumbel_softmax(logits, key, tau, hard)
        features = self.decoder.features(self.decoder_input(soft))
        image = self.decoder.conv_out(features)
        indices = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        stats = codebook_stats(indices, self.num_codes)
        probs = jnp.mean(jax.nn.softmax(logits, axis=-1).reshape(-1, self.num_codes), axis=0)
        kl = jnp.mean(kl_to_uniform(logits))
        return Reconstruction(features, image, indices, kl, stats, probs)

    def encode_indices(self, x: jax.Array) -> jax.Array:
        """``x: [B, H, W, C]`` in [-1, 1] -> ``[B, H/f, W/f]`` int32 codes (the argmax)."""
        return jnp.argmax(self.logits(x), axis=-1).astype(jnp.int32)

    def decode_indices(self, indices: jax.Array) -> jax.Array:
        """``[B, h, w]`` int codes -> ``[B, h f, w f, C]`` images (unclipped)."""
        return self.decoder(self.codebook(indices))
