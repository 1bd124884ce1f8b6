"""Latent diffusion (Rombach et al. 2022): the DDPM on a frozen KL autoencoder's latents.

The stage-1 run (``model = "klvae"``, :mod:`zoo.nn.kl_autoencoder`) is loaded frozen through
``config.stages.autoencoder``. Training encodes each image to a posterior sample ``z``
``[B, H/f, W/f, z_channels]`` and diffuses ``scale * z``; samples are decoded from
``x / scale``. The scale factor makes the diffused latents' variance 1 (the paper's
appendix G: the KL weight is small, so the latents' scale is whatever the autoencoder
learned): ``latent.scale_factor > 0`` fixes it (SD 1.x: 0.18215); 0 measures it on the first
training batch, as 1 / the latents' standard deviation, and keeps it in the model's state,
so checkpoints, resumed runs and samples use the same number.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.engine import stages
from zoo.engine.objective import Context, batch_mean
from zoo.nn.kl_autoencoder import KLAutoencoder, autoencoder_from_config


class LatentScale(nnx.Variable):
    """The latent scale factor: state, not a parameter (no gradient, no optimizer)."""


class LatentDenoiser(nnx.Module):
    """A denoiser over latents with the scale factor it was trained with.

    ``net``: the U-Net (or text U-Net), called as ``net(x, t, ...)``. ``scale``: float32
    scalar, 0 until measured (:meth:`measure`).
    """

    def __init__(self, net: nnx.Module, scale_factor: float = 0.0):
        if not scale_factor >= 0:
            raise ValueError(f"latent.scale_factor must be >= 0 (0: measure), got {scale_factor}")
        self.net = net
        self.scale = LatentScale(jnp.float32(scale_factor))

    def __call__(self, x, t, *cond, **kwargs):
        return self.net(x, t, *cond, **kwargs)

    def measure(self, z: jax.Array, ctx: Context) -> jax.Array:
        """The scale for ``z [B, h, w, c]``: the stored one, or, while it is 0, 1 / std of
        this batch's latents (over every device's batch under pmap), which is then stored."""
        moments = batch_mean(jnp.stack([jnp.mean(z), jnp.mean(jnp.square(z))]), ctx)
        std = jnp.sqrt(jnp.maximum(moments[1] - jnp.square(moments[0]), 1e-12))
        scale = jnp.where(self.scale[...] > 0, self.scale[...], 1.0 / std)
        self.scale[...] = jax.lax.stop_gradient(scale)
        return self.scale[...]


def autoencoder_of(config) -> tuple[KLAutoencoder, object]:
    """The frozen autoencoder module and its run's config, from ``config.stages.autoencoder``.

    Clear errors when that run is not a ``klvae`` run or was trained on other image sizes.
    """
    source = stages.source_config(config, "autoencoder")
    if source.get("model") != "klvae":
        raise ValueError(
            f"config.stages.autoencoder names a {source.get('model')!r} run; latent diffusion "
            "needs a 'klvae' run (python -m zoo.main --config=configs/autoencoder_shapes.py)"
        )
    stages.require_same_data(config, source, "autoencoder")
    return autoencoder_from_config(source), source
