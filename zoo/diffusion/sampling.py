"""Sampling a trained diffusion model: classifier-free guidance and the sampler a config names.

Shared by every diffusion objective (pixel, latent, a cascade's stages), so each reads its
``config.diffusion`` the same way.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from zoo.diffusion.ddim import ddim_sample, ddim_timesteps
from zoo.diffusion.ddpm import MeanShift, ancestral_sample
from zoo.diffusion.dpm_solver import dpm_solver_pp_sample
from zoo.diffusion.schedules import Schedule, respace

SAMPLERS = ("ancestral", "ddim", "dpm_solver_pp")


def tile(x: jax.Array, n: int) -> jax.Array:
    """``x [B, ...]`` repeated along the batch to ``[n, ...]`` (n a multiple of B)."""
    return jnp.tile(x, (n // x.shape[0],) + (1,) * (x.ndim - 1))


def guided_denoiser(net, cond, null, guidance_scale: float, extra: dict | None = None):
    """``(x [N, ...], t [N]) -> model output`` of ``net(x, t, cond, **extra)``.

    cond: ``[B, ...]`` condition (tiled to N), or None for an unconditional net.
    null: the null condition shaped like ``cond`` (used when ``guidance_scale != 1``).
    guidance_scale: s of classifier-free guidance (Ho & Salimans 2022; GLIDE eq. 4),
      ``f(x, null) + s (f(x, c) - f(x, null))`` in one call on both halves; 1 is the plain
      conditional model, 0 the unconditional one.
    extra: keyword inputs ``[B, ...]`` that both halves share (a super-resolution stage's
      low-resolution image and its augmentation level).
    """
    extra = extra or {}

    def inputs(n, copies):
        return {k: tile(v, n * copies) for k, v in extra.items()}

    if cond is None:
        return lambda x, t: net(x, t, **inputs(x.shape[0], 1))

    def denoise(x, t):
        n = x.shape[0]
        c = tile(cond, n)
        if guidance_scale == 1.0:
            return net(x, t, c, **inputs(n, 1))
        out = net(
            jnp.concatenate([x, x]),
            jnp.concatenate([t, t]),
            jnp.concatenate([c, tile(null, n)]),
            **inputs(n, 2),
        )
        with_c, without = jnp.split(out, 2)
        return without + guidance_scale * (with_c - without)

    return denoise


def sample(
    d,
    denoise,
    sched: Schedule,
    rng: jax.Array,
    shape: tuple[int, ...],
    mean_shift: MeanShift | None = None,
) -> jax.Array:
    """Samples ``shape`` with the sampler ``d = config.diffusion`` names.

    Reads sampler ('ancestral' | 'ddim' | 'dpm_solver_pp'), sample_steps (default T),
    ddim_eta, prediction, variance (ancestral), clip_denoised and dynamic_threshold.
    ``mean_shift`` (CLIP guidance) shifts the ancestral sampler's step means; the other
    samplers have no per-step variance to scale it by, so they refuse it. The ancestral
    sampler with ``sample_steps`` S < T runs on the respaced schedule of DDIM's S timesteps
    (:func:`~zoo.diffusion.schedules.respace`), the network and ``mean_shift`` seeing the
    original t.
    """
    if mean_shift is not None and d.sampler != "ancestral":
        raise ValueError(
            f"CLIP guidance shifts the mean of each ancestral step: set "
            f"diffusion.sampler='ancestral' (got {d.sampler!r})"
        )
    limit = dict(
        prediction=d.prediction,
        clip_denoised=bool(d.clip_denoised),
        dynamic_threshold=float(d.get("dynamic_threshold", 0.0)),
    )
    steps = int(d.get("sample_steps", sched.num_timesteps))
    check_sample_steps(d.sampler, steps, sched.num_timesteps)
    if d.sampler == "ddim":
        return ddim_sample(denoise, sched, rng, shape, steps=steps, eta=float(d.ddim_eta), **limit)
    if d.sampler == "dpm_solver_pp":
        return dpm_solver_pp_sample(denoise, sched, rng, shape, steps=steps, **limit)
    if d.sampler == "ancestral":
        if steps != sched.num_timesteps:
            denoise, sched, mean_shift = _respaced(denoise, sched, steps, mean_shift)
        return ancestral_sample(
            denoise, sched, rng, shape, variance=d.variance, mean_shift=mean_shift, **limit
        )
    raise ValueError(f"diffusion.sampler={d.sampler!r}; choose one of {SAMPLERS}")


def check_sample_steps(sampler: str, steps: int, T: int) -> None:
    """ValueError unless ``sampler`` can take ``steps`` of a T-step schedule: ancestral
    sampling needs 2..T (its respaced schedule, :func:`~zoo.diffusion.schedules.respace`, takes
    at least two timesteps), DDIM and DPM-Solver++ 1..T. Checked from the config before
    compiling (:func:`~zoo.diffusion.objective.check_choices`) and again by :func:`sample`."""
    fewest = 2 if sampler == "ancestral" else 1
    if not fewest <= steps <= T:
        raise ValueError(
            f"diffusion.sample_steps={steps} must lie in [{fewest}, T={T}] for the "
            f"{sampler!r} sampler"
        )


def _respaced(denoise, sched: Schedule, steps: int, mean_shift: MeanShift | None):
    """(denoise, schedule, mean_shift) of ancestral sampling in ``steps`` < T steps: the
    respaced schedule of DDIM's timesteps, with its step indices k mapped back to the
    timesteps ``ts[k]`` the network (and a noise-aware CLIP) were trained on."""
    ts = ddim_timesteps(sched.num_timesteps, steps)
    original = jnp.asarray(ts)

    def respaced_denoise(x, k):
        return denoise(x, original[k])

    def respaced_shift(mean, variance, x, k):
        return mean_shift(mean, variance, x, original[k])

    return respaced_denoise, respace(sched, ts), None if mean_shift is None else respaced_shift
