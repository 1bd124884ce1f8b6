"""Imagen's cascade (Saharia et al. 2022): a super-resolution stage on a base model's samples.

The super-resolution (SR) stage is a diffusion model of the high-resolution image given the
low-resolution one, upsampled to the output size and concatenated to the noisy input on the
channel axis (and the caption, as the base model has it). Its conditioning image is
*noise-augmented* (sec. 2.5): training corrupts it with the forward process at a random
level ``aug_t`` in ``[0, cascade.max_aug_t]`` and tells the network ``aug_t`` (embedded like
a timestep, added to the timestep embedding), so at sampling a fixed level
``cascade.sample_aug_t`` (swept in the paper) hides the base model's artefacts.

Each stage is its own run: the SR run trains on the data alone (the low-resolution input is
the image shrunk, :func:`degrade`); its samples, and so its eval, are the cascade's: drawn
on the samples of the base run named in ``config.stages.base`` (a frozen role with its own
parameters, EMA copy and sampler settings) for the same captions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.engine import stages
from zoo.nn.embeddings import timestep_embedding


def degrade(images: jax.Array, low_res: int) -> jax.Array:
    """``images [B, H, W, C]`` shrunk to ``low_res`` (bilinear with antialiasing: a triangle
    filter as wide as the shrink factor) and enlarged back to ``H x W`` (bilinear): the SR
    stage's conditioning image, same shape."""
    b, h, w, c = images.shape
    small = jax.image.resize(images, (b, low_res, low_res, c), "linear", antialias=True)
    return upsample(small, h)


def upsample(low: jax.Array, size: int) -> jax.Array:
    """``low [B, h, w, C]`` -> ``[B, size, size, C]``, bilinear."""
    b, _, _, c = low.shape
    return jax.image.resize(low, (b, size, size, c), "linear")


class SuperResolution(nnx.Module):
    """``(x [B, H, W, C], t [B], cond, *, lowres [B, H, W, C], aug_t [B]) -> [B, H, W, C]``.

    ``net`` is a U-Net (or text U-Net) built with ``2 C`` input channels and ``C`` output
    channels, whose ``__call__`` takes ``extra_emb [B, temb_dim]``; the augmentation level
    ``aug_t`` (an int in the schedule's steps) enters through a 2-layer MLP of its sinusoidal
    embedding, as the timestep does.
    """

    def __init__(self, net: nnx.Module, *, ch: int, temb_dim: int, rngs: nnx.Rngs):
        self.net, self.ch = net, ch
        self.aug_dense0 = nnx.Linear(ch, temb_dim, rngs=rngs)
        self.aug_dense1 = nnx.Linear(temb_dim, temb_dim, rngs=rngs)

    def __call__(self, x, t, *cond, lowres, aug_t, dropout_key=None):
        emb = self.aug_dense1(nnx.silu(self.aug_dense0(timestep_embedding(aug_t, self.ch))))
        inputs = jnp.concatenate([x, lowres.astype(x.dtype)], axis=-1)
        return self.net(inputs, t, *cond, extra_emb=emb, dropout_key=dropout_key)


def base_config_of(config):
    """The base run's config, from ``config.stages.base``; clear errors when it is not a
    pixel diffusion run with this run's caption conditioning, or its size does not fit."""
    source = stages.source_config(config, "base")
    if source.get("model") != "ddpm":
        raise ValueError(
            f"config.stages.base names a {source.get('model')!r} run; a super-resolution "
            "stage needs a pixel diffusion run (model 'ddpm') as its base"
        )
    low, theirs = int(config.cascade.low_res), source.diffusion.condition
    if int(source.data.image_size) != low:
        raise ValueError(
            f"the base run in config.stages.base makes {source.data.image_size}x"
            f"{source.data.image_size} images but cascade.low_res={low}: set "
            f"--config.cascade.low_res={source.data.image_size}"
        )
    if theirs != config.diffusion.condition:
        raise ValueError(
            f"the base run is conditioned on {theirs!r}, this stage on "
            f"{config.diffusion.condition!r}: a cascade passes one condition down its stages"
        )
    return source
