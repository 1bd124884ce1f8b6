"""StyleGAN2 config F (Karras et al. 2020): mapping network, skip generator, residual D.

Generator (paper sec. 2 and 4, fig. 7 "skip"; official config F):
  z [B, z_dim] -> pixel norm (z / RMS(z)) -> 8 x [EqualizedDense(lr_mul 0.01) -> lrelu] -> w
  w -> truncation toward w_avg -> broadcast to ws [B, num_ws, w_dim] -> synthesis:
    learned constant [4, 4, C4] -> conv 3x3 -> tRGB
    per resolution r = 8 .. S: conv 3x3 up (x2) -> conv 3x3 -> tRGB;
                                image = upsample2x(image) + tRGB(x)
  Each conv is a :class:`~zoo.nn.modulated.ModulatedConv` (demodulated) followed by
  per-pixel noise times a learned per-channel strength (zero at init; ``noise_key=None``
  means no noise, else one key per sample: :mod:`zoo.gan.noise`), a bias and lrelu
  (slope 0.2, gain sqrt 2). tRGB is a 1x1 modulated conv without demodulation plus a bias.
  ``num_ws = 2 log2(S) - 2``: the conv layers take ws[0], ..., ws[num_ws - 2] in order, and
  each tRGB shares the index of the next block's first conv (the last tRGB takes
  ws[num_ws - 1]), as in the official code.
Discriminator: :mod:`zoo.gan.stylegan2_discriminator` (residual, minibatch stddev).
Channels at resolution r: ``min(channel_base // r, channel_max)``.

Beyond the paper's unconditional model: with ``gan.condition == "label"`` the mapping
network concatenates a normalised class embedding to the normalised z and the
discriminator projects onto a class embedding (StyleGAN2-ADA's conditional form,
with a single embedding layer where ADA uses a small mapping network).
The official StyleGAN2 noise strength is one scalar per layer; we keep one per channel
(StyleGAN's "per-feature scaling factors"), as this project's spec asks.

Parameter counts (asserted in tests/gan/test_stylegan2.py via ``jax.eval_shape``):
FFHQ-1024 (channel_base 32768): G 30,375,611, D 29,012,513 -- the official config F
counts (G 30,370,060, D 29,012,513) except that our 17 noise strengths are per channel
(5,568 numbers instead of 17). FFHQ-256 (the defaults): G 24,771,925 (4,480 noise
strengths, 14 ws), D 24,001,089.
"""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from zoo.gan.noise import noise_images, per_sample_keys
from zoo.gan.stylegan2_discriminator import Discriminator, class_labels
from zoo.nn.equalized import EqualizedDense, lrelu, upsample2x
from zoo.nn.modulated import ModulatedConv
from zoo.nn.remat import remat

NET_FIELDS = (
    "z_dim",
    "w_dim",
    "mapping_layers",
    "mapping_lr_mul",
    "channel_base",
    "channel_max",
    "mbstd_group",
    "mbstd_features",
    "remat",
)


def net_config() -> ml_collections.ConfigDict:
    """Config F at 256x256 (StyleGAN2-ADA's "paper256"); every field is read by build_networks.

    z_dim, w_dim: latent and intermediate latent sizes. mapping_layers, mapping_lr_mul:
    depth and learning-rate multiplier of the mapping MLP. channel_base, channel_max:
    channels at resolution r are min(channel_base // r, channel_max) (32768 gives the
    1024x1024 paper model). mbstd_group, mbstd_features: minibatch stddev group size and
    number of statistics channels in the discriminator. remat: recompute the activations of
    every synthesis layer and discriminator block in the backward pass (:mod:`zoo.nn.remat`).
    """
    return ml_collections.ConfigDict(
        dict(
            z_dim=512,
            w_dim=512,
            mapping_layers=8,
            mapping_lr_mul=0.01,
            channel_base=16384,
            channel_max=512,
            mbstd_group=4,
            mbstd_features=1,
            remat=False,
        )
    )


def truncate(w: jax.Array, w_avg: jax.Array, psi) -> jax.Array:
    """Truncation trick (sec. 5 of StyleGAN; StyleGAN2 appendix): ``w_avg + psi * (w - w_avg)``."""
    return w_avg + psi * (w - w_avg)


def mix_styles(w1: jax.Array, w2: jax.Array, crossover: jax.Array, num_ws: int) -> jax.Array:
    """Style mixing: ``ws[b, l] = w1[b]`` for layers ``l < crossover[b]``, else ``w2[b]``.

    ``w1, w2: [B, w_dim]``, ``crossover: [B]`` int (``num_ws`` or more = no mixing)
    -> ``[B, num_ws, w_dim]``.
    """
    if w1.shape != w2.shape or w1.ndim != 2 or crossover.shape != w1.shape[:1]:
        raise ValueError(f"need w1, w2 [B, w_dim] and crossover [B], got {w1.shape, w2.shape}")
    first = jnp.arange(num_ws)[None, :] < crossover[:, None]  # [B, num_ws]
    return jnp.where(first[..., None], w1[:, None, :], w2[:, None, :])


def normalize_2nd_moment(x: jax.Array, eps: float = 1e-8) -> jax.Array:
    """Pixel norm over the last axis: ``x / sqrt(mean(x^2) + eps)``."""
    return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + eps)


class MappingNetwork(nnx.Module):
    """``z: [B, z_dim]`` (and optional labels) -> ``w: [B, w_dim]``; every layer lrelu'd."""

    def __init__(self, z_dim, w_dim, num_layers, *, lr_mul, num_classes=0, rngs: nnx.Rngs):
        self.num_classes = num_classes
        self.embed = EqualizedDense(num_classes, w_dim, rngs=rngs) if num_classes else None
        dims = [z_dim + (w_dim if num_classes else 0)] + [w_dim] * num_layers
        self.layers = nnx.List(
            [
                EqualizedDense(a, b, lr_mul=lr_mul, rngs=rngs)
                for a, b in zip(dims[:-1], dims[1:], strict=True)
            ]
        )

    def __call__(self, z: jax.Array, cond: dict | None = None) -> jax.Array:
        label = class_labels(cond, self.num_classes, z.shape[0], "StyleGAN2 mapping")
        x = normalize_2nd_moment(z)
        if self.embed is not None:
            y = self.embed(jax.nn.one_hot(label, self.num_classes, dtype=z.dtype))
            x = jnp.concatenate([x, normalize_2nd_moment(y)], axis=-1)
        for layer in self.layers:
            x = lrelu(layer(x))
        return x


class SynthesisLayer(nnx.Module):
    """Modulated 3x3 conv (optionally x2 up) -> + noise * strength -> + bias -> lrelu."""

    def __init__(self, in_ch, out_ch, w_dim, *, up: bool, rngs: nnx.Rngs):
        self.conv = ModulatedConv(in_ch, out_ch, 3, w_dim, up=up, rngs=rngs)
        self.noise_strength = nnx.Param(jnp.zeros((out_ch,)))
        self.bias = nnx.Param(jnp.zeros((out_ch,)))
        self.dtype = jnp.float32  # compute dtype (zoo.engine.precision)

    def __call__(self, x: jax.Array, w: jax.Array, noise_keys=None, index: int = 0) -> jax.Array:
        """``noise_keys``: ``[B]`` per-sample keys (None: no noise); ``index``: this layer's
        number, folded into each sample's key (:func:`zoo.gan.noise.noise_images`)."""
        x = self.conv(x, w).astype(self.dtype)
        if noise_keys is not None:
            # One noise image per sample, broadcast over channels (StyleGAN fig. 1b "B").
            noise = noise_images(noise_keys, index, (*x.shape[1:3], 1), x.dtype)
            x = x + noise * self.noise_strength[...].astype(x.dtype)
        return lrelu(x + self.bias[...].astype(x.dtype))


class ToRGB(nnx.Module):
    """1x1 modulated conv, no demodulation, plus bias: ``[B, H, W, C] -> [B, H, W, channels]``."""

    def __init__(self, in_ch, channels, w_dim, *, rngs: nnx.Rngs):
        self.conv = ModulatedConv(in_ch, channels, 1, w_dim, demodulate=False, rngs=rngs)
        self.bias = nnx.Param(jnp.zeros((channels,)))
        self.dtype = jnp.float32  # compute dtype (zoo.engine.precision)

    def __call__(self, x: jax.Array, w: jax.Array) -> jax.Array:
        # The image leaves in float32 whatever the compute dtype: the skip architecture sums
        # every resolution's RGB in float32.
        return (self.conv(x, w) + self.bias[...].astype(self.dtype)).astype(jnp.float32)


def channel_counts(image_size: int, channel_base: int, channel_max: int) -> dict[int, int]:
    """``{resolution: channels}`` for resolutions 4, 8, ..., image_size."""
    return {
        4 * 2**i: min(channel_base // (4 * 2**i), channel_max)
        for i in range(int(math.log2(image_size)) - 1)
    }


class SynthesisNetwork(nnx.Module):
    """``ws: [B, num_ws, w_dim]`` -> images ``[B, S, S, channels]`` (skip architecture)."""

    def __init__(
        self, w_dim, image_size, channels, widths: dict[int, int], *, remat=False, rngs: nnx.Rngs
    ):
        self.w_dim, self.remat = w_dim, remat
        self.num_ws = 2 * int(math.log2(image_size)) - 2
        self.const = nnx.Param(jax.random.normal(rngs.params(), (4, 4, widths[4])))
        self.dtype = jnp.float32  # compute dtype (zoo.engine.precision)
        blocks, torgbs = [], []
        for res, ch in widths.items():
            if res == 4:
                blocks.append(nnx.List([SynthesisLayer(ch, ch, w_dim, up=False, rngs=rngs)]))
            else:
                prev = widths[res // 2]
                blocks.append(
                    nnx.List(
                        [
                            SynthesisLayer(prev, ch, w_dim, up=True, rngs=rngs),
                            SynthesisLayer(ch, ch, w_dim, up=False, rngs=rngs),
                        ]
                    )
                )
            torgbs.append(ToRGB(ch, channels, w_dim, rngs=rngs))
        self.blocks, self.torgbs = nnx.List(blocks), nnx.List(torgbs)

    def __call__(self, ws: jax.Array, cond: dict | None = None, *, noise_key=None) -> jax.Array:
        """``cond`` is unused: StyleGAN2's synthesis sees the class only through ws.

        ``noise_key``: None (no noise), ``[B]`` per-sample keys, or one key (split per
        sample); see :mod:`zoo.gan.noise`.
        """
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must be [B, {self.num_ws}, {self.w_dim}], got {ws.shape}")
        keys = None if noise_key is None else per_sample_keys(noise_key, ws.shape[0])
        x = jnp.broadcast_to(self.const[...].astype(self.dtype), (ws.shape[0], *self.const.shape))
        image, i = None, 0
        for block, torgb in zip(self.blocks, self.torgbs, strict=True):
            for layer in block:
                x = remat(layer, self.remat)(x, ws[:, i], keys, i)
                i += 1
            rgb = torgb(x, ws[:, i])  # shares ws[i] with the next block's first conv
            image = rgb if image is None else upsample2x(image) + rgb
        return image


class Generator(nnx.Module):
    """StyleGAN2 generator: ``(z [B, z_dim], cond) -> images [B, S, S, channels]`` near [-1, 1]."""

    def __init__(
        self,
        *,
        image_size: int,
        channels: int,
        z_dim: int,
        w_dim: int,
        mapping_layers: int,
        mapping_lr_mul: float,
        widths: dict[int, int],
        num_classes: int = 0,
        remat: bool = False,
        rngs: nnx.Rngs,
    ):
        self.z_dim, self.w_dim = z_dim, w_dim
        self.mapping = MappingNetwork(
            z_dim, w_dim, mapping_layers, lr_mul=mapping_lr_mul, num_classes=num_classes, rngs=rngs
        )
        self.synthesis = SynthesisNetwork(
            w_dim, image_size, channels, widths, remat=remat, rngs=rngs
        )
        self.num_ws = self.synthesis.num_ws
        # Running mean of w for truncation; updated by the objective, never here.
        self.w_avg = nnx.BatchStat(jnp.zeros((w_dim,)))

    def __call__(
        self, z: jax.Array, cond: dict | None = None, *, noise_key=None, truncation: float = 1.0
    ) -> jax.Array:
        w = self.mapping(z, cond)
        if not (isinstance(truncation, numbers.Real) and truncation == 1.0):
            w = truncate(w, self.w_avg[...], truncation)
        ws = jnp.broadcast_to(w[:, None, :], (w.shape[0], self.num_ws, self.w_dim))
        return self.synthesis(ws, cond, noise_key=noise_key)


def _int(value, what: str, minimum: int = 1) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{what} must be an int >= {minimum}, got {value!r}")
    return int(value)


def build_networks(config, *, rngs: nnx.Rngs) -> tuple[Generator, Discriminator]:
    """(generator, discriminator) from ``config.net`` (:func:`net_config`), ``config.data``
    (image_size: a power of two >= 8, channels: 1 or 3, num_classes) and
    ``config.gan.condition`` ("none", or "label" for class conditioning)."""
    net = config.net
    unknown = sorted(set(net.keys()) - set(NET_FIELDS))
    if unknown:
        raise ValueError(f"unknown StyleGAN2 net fields {unknown}; known: {NET_FIELDS}")
    size = _int(config.data.image_size, "data.image_size", 8)
    if size & (size - 1):
        raise ValueError(f"StyleGAN2 needs data.image_size a power of two >= 8, got {size}")
    channels = config.data.get("channels", None)
    if channels not in (1, 3):
        raise ValueError(f"StyleGAN2 needs data.channels 1 or 3, got {channels!r}")
    condition = config.get("gan", {}).get("condition", "none")
    if condition not in ("none", "label"):
        raise ValueError(f"StyleGAN2 supports gan.condition 'none' or 'label', not {condition!r}")
    num_classes = 0
    if condition == "label":
        num_classes = _int(config.data.get("num_classes", 0), "data.num_classes")
    if not float(net.mapping_lr_mul) > 0:
        raise ValueError(f"net.mapping_lr_mul must be > 0, got {net.mapping_lr_mul}")
    widths = channel_counts(
        size, _int(net.channel_base, "net.channel_base"), _int(net.channel_max, "net.channel_max")
    )
    if widths[size] < 1:
        raise ValueError(f"net.channel_base={net.channel_base} gives 0 channels at {size}x{size}")
    generator = Generator(
        image_size=size,
        channels=channels,
        z_dim=_int(net.z_dim, "net.z_dim"),
        w_dim=_int(net.w_dim, "net.w_dim"),
        mapping_layers=_int(net.mapping_layers, "net.mapping_layers"),
        mapping_lr_mul=float(net.mapping_lr_mul),
        widths=widths,
        num_classes=num_classes,
        remat=bool(net.get("remat", False)),
        rngs=rngs,
    )
    discriminator = Discriminator(
        image_size=size,
        channels=channels,
        widths=widths,
        mbstd_group=_int(net.mbstd_group, "net.mbstd_group"),
        mbstd_features=_int(net.mbstd_features, "net.mbstd_features"),
        num_classes=num_classes,
        remat=bool(net.get("remat", False)),
        rngs=rngs,
    )
    return generator, discriminator
