"""DDIM sampling (Song, Meng & Ermon 2021) on a sub-sequence of S <= T time steps.

Eq. 12 of the paper, from step t to the previous kept step s < t (indices into
the schedule; s = -1 means the paper's t = 0 with alpha-bar = 1):

    x_s = sqrt(ab_s) x0_pred + sqrt(1 - ab_s - sigma^2) eps_pred + sigma z,
    sigma = eta sqrt((1 - ab_s) / (1 - ab_t)) sqrt(1 - ab_t / ab_s)       (eq. 16).

eta = 0 is the deterministic DDIM sampler; eta = 1 with S = T gives sigma^2 =
beta-tilde_t and the same mean as the posterior (eq. 4.6), i.e. DDPM ancestral
sampling with the ``fixed_small`` variance.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from zoo.diffusion.ddpm import DenoiseFn, eps_from_x0, predict_eps, predict_x0
from zoo.diffusion.schedules import Schedule
from zoo.diffusion.thresholding import check_dynamic_threshold, threshold_x0


def ddim_timesteps(T: int, steps: int) -> np.ndarray:
    """S = ``steps`` evenly spaced indices in [0, T-1], increasing, both ends included; ``[S]``.

    Including T-1 makes the sampler start from the fully noised x_T whatever S.
    """
    if not 1 <= steps <= T:
        raise ValueError(f"DDIM needs 1 <= steps <= T, got steps={steps}, T={T}")
    if steps == 1:
        return np.array([T - 1])
    return np.round(np.linspace(0, T - 1, steps)).astype(np.int32)


def ddim_sample(
    denoise_fn: DenoiseFn,
    sched: Schedule,
    rng: jax.Array,
    shape: tuple[int, ...],
    *,
    steps: int,
    eta: float = 0.0,
    prediction: str = "eps",
    clip_denoised: bool = True,
    dynamic_threshold: float = 0.0,
) -> jax.Array:
    """Sample ``[B, ...]`` with S = ``steps`` DDIM updates (eq. 12), one ``lax.scan``.

    ``denoise_fn(x [B, ...], t [B]) -> model output`` is traced once. Clipping
    x0_pred to [-1, 1] (``clip_denoised``), or dynamic thresholding instead of
    it (``dynamic_threshold``: a percentile in (0, 1), 0 = off; see
    :mod:`zoo.diffusion.thresholding`), re-derives eps from the changed x0 so
    that the two stay consistent.
    Keys as in :func:`zoo.diffusion.ddpm.ancestral_sample`: x_T from ``k_init``,
    the noise of step t from ``fold_in(k_steps, t)``.
    """
    ts = ddim_timesteps(sched.num_timesteps, steps)
    limited = check_dynamic_threshold(dynamic_threshold) > 0 or clip_denoised
    ab = sched.alphas_cumprod
    ab_t = ab[ts]
    ab_s = jnp.concatenate([jnp.ones((1,)), ab[ts[:-1]]])  # previous kept step; ab_0 = 1
    # eq. 16: sigma, and the weight of eps_pred (clamped: rounding can make it < 0).
    sigma = eta * jnp.sqrt((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s))
    eps_coef = jnp.sqrt(jnp.maximum(1 - ab_s - sigma**2, 0.0))
    # Scanned from the last kept step down to the first.
    xs = (jnp.asarray(ts[::-1], jnp.int32), jnp.sqrt(ab_s)[::-1], eps_coef[::-1], sigma[::-1])
    k_init, k_steps = jax.random.split(rng)
    x_T = jax.random.normal(k_init, shape, jnp.float32)

    def step(x, inputs):
        t, sqrt_ab_s, c_eps, sig = inputs
        tb = jnp.full((shape[0],), t, jnp.int32)
        out = denoise_fn(x, tb)
        x0 = predict_x0(sched, x, tb, out, prediction)
        if limited:
            x0 = threshold_x0(x0, clip_denoised=clip_denoised, dynamic_threshold=dynamic_threshold)
            eps = eps_from_x0(sched, x, tb, x0)
        else:
            eps = predict_eps(sched, x, tb, out, prediction)
        z = jax.random.normal(jax.random.fold_in(k_steps, t), shape, jnp.float32)
        return sqrt_ab_s * x0 + c_eps * eps + sig * z, None

    x0, _ = jax.lax.scan(step, x_T, xs)
    return x0
