"""Test-view PSNR of a NeRF config against wall-clock training time.

    python experiments/bench/nerf_train_timed.py --variant "" --seconds 180 --eval_every 1000

Trains ``configs/nerf_blender.py[:variant]`` on its scene (default: the
procedural 64x64 scene) with the engine's train step and data pipeline, and
renders the test views (chunked, as the run's eval does) every
``--eval_every`` steps and at the end, until ``--seconds`` of training have
passed. Eval time is not counted as training time. Needs no Orbax or
TensorBoard (for bare GPU hosts); ``zoo.main`` is the way to train for real.
Prints one JSON object: the config, rays/s and the (seconds, step, psnr,
ssim) curve.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))  # configs/
from configs import nerf_blender  # noqa: E402
from zoo import data as zdata  # noqa: E402
from zoo import registry  # noqa: E402
from zoo.engine.state import init_state, split_modules  # noqa: E402
from zoo.engine.step import Models, build_train_step  # noqa: E402


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--variant", default="", help="'' (the paper's settings), 'small', 'tiny'")
    p.add_argument("--seconds", type=float, default=180.0)
    p.add_argument("--eval_every", type=int, default=1000)
    p.add_argument("--steps", type=int, default=0, help="the lr schedule's length (0: config's)")
    p.add_argument("--scene_cache", default="")
    args = p.parse_args()
    config = nerf_blender.get_config(args.variant or None)
    if args.steps:
        config.train.steps = args.steps
    if args.scene_cache:
        config.data.scene_cache = args.scene_cache
    zdata.check_data_config(config.data)
    objective = registry.build_objective(config)
    graphs, params, rest = split_modules(objective.modules)
    state = jax.jit(lambda p, r: init_state(objective, p, r))(params, rest)
    step = jax.jit(build_train_step(objective, graphs, seed=0), static_argnums=2, donate_argnums=0)
    rays = int(config.data.batch_size)
    source = zdata.make_source(config.data, seed=0, examples_per_step=rays)
    views = list(zdata.make_eval_source(config.data).batches(int(config.eval.batch_size)))
    evaluate = jax.jit(lambda p, r, b: objective.evaluate(Models(graphs, p, r), b, None))

    def batch_of(i):
        b = {k: v for k, v in source.batch(i).items() if v.dtype.kind == "f"}
        b["example_id"] = np.arange(rays, dtype=np.int32)
        return jax.device_put({k: v.reshape(1, 1, *v.shape) for k, v in b.items()})

    def score():
        totals, n = {}, 0
        for v in views:
            out = jax.device_get(evaluate(state.params, state.rest, v))
            for k, x in out.items():
                totals[k] = totals.get(k, 0.0) + float(x) * len(v["rgb"])
            n += len(v["rgb"])
        return {k: x / n for k, x in totals.items()}

    compiled = step.lower(state, batch_of(0), (True,)).compile()
    curve, trained, i = [], 0.0, 0
    while trained < args.seconds and i < int(config.train.steps):
        batch = batch_of(i)
        t0 = time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready(state.step)
        trained += time.perf_counter() - t0
        i += 1
        if i % args.eval_every == 0:
            curve.append({"seconds": round(trained, 1), "step": i, **score()})
            log(json.dumps(curve[-1]))
    if not curve or curve[-1]["step"] != i:  # the time (or the schedule) ran out
        curve.append({"seconds": round(trained, 1), "step": i, **score()})
        log(json.dumps(curve[-1]))
    out = {
        "device": str(jax.devices()[0]),
        "variant": args.variant or "paper",
        "rays_per_step": rays,
        "nerf": config.nerf.to_dict(),
        "rays_per_s": rays * i / trained,
        "curve": curve,
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
