"""Autoregressive-family throughput: VQGAN train step, prior train step, KV-cache sampling.

    python experiments/bench/autoregressive_step.py                 # all parts, a few min on CPU
    python experiments/bench/autoregressive_step.py --quick         # smoke run
    python experiments/bench/autoregressive_step.py --parts vqgan \
        --lpips /work/lpips_weights/lpips_vgg16.npz                 # + the perceptual term
    python experiments/bench/autoregressive_step.py --repeats 20    # on a GPU

- ``vqgan``: the engine's train step (``build_train_step``, jitted, state donated) of
  ``configs/vqgan_shapes.py:gan`` (recorded as ``vq``; the default trains without the
  discriminator, :gan is the paper's VQGAN) at 32x32 (``--vqgan_size``; 0: the config's
  16x16), batch 16, with ``vq_loss.disc_start=0``: both players every step, the tokenizer
  with the hinge generator term and its adaptive weight (two more gradients through the
  decoder's last conv), then the PatchGAN discriminator (which encodes and decodes the
  batch again). Attention stays at the lowest resolution, as in taming: 16x16 codes at
  32x32 (f = 2). ``--lpips`` sets ``vq_loss.lpips_weights``
  and ``perceptual_weight=1`` (the frozen role ``lpips``, passed as the step's ``frozen``
  argument). images/s = batch / median step.
- ``gpt``, ``transformer_digits`` (``--parts prior``): the engine's train step of the real
  prior objective (``zoo.autoregressive.prior_objective``), AdamW, class prefix. ``gpt`` is
  ``configs/transformer_digits.py`` resized by the flags: dim 256, depth 8, 8 heads, dropout
  0, a 16x16 grid (256 image tokens) of 1024 codes, batch 16; ``transformer_digits`` is that
  config's default (dim 128, depth 4, 4 heads, dropout 0.1, 4x4 = 16 tokens of 128 codes,
  batch 64). The objective reads its tokenizer's architecture from a stage-1 run, so a
  VQ-VAE checkpoint (``vqvae_digits``: ``:tiny`` at 2 x grid pixels with ``--codes`` codes,
  f = 2, for ``gpt``; the default for ``transformer_digits``) is written into a temp dir
  without training; the step runs the tokenizer's random init (the weights do not change
  the time). The step includes the frozen tokenizer encoding the batch's images;
  ``tokenizer_encode_ms`` times that alone. tokens/s = batch x image tokens / median step.
- ``sampling``: ``zoo.autoregressive.sampling.sample_tokens`` on the same priors' eval-mode
  decoders (after the timed train steps), jitted once, with the KV cache (prefill, then one
  position per step) and without (every step runs the whole padded sequence: ~N times the
  work at N tokens), batch ``--sample_batch`` (16; 4 on a CPU). tokens/s = batch x N /
  median call; ``same_tokens``: both drew the same tokens from the same key (exact in
  float32 on a CPU; reduced-precision GPU matmuls may break it without a bug).

Compile time is reported apart; each timing is ``--warmup`` untimed runs after compiling,
then the median (min, max) of ``--repeats`` runs, each waited for; the uncached sampler has
no warm-up and stops repeating once its runs took ``--uncached_budget_s``. Building the
modules compiles their initialisers eagerly, which takes much of ``--quick``'s time. One
JSON object on stdout, progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from timing import record_times

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))  # configs/
from configs import transformer_digits, vqgan_shapes, vqvae_digits  # noqa: E402
from zoo import registry  # noqa: E402
from zoo.autoregressive.sampling import sample_tokens  # noqa: E402
from zoo.autoregressive.tokenizer_objective import tokenizer_from_config  # noqa: E402
from zoo.engine.checkpoint import Checkpointer  # noqa: E402
from zoo.engine.state import count_params, init_state, split_frozen, split_modules  # noqa: E402
from zoo.engine.step import Models, build_train_step  # noqa: E402


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def summary(times: list[float]) -> dict:
    median = statistics.median(times)
    return dict(ms_median=1e3 * median, ms_min=1e3 * min(times), ms_max=1e3 * max(times))


def engine_batch(config, arrays: dict) -> dict:
    """``arrays`` of ``[B, ...]`` laid out as one step's batch ``[S=1, A=1, B, ...]``."""
    b = int(config.data.batch_size)
    out = {k: v.reshape(1, 1, *v.shape) for k, v in arrays.items()}
    out["example_id"] = np.arange(b, dtype=np.int32).reshape(1, 1, b)
    return jax.device_put(out)


def build_state(config):
    """``(objective, graphs, state, frozen)`` for ``config``, as ``zoo.engine.loop`` builds them."""
    objective = registry.build_objective(config)
    graphs, params, rest = split_modules(objective.modules)
    graphs, frozen = split_frozen(objective.frozen, graphs)  # LPIPS, a prior's tokenizer
    state = jax.jit(lambda p, r: init_state(objective, p, r))(params, rest)
    return objective, graphs, state, jax.device_put(frozen)


def time_train_step(config, built, arrays: dict, *, warmup: int, repeats: int, name: str):
    """Compiles the engine step of ``built = build_state(config)`` and times it on
    ``arrays`` (``[B, ...]`` each); returns ``(summary, state after the timed steps)``."""
    objective, graphs, state, frozen = built
    out = {"params": {role: count_params(p) for role, p in state.params.items()}}
    out["frozen_params"] = {role: count_params(p) for role, p in frozen.params.items()}
    step = jax.jit(build_train_step(objective, graphs, seed=0), static_argnums=2, donate_argnums=0)
    batch = engine_batch(config, arrays)
    active = tuple(True for _ in objective.players)  # every player, every step
    t0 = time.perf_counter()
    compiled = step.lower(state, batch, active, frozen).compile()
    out["compile_s"] = time.perf_counter() - t0
    log(f"{name}: {out['params']} params, compiled in {out['compile_s']:.1f} s")
    times = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        state, metrics = compiled(state, batch, frozen)
        jax.block_until_ready((state.step, metrics))
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            record_times(out, times, int(config.data.batch_size))
            log(f"  {name} step {i - warmup}: {1e3 * times[-1]:.1f} ms")
    out["players"] = [player.name for player in objective.players]
    out["final_metrics"] = {k: float(v) for k, v in metrics.items()}
    return out, state


def time_call(
    fn, args, *, warmup: int, repeats: int, name: str, budget_s: float = float("inf")
) -> tuple[dict, object]:
    """Compiles ``jax.jit(fn)`` for ``args`` and times it: ``(summary, last output)``.

    Stops early once the timed runs took ``budget_s`` seconds (after at least one)."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    out = {"compile_s": time.perf_counter() - t0}
    times = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        result = jax.block_until_ready(compiled(*args))
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            log(f"  {name} {i - warmup}: {1e3 * times[-1]:.1f} ms")
            if sum(times) >= budget_s:
                break
    return {**out, "timed_runs": len(times), **summary(times)}, result


# -- 1. VQGAN ---------------------------------------------------------------


def bench_vqgan(args) -> dict:
    c = vqgan_shapes.get_config("tiny" if args.quick else "gan")
    c.data.batch_size = args.vqgan_batch
    if args.vqgan_size:
        c.data.image_size = args.vqgan_size
        c.vq.attn_resolutions = (args.vqgan_size // 2 ** (len(c.vq.ch_mult) - 1),)
    c.vq_loss.disc_start = 0  # the adversarial term and its adaptive weight from step 0
    if args.lpips:
        c.vq_loss.update(dict(lpips_weights=args.lpips, perceptual_weight=1.0))
    b, s = args.vqgan_batch, int(c.data.image_size)
    out = {
        "config": "vqgan_shapes:" + ("tiny" if args.quick else "gan"),
        "batch": b,
        "image_size": s,
        "disc_start": 0,
        "perceptual_weight": c.vq_loss.perceptual_weight,
        "vq": {k: c.vq[k] for k in ("ch", "ch_mult", "attn_resolutions", "num_codes")},
    }
    image = np.random.default_rng(0).uniform(-1, 1, (b, s, s, 3)).astype(np.float32)
    train, _ = time_train_step(
        c, build_state(c), {"image": image}, warmup=args.warmup, repeats=args.repeats, name="vqgan"
    )
    log(f"vqgan: {train['images_per_s']:.2f} images/s")
    return {**out, **train}


# -- 2. and 3. priors ---------------------------------------------------------


def write_stage_one(tokenizer_config, workdir: str) -> None:
    """A stage-1 checkpoint of ``tokenizer_config`` in ``workdir``, without training.

    The prior objective reads only the run's config from it (its tokenizer is built from
    that config); the saved weights are zeros of the right shapes, so the checkpoint would
    also load as ``config.stages.tokenizer`` (``zoo.engine.stages.load_role``) without
    compiling the initialisers."""
    module = nnx.eval_shape(lambda: tokenizer_from_config(tokenizer_config))
    _, params, rest = split_modules({"tokenizer": module})
    zeros = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), {"params": params, "rest": rest})
    checkpointer = Checkpointer(workdir, async_save=False)
    checkpointer.save(1, zeros, tokenizer_config.to_dict(), {"step": 1})
    checkpointer.close()


def prior_configs(args, workdir: str) -> dict:
    """name -> prior config, each pointing at a stage-1 checkpoint written under ``workdir``."""
    gpt_tok = vqvae_digits.get_config("tiny")
    gpt_tok.data.image_size = 2 * args.grid  # f = 2: a grid x grid code map
    gpt_tok.vq.num_codes = args.codes
    gpt = transformer_digits.get_config(None)
    gpt.prior.update(
        dict(dim=args.dim, depth=args.depth, num_heads=args.heads, dropout=args.dropout)
    )
    gpt.data.update(dict(image_size=2 * args.grid, batch_size=args.prior_batch))
    pairs = {"gpt": (gpt, gpt_tok)}
    if not args.quick:
        pairs["transformer_digits"] = (
            transformer_digits.get_config(None),
            vqvae_digits.get_config(None),
        )
    for name, (prior, tokenizer) in pairs.items():
        write_stage_one(tokenizer, os.path.join(workdir, name))
        prior.stages.tokenizer.workdir = os.path.join(workdir, name)
    return {name: prior for name, (prior, _) in pairs.items()}


def bench_prior(name: str, config, args, parts: set[str]) -> dict:
    p, d = config.prior, config.data
    b, size, ch = int(d.batch_size), int(d.image_size), int(d.channels)
    out = {
        "prior": dict(
            dim=p.dim,
            depth=p.depth,
            num_heads=p.num_heads,
            dropout=p.dropout,
            condition=p.condition,
        ),
        "batch": b,
    }
    rng = np.random.default_rng(0)
    arrays = {
        "image": rng.uniform(-1, 1, (b, size, size, ch)).astype(np.float32),
        "label": rng.integers(0, int(d.num_classes), b).astype(np.int32),
    }
    objective, graphs, state, frozen = built = build_state(config)
    decoder = objective.modules["prior"].decoder
    n = decoder.num_tokens
    out.update(
        image_tokens=n, grid=list(objective.modules["prior"].grid), num_codes=decoder.vocab_size
    )
    if "prior" in parts:
        train, state = time_train_step(
            config, built, arrays, warmup=args.warmup, repeats=args.repeats, name=name
        )
        train["tokens_per_s"] = b * n / (train["step_ms_median"] / 1e3)
        train["sequences_per_s"] = train.pop("images_per_s")
        encode, _ = time_call(
            lambda fr, x: Models(graphs, {}, {}, fr)("tokenizer").encode_indices(x),
            (frozen, jnp.asarray(arrays["image"])),
            warmup=args.warmup,
            repeats=args.repeats,
            name=f"{name} tokenizer encode",
        )
        train["tokenizer_encode_ms"] = encode["ms_median"]
        out["train"] = train
        log(f"{name} train: {train['tokens_per_s']:.0f} tokens/s")
    if "sampling" in parts:
        out["sampling"] = bench_sampling(name, graphs, state, config, args)
    return out


def bench_sampling(name: str, graphs, state, config, args) -> dict:
    """``sample_tokens`` with and without the KV cache, on the state's prior (eval mode)."""
    b = args.sample_batch
    labels = jnp.arange(b, dtype=jnp.int32) % int(config.data.num_classes)
    key = jax.random.key(1)
    params, rest = state.params["prior"], state.rest["prior"]
    out = {"batch": b}
    tokens = {}
    for use_cache in (True, False):
        label = "cached" if use_cache else "uncached"

        def sample(params, rest, labels, key, use_cache=use_cache):
            net = Models(graphs, {"prior": params}, {"prior": rest})("prior", train=False)
            prefix, _, _ = net.inputs(labels, b)  # the class id as a one-token prefix
            return sample_tokens(net.decoder, prefix, key, use_cache=use_cache)

        # The uncached call is N full forward passes (a minute for the default gpt on a CPU):
        # no warm-up, and as many runs as fit in its budget.
        out[label], tokens[label] = time_call(
            sample,
            (params, rest, labels, key),
            warmup=args.warmup if use_cache else 0,
            repeats=args.repeats,
            name=f"{name} sample {label}",
            budget_s=float("inf") if use_cache else args.uncached_budget_s,
        )
        n = tokens[label].shape[1]
        out[label]["tokens_per_s"] = b * n / (out[label]["ms_median"] / 1e3)
        log(f"{name} sampling {label}: {out[label]['tokens_per_s']:.0f} tokens/s")
    out["kv_cache_speedup"] = out["cached"]["tokens_per_s"] / out["uncached"]["tokens_per_s"]
    out["same_tokens"] = bool(np.array_equal(tokens["cached"], tokens["uncached"]))
    return out


# --quick's defaults (flags given on the command line still win).
QUICK = dict(vqgan_batch=8, vqgan_size=0, dim=32, depth=1, heads=2, grid=4, codes=16,
             prior_batch=4, sample_batch=4, repeats=2, warmup=0)  # fmt: skip


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parts", default="vqgan,prior,sampling", help="comma-separated")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: vqgan_shapes:tiny, a 1-layer dim-32 GPT over 4x4 tokens, "
        "no transformer_digits, 2 timed runs, no warm-up",
    )
    p.add_argument("--repeats", type=int, default=5, help="timed runs of each step / sampler")
    p.add_argument(
        "--uncached_budget_s",
        type=float,
        default=20.0,
        help="the uncached sampler stops repeating once its timed runs took this long",
    )
    p.add_argument("--warmup", type=int, default=1, help="untimed runs after compiling")
    p.add_argument("--vqgan_batch", type=int, default=16)
    p.add_argument("--vqgan_size", type=int, default=32, help="0: the config's (16)")
    p.add_argument("--lpips", default="", help="LPIPS .npz: adds the perceptual term")
    p.add_argument("--dim", type=int, default=256, help="the gpt prior's width")
    p.add_argument("--depth", type=int, default=8)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--grid", type=int, default=16, help="image tokens: grid x grid")
    p.add_argument("--codes", type=int, default=1024, help="codebook size (vocabulary)")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--prior_batch", type=int, default=16)
    p.add_argument("--sample_batch", type=int, default=None, help="default 16; 4 on a CPU")
    if p.parse_known_args()[0].quick:
        p.set_defaults(**QUICK)
    args = p.parse_args()
    if args.sample_batch is None:
        # On a CPU the default gpt's uncached sampler takes ~1 min at batch 4.
        args.sample_batch = 4 if jax.default_backend() == "cpu" else 16
    parts = set(args.parts.split(","))
    unknown = parts - {"vqgan", "prior", "sampling"}
    if unknown:
        raise SystemExit(f"unknown parts {sorted(unknown)}; known: vqgan, prior, sampling")
    result = {
        "device": str(jax.devices()[0]),
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "args": vars(args),
    }
    if "vqgan" in parts:
        result["vqgan"] = bench_vqgan(args)
    if parts & {"prior", "sampling"}:
        with tempfile.TemporaryDirectory() as workdir:
            for name, config in prior_configs(args, workdir).items():
                result[name] = bench_prior(name, config, args, parts)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
