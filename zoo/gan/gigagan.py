"""GigaGAN (Kang et al. 2023, "Scaling up GANs for Text-to-Image Synthesis"), scaled to tiny.

Generator (paper Sec. 3, Fig. 4): a text encoder turns the caption into per-token features
t_local and a pooled vector t_global; the style mapping network gives ``w = M(z, t_global)``;
the synthesis network starts from a learned 4x4 constant and, per resolution, upsamples with a
style-modulated convolution whose kernel is a per-sample softmax mixture of a bank of kernels
(sample-adaptive kernel selection, Sec. 3.1), interleaves self-attention and cross-attention to
t_local with the convolutions at the resolutions in ``attn_resolutions`` (Sec. 3.2), adds
per-pixel noise, and emits an image through its own toRGB at every resolution >= 8: the output
is an image pyramid, low to high resolution (multi-scale training, Sec. 3.4).

Discriminator (Sec. 3.5): its own text branch (t_D, the pooled vector), a StyleGAN2 residual
conv trunk that reads each scale of the pyramid through its own fromRGB and adds it into the
trunk at that resolution, and a projection output ``psi(phi(x)) + <proj(phi(x)), t_D>``
(Miyato & Koyama 2018), so the matching-aware loss can ask D about any (image, caption) pair.

Departures from the paper, all for want of pretrained weights or of scale: the text encoder is
a small transformer learned from scratch (``zoo.nn.text.TextEncoder``) instead of frozen CLIP
plus learned attention layers; D predicts once from the merged trunk rather than at every
scale of its multi-scale input/output design; no CLIP or vision-aided losses live here (the
objective owns losses; the matching-aware loss rolls ``cond["tokens"]`` across the batch).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from zoo.gan.gigagan_discriminator import GigaGANDiscriminator
from zoo.gan.gigagan_layers import (
    AttentionBlock,
    NoiseInjection,
    StyleMapping,
    caption_tokens,
    channel_width,
    check_image_size,
    image_pyramid,
)
from zoo.gan.noise import per_sample_keys
from zoo.nn.equalized import lrelu
from zoo.nn.modulated import ModulatedConv
from zoo.nn.text import TextEncoder

__all__ = [
    "GigaGANDiscriminator",
    "GigaGANGenerator",
    "build_networks",
    "image_pyramid",
    "net_config",
]


class _StyleLayer(nnx.Module):
    """Adaptive-kernel modulated conv, then noise, bias and leaky ReLU (StyleGAN2's layer order)."""

    def __init__(self, cin, cout, w_dim, *, num_kernels, up=False, rngs):
        self.conv = ModulatedConv(cin, cout, 3, w_dim, up=up, num_kernels=num_kernels, rngs=rngs)
        self.noise = NoiseInjection()
        self.bias = nnx.Param(jnp.zeros((cout,)))
        self.dtype = jnp.float32  # compute dtype (zoo.engine.precision)

    def __call__(self, x, w, noise_keys, index):
        x = self.noise(self.conv(x, w), noise_keys, index)
        return lrelu(x + self.bias[...].astype(self.dtype))


class _ToRGB(nnx.Module):
    """1x1 modulated conv without demodulation, plus bias: features -> image (StyleGAN2 tRGB)."""

    def __init__(self, cin, channels, w_dim, *, rngs):
        self.conv = ModulatedConv(cin, channels, 1, w_dim, demodulate=False, rngs=rngs)
        self.bias = nnx.Param(jnp.zeros((channels,)))
        self.dtype = jnp.float32  # compute dtype (zoo.engine.precision)

    def __call__(self, x, w):
        # The image leaves the network in float32 whatever the compute dtype.
        return (self.conv(x, w) + self.bias[...].astype(self.dtype)).astype(jnp.float32)


class _SynthesisBlock(nnx.Module):
    """One resolution: up-conv, [self- + cross-attention], conv, toRGB. Consumes 3 ws."""

    def __init__(self, cin, cout, w_dim, channels, *, num_kernels, attn, rngs):
        self.conv0 = _StyleLayer(cin, cout, w_dim, num_kernels=num_kernels, up=True, rngs=rngs)
        self.attn = attn
        self.conv1 = _StyleLayer(cout, cout, w_dim, num_kernels=num_kernels, rngs=rngs)
        self.to_rgb = _ToRGB(cout, channels, w_dim, rngs=rngs)


class GigaGANGenerator(nnx.Module):
    """Text-conditioned style-based generator with multi-scale output.

    ``__call__(z: [B, z_dim], cond={"tokens": [B, L] int32}) -> list`` of images
    ``[B, r, r, channels]`` float32 (roughly [-1, 1]) for r = 8, 16, ..., image_size.

    Args:
      image_size: output side, a power of two >= 8.
      channels: image channels.
      vocab_size, max_len: token vocabulary size and longest caption (text encoder tables).
      z_dim, w_dim: latent and style widths.
      mapping_layers, mapping_lr_mul: depth and learning-rate multiplier of M(z, t_global).
      channel_base, channel_max: width at side r is min(channel_base // r, channel_max).
      num_kernels: size of the kernel bank of every 3x3 conv (1 = plain StyleGAN2 conv).
      attn_resolutions: sides at which attention blocks follow the first conv.
      num_heads, mlp_ratio: attention heads and MLP width factor of the attention blocks.
      text_dim, text_depth, text_heads: the text encoder's width, blocks and heads.

    ``num_ws = 1 + 3 * log2(image_size / 4)``: the 4x4 conv, then two convs and a toRGB per
    resolution. ``w_avg`` is the running mean of w for truncation; the objective updates it.
    """

    def __init__(
        self,
        *,
        image_size: int,
        channels: int,
        vocab_size: int,
        max_len: int,
        z_dim: int = 64,
        w_dim: int = 128,
        mapping_layers: int = 4,
        mapping_lr_mul: float = 0.01,
        channel_base: int = 2048,
        channel_max: int = 128,
        num_kernels: int = 4,
        attn_resolutions: Sequence[int] = (4, 8, 16),
        num_heads: int = 4,
        mlp_ratio: int = 2,
        text_dim: int = 128,
        text_depth: int = 2,
        text_heads: int = 4,
        rngs: nnx.Rngs,
    ):
        self.image_size = check_image_size(image_size)
        resolutions = [2**i for i in range(2, int(math.log2(image_size)) + 1)]
        bad = sorted(set(attn_resolutions) - set(resolutions))
        if bad:
            raise ValueError(f"attn_resolutions {bad} are not generator sides {resolutions}")
        if min(z_dim, w_dim, channels, channel_base, channel_max) < 1:
            raise ValueError("z_dim, w_dim, channels, channel_base, channel_max must be >= 1")
        if num_kernels < 1:  # checked before any parameter is drawn
            raise ValueError(f"num_kernels must be >= 1, got {num_kernels}")
        self.z_dim, self.w_dim = z_dim, w_dim
        self.text = TextEncoder(vocab_size, max_len, text_dim, text_depth, text_heads, rngs=rngs)
        self.mapping_net = StyleMapping(
            z_dim, text_dim, w_dim, mapping_layers, lr_mul=mapping_lr_mul, rngs=rngs
        )
        self.w_avg = nnx.BatchStat(jnp.zeros((w_dim,)))

        def attn(res, ch):
            if res not in attn_resolutions:
                return None
            return AttentionBlock(ch, text_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, rngs=rngs)

        ch = [channel_width(r, channel_base, channel_max) for r in resolutions]
        self.const = nnx.Param(jax.random.normal(rngs.params(), (4, 4, ch[0])))
        self.dtype = jnp.float32  # compute dtype (zoo.engine.precision)
        self.conv4 = _StyleLayer(ch[0], ch[0], w_dim, num_kernels=num_kernels, rngs=rngs)
        self.attn4 = attn(4, ch[0])
        self.blocks = nnx.List(
            [
                _SynthesisBlock(
                    ch[i - 1],
                    ch[i],
                    w_dim,
                    channels,
                    num_kernels=num_kernels,
                    attn=attn(r, ch[i]),
                    rngs=rngs,
                )  # fmt: skip
                for i, r in enumerate(resolutions)
                if i > 0
            ]
        )
        self.num_ws = 1 + 3 * len(self.blocks)

    def _encode(self, cond, batch):
        return self.text(caption_tokens(cond, batch))  # (t_local [B, L, D], t_global [B, D], mask)

    def _map(self, z, t_global):
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must be [B, {self.z_dim}], got shape {z.shape}")
        return self.mapping_net(z, t_global)

    def mapping(self, z: jax.Array, cond: dict | None = None) -> jax.Array:
        """``w = M(z, t_global)``: ``z: [B, z_dim]`` -> ``[B, w_dim]``."""
        return self._map(z, self._encode(cond, z.shape[0])[1])

    def _synthesize(self, ws, text, noise_key):
        t_local, _, mask = text
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must be [B, {self.num_ws}, {self.w_dim}], got {ws.shape}")

        b = ws.shape[0]
        keys = None if noise_key is None else per_sample_keys(noise_key, b)
        x = jnp.broadcast_to(self.const[...].astype(self.dtype), (b, *self.const.shape))
        x = self.conv4(x, ws[:, 0], keys, 0)  # each layer's noise index is its ws index
        if self.attn4 is not None:
            x = self.attn4(x, t_local, mask)
        images = []
        for i, block in enumerate(self.blocks):
            j = 1 + 3 * i
            x = block.conv0(x, ws[:, j], keys, j)
            if block.attn is not None:
                x = block.attn(x, t_local, mask)
            x = block.conv1(x, ws[:, j + 1], keys, j + 1)
            images.append(block.to_rgb(x, ws[:, j + 2]))
        return images

    def synthesis(
        self, ws: jax.Array, cond: dict | None = None, *, noise_key: jax.Array | None = None
    ) -> list[jax.Array]:
        """``ws: [B, num_ws, w_dim]`` -> image pyramid (list, 8x8 first, full size last).

        The caption enters here through cross-attention to t_local. ``noise_key=None``: no
        per-layer noise (deterministic); ``[B]`` keys (one per sample) or one key (split per
        sample) draw fresh noise for every layer (:mod:`zoo.gan.noise`).
        """
        return self._synthesize(ws, self._encode(cond, ws.shape[0]), noise_key)

    def __call__(
        self,
        z: jax.Array,
        cond: dict | None = None,
        *,
        noise_key: jax.Array | None = None,
        truncation: float = 1.0,
    ) -> list[jax.Array]:
        """mapping -> truncation ``w_avg + psi * (w - w_avg)`` -> broadcast -> synthesis."""
        text = self._encode(cond, z.shape[0])
        w = self._map(z, text[1])
        w = self.w_avg[...] + truncation * (w - self.w_avg[...])
        ws = jnp.broadcast_to(w[:, None, :], (w.shape[0], self.num_ws, self.w_dim))
        return self._synthesize(ws, text, noise_key)


# Architecture fields of `config.net`: tiny defaults for 32x32 `shapes` (G ~4.6M, D ~1.6M
# parameters). The paper's text-to-image generator has ~1B parameters, a 64px base output with an
# image pyramid down to 4px, and a frozen CLIP text encoder with learned attention layers on
# top; its per-layer widths, kernel-bank sizes and attention placement are listed in the
# paper's appendix tables, which could not be checked offline here, so no value is quoted.
_NET_DEFAULTS = dict(
    z_dim=64,
    w_dim=128,
    mapping_layers=4,  # style mapping M(z, t_global)
    mapping_lr_mul=0.01,  # StyleGAN's mapping learning-rate multiplier
    channel_base=2048,  # G and D width min(channel_base // r, channel_max): 128 up to 16x16,
    channel_max=128,  # 64 at 32x32
    num_kernels=4,  # kernel bank per 3x3 conv (sample-adaptive kernel selection)
    attn_resolutions=(4, 8, 16),  # attention where maps are small (<= 256 tokens)
    num_heads=4,
    mlp_ratio=2,  # MLP width factor inside each attention block
    text_dim=128,  # learned from scratch here (the paper: frozen CLIP + learned attention)
    text_depth=2,
    text_heads=4,
    vocab_size=None,  # None: zoo.data.text.shapes_tokenizer().vocab_size
    max_len=None,  # None: zoo.data.text.SHAPES_MAX_LEN
)


def net_config() -> ml_collections.ConfigDict:
    """Architecture fields of `config.net` (tiny defaults for 32x32 `shapes`).

    z_dim, w_dim: latent and style widths. mapping_layers, mapping_lr_mul: depth and learning-rate
    multiplier of the style mapping M(z, t_global). channel_base, channel_max: width of G and D at
    side r is min(channel_base // r, channel_max). num_kernels: size of the kernel bank of every
    3x3 generator conv (1 turns sample-adaptive kernel selection off). attn_resolutions: generator
    sides with a self- + cross-attention block. num_heads, mlp_ratio: those blocks' heads and MLP
    width factor. text_dim, text_depth, text_heads: the learned text encoders (one in G, a
    separate one in D). vocab_size, max_len: the token vocabulary and longest caption; None takes
    them from the `shapes` tokenizer.
    """
    return ml_collections.ConfigDict(_NET_DEFAULTS)


def _int_field(net, name: str, least: int = 1) -> int:
    value = net[name]
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < least:
        raise ValueError(f"config.net.{name} must be an int >= {least}, got {value!r}")
    return int(value)


def build_networks(config, *, rngs: nnx.Rngs) -> tuple[GigaGANGenerator, GigaGANDiscriminator]:
    """(generator, discriminator) from `config.net` and `config.data.image_size` / `channels`."""
    net = config.net
    unknown = sorted(set(net.keys()) - set(_NET_DEFAULTS))
    if unknown:
        raise ValueError(
            f"unknown GigaGAN config.net fields {unknown}; known: {sorted(_NET_DEFAULTS)}"
        )
    net = ml_collections.ConfigDict({**_NET_DEFAULTS, **net.to_dict()})
    ints = {
        k: _int_field(net, k)
        for k in _NET_DEFAULTS
        if k not in ("mapping_lr_mul", "attn_resolutions", "vocab_size", "max_len")
    }
    if not isinstance(net.mapping_lr_mul, numbers.Real) or net.mapping_lr_mul <= 0:
        raise ValueError(f"config.net.mapping_lr_mul must be > 0, got {net.mapping_lr_mul!r}")
    attn = net.attn_resolutions
    if not isinstance(attn, Sequence) or not all(isinstance(r, numbers.Integral) for r in attn):
        raise ValueError(f"config.net.attn_resolutions must be a sequence of ints, got {attn!r}")
    from zoo.data.text import SHAPES_MAX_LEN, shapes_tokenizer  # on use: it loads `shapes`

    vocab_size = (
        shapes_tokenizer().vocab_size
        if net.vocab_size is None
        else _int_field(net, "vocab_size", 2)
    )
    max_len = SHAPES_MAX_LEN if net.max_len is None else _int_field(net, "max_len")
    common = dict(
        image_size=config.data.image_size,
        channels=_int_field(config.data, "channels"),
        vocab_size=vocab_size,
        max_len=max_len,
        channel_base=ints["channel_base"],
        channel_max=ints["channel_max"],
        text_dim=ints["text_dim"],
        text_depth=ints["text_depth"],
        text_heads=ints["text_heads"],
        rngs=rngs,
    )
    generator = GigaGANGenerator(
        z_dim=ints["z_dim"],
        w_dim=ints["w_dim"],
        mapping_layers=ints["mapping_layers"],
        mapping_lr_mul=float(net.mapping_lr_mul),
        num_kernels=ints["num_kernels"],
        attn_resolutions=tuple(int(r) for r in attn),
        num_heads=ints["num_heads"],
        mlp_ratio=ints["mlp_ratio"],
        **common,
    )
    return generator, GigaGANDiscriminator(**common)
