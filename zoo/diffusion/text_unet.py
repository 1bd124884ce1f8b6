"""A caption-conditioned U-Net: GLIDE's text transformer and diffusion U-Net in one module.

GLIDE (Nichol et al. 2022, sec. 2.4 and 4) encodes the caption with a transformer trained
jointly with the diffusion model; the pooled caption feature is added to the timestep
embedding and the per-token features are appended to the keys and values of every attention
layer of the U-Net. The "empty caption" (all padding tokens) is the unconditional input of
classifier-free guidance: its token features are masked out of attention and its pooled
feature is zero, so the U-Net then sees the timestep alone.
"""

from __future__ import annotations

import jax
from flax import nnx

from zoo.diffusion.unet import UNet, unet_from_config
from zoo.nn.dropout import fold_in
from zoo.nn.text import TextEncoder


class TextUNet(nnx.Module):
    """``(x [B, H, W, C], t [B], tokens [B, L]) -> [B, H, W, out]`` float32.

    ``tokens``: int caption ids, 0 = padding (``zoo.data.text.WordTokenizer``); all zeros is
    the empty caption.
    """

    def __init__(self, text: TextEncoder, unet: UNet):
        if unet.context_dim != text.dim:
            raise ValueError(f"UNet context_dim={unet.context_dim} != text encoder dim {text.dim}")
        self.text, self.unet = text, unet

    def __call__(
        self, x: jax.Array, t: jax.Array, tokens: jax.Array, *, extra_emb=None, dropout_key=None
    ) -> jax.Array:
        # Distinct dropout streams for the text encoder and the U-Net.
        text_key = None if dropout_key is None else fold_in(dropout_key, 1 << 20)
        local, pooled, mask = self.text(tokens, dropout_key=text_key)
        return self.unet(
            x, t, context=local, context_mask=mask, pooled=pooled, extra_emb=extra_emb,
            dropout_key=dropout_key,
        )  # fmt: skip


def text_unet_from_config(
    config,
    *,
    vocab_size: int,
    max_len: int,
    image_size: int,
    channels: int,
    in_channels: int | None = None,
    rngs: nnx.Rngs,
) -> TextUNet:
    """A :class:`TextUNet` from ``config.unet`` and ``config.text_encoder`` (dim, depth,
    num_heads, dropout) for inputs ``[B, image_size, image_size, channels]`` (images, or a
    latent diffusion's latents)."""
    t = config.text_encoder
    text = TextEncoder(
        vocab_size,
        max_len,
        int(t.dim),
        int(t.depth),
        int(t.num_heads),
        dropout=float(t.dropout),
        rngs=rngs,
    )
    unet = unet_from_config(
        config.unet,
        image_size=int(image_size),
        channels=int(channels),
        in_channels=in_channels,
        context_dim=int(t.dim),
        rngs=rngs,
    )
    return TextUNet(text, unet)
