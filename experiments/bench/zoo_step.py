"""zoo's side of the U-Net benchmark: the real engine train step of the DDPM objective.

``build_objective`` (epsilon-prediction DDPM loss, t ~ U{0..999}, linear betas
1e-4..0.02) on a ``ddpm_config()`` shrunk to the small CIFAR U-Net, trained by
``build_train_step`` with AdamW and jitted with the state donated, as
``zoo.engine.loop`` runs it. Imports no data pipeline (no tensorflow_datasets).
"""

from __future__ import annotations

import sys
import time

import jax
import numpy as np
from jaxpr_flops import jaxpr_flops
from timing import record_times

from zoo.diffusion.config import ddpm_config
from zoo.diffusion.objective import build_objective
from zoo.engine.state import count_params, init_state, split_modules
from zoo.engine.step import build_train_step

ACTIVE = (True,)  # one player, active every step


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def unet_config(*, batch, dtype, heads, attention, attention_chunk=64, clip_ema=False, remat=False):
    """ddpm_config() at ch 64, mults (1, 2, 2), 2 blocks, attention at 16 and mid, dropout 0;
    AdamW lr 2e-4 wd 0.01, constant; clip_ema adds grad clip 1.0 and EMA 0.9999; remat
    rematerialises every block."""
    c = ddpm_config()
    c.data.batch_size = batch
    c.ema_decay = 0.9999 if clip_ema else 0.0
    unet = dict(ch=64, ch_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(16,))
    unet.update(mid_attention=True, dropout=0.0, num_heads=heads, attention=attention)
    c.unet.update(dict(unet, attention_chunk=attention_chunk, remat=remat))
    c.precision = dtype  # the U-Net's compute dtype (zoo.engine.precision)
    c.diffusion.bpd_eval = "none"
    optim = dict(name="adamw", lr=2e-4, weight_decay=0.01, warmup_steps=0, schedule="constant")
    c.optim.update(dict(optim, grad_clip=1.0 if clip_ema else 0.0))
    return c


def make_batch(batch: int) -> dict:
    """One step's batch: leaves ``[S=1, A=1, B, ...]``, images in [-1, 1]."""
    rng = np.random.default_rng(0)
    image = rng.uniform(-1, 1, (1, 1, batch, 32, 32, 3)).astype(np.float32)
    ids = np.arange(batch, dtype=np.int32).reshape(1, 1, batch)
    return jax.device_put({"image": image, "example_id": ids})


def _step_and_state(config):
    objective = build_objective(config)
    graphs, params, rest = split_modules(objective.modules)
    return objective, build_train_step(objective, graphs, seed=0), params, rest


def bench_zoo(config, batch: dict, *, steps: int, warmup: int, out: dict) -> None:
    """Compiles and times the train step, filling the JSON-able ``out`` as it goes."""
    objective, step_fn, params, rest = _step_and_state(config)
    out["params"] = count_params(params)
    state = jax.jit(lambda p, r: init_state(objective, p, r))(params, rest)
    del params, rest
    step = jax.jit(step_fn, static_argnums=2, donate_argnums=0)
    name, b = config.unet.attention, config.data.batch_size

    t0 = time.perf_counter()
    lowered = step.trace(state, batch, ACTIVE).lower()
    out["trace_lower_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    compiled = lowered.compile()
    out["compile_s"] = time.perf_counter() - t0
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    out["xla_cost_analysis_flops"] = float(cost["flops"]) if cost and "flops" in cost else None
    out["temp_bytes"] = getattr(compiled.memory_analysis(), "temp_size_in_bytes", None)
    log(f"zoo {name}: {out['params']} params, compile {out['compile_s']:.1f} s")

    def run():
        nonlocal state
        t0 = time.perf_counter()
        state, metrics = compiled(state, batch)
        # One executable: its outputs are ready together.
        jax.block_until_ready((state.step, metrics))
        return time.perf_counter() - t0, metrics

    out["first_step_s"], _ = run()
    for _ in range(max(warmup - 1, 0)):
        run()
    times = []
    for i in range(steps):
        dt, metrics = run()
        times.append(dt)
        record_times(out, times, b)
        log(f"  zoo {name} step {i}: {1e3 * dt:.1f} ms")
    out["final_loss"] = float(metrics["model/loss"])
    # Back to back, waited for once: the host dispatches step i+1 while step i runs.
    t0 = time.perf_counter()
    for _ in range(steps):
        state, metrics = compiled(state, batch)
    jax.block_until_ready((state.step, metrics))
    out["step_ms_pipelined"] = 1e3 * (time.perf_counter() - t0) / steps


def model_flops(config, batch: dict) -> int:
    """Matmul + conv FLOPs of the train step's jaxpr (traced, not compiled), forward and
    backward, with attention="full": the count does not depend on the implementation."""
    config = unet_config(
        batch=config.data.batch_size, dtype=config.precision, heads=config.unet.num_heads,
        attention="full", clip_ema=config.ema_decay > 0,
    )  # fmt: skip
    objective, step_fn, params, rest = _step_and_state(config)
    state = jax.eval_shape(lambda p, r: init_state(objective, p, r), params, rest)
    return jaxpr_flops(jax.make_jaxpr(step_fn, static_argnums=2)(state, batch, ACTIVE))
