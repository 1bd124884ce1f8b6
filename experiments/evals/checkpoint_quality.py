"""Sample quality (and, for DDPM, the exact bits/dim bound) of a workdir's latest checkpoint.

    python experiments/evals/checkpoint_quality.py runs/ddpm_digits --sampler ancestral \
        --set diffusion.sample_steps=1000   # the full chain (default: the run's sample_steps)
    python experiments/evals/checkpoint_quality.py runs/ddpm_digits --exact_bpd 297
    python experiments/evals/checkpoint_quality.py runs/stylegan2_digits   # any model
    python experiments/evals/checkpoint_quality.py runs/parti_shapes --set prior.guidance_scale=3
    python experiments/evals/checkpoint_quality.py runs/glide_shapes \
        --clip_run runs/clip_shapes_noisy --clip_guidance 100   # GLIDE's CLIP guidance

Reads the run's own config.json, so it scores the model the run trained.
Prints JSON: digits FD of ``--num`` samples (EMA parameters) with the chosen
sampler, and optionally the full variational bound (all T terms) on held-out
digits, split into L_T, L_0 and the KL terms. ``--set field=value`` changes a
sampling setting of the saved config first (guidance scale, temperature, top-k).
"""

import argparse
import json

import jax
import numpy as np

from zoo import data, registry
from zoo.diffusion.likelihood import prior_bpd, vlb_terms
from zoo.diffusion.objective import schedule_from_config
from zoo.engine.config import load_run_config, set_fields
from zoo.engine.loop import Trainer
from zoo.engine.stages import stage_entry
from zoo.engine.step import Models
from zoo.evals.sample_metrics import sample_metrics


def exact_bound(trainer, state, config, n: int) -> dict:
    params, rest, frozen = trainer.eval_params(state)
    sched = schedule_from_config(config.diffusion)
    x0 = next(data.make_eval_source(config.data).batches(n))["image"]
    d = config.diffusion

    @jax.jit
    def terms(params, rest, frozen, x0):
        net = Models(trainer.graphs, params, rest, frozen)("model", train=False)
        return vlb_terms(
            lambda x, t: net(x, t),
            sched,
            jax.random.key(0),
            x0,
            chunk=10,
            prediction=d.prediction,
            variance=d.variance,
            clip_denoised=bool(d.clip_denoised),
        )

    t = np.asarray(terms(params, rest, frozen, x0))
    prior = float(np.mean(prior_bpd(sched, x0)))
    return {
        "bpd": prior + float(t.sum(0).mean()),
        "L_T": prior,
        "L_0": float(t[0].mean()),
        "kl_terms": float(t[1:].sum(0).mean()),
        "examples": int(len(x0)),
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("workdir")
    p.add_argument(
        "--sampler",
        choices=("ddim", "ancestral", "dpm_solver_pp"),
        help="diffusion models: replace the run's sampler (default: the run's own)",
    )
    p.add_argument("--num", type=int, default=500, help="samples for the FD")
    p.add_argument("--exact_bpd", type=int, default=0, help="held-out examples; 0: skip")
    p.add_argument("--set", action="append", default=[], help="field=value, e.g. prior.top_k=8")
    p.add_argument(
        "--clip_run",
        help="caption diffusion models: guide the ancestral sampler with this noise-aware CLIP "
        "run (configs/clip_shapes.py:noisy); its weights are copied into the run's stages/ "
        "on first use and kept, as a stage's are",
    )
    p.add_argument("--clip_guidance", type=float, default=0.0, help="with --clip_run: scale s")
    args = p.parse_args()
    try:
        config = load_run_config(args.workdir)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(str(err)) from None
    try:
        set_fields(config, args.set)
    except ValueError as err:
        raise SystemExit(f"--set {err}") from None
    if args.exact_bpd and (config.model != "ddpm" or config.diffusion.condition != "none"):
        raise SystemExit("--exact_bpd is the bound of an unconditional pixel DDPM (model 'ddpm')")
    # Every run that samples by diffusion: the DDPM family, the unCLIP prior and decoder.
    diffusion = "sampler" in config.get("diffusion", {})
    if args.sampler and not diffusion:
        raise SystemExit(f"--sampler: a {config.model!r} run has no diffusion sampler to replace")
    if args.sampler:
        config.diffusion.sampler = args.sampler
    if bool(args.clip_run) != (args.clip_guidance > 0):
        raise SystemExit("--clip_run and --clip_guidance > 0 go together")
    if args.clip_run:
        config.stages.clip = stage_entry("model", args.clip_run)
        config.diffusion.clip_guidance_scale = args.clip_guidance
        config.diffusion.sampler = args.sampler or "ancestral"
    try:  # a bad --set or stage fails here with the objective's message, before compiling
        objective = registry.build_objective(config)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    config.eval.num_samples = args.num  # a run trained without sample metrics gets them too
    evals = sample_metrics(config, args.workdir)
    if not evals:
        raise SystemExit(f"no sample metric scores data.name={config.data.name!r}")
    trainer = Trainer(config, args.workdir, objective, sample_evals=evals)
    state, step = trainer.restore_or_init()
    if step == 0:
        raise SystemExit(f"no checkpoint in {args.workdir}")
    samples = trainer.samples(state, args.num, seed_offset=12345)
    result = {"step": step, "num_samples": args.num, "set": args.set}
    if diffusion:
        result["sampler"] = config.diffusion.sampler
        result["sample_steps"] = int(
            config.diffusion.get("sample_steps", config.diffusion.timesteps)
        )
    result.update(trainer.sample_evals[0](samples))
    if args.exact_bpd:
        result["exact_bound"] = exact_bound(trainer, state, config, args.exact_bpd)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
