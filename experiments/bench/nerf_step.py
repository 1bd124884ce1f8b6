"""NeRF throughput: engine train-step rays/s and full-image render time.

    python experiments/bench/nerf_step.py --rays 1024 --steps 10 --render 100
    python experiments/bench/nerf_step.py --rays 4096 --render 100,800   # on a GPU

The paper's model (``configs/nerf_blender.py``: L = 10 / 4, 8 x 256 MLP with a
skip, 64 coarse + 128 fine samples, coarse and fine MLPs) trained by the
engine's own step (Adam, state donated) on batches of ``--rays`` random rays
of the procedural scene's cameras; rays/s is rays / median step time after
warm-up. Render time is one whole view at each ``--render`` size (square),
rendered in chunks of ``--chunk`` rays with ``jax.lax.map`` as the eval and
``zoo.nerf.render`` do, median of ``--render_repeats``. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))  # configs/
from configs import nerf_blender  # noqa: E402
from zoo import registry  # noqa: E402
from zoo.data.scenes import cameras  # noqa: E402
from zoo.engine.state import init_state, split_modules  # noqa: E402
from zoo.engine.step import Models, build_train_step  # noqa: E402
from zoo.nerf.objective import ROLE, render_chunked  # noqa: E402

NEAR, FAR = 2.0, 6.0  # Blender scenes


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def random_rays(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rays through random pixels of random hemisphere cameras at radius 4."""
    rng = np.random.default_rng(seed)
    size, focal = 100, 0.5 * 100 / np.tan(0.5 * 0.6911)
    origins, directions = [], []
    for i in range(0, n, 256):
        pose = cameras.orbit_pose(rng.uniform(0, 360), rng.uniform(10, 80), 4.0)
        o, d = cameras.pixel_rays(size, size, focal, pose)
        pick = rng.integers(0, size * size, min(256, n - i))
        origins.append(o.reshape(-1, 3)[pick])
        directions.append(d.reshape(-1, 3)[pick])
    return np.concatenate(origins), np.concatenate(directions)


def bench_train(config, rays: int, steps: int, warmup: int) -> dict:
    objective = registry.build_objective(config)
    graphs, params, rest = split_modules(objective.modules)
    state = jax.jit(lambda p, r: init_state(objective, p, r))(params, rest)
    step = jax.jit(build_train_step(objective, graphs, seed=0), static_argnums=2, donate_argnums=0)
    o, d = random_rays(rays)
    rgb = np.random.default_rng(1).uniform(0, 1, (rays, 3)).astype(np.float32)
    batch = jax.device_put(
        {
            "origins": o.reshape(1, 1, rays, 3),
            "directions": d.reshape(1, 1, rays, 3),
            "rgb": rgb.reshape(1, 1, rays, 3),
            "example_id": np.arange(rays, dtype=np.int32).reshape(1, 1, rays),
        }
    )
    t0 = time.perf_counter()
    compiled = step.lower(state, batch, (True,)).compile()
    out = {"compile_s": time.perf_counter() - t0}
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready((state.step, metrics))
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            log(f"train step {i - warmup}: {1e3 * times[-1]:.1f} ms")
    median = statistics.median(times)
    out.update(step_ms_median=1e3 * median, rays_per_s=rays / median)
    return out, objective, graphs, state


def bench_render(objective, graphs, state, config, size: int, chunk: int, repeats: int) -> dict:
    focal = 0.5 * size / np.tan(0.5 * 0.6911)
    o, d = cameras.pixel_rays(size, size, focal, cameras.orbit_pose(30.0, 30.0, 4.0))
    kw = dict(
        near=NEAR,
        far=FAR,
        num_coarse=int(config.nerf.num_coarse),
        num_fine=int(config.nerf.num_fine),
        white_background=True,
    )

    @jax.jit
    def render(params, rest, o, d):
        model = Models(graphs, params, rest)(ROLE, train=False)
        return render_chunked(model, o, d, chunk, **kw)["rgb"]

    t0 = time.perf_counter()
    jax.block_until_ready(render(state.params, state.rest, o, d))
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(render(state.params, state.rest, o, d))
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    log(f"render {size}x{size}: {median:.3f} s (first call with compile {first:.1f} s)")
    return {"size": size, "chunk": chunk, "render_s_median": median, "first_call_s": first}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rays", type=int, default=1024)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--render", default="100", help="comma-separated square sizes")
    p.add_argument("--chunk", type=int, default=4096)
    p.add_argument("--render_repeats", type=int, default=3)
    args = p.parse_args()
    config = nerf_blender.get_config()
    config.data.batch_size = args.rays
    out = {"device": str(jax.devices()[0]), "rays": args.rays, "jax": jax.__version__}
    out["config"] = {k: config.nerf[k] for k in ("depth", "width", "num_coarse", "num_fine")}
    out["train"], objective, graphs, state = bench_train(config, args.rays, args.steps, args.warmup)
    out["render"] = [
        bench_render(objective, graphs, state, config, int(s), args.chunk, args.render_repeats)
        for s in args.render.split(",")
    ]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
