"""A config's sample metrics against wall-clock training time, without Orbax or TensorBoard.

    python experiments/evals/train_timed.py --config configs/gigagan_shapes.py --seconds 300 \
        --eval_every 1000 --out runs/gigagan_timed

Trains ``--config`` (``path[:variant]``) with the engine's train step and data
pipeline, as ``zoo.main`` does but with no checkpoints, and every
``--eval_every`` steps (and at the end) draws ``config.eval.num_samples``
samples from the EMA parameters and scores them with the metrics
``zoo.evals.sample_metrics`` picks for the dataset (caption match on `shapes`,
Fréchet distance on `digits`, mode coverage on `ring`). Stops after
``--seconds`` of training (eval time not counted) or the config's steps. For
bare GPU hosts; ``zoo.main`` is the way to train for real. Prints one JSON
object (device, steps/s, the (seconds, step, metrics) curve); at every eval it
also writes that curve to ``--out/curve.json`` and the samples to
``--out/samples.npz`` (uint8 images and their conditions).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import jax
import numpy as np

from zoo import data as zdata
from zoo import registry
from zoo.engine.config import check_config
from zoo.engine.state import init_state, split_modules
from zoo.engine.step import Models, build_train_step
from zoo.evals.sample_metrics import sample_metrics


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def load_config(spec: str):
    """``path[:variant]`` -> the config file's ``get_config(variant)``."""
    path, _, variant = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("timed_config", path)
    if module_spec is None or not os.path.isfile(path):
        raise SystemExit(f"no config file {path!r}")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(variant or None)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True, help="path[:variant]")
    p.add_argument("--seconds", type=float, default=300.0)
    p.add_argument("--eval_every", type=int, default=1000)
    p.add_argument("--steps", type=int, default=0, help="override config.train.steps (schedules)")
    p.add_argument("--out", default="runs/train_timed")
    args = p.parse_args()
    config = load_config(args.config)
    if args.steps:
        config.train.steps = args.steps
    check_config(config)
    zdata.check_data_config(config.data)
    os.makedirs(args.out, exist_ok=True)
    metrics_fns = sample_metrics(config, args.out)  # trains the reference network now
    objective = registry.build_objective(config)
    graphs, params, rest = split_modules(objective.modules)
    state = jax.jit(lambda p, r: init_state(objective, p, r))(params, rest)
    step = jax.jit(
        build_train_step(objective, graphs, seed=int(config.seed)),
        static_argnums=2,
        donate_argnums=0,
    )
    batch_size, substeps = int(config.data.batch_size), objective.substeps
    source = zdata.make_source(
        config.data, seed=int(config.seed), examples_per_step=batch_size * substeps
    )
    sampler = jax.jit(
        lambda p, r, key, n: objective.sample(Models(graphs, p, r), key, n), static_argnums=3
    )
    num_samples = int(config.eval.num_samples)

    def batch_of(i):
        b = {k: np.asarray(v) for k, v in source.batch(i).items()}
        b = {k: v for k, v in b.items() if v.dtype.kind in "biuf"}
        b["example_id"] = np.arange(batch_size * substeps, dtype=np.int32)
        return jax.device_put(
            {k: v.reshape(substeps, 1, batch_size, *v.shape[1:]) for k, v in b.items()}
        )

    def score(i):
        key = jax.random.fold_in(jax.random.key(int(config.seed) + 1), i + 1)
        out = jax.device_get(sampler({**state.params, **state.ema}, state.rest, key, num_samples))
        samples = {
            k: np.asarray(v) for k, v in (out if isinstance(out, dict) else {"image": out}).items()
        }
        result = {}
        for fn in metrics_fns:
            result.update({k: float(v) for k, v in fn(samples).items()})
        return result, samples

    players = objective.players
    cycle = math.lcm(*(pl.every for pl in players))
    patterns = {tuple(i % pl.every == 0 for pl in players) for i in range(cycle)}
    first = batch_of(0)
    compiled = {a: step.lower(state, first, a).compile() for a in sorted(patterns)}  # not timed
    curve, trained, i = [], 0.0, 0
    summary = {"config": args.config, "device": str(jax.devices()[0]), "batch_size": batch_size}

    def record():
        jax.block_until_ready(state.step)
        result, samples = score(i)
        curve.append({"seconds": round(trained, 1), "step": i, **result})
        log(json.dumps(curve[-1]))
        # Written at every eval, so a run cut off by a timeout still leaves its curve.
        if "image" in samples:  # 2-D models sample "point"s instead
            image = np.clip(np.round((samples["image"] + 1) * 127.5), 0, 255).astype(np.uint8)
            samples = {**samples, "image": image}
        np.savez(os.path.join(args.out, "samples.npz"), **samples)
        with open(os.path.join(args.out, "curve.json"), "w") as f:
            json.dump({**summary, "steps_per_s": i / max(trained, 1e-9), "curve": curve}, f)

    # Host batches are built one step ahead on a thread (as the engine's loop does), and the
    # device is only waited for at evals: training time is the wall time between them.
    prefetch = ThreadPoolExecutor(max_workers=1)
    future = prefetch.submit(lambda: first)
    t_start = time.perf_counter()
    while trained + time.perf_counter() - t_start < args.seconds and i < int(config.train.steps):
        batch = future.result()
        future = prefetch.submit(batch_of, i + 1)
        state, _ = compiled[tuple(i % pl.every == 0 for pl in players)](state, batch)
        i += 1
        if i % args.eval_every == 0:
            jax.block_until_ready(state.step)
            trained += time.perf_counter() - t_start
            record()
            t_start = time.perf_counter()
    if not curve or curve[-1]["step"] != i:  # the time (or the steps) ran out
        jax.block_until_ready(state.step)
        trained += time.perf_counter() - t_start
        record()
    prefetch.shutdown(wait=False, cancel_futures=True)
    print(json.dumps({**summary, "steps_per_s": i / trained, "curve": curve}, indent=1))


if __name__ == "__main__":
    main()
