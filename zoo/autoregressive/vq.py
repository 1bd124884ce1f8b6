"""Image tokenizers on the convolutional encoder/decoder of VQGAN (``zoo.nn.conv_autoencoder``).

- :class:`VQTokenizer`: VQ-VAE / VQGAN (van den Oord et al. 2017; Esser et al. 2021): encoder,
  1x1 projection to the code dimension, vector quantizer, 1x1 projection back, decoder.
- :class:`DiscreteVAE`: DALL-E's dVAE (Ramesh et al. 2021): the encoder outputs logits over K
  codes per cell; training decodes a Gumbel-softmax relaxation, tokenizing takes the argmax.

Both tokenizers expose the interface a stage-2 transformer needs:
``encode_indices(x) -> [B, h, w] int32`` and ``decode_indices(idx) -> [B, H, W, C]``, with
``num_codes`` and ``factor`` (pixels per token along each side); ``autoencode(x)`` is the
round trip through the hard codes, and ``reconstruct`` the training pass
(:class:`~zoo.nn.conv_autoencoder.Reconstruction`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.autoregressive.gumbel import gumbel_softmax, kl_to_uniform
from zoo.nn.blocks import conv
from zoo.nn.conv_autoencoder import Decoder, Encoder, Reconstruction, downsampling_factor
from zoo.nn.quantizer import VectorQuantizer, codebook_stats, nearest_codes


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
        self.factor = downsampling_factor(arch["image_size"], arch["ch_mult"])
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

    def autoencode(self, x: jax.Array) -> jax.Array:
        """``x: [B, H, W, C]`` -> its reconstruction through the nearest codes (unclipped)."""
        return self.decode_indices(self.encode_indices(x))


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
        self.factor = downsampling_factor(arch["image_size"], arch["ch_mult"])
        self.num_codes = num_codes
        self.encoder = Encoder(channels, num_codes, dtype=dtype, rngs=rngs, **arch)
        self.codebook = nnx.Embed(num_codes, embed_dim, rngs=rngs)
        self.decoder = Decoder(embed_dim, channels, dtype=dtype, rngs=rngs, **arch)

    def logits(self, x: jax.Array) -> jax.Array:
        """``x: [B, H, W, C]`` -> code logits ``[B, h, w, K]`` float32."""
        return self.encoder(x).astype(jnp.float32)

    def decoder_input(self, soft_codes: jax.Array) -> jax.Array:
        """``[B, h, w, K]`` code weights (one-hot or relaxed) -> ``[B, h, w, D]``."""
        dtype = self.codebook.dtype or jnp.float32  # the policy's compute dtype
        return soft_codes.astype(dtype) @ self.codebook.embedding[...].astype(dtype)

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

    def autoencode(self, x: jax.Array) -> jax.Array:
        """``x: [B, H, W, C]`` -> its reconstruction through the argmax codes (unclipped)."""
        return self.decode_indices(self.encode_indices(x))
