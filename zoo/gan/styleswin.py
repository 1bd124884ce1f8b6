"""StyleSwin (Zhang et al. 2022): a style-based generator built from Swin transformer blocks.

The survey's sec. 3.2.4 and fig. 3.3(b): z goes through an 8-layer MLP to w; a learned
``4 x 4`` constant (plus sinusoidal position encoding, SPE) enters a stack of stages, one per
resolution 4, 8, ..., image_size. Each stage has ``depth`` (2) StyleSwin blocks::

    x = x + proj(DoubleAttn(AdaIN(x, w)))      # AdaIN: instance norm, scale/bias = A(w)
    x = x + MLP(AdaIN(x, w))

where double attention (:class:`zoo.gan.swin.DoubleWindowAttention`) gives half the heads regular
windows and half shifted windows. Between stages the map is upsampled bilinearly, layer-normed,
reduced to the next stage's width by a linear map, and a learned multiple (``alpha``, initially 0)
of the SPE is added. A 1x1 tRGB layer turns each stage's output into an image; the images are
upsampled (StyleGAN2's [1, 3, 3, 1] filter) and summed (skip generator).

Details from the official implementation (microsoft/StyleSwin): the window is ``min(8, side)``
and a stage whose map fits in one window does not shift; heads ``max(C // 32, 4)``; widths 512
up to 32x32, then ``16384 * G_channel_multiplier / side`` (the FFHQ-256 run used multiplier 2:
512 up to 64x64, 256 at 128, 128 at 256); MLP ratio 4 with exact GELU; linear layers truncated
normal (std 0.02); AdaIN affine is an equalised dense with zero bias; like the official code the
tRGB of a stage reads the map *after* its upsample, so images are made at 8, 16, ..., size, size.

Style vectors: one w per StyleSwin block (both of its AdaINs read it, as in the official code),
and with ``to_rgb="modulated"`` one more per stage for the modulated tRGB; so
``num_ws = stages * (depth + [to_rgb == "modulated"])``, ordered coarse to fine, a stage's blocks
first. StyleSwin has no per-layer noise inputs: ``noise_key`` is accepted and ignored, so output
is always deterministic. The model is unconditional: a non-empty ``cond`` raises ValueError.
"""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from zoo.gan.stylegan2_discriminator import Discriminator
from zoo.gan.swin import LINEAR_INIT, DoubleWindowAttention
from zoo.nn.embeddings import timestep_embedding
from zoo.nn.equalized import EqualizedDense, lrelu, upsample2x
from zoo.nn.modulated import ModulatedConv

TO_RGB = ("conv", "modulated")


def stage_channels(side: int, channel_base: int, max_channels: int) -> int:
    """Width of the stage at ``side x side``: ``min(max_channels, channel_base // side)``."""
    return max(1, min(max_channels, channel_base // side))


def sinusoidal_grid(height: int, width: int, channels: int) -> jax.Array:
    """2-D sinusoidal position encoding ``[height, width, channels]`` float32 (StyleSwin's SPE).

    The first ``channels // 2`` channels encode the column, the rest the row, each with the
    1-D transformer encoding of positions 1, 2, ... (``[sin(p f), cos(p f)]``, frequencies from
    1 to 1/10000; as fairseq's embedding that StyleSwin uses, position 0 being padding).
    """
    half = channels // 2
    cols = timestep_embedding(jnp.arange(1, width + 1), half)  # [W, half]
    rows = timestep_embedding(jnp.arange(1, height + 1), channels - half)  # [H, C - half]
    return jnp.concatenate(
        [
            jnp.broadcast_to(cols[None], (height, width, half)),
            jnp.broadcast_to(rows[:, None], (height, width, channels - half)),
        ],
        axis=-1,
    )


def _check_unconditional(cond: dict | None) -> None:
    if cond:
        raise ValueError(f"StyleSwin is unconditional; got cond fields {sorted(cond)}")


class AdaIN(nnx.Module):
    """Adaptive instance norm: ``(x [B, H, W, C], w [B, w_dim]) -> [B, H, W, C]``.

    Each channel is normalised over the tokens of its image (eps 1e-5), then scaled and shifted
    by ``gamma, beta = A(w)``, ``A`` an equalised dense layer (StyleGAN, eq. 1).
    """

    def __init__(self, channels: int, w_dim: int, *, rngs: nnx.Rngs):
        self.style = EqualizedDense(w_dim, 2 * channels, rngs=rngs)

    def __call__(self, x: jax.Array, w: jax.Array) -> jax.Array:
        # Statistics in float32 whatever the compute dtype (as Flax's norms do).
        xf = x.astype(jnp.float32)
        mean = xf.mean(axis=(1, 2), keepdims=True)
        var = jnp.square(xf - mean).mean(axis=(1, 2), keepdims=True)
        normed = ((xf - mean) * jax.lax.rsqrt(var + 1e-5)).astype(x.dtype)
        gamma, beta = jnp.split(self.style(w)[:, None, None, :], 2, axis=-1)
        return gamma * normed + beta


class StyleSwinBlock(nnx.Module):
    """AdaIN -> double attention -> residual; AdaIN -> MLP -> residual. ``[B, S, S, C]`` in/out."""

    def __init__(
        self,
        dim: int,
        resolution: int,
        num_heads: int,
        window: int,
        w_dim: int,
        mlp_ratio: float,
        *,
        rngs: nnx.Rngs,
    ):
        dense = dict(kernel_init=LINEAR_INIT, bias_init=nnx.initializers.zeros, rngs=rngs)
        hidden = int(dim * mlp_ratio)
        self.norm1 = AdaIN(dim, w_dim, rngs=rngs)
        self.attn = DoubleWindowAttention(dim, resolution, window, num_heads, rngs=rngs)
        self.norm2 = AdaIN(dim, w_dim, rngs=rngs)
        self.fc1 = nnx.Linear(dim, hidden, **dense)
        self.fc2 = nnx.Linear(hidden, dim, **dense)

    def __call__(self, x: jax.Array, w: jax.Array) -> jax.Array:
        x = x + self.attn(self.norm1(x, w))
        return x + self.fc2(jax.nn.gelu(self.fc1(self.norm2(x, w)), approximate=False))


class BilinearUpsample(nnx.Module):
    """``[B, S, S, C] -> [B, 2S, 2S, out]``: bilinear x2, LayerNorm, linear, + alpha SPE."""

    def __init__(self, dim: int, out_dim: int, *, rngs: nnx.Rngs):
        self.norm = nnx.LayerNorm(dim, epsilon=1e-5, rngs=rngs)
        self.reduction = nnx.Linear(
            dim, out_dim, use_bias=False, kernel_init=LINEAR_INIT, rngs=rngs
        )
        self.alpha = nnx.Param(jnp.zeros(()))  # SPE weight, learned from 0 (official code)
        self.dtype = jnp.float32  # compute dtype (zoo.engine.precision)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        x = jax.image.resize(x, (b, 2 * h, 2 * w, c), "bilinear")  # = align_corners=False
        x = self.reduction(self.norm(x))
        spe = self.alpha[...] * sinusoidal_grid(2 * h, 2 * w, x.shape[-1])
        return x.astype(self.dtype) + spe.astype(self.dtype)


class ToRGB(nnx.Module):
    """1x1 projection to image channels, plus the upsampled running image (skip generator).

    ``"conv"``: a plain 1x1 conv (official code; Xavier-normal init with gain 0.02).
    ``"modulated"``: StyleGAN2's modulated 1x1 conv without demodulation, reading a w.
    """

    def __init__(self, dim: int, channels: int, w_dim: int, kind: str, *, rngs: nnx.Rngs):
        self.kind = kind
        if kind == "conv":
            init = nnx.initializers.variance_scaling(0.02**2, "fan_avg", "normal")
            self.conv = nnx.Linear(dim, channels, use_bias=False, kernel_init=init, rngs=rngs)
        else:
            self.conv = ModulatedConv(dim, channels, 1, w_dim, demodulate=False, rngs=rngs)
        self.bias = nnx.Param(jnp.zeros((channels,)))
        self.dtype = jnp.float32  # compute dtype (zoo.engine.precision)

    def __call__(self, x: jax.Array, w: jax.Array | None, skip: jax.Array | None) -> jax.Array:
        y = (self.conv(x) if self.kind == "conv" else self.conv(x, w)) + self.bias[...].astype(
            self.dtype
        )
        y = y.astype(jnp.float32)  # the running image is summed in float32
        if skip is not None:
            y = y + (upsample2x(skip) if skip.shape[1] < y.shape[1] else skip)
        return y


class MappingNetwork(nnx.Module):
    """``z [B, z_dim] -> w [B, w_dim]``: pixel norm, then equalised dense + lrelu layers."""

    def __init__(self, z_dim: int, w_dim: int, num_layers: int, lr_mul: float, *, rngs):
        dims = [z_dim] + [w_dim] * num_layers
        self.layers = nnx.List(
            [
                EqualizedDense(a, b, lr_mul=lr_mul, rngs=rngs)
                for a, b in zip(dims[:-1], dims[1:], strict=True)
            ]
        )

    def __call__(self, z: jax.Array) -> jax.Array:
        x = z * jax.lax.rsqrt(jnp.mean(jnp.square(z), axis=-1, keepdims=True) + 1e-8)
        for layer in self.layers:
            x = lrelu(layer(x))
        return x


class _Stage(nnx.Module):
    """One resolution: ``depth`` StyleSwin blocks, the upsample to the next one (None at the
    last), and the tRGB that reads the upsampled map."""

    def __init__(self, blocks, upsample, to_rgb):
        self.blocks = nnx.List(blocks)
        self.upsample = upsample
        self.to_rgb = to_rgb


class StyleSwinGenerator(nnx.Module):
    """StyleSwin generator: ``z [B, z_dim] -> images [B, size, size, channels]`` (about [-1, 1]).

    Follows the style-based GAN contract: ``mapping``, ``synthesis``, ``w_avg``, ``num_ws``.
    """

    def __init__(
        self,
        *,
        image_size: int,
        channels: int = 3,
        z_dim: int = 512,
        w_dim: int = 512,
        mapping_layers: int = 8,
        mapping_lr_mul: float = 0.01,
        channel_base: int = 32768,
        max_channels: int = 512,
        head_dim: int = 32,
        min_heads: int = 4,
        depth: int = 2,
        window: int = 8,
        mlp_ratio: float = 4.0,
        to_rgb: str = "conv",
        rngs: nnx.Rngs,
    ):
        if image_size < 8 or image_size & (image_size - 1):
            raise ValueError(f"image_size must be a power of two >= 8, got {image_size}")
        if to_rgb not in TO_RGB:
            raise ValueError(f"to_rgb must be one of {TO_RGB}, got {to_rgb!r}")
        if min(channels, z_dim, w_dim, mapping_layers, depth, window, head_dim) < 1:
            raise ValueError("channels, z_dim, w_dim, mapping_layers, depth, window, head_dim >= 1")
        if window & (window - 1) or mlp_ratio <= 0:
            raise ValueError(
                f"window must be a power of two and mlp_ratio > 0: {window}, {mlp_ratio}"
            )
        sides = [2**i for i in range(2, int(math.log2(image_size)) + 1)]
        widths = [stage_channels(s, channel_base, max_channels) for s in sides]
        for side, dim in zip(sides, widths, strict=True):
            heads = max(dim // head_dim, min_heads)
            if dim % 2 or heads % 2 or (dim // 2) % (heads // 2):
                raise ValueError(
                    f"stage {side}x{side}: width {dim} and {heads} heads cannot be split into two "
                    "equal halves of whole heads (change channel_base, head_dim or min_heads)"
                )
        self.z_dim, self.w_dim, self.image_size = z_dim, w_dim, image_size
        self.depth, self.modulated_rgb = depth, to_rgb == "modulated"
        self.num_ws = len(sides) * (depth + self.modulated_rgb)
        self.mapping_net = MappingNetwork(z_dim, w_dim, mapping_layers, mapping_lr_mul, rngs=rngs)
        self.w_avg = nnx.BatchStat(jnp.zeros((w_dim,)))
        self.const = nnx.Param(jax.random.normal(rngs.params(), (4, 4, widths[0])))
        self.const_alpha = nnx.Param(jnp.zeros(()))  # SPE on the constant (survey, fig. 3.3b)
        self.dtype = jnp.float32  # compute dtype (zoo.engine.precision)
        stages = []
        for i, (side, dim) in enumerate(zip(sides, widths, strict=True)):
            heads = max(dim // head_dim, min_heads)
            last = i == len(sides) - 1
            out_dim = dim if last else widths[i + 1]
            blocks = [
                StyleSwinBlock(dim, side, heads, window, w_dim, mlp_ratio, rngs=rngs)
                for _ in range(depth)
            ]
            up = None if last else BilinearUpsample(dim, out_dim, rngs=rngs)
            stages.append(_Stage(blocks, up, ToRGB(out_dim, channels, w_dim, to_rgb, rngs=rngs)))
        self.stages = nnx.List(stages)

    def mapping(self, z: jax.Array, cond: dict | None = None) -> jax.Array:
        """``z: [B, z_dim]`` -> ``w: [B, w_dim]``. StyleSwin is unconditional: ``cond`` must be
        None (or empty)."""
        _check_unconditional(cond)
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must be [B, {self.z_dim}], got {z.shape}")
        return self.mapping_net(z)

    def synthesis(
        self, ws: jax.Array, cond: dict | None = None, *, noise_key: jax.Array | None = None
    ) -> jax.Array:
        """``ws: [B, num_ws, w_dim]`` -> images ``[B, size, size, channels]`` float32.

        ``noise_key`` is ignored: StyleSwin has no noise inputs. ``cond`` must be None (or empty).
        """
        _check_unconditional(cond)
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must be [B, {self.num_ws}, {self.w_dim}], got {ws.shape}")
        const = self.const[...]
        x = const + self.const_alpha[...] * sinusoidal_grid(4, 4, const.shape[-1])
        x = jnp.broadcast_to(x.astype(self.dtype), (ws.shape[0],) + x.shape)
        per_stage = self.depth + self.modulated_rgb
        image = None
        for i, stage in enumerate(self.stages):
            stage_ws = ws[:, i * per_stage : (i + 1) * per_stage]
            for j, block in enumerate(stage.blocks):
                x = block(x, stage_ws[:, j])
            if stage.upsample is not None:
                x = stage.upsample(x)
            w_rgb = stage_ws[:, self.depth] if self.modulated_rgb else None
            image = stage.to_rgb(x, w_rgb, image)
        return image

    def __call__(
        self,
        z: jax.Array,
        cond: dict | None = None,
        *,
        noise_key: jax.Array | None = None,
        truncation: float = 1.0,
    ) -> jax.Array:
        """``z: [B, z_dim]`` -> ``[B, size, size, channels]``; truncation psi pulls w to w_avg."""
        w = self.mapping(z, cond)
        w = self.w_avg[...] + truncation * (w - self.w_avg[...])
        ws = jnp.broadcast_to(w[:, None], (w.shape[0], self.num_ws, self.w_dim))
        return self.synthesis(ws, cond, noise_key=noise_key)


def net_config() -> ml_collections.ConfigDict:
    """Architecture fields of ``config.net``; defaults: the paper's FFHQ 256x256 generator.

    z_dim, w_dim: latent and style widths (512).
    mapping_layers, mapping_lr_mul: the mapping MLP (8 equalised layers, learning rate x 0.01).
    channel_base, max_channels: stage width ``min(max_channels, channel_base // side)``; 32768 is
      16384 x the official FFHQ-256 G_channel_multiplier 2 (512 up to 64x64, 256, 128 at 256).
    head_dim, min_heads: heads per block ``max(width // head_dim, min_heads)`` (32, 4), split in
      two halves (regular / shifted windows).
    depth: StyleSwin blocks per stage (2). window: attention window side (8, clamped to the map).
    mlp_ratio: MLP hidden width / block width (4).
    to_rgb: "conv" (official: plain 1x1 conv) or "modulated" (StyleGAN2's modulated 1x1 conv,
      no demodulation; one more w per stage).
    d_channel_base, d_max_channels: widths of the StyleGAN2 residual discriminator, same rule
      (32768 = 16384 x the official D_channel_multiplier 2). mbstd_group, mbstd_features: its
      minibatch-stddev layer (4, 1).
    """
    return ml_collections.ConfigDict(
        dict(
            z_dim=512,
            w_dim=512,
            mapping_layers=8,
            mapping_lr_mul=0.01,
            channel_base=32768,
            max_channels=512,
            head_dim=32,
            min_heads=4,
            depth=2,
            window=8,
            mlp_ratio=4.0,
            to_rgb="conv",
            d_channel_base=32768,
            d_max_channels=512,
            mbstd_group=4,
            mbstd_features=1,
        )
    )


def _positive_int(net, name: str) -> int:
    value = net[name]
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"net.{name} must be an int >= 1, got {value!r}")
    return int(value)


def build_networks(config, *, rngs: nnx.Rngs) -> tuple[StyleSwinGenerator, Discriminator]:
    """(generator, discriminator) from ``config.net`` (:func:`net_config`) and ``config.data``
    (image_size: a power of two >= 8; channels). The discriminator is StyleGAN2's residual one
    (:mod:`zoo.gan.stylegan2_discriminator`), as in the official StyleSwin at 256x256 (the
    1024x1024 models add a wavelet discriminator and spectral norm: not implemented here).
    StyleSwin is unconditional: ``config.gan.condition`` must be "none"."""
    net = config.net
    known = set(net_config().keys())
    unknown = sorted(set(net.keys()) - known)
    if unknown:
        raise ValueError(f"unknown StyleSwin net fields {unknown}; known: {sorted(known)}")
    condition = config.get("gan", {}).get("condition", "none")
    if condition != "none":
        raise ValueError(
            f"StyleSwin is unconditional: gan.condition must be 'none', not {condition!r}"
        )
    size, channels = config.data.image_size, config.data.get("channels", None)
    if not isinstance(size, numbers.Integral) or size < 8 or size & (size - 1):
        raise ValueError(f"StyleSwin needs data.image_size a power of two >= 8, got {size!r}")
    if not isinstance(channels, numbers.Integral) or channels < 1:
        raise ValueError(f"StyleSwin needs data.channels >= 1, got {channels!r}")
    ints = {
        k: _positive_int(net, k)
        for k in known
        if k not in ("mapping_lr_mul", "mlp_ratio", "to_rgb")
    }
    if not float(net.mapping_lr_mul) > 0:
        raise ValueError(f"net.mapping_lr_mul must be > 0, got {net.mapping_lr_mul}")
    generator = StyleSwinGenerator(
        image_size=int(size),
        channels=int(channels),
        mapping_lr_mul=float(net.mapping_lr_mul),
        mlp_ratio=float(net.mlp_ratio),
        to_rgb=net.to_rgb,
        **{k: v for k, v in ints.items() if not k.startswith(("d_", "mbstd_"))},
        rngs=rngs,
    )
    sides = [2**i for i in range(2, int(math.log2(size)) + 1)]
    widths = {s: stage_channels(s, ints["d_channel_base"], ints["d_max_channels"]) for s in sides}
    discriminator = Discriminator(
        image_size=int(size),
        channels=int(channels),
        widths=widths,
        mbstd_group=ints["mbstd_group"],
        mbstd_features=ints["mbstd_features"],
        rngs=rngs,
    )
    return generator, discriminator
