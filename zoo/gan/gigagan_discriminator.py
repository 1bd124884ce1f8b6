"""GigaGAN's discriminator (Kang et al. 2023, Sec. 3.5), scaled to tiny: multi-scale input,
text-conditioned projection output.

The image pyramid (the generator's list, or ``image_pyramid`` of a real batch) enters a
StyleGAN2 residual trunk: the full-size image through a fromRGB, every lower scale through its
own fromRGB added into the trunk where the trunk reaches that side, so each scale is judged
both on its own and as the coarse version of the finer ones (the multi-scale input of Sec. 3.4).
At 4x4 a conv and a dense layer give features phi, and

    logit = psi(phi) + <proj(phi), t_D> / sqrt(text_dim)

with t_D the pooled caption feature of D's own text encoder (Sec. 3.5 conditions D on text
by projection, Miyato & Koyama 2018). Any tokens are accepted, so the objective's
matching-aware loss can score a real image against a rolled (mismatched) caption.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.gan.gigagan_layers import caption_tokens, channel_width, check_image_size, image_pyramid
from zoo.nn.equalized import EqualizedConv, EqualizedDense, lrelu
from zoo.nn.text import TextEncoder


class _FromRGB(nnx.Module):
    """1x1 equalised conv + leaky ReLU: ``[B, r, r, channels] -> [B, r, r, width]``."""

    def __init__(self, channels: int, width: int, *, rngs: nnx.Rngs):
        self.conv = EqualizedConv(channels, width, 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return lrelu(self.conv(x))


class _DBlock(nnx.Module):
    """StyleGAN2 residual block: ``[B, r, r, cin] -> [B, r/2, r/2, cout]``.

    ``(skip(x) + conv1(conv0(x))) / sqrt(2)``; the skip is a 1x1 blur-downsample conv without
    bias, conv1 downsamples (blur, then stride 2).
    """

    def __init__(self, cin: int, cout: int, *, rngs: nnx.Rngs):
        self.conv0 = EqualizedConv(cin, cin, 3, rngs=rngs)
        self.conv1 = EqualizedConv(cin, cout, 3, down=True, rngs=rngs)
        self.skip = EqualizedConv(cin, cout, 1, use_bias=False, down=True, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = lrelu(self.conv1(lrelu(self.conv0(x))))
        return (self.skip(x) + h) * math.sqrt(0.5)


class GigaGANDiscriminator(nnx.Module):
    """``(images, cond) -> logits [B]`` float32.

    ``images``: the list of ``num_scales`` images ``[B, r, r, channels]`` for r = 8, 16, ...,
    image_size (the generator's output structure), or one full-size ``[B, S, S, channels]``
    array, whose pyramid is built here with :func:`image_pyramid`. ``cond["tokens"]`` is
    ``[B, L]`` int32 (any caption; None = the empty caption, which reduces D to ``psi(phi)``).

    Args:
      image_size: full side, a power of two >= 8.
      channels: image channels.
      vocab_size, max_len: token vocabulary and longest caption of D's text encoder.
      channel_base, channel_max: trunk width at side r is min(channel_base // r, channel_max).
      text_dim, text_depth, text_heads: D's own text encoder (separate from G's, as in the paper).
    """

    def __init__(
        self,
        *,
        image_size: int,
        channels: int,
        vocab_size: int,
        max_len: int,
        channel_base: int = 2048,
        channel_max: int = 128,
        text_dim: int = 128,
        text_depth: int = 2,
        text_heads: int = 4,
        rngs: nnx.Rngs,
    ):
        self.image_size = check_image_size(image_size)
        if min(channels, channel_base, channel_max) < 1:
            raise ValueError("channels, channel_base and channel_max must be >= 1")
        self.channels = channels
        # Sides from full size down to 8 (the scales read) and the 4x4 epilogue.
        sides = [image_size // 2**i for i in range(int(math.log2(image_size)) - 1)]
        self.num_scales = len(sides) - 1
        width = {r: channel_width(r, channel_base, channel_max) for r in sides}
        self.from_rgb = nnx.List([_FromRGB(channels, width[r], rngs=rngs) for r in sides[:-1]])
        self.blocks = nnx.List([_DBlock(width[r], width[r // 2], rngs=rngs) for r in sides[:-1]])
        c4 = width[4]
        self.conv4 = EqualizedConv(c4, c4, 3, rngs=rngs)
        self.fc = EqualizedDense(16 * c4, c4, rngs=rngs)
        self.psi = EqualizedDense(c4, 1, rngs=rngs)  # unconditional realness
        self.proj = EqualizedDense(c4, text_dim, rngs=rngs)  # projection onto the caption
        self.text = TextEncoder(vocab_size, max_len, text_dim, text_depth, text_heads, rngs=rngs)
        self.text_dim = text_dim

    def _pyramid(self, images) -> list[jax.Array]:
        if not isinstance(images, list | tuple):
            images = image_pyramid(jnp.asarray(images), self.num_scales)
        if len(images) != self.num_scales:
            raise ValueError(
                f"expected {self.num_scales} scales (8..{self.image_size}), got {len(images)}"
            )
        for i, x in enumerate(images):
            side = 8 * 2**i
            if x.ndim != 4 or x.shape[1:] != (side, side, self.channels):
                raise ValueError(
                    f"scale {i} must be [B, {side}, {side}, {self.channels}], got {x.shape}"
                )
        return list(images)

    def __call__(self, images, cond: dict | None = None) -> jax.Array:
        images = self._pyramid(images)[::-1]  # full size first, as the trunk reads them
        b = images[0].shape[0]
        x = self.from_rgb[0](images[0])
        for i, block in enumerate(self.blocks):
            if i > 0:  # merge scale i (side image_size / 2**i) into the trunk at its side
                x = (x + self.from_rgb[i](images[i])) * math.sqrt(0.5)
            x = block(x)
        x = lrelu(self.conv4(x))
        phi = lrelu(self.fc(x.reshape(b, -1)))
        _, t_global, _ = self.text(caption_tokens(cond, b))
        projection = jnp.sum(self.proj(phi) * t_global, axis=-1) / math.sqrt(self.text_dim)
        return (self.psi(phi)[:, 0] + projection).astype(jnp.float32)
