"""Text-to-image throughput at 16x16x3: pixel-space (GLIDE) against latent (LDM) diffusion.

    python experiments/bench/text_to_image_step.py                  # both models, both parts
    python experiments/bench/text_to_image_step.py --quick          # smoke run (:tiny configs)
    python experiments/bench/text_to_image_step.py --parts train --batch 128 --repeats 20
    python experiments/bench/text_to_image_step.py --parts sampling --models ldm \
        --samplers ddim:50 --guidance 1,3

Both models draw ``shapes`` images from their captions with the same caption transformer
and U-Net family; ``glide`` (``configs/glide_shapes.py``, model "ddpm", condition "text")
denoises the 16x16x3 pixels, ``ldm`` (``configs/ldm_shapes.py``, model "ldm") the 8x8x4
latents of a frozen KL autoencoder (``configs/autoencoder_shapes.py``). The ldm objective
reads its autoencoder's architecture from a stage-1 run, so a checkpoint of that config is
written into a temp dir without training (``autoregressive_step.write_stage_one``); the
frozen role runs its random init, passed to the step as its ``frozen`` argument, as
``zoo.engine.loop`` passes a loaded stage (the weights do not change the time).

- ``train``: the engine's train step (``build_train_step``, jitted, state donated), AdamW
  and the configs' EMA, on a batch of ``--batch`` (64) random images in [-1, 1] with
  captions from ``zoo.data.shapes.caption_table()`` (20 % replaced by the empty one, as
  configured). images/s = batch / median step. The ldm step includes the frozen encoder
  (a posterior sample of every image) and the scale measurement; ``autoencoder_encode_ms``
  times that encoding alone.
- ``sampling``: the objective's ``sample(models, rng, n)`` with eval-mode models (the EMA
  parameters, as the trainer samples), n = ``--sample_batch`` (64) random captions, for
  each ``--samplers`` entry (DDIM 50 steps, DPM-Solver++(2M) 20 steps) and each
  ``--guidance`` scale (1: the conditional model, one network call per step; 3:
  classifier-free guidance, one call on 2n inputs per step). For the ldm it includes
  decoding the latents (``decode_ms`` times the decoder alone). The sampler jits itself on
  its first call (``first_call_s``: trace + compile + one run; ``compile_s`` = that less
  the median call). images/s = n / median call. Sampling runs after the timed train steps,
  on the resulting state; with ``--parts sampling`` alone the ldm's unmeasured latent scale
  is set to 1.

Each timing is ``--warmup`` untimed runs after compiling, then the median (min, max) of
``--repeats`` runs, each waited for with ``block_until_ready`` (``step_ms_*``: one train
step, or one ``sample`` call). ``--quick`` runs the configs' ``:tiny`` variants (width-16
U-Nets, a width-8 autoencoder) at batch 8, sample batch 4, one timed run. One JSON object
on stdout, progress on stderr.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from autoregressive_step import (
    build_state,
    log,
    time_call,
    time_train_step,
    write_stage_one,
)
from timing import record_times

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))  # configs/
from configs import autoencoder_shapes, glide_shapes, ldm_shapes  # noqa: E402
from zoo import registry  # noqa: E402
from zoo.data.shapes import caption_table  # noqa: E402
from zoo.engine.state import count_params  # noqa: E402
from zoo.engine.step import Models  # noqa: E402

MODELS = ("glide", "ldm")
PARTS = ("train", "sampling")


def model_configs(args, workdir: str) -> dict:
    """name -> config at ``--batch``; the ldm's points at a stage-1 run written in ``workdir``."""
    variant = args.variant or None
    configs = {}
    if "glide" in args.models:
        configs["glide"] = glide_shapes.get_config(variant)
    if "ldm" in args.models:
        write_stage_one(autoencoder_shapes.get_config(variant), workdir)
        configs["ldm"] = ldm_shapes.get_config(variant)
        configs["ldm"].stages.autoencoder.workdir = workdir
    for config in configs.values():
        config.data.batch_size = args.batch
    return configs


def param_counts(state, frozen) -> dict:
    """Parameters of the trained network, by part (caption encoder, U-Net), and of the frozen
    roles."""
    model = state.params["model"]
    parts = model.get("net", model)  # the ldm's LatentDenoiser wraps the TextUNet
    out = {"model": count_params(model)}
    out.update({part: count_params(p) for part, p in parts.items() if isinstance(p, dict)})
    out.update({f"frozen_{role}": count_params(p) for role, p in frozen.params.items()})
    return out


def bench_train(name: str, config, built, args) -> tuple[dict, object]:
    """The engine's train step on random images and real captions: ``(summary, state)``."""
    _, graphs, _, frozen = built
    b, size = args.batch, int(config.data.image_size)
    rng = np.random.default_rng(0)
    tokens = caption_table()[0]
    arrays = {
        "image": rng.uniform(-1, 1, (b, size, size, 3)).astype(np.float32),
        "tokens": tokens[rng.integers(0, len(tokens), b)].astype(np.int32),
    }
    train, state = time_train_step(
        config, built, arrays, warmup=args.warmup, repeats=args.repeats, name=name
    )
    if config.model == "ldm":
        encode, _ = time_call(
            lambda fr, x, keys: Models(graphs, {}, {}, fr)("autoencoder").encode_latents(
                x, key=keys
            ),
            (frozen, jnp.asarray(arrays["image"]), jax.random.split(jax.random.key(0), b)),
            warmup=args.warmup,
            repeats=args.repeats,
            name=f"{name} autoencoder encode",
        )
        train["autoencoder_encode_ms"] = encode["ms_median"]
    log(f"{name} train: {train['images_per_s']:.1f} images/s")
    return train, state


def time_sample(objective, models, n: int, *, warmup: int, repeats: int, name: str) -> dict:
    """Times ``objective.sample(models, rng, n)``; its first call compiles the sampler."""
    rng = jax.random.key(1)
    t0 = time.perf_counter()
    jax.block_until_ready(objective.sample(models, rng, n))
    out = {"first_call_s": time.perf_counter() - t0}
    times = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(objective.sample(models, rng, n))
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            record_times(out, times, n)
            log(f"  {name} {i - warmup}: {1e3 * times[-1]:.1f} ms")
    out["compile_s"] = out["first_call_s"] - out["step_ms_median"] / 1e3
    return out


def bench_sampling(name: str, config, built, state, args) -> dict:
    """``sample`` for every sampler x guidance scale, on the state's EMA parameters."""
    _, graphs, _, frozen = built
    n = args.sample_batch
    rest = dict(state.rest)
    if config.model == "ldm" and float(rest["model"]["scale"]) == 0:  # no train step measured it
        rest["model"] = {**rest["model"], "scale": jnp.float32(1.0)}
    models = Models(graphs, {**state.params, **state.ema}, rest, frozen)
    out = {"batch": n}
    for entry in args.samplers.split(","):
        sampler, steps = entry.split(":")
        for scale in (float(g) for g in args.guidance.split(",")):
            c = copy.deepcopy(config)
            c.diffusion.update(dict(sampler=sampler, sample_steps=int(steps), guidance_scale=scale))
            objective = registry.build_objective(c)  # its sampler reads these fields
            key = f"{sampler}{steps}_guidance{scale:g}"
            run = dict(sampler=sampler, steps=int(steps), guidance_scale=scale)
            run["network_batch"] = n if scale == 1.0 else 2 * n
            run.update(
                time_sample(
                    objective,
                    models,
                    n,
                    warmup=args.warmup,
                    repeats=args.repeats,
                    name=f"{name} {key}",
                )
            )
            out[key] = run
            log(f"{name} {key}: {run['images_per_s']:.1f} images/s")
    if config.model == "ldm":
        ae = built[0].frozen["autoencoder"]
        z = jnp.zeros((n, *(2 * [int(config.data.image_size) // ae.factor]), ae.z_channels))
        decode, _ = time_call(
            lambda fr, z: Models(graphs, {}, {}, fr)("autoencoder").decode(z),
            (frozen, z),
            warmup=args.warmup,
            repeats=args.repeats,
            name=f"{name} autoencoder decode",
        )
        out["decode_ms"] = decode["ms_median"]
    return out


def bench_model(name: str, config, args, parts: set[str]) -> dict:
    built = build_state(config)
    objective, _, state, frozen = built
    out = {
        "config": {"glide": "glide_shapes", "ldm": "ldm_shapes"}[name]
        + (f":{args.variant}" if args.variant else ""),
        "model": config.model,
        "image_size": int(config.data.image_size),
        "unet": {
            k: config.unet[k] for k in ("ch", "ch_mult", "num_res_blocks", "attn_resolutions")
        },
        "text_encoder": config.text_encoder.to_dict(),
        "params": param_counts(state, frozen),
    }
    if config.model == "ldm":
        ae = objective.frozen["autoencoder"]
        size = int(config.data.image_size) // ae.factor
        out["latent_shape"] = [size, size, ae.z_channels]
    if "train" in parts:
        out["train"], state = bench_train(name, config, built, args)
    if "sampling" in parts:
        out["sampling"] = bench_sampling(name, config, built, state, args)
    return out


# --quick's defaults (flags given on the command line still win).
QUICK = dict(variant="tiny", batch=8, sample_batch=4, repeats=1, warmup=0)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parts", default="train,sampling", help="comma-separated: train, sampling")
    p.add_argument("--models", default="glide,ldm", help="comma-separated: glide, ldm")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: the configs' :tiny variants, batch 8, sample batch 4, 1 timed run",
    )
    p.add_argument("--variant", default="", help="the configs' variant ('': the default)")
    p.add_argument("--batch", type=int, default=64, help="train batch")
    p.add_argument("--sample_batch", type=int, default=64, help="images per sample call")
    p.add_argument("--samplers", default="ddim:50,dpm_solver_pp:20", help="sampler:steps,...")
    p.add_argument("--guidance", default="1,3", help="guidance scales; != 1 doubles the batch")
    p.add_argument("--repeats", type=int, default=5, help="timed runs of each step / sampler")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs after compiling")
    if p.parse_known_args()[0].quick:
        p.set_defaults(**QUICK)
    args = p.parse_args()
    parts, models = set(args.parts.split(",")), args.models.split(",")
    if parts - set(PARTS) or set(models) - set(MODELS):
        raise SystemExit(f"--parts from {PARTS}, --models from {MODELS}")
    args.models = models
    result = {
        "device": str(jax.devices()[0]),
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "args": vars(args),
    }
    with tempfile.TemporaryDirectory() as workdir:
        for name, config in model_configs(args, workdir).items():
            result[name] = bench_model(name, config, args, parts)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
