"""Latent diffusion's first stage: the KL-regularised autoencoder (Rombach et al. 2022, "KL-f").

Shared by the stage-1 objective that trains it (``zoo.autoregressive.tokenizer_objective``)
and the latent diffusion that loads it, so it lives here, below both families.

The encoder (``zoo.nn.conv_autoencoder.Encoder``, VQGAN's) gives the mean and log-variance
of a diagonal Gaussian q(z|x) over latents ``[B, H/f, W/f, z]``; training decodes a
reparameterised sample ``z = mean + exp(logvar / 2) * eps`` and adds a slight KL penalty
towards N(0, I) (weight ~1e-6 in the paper, sec. 3.1 and appendix G), so the latent space
stays close to VQGAN's in detail while its scale stays bounded. It trains through the
stage-1 tokenizer objective (``config.model = "klvae"``,
:mod:`zoo.autoregressive.tokenizer_objective`): L1 + LPIPS + PatchGAN with VQGAN's adaptive
weight, shared with VQGAN, plus ``autoencoder.kl_weight`` times the KL.

Stage 2 (latent diffusion) uses :meth:`KLAutoencoder.encode_latents` (the posterior mean, or
a sample), multiplies the latents by :func:`latent_scale_factor` measured once on a batch of
them, and decodes its samples with :meth:`KLAutoencoder.decode` after dividing by it.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.nn.blocks import conv
from zoo.nn.conv_autoencoder import Decoder, Encoder, Reconstruction, downsampling_factor

# The log-variance is clipped to this range as in the paper's released autoencoders: the
# standard deviation stays in [3e-7, 2.2e4], so exp() neither underflows the KL's log term
# nor overflows the sample.
LOGVAR_RANGE = (-30.0, 20.0)


def gaussian_kl(mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(mean, exp(logvar)) || N(0, 1)) elementwise, in nats, in closed form:
    ``(mean^2 + exp(logvar) - 1 - logvar) / 2``. Shapes broadcast; 0 at mean 0, logvar 0."""
    return 0.5 * (jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar)


def latent_scale_factor(latents: jax.Array) -> jax.Array:
    """``1 / std(latents)``: the scale that gives the latents unit variance.

    Rombach et al. (2022, appendix G) rescale a KL-regularised latent space by one scalar,
    estimated from a batch of the training set's latents, before diffusion. ``latents``: any
    shape, typically ``[N, h, w, z]``; the standard deviation is over all elements, about
    their mean (ddof 0). Returns a float32 scalar, ``std(latents * factor) = 1``.
    """
    return 1.0 / jnp.std(jnp.asarray(latents, jnp.float32))


class DiagonalGaussian(NamedTuple):
    """q(z|x) = N(mean, exp(logvar)), independent per latent element.

    mean, logvar: ``[B, h, w, z]`` float32; logvar already clipped to :data:`LOGVAR_RANGE`.
    """

    mean: jax.Array
    logvar: jax.Array

    @property
    def std(self) -> jax.Array:
        return jnp.exp(0.5 * self.logvar)

    def sample(self, key: jax.Array) -> jax.Array:
        """The reparameterised sample ``mean + std * eps``, eps ~ N(0, I): ``[B, h, w, z]``.

        ``key``: one typed PRNG key, or ``[B]`` keys (one per example, so the draws do not
        depend on how the batch is split over devices). Differentiable in mean and logvar.
        """
        if jnp.ndim(key) == 1:
            eps = jax.vmap(lambda k: jax.random.normal(k, self.mean.shape[1:]))(key)
        else:
            eps = jax.random.normal(key, self.mean.shape)
        return self.mean + self.std * eps

    def kl(self) -> jax.Array:
        """KL(q || N(0, I)) per latent element, nats: ``[B, h, w, z]``."""
        return gaussian_kl(self.mean, self.logvar)


class KLAutoencoder(nnx.Module):
    """The KL-f autoencoder: ``[B, H, W, C]`` images <-> ``[B, H/f, W/f, z]`` latents.

    encoder (to ``2 z`` channels) -> 1x1 conv to the moments ``(mean, logvar)`` -> sample ->
    1x1 conv -> decoder, as in the paper's KL autoencoders.

    Args:
      channels: image channels C.
      z_channels: latent channels z (4 in the paper's KL-f4 / KL-f8).
      arch: the :class:`~zoo.nn.conv_autoencoder.Encoder` / ``Decoder`` fields ``ch,
        ch_mult, num_res_blocks, attn_resolutions, image_size`` (the input side in pixels);
        ``f = 2 ** (len(ch_mult) - 1)``.
      downsample_pad: the encoder's downsampling padding, (1, 1) or (0, 1) (Stable
        Diffusion's VAE: :class:`~zoo.nn.blocks.Downsample`).

    Stable Diffusion's VAE (diffusers' AutoencoderKL) is ``channels=3, z_channels=4,
    ch=128, ch_mult=(1, 2, 4, 4), num_res_blocks=2, attn_resolutions=(),
    downsample_pad=(0, 1)``: 83,653,863 parameters.
    """

    def __init__(
        self,
        *,
        channels: int,
        z_channels: int,
        downsample_pad: tuple[int, int] = (1, 1),
        dtype=jnp.float32,
        rngs: nnx.Rngs,
        **arch,
    ):
        self.factor = downsampling_factor(arch["image_size"], arch["ch_mult"])
        if int(z_channels) < 1:
            raise ValueError(f"z_channels must be >= 1, got {z_channels}")
        self.z_channels = int(z_channels)
        z2 = 2 * self.z_channels
        self.encoder = Encoder(
            channels, z2, downsample_pad=downsample_pad, dtype=dtype, rngs=rngs, **arch
        )
        self.moments_conv = conv(z2, z2, 1, dtype=dtype, rngs=rngs)
        self.post_conv = conv(self.z_channels, self.z_channels, 1, dtype=dtype, rngs=rngs)
        self.decoder = Decoder(self.z_channels, channels, dtype=dtype, rngs=rngs, **arch)

    def encode(self, x: jax.Array) -> DiagonalGaussian:
        """``x: [B, H, W, C]`` in [-1, 1] -> q(z|x) over ``[B, H/f, W/f, z]``."""
        moments = self.moments_conv(self.encoder(x)).astype(jnp.float32)
        mean, logvar = jnp.split(moments, 2, axis=-1)
        return DiagonalGaussian(mean, jnp.clip(logvar, *LOGVAR_RANGE))

    def decode(self, z: jax.Array) -> jax.Array:
        """Latents ``[B, h, w, z]`` (unscaled) -> images ``[B, h f, w f, C]`` (unclipped)."""
        return self.decoder(self.post_conv(z))

    def encode_latents(self, x: jax.Array, key: jax.Array | None = None) -> jax.Array:
        """Stage 2's latents of ``x: [B, H, W, C]``: ``[B, H/f, W/f, z]`` float32.

        The posterior mean when ``key`` is None (deterministic), else a sample (one key or
        ``[B]`` keys).
        """
        q = self.encode(x)
        return q.mean if key is None else q.sample(key)

    def autoencode(self, x: jax.Array) -> jax.Array:
        """``x: [B, H, W, C]`` -> its reconstruction through the posterior mean (unclipped)."""
        return self.decode(self.encode(x).mean)

    def reconstruct(self, x: jax.Array, *, key: jax.Array | None, tau=None) -> Reconstruction:
        """A training pass: :class:`~zoo.nn.conv_autoencoder.Reconstruction` of ``x``.

        ``x: [B, H, W, C]`` in [-1, 1]. ``key``: one key or ``[B]`` keys for the
        reparameterised sample; None decodes the mean. ``tau`` is the dVAE's, unused.
        Returns ``indices=None`` (no codes); ``loss`` = KL(q(z|x) || N(0, I)) averaged over
        the batch's latent elements, nats, unweighted; ``stats``: ``latent_std`` (std of the
        decoded latents, 1 / the scale factor they would get) and ``posterior_std`` (mean of
        q's standard deviations: near 0 when the encoder turns deterministic).
        """
        q = self.encode(x)
        z = q.mean if key is None else q.sample(key)
        features = self.decoder.features(self.post_conv(z))
        image = self.decoder.conv_out(features)
        stats = {"latent_std": jnp.std(z), "posterior_std": jnp.mean(q.std)}
        return Reconstruction(features, image, None, jnp.mean(q.kl()), stats)


def autoencoder_from_config(config, rngs: nnx.Rngs | None = None) -> KLAutoencoder:
    """The :class:`KLAutoencoder` of a ``klvae`` run's config (a stage-2 run passes the
    stage-1 run's): ``data.channels``, ``data.image_size``, ``vq.ch, ch_mult,
    num_res_blocks, attn_resolutions``, optional ``vq.downsample_pad`` (default (1, 1)) and
    ``autoencoder.z_channels``."""
    v, data = config.vq, config.data
    return KLAutoencoder(
        channels=int(data.channels),
        z_channels=int(config.autoencoder.z_channels),
        image_size=int(data.image_size),
        ch=int(v.ch),
        ch_mult=tuple(v.ch_mult),
        num_res_blocks=int(v.num_res_blocks),
        attn_resolutions=tuple(v.attn_resolutions),
        downsample_pad=tuple(v.get("downsample_pad", (1, 1))),
        rngs=rngs or nnx.Rngs(int(config.seed)),
    )
