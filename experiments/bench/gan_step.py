"""GAN train-step throughput through the engine: DCGAN and StyleGAN2 at 64x64.

    python experiments/bench/gan_step.py --models dcgan,stylegan2 --batch 64 --steps 10
    python experiments/bench/gan_step.py --models gigagan --batch 32 --size 32   # its shapes config

One "train step" is what ``zoo.main`` runs per step: k = 1 discriminator
update and one generator update (for StyleGAN2 also the lazy R1 and
path-length players, on the steps where their interval says so: 1 in 16 and
1 in 4). The step is timed per pattern of active players, and images/s is
reported for the plain pattern (D + G) and for the average over a 16-step
cycle of the paper's lazy schedule. Widths are the papers': DCGAN's LSUN
model (G 4x4x1024 -> 64x64x3, 5x5 kernels) and StyleGAN2 config F
(channels min(16384 / res, 512)); GigaGAN and StyleSwin take the widths of
`configs/gigagan_shapes.py` and `configs/styleswin_ffhq.py` (GigaGAN gets random
caption tokens). Prints one JSON object on stdout.
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
from configs import dcgan_lsun, gigagan_shapes, stylegan2_ffhq, styleswin_ffhq  # noqa: E402
from zoo import registry  # noqa: E402
from zoo.engine.state import count_params, init_state, split_modules  # noqa: E402
from zoo.engine.step import build_train_step  # noqa: E402


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def model_config(name: str, batch: int, size: int, dtype: str):
    modules = dict(
        dcgan=dcgan_lsun, stylegan2=stylegan2_ffhq, gigagan=gigagan_shapes, styleswin=styleswin_ffhq
    )
    if name not in modules:
        raise SystemExit(f"unknown model {name!r}; known: {sorted(modules)}")
    c = modules[name].get_config()
    c.data.update(dict(image_size=size, batch_size=batch))
    c.precision = dtype  # every layer's compute dtype (zoo.engine.precision)
    return c


def bench(name: str, batch: int, size: int, steps: int, warmup: int, dtype: str) -> dict:
    config = model_config(name, batch, size, dtype)
    objective = registry.build_objective(config)
    graphs, params, rest = split_modules(objective.modules)
    out = {"model": name, "batch": batch, "image_size": size, "device": str(jax.devices()[0])}
    out["params"] = {role: count_params(p) for role, p in params.items()}
    state = jax.jit(lambda p, r: init_state(objective, p, r))(params, rest)
    step = jax.jit(build_train_step(objective, graphs, seed=0), static_argnums=2, donate_argnums=0)
    s = objective.substeps
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (s, 1, batch, size, size, 3)).astype(np.float32)
    arrays = {
        "image": images,
        "example_id": np.arange(s * batch, dtype=np.int32).reshape(s, 1, batch),
    }
    if config.gan.get("condition") == "text":
        from zoo.data.text import SHAPES_MAX_LEN, shapes_tokenizer

        vocab = shapes_tokenizer().vocab_size
        arrays["tokens"] = rng.integers(2, vocab, (s, 1, batch, SHAPES_MAX_LEN), dtype=np.int32)
    batch_arrays = jax.device_put(arrays)
    players = objective.players
    cycle = 16  # lcm of the lazy intervals of the paper configs (16 and 4)
    patterns = [tuple(i % p.every == 0 for p in players) for i in range(cycle)]
    timings = {}
    for pattern in sorted(set(patterns), key=sum):
        label = "+".join(p.name for p, on in zip(players, pattern, strict=True) if on)
        t0 = time.perf_counter()
        compiled = step.lower(state, batch_arrays, pattern).compile()
        compile_s = time.perf_counter() - t0
        log(f"{name}: compiled {pattern} in {compile_s:.1f} s")
        times = []
        for i in range(warmup + steps):
            t0 = time.perf_counter()
            state, metrics = compiled(state, batch_arrays)
            jax.block_until_ready((state.step, metrics))
            if i >= warmup:
                times.append(time.perf_counter() - t0)
                log(f"{name} step {i - warmup}: {1e3 * times[-1]:.1f} ms")
        median = statistics.median(times)
        timings[pattern] = median
        out[label] = {"compile_s": round(compile_s, 1), "step_ms_median": 1e3 * median}
        log(f"{name} {label}: compile {compile_s:.1f} s, step {1e3 * median:.1f} ms")
    plain = tuple(p.every == 1 for p in players)
    out["images_per_s"] = batch / timings[plain]
    out["images_per_s_lazy_cycle"] = batch * cycle / sum(timings[p] for p in patterns)
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="dcgan,stylegan2")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--dtype", default="float32")
    args = p.parse_args()
    results = [
        bench(m, args.batch, args.size, args.steps, args.warmup, args.dtype)
        for m in args.models.split(",")
    ]
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
