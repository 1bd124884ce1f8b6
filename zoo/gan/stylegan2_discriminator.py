"""StyleGAN2's residual discriminator (Karras et al. 2020, fig. 7c; config E/F).

  images [B, S, S, channels] -> fromRGB (1x1 conv, lrelu) at full resolution
  -> per resolution r = S .. 8, a residual block:
       (conv 3x3 -> lrelu -> conv 3x3 with blur + stride-2 down -> lrelu
        + 1x1 conv (blur + stride-2 down, no bias) skip) * 1/sqrt(2)
  -> minibatch stddev (group 4, 1 feature; ProGAN sec. 3) -> conv 3x3 -> lrelu
  -> flatten -> dense -> lrelu -> dense -> logit [B]

All layers use the equalised learning rate (:mod:`zoo.nn.equalized`); lrelu has slope
0.2 and gain sqrt 2. The 1/sqrt(2) keeps the variance of the sum of two unit-variance
branches at one. With ``num_classes > 0`` the last dense layer outputs ``cmap_dim``
features and the logit is their projection onto a class embedding,
``<out, embed(label)> / sqrt(cmap_dim)`` (projection discriminator, Miyato & Koyama
2018, as in StyleGAN2-ADA).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.nn.equalized import EqualizedConv, EqualizedDense, lrelu
from zoo.nn.remat import remat


def class_labels(cond, num_classes: int, batch: int, who: str) -> jax.Array | None:
    """The [B] int labels of a conditional network; None (and checks cond) when unconditional."""
    if num_classes == 0:
        if cond:
            raise ValueError(f"{who} is unconditional; got cond fields {sorted(cond)}")
        return None
    if not cond or "label" not in cond:
        raise ValueError(f"{who} is class-conditional: pass cond={{'label': [B] int32}}")
    label = jnp.asarray(cond["label"])
    if label.shape != (batch,):
        raise ValueError(f"cond['label'] must be [{batch}], got {label.shape}")
    return label


def minibatch_stddev(x: jax.Array, group_size: int = 4, num_features: int = 1) -> jax.Array:
    """Append ``num_features`` minibatch-stddev channels: ``[B, H, W, C] -> [B, H, W, C + F]``.

    The batch is split into groups of ``G`` consecutive samples (sample ``n`` is in
    group ``n // G``; the official code strides, ``n mod (B / G)``). Consecutive groups
    are the same whether the batch runs whole under jit or split over devices or
    microbatches (whenever each part holds a multiple of G samples), so jit and pmap
    compute the same statistic. Each group's per-feature standard
    deviation over its G samples is averaged over H, W and the ``C / F`` channels of a
    feature, and broadcast back to the group's samples. ``G`` is the largest divisor of
    B that is <= group_size, so any batch size works (B = 1 gives G = 1: a zero
    statistic, up to the sqrt(1e-8) of the epsilon).
    """
    b, h, w, c = x.shape
    if c % num_features:
        raise ValueError(f"channels {c} not divisible by num_features {num_features}")
    g = max(d for d in range(1, min(group_size, b) + 1) if b % d == 0)
    y = x.astype(jnp.float32).reshape(b // g, g, h, w, num_features, c // num_features)
    y = y - jnp.mean(y, axis=1, keepdims=True)
    y = jnp.sqrt(jnp.mean(jnp.square(y), axis=1) + 1e-8)  # [B/G, H, W, F, C/F]
    y = jnp.mean(y, axis=(1, 2, 4))  # [B/G, F]
    y = jnp.repeat(y, g, axis=0)  # sample n gets the statistic of group n // G
    y = jnp.broadcast_to(y[:, None, None, :], (b, h, w, num_features)).astype(x.dtype)
    return jnp.concatenate([x, y], axis=-1)


class DiscriminatorBlock(nnx.Module):
    """Residual block ``[B, r, r, in_ch] -> [B, r/2, r/2, out_ch]``."""

    def __init__(self, in_ch: int, out_ch: int, *, rngs: nnx.Rngs):
        self.conv0 = EqualizedConv(in_ch, in_ch, 3, rngs=rngs)
        self.conv1 = EqualizedConv(in_ch, out_ch, 3, down=True, rngs=rngs)
        self.skip = EqualizedConv(in_ch, out_ch, 1, use_bias=False, down=True, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.skip(x)
        x = lrelu(self.conv1(lrelu(self.conv0(x))))
        return (x + y) * math.sqrt(0.5)


class Discriminator(nnx.Module):
    """``(images [B, S, S, channels], cond) -> logits [B]`` float32.

    ``widths`` maps each resolution 4, 8, ..., S to its channel count. With
    ``num_classes > 0``, ``cond["label"]: [B] int`` is required. ``remat``: recompute each
    residual block's activations in the backward pass (:mod:`zoo.nn.remat`).
    """

    def __init__(
        self,
        *,
        image_size: int,
        channels: int,
        widths: dict[int, int],
        mbstd_group: int = 4,
        mbstd_features: int = 1,
        num_classes: int = 0,
        remat: bool = False,
        rngs: nnx.Rngs,
    ):
        c4 = widths[4]
        if c4 % mbstd_features:
            raise ValueError(f"4x4 channels {c4} not divisible by mbstd_features {mbstd_features}")
        self.image_size, self.channels = image_size, channels
        self.mbstd_group, self.mbstd_features = mbstd_group, mbstd_features
        self.num_classes, self.remat = num_classes, remat
        self.from_rgb = EqualizedConv(channels, widths[image_size], 1, rngs=rngs)
        resolutions = [r for r in sorted(widths, reverse=True) if r > 4]
        self.blocks = nnx.List(
            [DiscriminatorBlock(widths[r], widths[r // 2], rngs=rngs) for r in resolutions]
        )
        self.conv = EqualizedConv(c4 + mbstd_features, c4, 3, rngs=rngs)
        self.fc = EqualizedDense(c4 * 16, c4, rngs=rngs)
        self.cmap_dim = c4 if num_classes else 1
        self.out = EqualizedDense(c4, self.cmap_dim, rngs=rngs)
        self.embed = EqualizedDense(num_classes, c4, rngs=rngs) if num_classes else None

    def __call__(self, images: jax.Array, cond: dict | None = None) -> jax.Array:
        s = self.image_size
        if images.ndim != 4 or images.shape[1:] != (s, s, self.channels):
            raise ValueError(f"images must be [B, {s}, {s}, {self.channels}], got {images.shape}")
        b = images.shape[0]
        label = class_labels(cond, self.num_classes, b, "StyleGAN2 discriminator")
        x = lrelu(self.from_rgb(images))
        for block in self.blocks:
            x = remat(block, self.remat)(x)
        x = minibatch_stddev(x, self.mbstd_group, self.mbstd_features)
        x = lrelu(self.conv(x))
        x = lrelu(self.fc(x.reshape(b, -1)))
        out = self.out(x).astype(jnp.float32)
        if self.embed is None:
            return out[:, 0]
        cmap = self.embed(jax.nn.one_hot(label, self.num_classes)).astype(jnp.float32)
        return jnp.sum(out * cmap, axis=-1) / math.sqrt(self.cmap_dim)
