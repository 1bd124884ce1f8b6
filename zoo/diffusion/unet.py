"""The U-Net of DDPM (Ho et al. 2020, appendix B; ``diffusion_tf/models/unet.py``).

A PixelCNN++-style encoder/decoder: per resolution level ``num_res_blocks``
residual blocks (with self-attention where the feature map side is in
``attn_resolutions``) and a stride-2 downsample; a middle block (res, attn,
res); a mirrored decoder with ``num_res_blocks + 1`` blocks per level, each fed
the concatenation of the running features and one skip from the encoder; and a
GroupNorm-SiLU-conv head. Timesteps enter every residual block through a
sinusoidal embedding followed by a 2-layer MLP of width ``4 * ch``.

Beyond the paper: an optional class embedding (index ``num_classes`` is a
learned "no label" token, for classifier-free guidance), optional text conditioning
(``context_dim``: GLIDE's pooled caption feature added to the timestep embedding and the
caption tokens appended to every attention block's keys), ``num_heads``, a
switch of attention implementation (``"full"`` is the fastest at 16x16 on CPU
and GPU; ``"dot_product"`` uses cuDNN flash attention for bfloat16 on GPU and
wins from ~64x64 maps; ``"chunked"`` bounds memory; see :mod:`zoo.nn.attention`),
and a compute ``dtype`` (float32 parameters, float32 output).

Stable Diffusion's U-Net (Rombach et al. 2022) is this skeleton with
``attention_block="spatial_transformer"`` (:mod:`zoo.nn.spatial_transformer`: GroupNorm,
1x1 proj_in, self-attention, cross-attention to the text tokens, GEGLU feed-forward,
proj_out) and its own conventions: GroupNorm eps 1e-5 (``norm_eps``), the timestep
embedding's cosines first with frequencies ``10000 ** (-i / half)`` (``flip_sin_to_cos=True,
freq_shift=0``), no pooled text feature (``pooled_context=False``), no dropout. SD 1.x
(ch 320, ch_mult (1, 2, 4, 4), 2 blocks, attention on 64, 32 and 16 latents and the middle,
8 heads, context 768) has 859,520,964 parameters, as diffusers' UNet2DConditionModel.

The CIFAR-10 model (ch 128, ch_mult (1, 2, 2, 2), 2 blocks, attention at 16)
has 35.7 M parameters, as in the paper.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.nn.attention import IMPLS, Impl
from zoo.nn.blocks import (
    DEFAULT_INIT,
    AttentionBlock,
    Downsample,
    ResBlock,
    Upsample,
    conv,
    group_norm,
)
from zoo.nn.dropout import fold_in
from zoo.nn.embeddings import timestep_embedding
from zoo.nn.remat import remat
from zoo.nn.spatial_transformer import SpatialTransformer

ATTENTION_BLOCKS = ("self", "spatial_transformer")


class _Level(nnx.Module):
    """One resolution level: res blocks, each followed by attention when attn_kw is given,
    then an optional resampling (Downsample/Upsample class)."""

    def __init__(self, in_chs: Sequence[int], out_ch: int, *, attn, resample, dtype, rngs, **kw):
        self.blocks = nnx.List([ResBlock(c, out_ch, dtype=dtype, rngs=rngs, **kw) for c in in_chs])
        self.attns = nnx.List([attn(out_ch) for _ in in_chs] if attn is not None else [])
        self.resample = resample(out_ch, dtype=dtype, rngs=rngs) if resample else None


class UNet(nnx.Module):
    """DDPM U-Net: ``x: [B, H, W, in_channels]`` -> ``[B, H, W, out_channels]`` float32."""

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        resolution: int,
        ch: int = 128,
        ch_mult: Sequence[int] = (1, 2, 2, 2),
        num_res_blocks: int = 2,
        attn_resolutions: Sequence[int] = (16,),
        mid_attention: bool = True,
        dropout: float = 0.1,
        num_classes: int = 0,
        context_dim: int = 0,
        num_heads: int = 1,
        attention: Impl = "full",
        attention_chunk: int = 64,
        attention_block: str = "self",
        transformer_depth: int = 1,
        linear_projection: bool = False,
        pooled_context: bool = True,
        norm_eps: float = 1e-6,
        min_group_size: int = 1,
        flip_sin_to_cos: bool = False,
        freq_shift: float = 1.0,
        remat: bool = False,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        """Args beyond DDPM's (defaults: DDPM's and GLIDE's behaviour):
        attention_block: "self" (:class:`~zoo.nn.blocks.AttentionBlock`; a context is
          appended to its keys, GLIDE) or "spatial_transformer" (Stable Diffusion; a
          context is cross-attended), with ``transformer_depth`` blocks and 1x1-conv
          (False) or linear (True, SD 2.x) projections (``linear_projection``).
        pooled_context: with ``context_dim``, a pooled text feature joins the timestep
          embedding (GLIDE); False for Stable Diffusion, which has none.
        norm_eps: GroupNorm epsilon of the residual blocks and the output norm (SD 1e-5).
        min_group_size: the fewest channels per GroupNorm group (:func:`~zoo.nn.blocks.num_groups`):
          1 (the papers' 32 groups, one channel each at width <= 32, which normalises the
          timestep embedding away), 4 in the diffusion configs.
        flip_sin_to_cos, freq_shift: the timestep embedding's convention
          (:func:`~zoo.nn.embeddings.timestep_embedding`; SD: True, 0).
        remat: rematerialise every residual and attention block (``nnx.remat``): the
          backward pass recomputes their activations instead of keeping them.
        """
        levels = len(ch_mult)
        if resolution % 2 ** (levels - 1):
            raise ValueError(
                f"image size {resolution} must be divisible by 2**(len(ch_mult)-1) = "
                f"{2 ** (levels - 1)} (ch_mult={tuple(ch_mult)} downsamples {levels - 1} times)"
            )
        if attention not in IMPLS:
            raise ValueError(f"attention must be one of {IMPLS}, got {attention!r}")
        if attention_block not in ATTENTION_BLOCKS:
            raise ValueError(
                f"attention_block must be one of {ATTENTION_BLOCKS}, got {attention_block!r}"
            )
        for c in {ch * m for m in ch_mult}:
            if c % num_heads:
                raise ValueError(f"channels {c} are not divisible by num_heads={num_heads}")
        temb_dim = 4 * ch
        self.ch, self.num_classes, self.context_dim = ch, num_classes, context_dim
        self.remat = remat
        self.flip_sin_to_cos, self.freq_shift = bool(flip_sin_to_cos), float(freq_shift)

        dense = dict(kernel_init=DEFAULT_INIT, dtype=dtype, rngs=rngs)
        self.temb_dense0 = nnx.Linear(ch, temb_dim, **dense)
        self.temb_dense1 = nnx.Linear(temb_dim, temb_dim, **dense)
        # Row num_classes is the "no label" token (classifier-free guidance).
        self.label_emb = (
            nnx.Embed(num_classes + 1, temb_dim, dtype=dtype, rngs=rngs) if num_classes else None
        )
        # The pooled text feature joins the timestep embedding (GLIDE).
        self.context_emb = (
            nnx.Linear(context_dim, temb_dim, **dense) if context_dim and pooled_context else None
        )
        self.conv_in = conv(in_channels, ch, dtype=dtype, rngs=rngs)

        attn_kw = dict(
            num_heads=num_heads,
            impl=attention,
            chunk_size=attention_chunk,
            context_dim=context_dim or None,
            dtype=dtype,
            rngs=rngs,
        )
        if attention_block == "spatial_transformer":
            attn_kw.update(depth=transformer_depth, linear_projection=linear_projection)

            def make_attn(c):
                return SpatialTransformer(c, **attn_kw)
        else:

            def make_attn(c):
                return AttentionBlock(
                    c, norm_eps=norm_eps, min_group_size=min_group_size, **attn_kw
                )

        block_kw = dict(
            temb_dim=temb_dim,
            dropout=dropout,
            norm_eps=norm_eps,
            min_group_size=min_group_size,
            dtype=dtype,
            rngs=rngs,
        )
        # Encoder. skip_chs tracks the channels of every feature map pushed on
        # the skip stack (conv_in, each res block, each downsample).
        skip_chs, c, side = [ch], ch, resolution
        down = []
        for i, mult in enumerate(ch_mult):
            out = ch * mult
            last = i == levels - 1
            in_chs = [c] + [out] * (num_res_blocks - 1)
            down.append(
                _Level(
                    in_chs,
                    out,
                    attn=make_attn if side in attn_resolutions else None,
                    resample=None if last else Downsample,
                    **block_kw,
                )
            )
            skip_chs += [out] * (num_res_blocks + (0 if last else 1))
            c, side = out, side if last else side // 2
        self.down = nnx.List(down)

        self.mid_block1 = ResBlock(c, c, **block_kw)
        self.mid_attn = make_attn(c) if mid_attention else None
        self.mid_block2 = ResBlock(c, c, **block_kw)

        # Decoder: each res block consumes one skip, concatenated on channels.
        up = []
        for i, mult in reversed(list(enumerate(ch_mult))):
            out = ch * mult
            in_chs = []
            for _ in range(num_res_blocks + 1):
                in_chs.append(c + skip_chs.pop())
                c = out
            up.append(
                _Level(
                    in_chs,
                    out,
                    attn=make_attn if side in attn_resolutions else None,
                    resample=Upsample if i else None,
                    **block_kw,
                )
            )
            side = side * 2 if i else side
        self.up = nnx.List(up)
        assert not skip_chs

        self.norm_out = group_norm(
            c, eps=norm_eps, min_group_size=min_group_size, dtype=dtype, rngs=rngs
        )
        self.conv_out = conv(c, out_channels, zero_init=True, dtype=dtype, rngs=rngs)

    def __call__(
        self,
        x: jax.Array,
        t: jax.Array,
        y: jax.Array | None = None,
        *,
        context: jax.Array | None = None,
        context_mask: jax.Array | None = None,
        pooled: jax.Array | None = None,
        extra_emb: jax.Array | None = None,
        dropout_key: jax.Array | None = None,
    ) -> jax.Array:
        """Predicts the network output (eps, x0 or v: the objective decides).

        Args:
          x: ``[B, H, W, in_channels]`` float noisy images.
          t: ``[B]`` int32 or float timesteps.
          y: ``[B]`` int32 class labels, only when ``num_classes > 0``; the value
            ``num_classes`` (or ``y=None``) means "no label".
          context: ``[B, L, context_dim]`` per-token text features, attended to by every
            attention block; required when ``context_dim > 0``.
          context_mask: ``[B, L]`` bool, True at real (non-padding) tokens.
          pooled: ``[B, context_dim]`` one feature per caption, added (projected) to the
            timestep embedding; required with ``context`` when built with
            ``pooled_context=True`` (GLIDE), ignored otherwise (Stable Diffusion).
          extra_emb: ``[B, 4 ch]`` added to the timestep embedding: another scalar
            condition already embedded (a cascade's noise-augmentation level).
          dropout_key: ``[B]`` PRNG keys, one per example (or one key for the whole
            batch), required when dropout > 0 in train mode
            (``nnx.view(m, deterministic=True)`` gives eval mode).

        Returns:
          ``[B, H, W, out_channels]`` float32.
        """
        if y is not None and self.label_emb is None:
            raise ValueError("class labels y given to a UNet built with num_classes=0")
        temb = timestep_embedding(
            t, self.ch, flip_sin_to_cos=self.flip_sin_to_cos, freq_shift=self.freq_shift
        )
        temb = self.temb_dense0(temb)
        temb = self.temb_dense1(nnx.silu(temb))
        if extra_emb is not None:
            temb = temb + extra_emb.astype(temb.dtype)
        if self.label_emb is not None:
            y = jnp.full(x.shape[:1], self.num_classes, jnp.int32) if y is None else y
            temb = temb + self.label_emb(y)
        if self.context_emb is not None:
            if context is None or pooled is None:
                raise ValueError("this UNet is text-conditioned: pass context= and pooled=")
            temb = temb + self.context_emb(pooled)
        elif self.context_dim and context is None:
            raise ValueError("this UNet is text-conditioned: pass context=[B, L, context_dim]")
        elif not self.context_dim and context is not None:
            raise ValueError("context given to a UNet built with context_dim=0")

        def call(block, *args, **kwargs):
            return remat(block, self.remat)(*args, **kwargs)

        def attend(block, h):
            return call(block, h, context, context_mask) if context is not None else call(block, h)

        block_index = itertools.count()

        def res(block, h):  # a distinct dropout key per residual block
            i = next(block_index)
            key = None if dropout_key is None else fold_in(dropout_key, i)
            return call(block, h, temb, dropout_key=key)

        h = self.conv_in(x)
        skips = [h]
        for level in self.down:
            for j, block in enumerate(level.blocks):
                h = res(block, h)
                h = attend(level.attns[j], h) if level.attns else h
                skips.append(h)
            if level.resample is not None:
                h = level.resample(h)
                skips.append(h)

        h = res(self.mid_block1, h)
        h = attend(self.mid_attn, h) if self.mid_attn is not None else h
        h = res(self.mid_block2, h)

        for level in self.up:
            for j, block in enumerate(level.blocks):
                h = res(block, jnp.concatenate([h, skips.pop()], axis=-1))
                h = attend(level.attns[j], h) if level.attns else h
            if level.resample is not None:
                h = level.resample(h)

        h = self.conv_out(nnx.silu(self.norm_out(h)))
        return h.astype(jnp.float32)


def unet_from_config(
    cfg,
    *,
    image_size: int,
    channels: int,
    num_classes: int = 0,
    context_dim: int = 0,
    in_channels: int | None = None,
    rngs: nnx.Rngs,
) -> UNet:
    """Builds a :class:`UNet` from an ml_collections ``config.unet``.

    Reads ch, ch_mult, num_res_blocks, attn_resolutions, mid_attention, dropout,
    num_heads, attention, attention_chunk and optional learn_sigma (output 2 * channels:
    mean and variance interpolation of improved DDPM), and the optional Stable Diffusion switches
    (defaults: DDPM's): attention_block, transformer_depth, linear_projection,
    pooled_context, norm_eps, min_group_size, flip_sin_to_cos, freq_shift (:class:`UNet`).
    """
    learn_sigma = bool(cfg.get("learn_sigma", False))
    return UNet(
        in_channels=in_channels or channels,  # more: inputs concatenated (a cascade's SR)
        out_channels=2 * channels if learn_sigma else channels,
        resolution=image_size,
        ch=cfg.ch,
        ch_mult=tuple(cfg.ch_mult),
        num_res_blocks=cfg.num_res_blocks,
        attn_resolutions=tuple(cfg.attn_resolutions),
        mid_attention=cfg.mid_attention,
        dropout=cfg.dropout,
        num_classes=num_classes,
        context_dim=context_dim,
        num_heads=cfg.num_heads,
        attention=cfg.attention,
        attention_chunk=cfg.attention_chunk,
        attention_block=cfg.get("attention_block", "self"),
        transformer_depth=int(cfg.get("transformer_depth", 1)),
        linear_projection=bool(cfg.get("linear_projection", False)),
        pooled_context=bool(cfg.get("pooled_context", True)),
        norm_eps=float(cfg.get("norm_eps", 1e-6)),
        # 1 when absent: a run saved before the field existed keeps the network it trained.
        min_group_size=int(cfg.get("min_group_size", 1)),
        flip_sin_to_cos=bool(cfg.get("flip_sin_to_cos", False)),
        freq_shift=float(cfg.get("freq_shift", 1.0)),
        remat=bool(cfg.get("remat", False)),
        rngs=rngs,
    )
