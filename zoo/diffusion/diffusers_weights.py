"""Stable Diffusion 1.x weights in diffusers' format, loaded into the zoo's U-Net and VAE.

A diffusers model folder (``stable-diffusion-v1-5/`` and the like) holds
``unet/diffusion_pytorch_model.safetensors`` (UNet2DConditionModel) and
``vae/diffusion_pytorch_model.safetensors`` (AutoencoderKL). They are read with the
``safetensors`` package's numpy API, one tensor at a time and without torch, into modules
built abstractly (``nnx.eval_shape``: no random init, one full copy of the weights) from
``configs/sd_v1.py``::

    from configs import sd_v1
    from zoo.diffusion.diffusers_weights import load_stable_diffusion, sample_stable_diffusion

    config = sd_v1.get_config()
    unet, vae = load_stable_diffusion("stable-diffusion-v1-5", config)
    eps = unet(latents, t, context=clip_tokens)  # [B, 64, 64, 4], [B], [B, 77, 768]
    images = vae.decode(latents / 0.18215)       # [B, 512, 512, 3] in about [-1, 1]
    images = sample_stable_diffusion(unet, vae, config, clip_tokens, empty_tokens, key)

or, to check a download, ``python -m zoo.diffusion.diffusers_weights MODEL_DIR``. The text
context is CLIP ViT-L/14's last hidden states, which the zoo does not compute: bring them
(``empty_tokens``: those of the empty caption "", the unconditional input of guidance).

Every diffusers tensor name is derived from the zoo parameter's path by the rewrite rules
below (``down.1.attns.0.transformer_blocks.0.attn2.key.kernel`` ->
``down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight``), and converted from
PyTorch's layout: conv kernels OIHW -> HWIO, linear weights ``(out, in)`` -> ``(in, out)``;
a 1x1 conv and a linear layer are the same map, so either layout fills either (the legacy VAE
files store attention projections as 1x1 convs). The legacy VAE attention names
(``query``, ``key``, ``value``, ``proj_attn``) of files saved by diffusers < 0.14 are read
too. Before any data is read, the file's names and shapes are checked against the module:
any tensor without a place, any parameter without a tensor, any shape that does not fit is
listed in one :class:`DiffusersWeightsError`.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import re
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from zoo.diffusion.ddim import ddim_sample
from zoo.diffusion.schedules import make_schedule
from zoo.diffusion.unet import UNet, unet_from_config
from zoo.nn.kl_autoencoder import KLAutoencoder

WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"

# (zoo path pattern, diffusers name), applied in order to the dotted zoo path.
_ATTENTION_NAMES = (
    (r"\.(attn[12])\.query\.", r".\1.to_q."),
    (r"\.(attn[12])\.key\.", r".\1.to_k."),
    (r"\.(attn[12])\.value\.", r".\1.to_v."),
    (r"\.(attn[12])\.out\.", r".\1.to_out.0."),
)
UNET_RULES = (
    (r"^down\.(\d+)\.blocks\.", r"down_blocks.\1.resnets."),
    (r"^down\.(\d+)\.attns\.", r"down_blocks.\1.attentions."),
    (r"^down\.(\d+)\.resample\.", r"down_blocks.\1.downsamplers.0."),
    (r"^up\.(\d+)\.blocks\.", r"up_blocks.\1.resnets."),
    (r"^up\.(\d+)\.attns\.", r"up_blocks.\1.attentions."),
    (r"^up\.(\d+)\.resample\.", r"up_blocks.\1.upsamplers.0."),
    (r"^mid_block1\.", "mid_block.resnets.0."),
    (r"^mid_attn\.", "mid_block.attentions.0."),
    (r"^mid_block2\.", "mid_block.resnets.1."),
    (r"^temb_dense0\.", "time_embedding.linear_1."),
    (r"^temb_dense1\.", "time_embedding.linear_2."),
    (r"^norm_out\.", "conv_norm_out."),
    (r"\.temb_proj\.", ".time_emb_proj."),
    (r"\.shortcut\.", ".conv_shortcut."),
    *_ATTENTION_NAMES,
    (r"\.ff\.proj\.", ".ff.net.0.proj."),  # GEGLU's projection, then dropout, then out
    (r"\.ff\.out\.", ".ff.net.2."),
    (r"\.(kernel|scale)$", ".weight"),
)
VAE_RULES = (
    (r"^encoder\.levels\.(\d+)\.blocks\.", r"encoder.down_blocks.\1.resnets."),
    (r"^encoder\.levels\.(\d+)\.resample\.", r"encoder.down_blocks.\1.downsamplers.0."),
    (r"^decoder\.levels\.(\d+)\.blocks\.", r"decoder.up_blocks.\1.resnets."),
    (r"^decoder\.levels\.(\d+)\.resample\.", r"decoder.up_blocks.\1.upsamplers.0."),
    (r"\.mid\.block1\.", ".mid_block.resnets.0."),
    (r"\.mid\.block2\.", ".mid_block.resnets.1."),
    (r"\.mid\.attn\.norm\.", ".mid_block.attentions.0.group_norm."),
    (r"\.mid\.attn\.attn\.query\.", ".mid_block.attentions.0.to_q."),
    (r"\.mid\.attn\.attn\.key\.", ".mid_block.attentions.0.to_k."),
    (r"\.mid\.attn\.attn\.value\.", ".mid_block.attentions.0.to_v."),
    (r"\.mid\.attn\.attn\.out\.", ".mid_block.attentions.0.to_out.0."),
    (r"\.norm_out\.", ".conv_norm_out."),
    (r"^moments_conv\.", "quant_conv."),
    (r"^post_conv\.", "post_quant_conv."),
    (r"\.shortcut\.", ".conv_shortcut."),
    (r"\.(kernel|scale)$", ".weight"),
)
# Names in VAE files saved by diffusers < 0.14, rewritten to the current ones.
LEGACY_VAE_NAMES = (
    (r"\.attentions\.(\d+)\.query\.", r".attentions.\1.to_q."),
    (r"\.attentions\.(\d+)\.key\.", r".attentions.\1.to_k."),
    (r"\.attentions\.(\d+)\.value\.", r".attentions.\1.to_v."),
    (r"\.attentions\.(\d+)\.proj_attn\.", r".attentions.\1.to_out.0."),
)


class DiffusersWeightsError(ValueError):
    """A weights file that does not fit the module (names, shapes) or cannot be read."""


def diffusers_names(module: nnx.Module, rules) -> dict[str, tuple]:
    """``{diffusers name: zoo parameter path}`` for every ``nnx.Param`` of ``module``,
    from the rewrite ``rules`` (:data:`UNET_RULES` or :data:`VAE_RULES`)."""
    names = {}
    for path, _ in nnx.to_flat_state(nnx.state(module, nnx.Param)):
        name = ".".join(str(p) for p in path)
        for pattern, replacement in rules:
            name = re.sub(pattern, replacement, name)
        if name in names:
            raise AssertionError(f"two zoo parameters map to {name}: {names[name]}, {path}")
        names[name] = path
    return names


def _torch_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The PyTorch shape of a zoo parameter: HWIO -> OIHW, (in, out) -> (out, in)."""
    if len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])
    return shape[::-1] if len(shape) == 2 else shape


def _fits(file_shape: tuple[int, ...], zoo_shape: tuple[int, ...]) -> bool:
    """Whether a tensor of ``file_shape`` (PyTorch layout) fills ``zoo_shape``."""
    want = _torch_shape(zoo_shape)
    if file_shape == want:
        return True
    # A 1x1 conv (O, I, 1, 1) and a linear layer (O, I) are the same map.
    if len(want) == 4 and want[2:] == (1, 1):
        return file_shape == want[:2]
    return len(want) == 2 and file_shape == (*want, 1, 1)


def _to_zoo(array: np.ndarray, zoo_shape: tuple[int, ...]) -> np.ndarray:
    """A PyTorch-layout tensor (checked by :func:`_fits`) in the zoo's layout."""
    if len(zoo_shape) == 4:  # conv kernel: (O, I, H, W) -> (H, W, I, O)
        array = array.reshape(_torch_shape(zoo_shape))
        return array.transpose(2, 3, 1, 0)
    if len(zoo_shape) == 2:  # linear: (out, in) -> (in, out)
        return array.reshape(zoo_shape[::-1]).T
    return array


def weights_file(path: str | Path, subfolder: str) -> Path:
    """The safetensors file for ``path``: the file itself, ``path/<WEIGHTS_FILE>`` or
    ``path/<subfolder>/<WEIGHTS_FILE>`` (``subfolder``: "unet" or "vae"). Name a variant
    such as ``diffusion_pytorch_model.fp16.safetensors`` by its path: float16 weights are
    cast to the module's float32 parameters."""
    path = Path(path)
    candidates = [path, path / WEIGHTS_FILE, path / subfolder / WEIGHTS_FILE]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"no diffusers weights at {path}: looked for {', '.join(map(str, candidates[1:]))} "
        "(only .safetensors files are read; .bin files are torch pickles)"
    )


def _limited(items: list[str], limit: int = 12) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def load_diffusers_weights(path: str | Path, module: nnx.Module, rules, legacy=()) -> nnx.Module:
    """Fills every parameter of ``module`` from the safetensors file ``path``; returns it.

    ``module`` may be abstract (``nnx.eval_shape``): its parameters are replaced by arrays
    of their dtype. Raises :class:`DiffusersWeightsError` listing every tensor without a
    place, every parameter without a tensor and every shape that does not fit, before
    reading any data; the module is then unchanged.
    """
    from safetensors import safe_open  # only the converter needs it

    params = nnx.to_flat_state(nnx.state(module, nnx.Param))
    zoo_values = {path: var.get_value() for path, var in params}  # arrays or shape structs
    zoo_shapes = {path: tuple(value.shape) for path, value in zoo_values.items()}
    places = diffusers_names(module, rules)
    try:
        handle = safe_open(str(path), framework="numpy")
    except Exception as err:  # the library raises its own error types for a bad header
        raise DiffusersWeightsError(f"{path} is not a readable safetensors file: {err}") from err
    with handle as f:
        in_file = {}  # current diffusers name -> name in the file
        for stored in f.keys():
            name = stored
            for pattern, replacement in legacy:
                name = re.sub(pattern, replacement, name)
            in_file[name] = stored
        extra = sorted(set(in_file) - set(places))
        missing = sorted(set(places) - set(in_file))
        wrong = []
        for name in sorted(set(places) & set(in_file)):
            shape = tuple(f.get_slice(in_file[name]).get_shape())
            zoo_shape = zoo_shapes[places[name]]
            if not _fits(shape, zoo_shape):
                wrong.append(f"{name}: file {shape}, module expects {_torch_shape(zoo_shape)}")
        problems = []
        if extra:
            problems.append(f"{len(extra)} tensors of the file have no place: {_limited(extra)}")
        if missing:
            problems.append(
                f"{len(missing)} module parameters are not in the file: {_limited(missing)}"
            )
        if wrong:
            problems.append(f"{len(wrong)} tensors have the wrong shape: {_limited(wrong, 6)}")
        if problems:
            raise DiffusersWeightsError(
                f"{path} does not fit the {type(module).__name__} "
                f"({len(places)} parameters, {len(in_file)} tensors in the file):\n  "
                + "\n  ".join(problems)
                + "\nBuild the module with the weights' architecture (configs/sd_v1.py for SD 1.x)."
            )
        values = {}
        for name, zoo_path in places.items():
            try:
                array = f.get_tensor(in_file[name])
            except Exception as err:  # e.g. bfloat16, which numpy cannot hold
                raise DiffusersWeightsError(f"{path}: cannot read {name}: {err}") from err
            array = _to_zoo(array, zoo_shapes[zoo_path])
            values[zoo_path] = jnp.asarray(array, zoo_values[zoo_path].dtype)
    nnx.update(module, nnx.from_flat_state([(p, v.replace(values[p])) for p, v in params]))
    return module


def load_diffusers_unet(path: str | Path, unet: UNet) -> UNet:
    """A diffusers UNet2DConditionModel file (or its folder, or the model folder) into
    ``unet``, a :class:`~zoo.diffusion.unet.UNet` with ``attention_block="spatial_transformer"``."""
    return load_diffusers_weights(weights_file(path, "unet"), unet, UNET_RULES)


def load_diffusers_vae(path: str | Path, vae: KLAutoencoder) -> KLAutoencoder:
    """A diffusers AutoencoderKL file (or its folder, or the model folder) into ``vae``."""
    return load_diffusers_weights(weights_file(path, "vae"), vae, VAE_RULES, LEGACY_VAE_NAMES)


def _build(make, abstract: bool, seed: int):
    if abstract:  # no random init of weights the file will replace
        return nnx.eval_shape(lambda: make(nnx.Rngs(seed)))
    return make(nnx.Rngs(seed))


def stable_diffusion_vae(config, *, abstract: bool = True) -> KLAutoencoder:
    """The VAE of ``config.autoencoder`` (ch, ch_mult, num_res_blocks, attn_resolutions,
    z_channels, downsample_pad, image_size, channels); abstract unless ``abstract=False``."""
    a = config.autoencoder
    arch = dict(
        channels=int(a.channels),
        z_channels=int(a.z_channels),
        ch=int(a.ch),
        ch_mult=tuple(a.ch_mult),
        num_res_blocks=int(a.num_res_blocks),
        attn_resolutions=tuple(a.attn_resolutions),
        image_size=int(a.image_size),
        downsample_pad=tuple(a.downsample_pad),
    )
    return _build(lambda rngs: KLAutoencoder(rngs=rngs, **arch), abstract, int(config.seed))


def stable_diffusion_unet(config, *, abstract: bool = True) -> UNet:
    """The latent U-Net of ``config.unet`` on ``autoencoder.image_size / f`` latents of
    ``autoencoder.z_channels``, cross-attending to ``text_encoder.dim``-wide tokens."""
    a = config.autoencoder
    size = int(a.image_size) // 2 ** (len(a.ch_mult) - 1)

    def make(rngs):
        return unet_from_config(
            config.unet,
            image_size=size,
            channels=int(a.z_channels),
            context_dim=int(config.text_encoder.dim),
            rngs=rngs,
        )

    return _build(make, abstract, int(config.seed))


def load_stable_diffusion(model_dir: str | Path, config) -> tuple[UNet, KLAutoencoder]:
    """The U-Net and VAE of a diffusers model folder (``unet/``, ``vae/``), built from
    ``config`` (``configs/sd_v1.py``) and filled with its weights (float32 parameters)."""
    unet = load_diffusers_unet(model_dir, stable_diffusion_unet(config))
    vae = load_diffusers_vae(model_dir, stable_diffusion_vae(config))
    return unet, vae


def sample_stable_diffusion(
    unet: UNet, vae: KLAutoencoder, config, context, null_context, rng, *, guidance_scale=None
) -> jax.Array:
    """Images ``[B, H, W, 3]`` in [-1, 1] from text features, by DDIM with guidance.

    ``context: [B, L, D]`` the captions' token features (CLIP's last hidden states),
    ``null_context: [1 or B, L, D]`` the empty caption's. DDIM (eta 0) with
    ``config.diffusion.sample_steps`` steps on its schedule, eps mixed as
    ``eps(null) + s (eps(caption) - eps(null))`` with ``s = guidance_scale`` (default
    ``config.diffusion.guidance_scale``; 1: conditional only), on latents of
    ``autoencoder.image_size / f`` per side; decoded after dividing by
    ``config.latent.scale_factor``. One compile per module and shape: ``s`` is traced.
    """
    d, a = config.diffusion, config.autoencoder
    kwargs = {}
    if d.schedule in ("linear", "scaled_linear"):
        kwargs = dict(beta_start=float(d.beta_start), beta_end=float(d.beta_end))
    sched = make_schedule(d.schedule, int(d.timesteps), **kwargs)
    side = int(a.image_size) // 2 ** (len(a.ch_mult) - 1)
    shape = (context.shape[0], side, side, int(a.z_channels))
    scale = float(d.guidance_scale) if guidance_scale is None else float(guidance_scale)
    steps, factor = int(d.sample_steps), float(config.latent.scale_factor)
    unet_graph, unet_state = nnx.split(unet)
    vae_graph, vae_state = nnx.split(vae)
    static = (unet_graph, vae_graph, shape, steps, factor)
    return _sample(*static, unet_state, vae_state, sched, context, null_context, rng, scale)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _sample(
    unet_graph, vae_graph, shape, steps, factor, unet_state, vae_state, sched, context, null, rng, s
):
    unet, vae = nnx.merge(unet_graph, unet_state), nnx.merge(vae_graph, vae_state)
    both = jnp.concatenate([context, jnp.broadcast_to(null, context.shape)])

    def denoise(x, t):  # one U-Net call on [caption; empty caption]
        out = unet(jnp.concatenate([x, x]), jnp.concatenate([t, t]), context=both)
        with_c, without = jnp.split(out, 2)
        return without + s * (with_c - without)

    latents = ddim_sample(denoise, sched, rng, shape, steps=steps, clip_denoised=False)
    return jnp.clip(vae.decode(latents / factor), -1.0, 1.0)


def _config_file(spec: str):
    """``configs/sd_v1.py[:variant]`` -> its config (the CLI takes a path, as zoo.main)."""
    path, _, variant = spec.partition(":")
    loader = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    return module.get_config(variant or None)


def main(argv: list[str] | None = None) -> int:
    """``python -m zoo.diffusion.diffusers_weights MODEL_DIR [--config FILE[:VARIANT]]``:
    loads the U-Net and VAE and prints their parameter counts, or says what does not fit."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("model_dir", help="diffusers folder with unet/ and vae/")
    default = Path(__file__).resolve().parents[2] / "configs" / "sd_v1.py"
    parser.add_argument("--config", default=str(default), help="config file[:variant]")
    args = parser.parse_args(argv)
    config = _config_file(args.config)
    try:
        modules = load_stable_diffusion(args.model_dir, config)
    except (DiffusersWeightsError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for role, module in zip(("unet", "vae"), modules, strict=True):
        count = sum(p.size for p in jax.tree.leaves(nnx.state(module, nnx.Param)))
        print(f"{role}: {count:,} parameters loaded from {args.model_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
