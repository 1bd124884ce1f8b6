"""DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2) on a discrete schedule.

DPM-Solver++ integrates the probability-flow ODE written in the data
prediction x_theta(x_t, t) (the predicted x_0) and the half log-SNR
lambda_t = log(alpha_t / sigma_t), alpha_t = sqrt(ab_t), sigma_t = sqrt(1 - ab_t).
The linear part of the ODE is integrated exactly (an exponential integrator), so
from time s to time t with h = lambda_t - lambda_s > 0:

    x_t = (sigma_t / sigma_s) x_s - alpha_t (e^{-h} - 1) D,

with D = x_theta(x_s, s) for the first-order step (algebraically DDIM, eta = 0)
and, for the multistep second-order step (2M), D a linear extrapolation in
lambda from the last two data predictions (Algorithm 2, r = h_prev / h):

    D = (1 + 1 / (2r)) x_theta(x_s, s) - 1 / (2r) x_theta(x_prev, prev).

It reuses the previous step's model output, so S steps cost S network
evaluations, like DDIM, and are second order in the step size (DDIM is first).

Time grid: the S indices of :func:`zoo.diffusion.ddim.ddim_timesteps` (evenly
spaced in the schedule's index t, both ends included), so DPM-Solver++ and DDIM
evaluate the network at the same times with the same x_T and differ only in the
update rule. (Indices uniform in lambda were tried: slightly better on the
linear schedule, worse on the cosine one, where they crowd into the last few
indices, whose lambda plunges as beta is clipped: S = 10 puts 4 of them above
t = 975, and the toy's error at S = 20, x_T in [-3, 3], was 0.042 against 0.005.)

Three steps are first order:
  - the first one: there is no previous data prediction yet (as in the paper);
  - the last one, from index ts[0] to the clean sample (ab = 1 at "t = -1", as
    in DDIM): sigma = 0 and lambda = +inf there, so h = inf, e^{-h} = 0 and the
    update is exactly the data prediction x_theta(x, ts[0]); extrapolating with
    1 / r = inf would be meaningless;
  - the one into ts[0] (index 0): on this grid it spans a lambda interval many
    times the previous one (T = 1000, S = 20: h = 2.9 after h_prev = 0.66 on the
    linear schedule, 2.7 after 0.62 on the cosine one), and extrapolating the
    data prediction linearly that far amplifies its error. Measured on the
    Gaussian toy of tests/diffusion/test_dpm_solver.py (max |error| over 4096
    draws of x_T), with this step second order / first order / DDIM:
    linear S = 10: 0.73 / 0.41 / 0.52, S = 50: 0.105 / 0.0055 / 0.106;
    cosine S = 20: 0.19 / 0.0062 / 0.15, S = 50: 0.032 / 0.0041 / 0.058.
So with S <= 3 all steps are first order: the result is DDIM (eta = 0) up to rounding.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from zoo.diffusion.ddim import ddim_timesteps
from zoo.diffusion.ddpm import DenoiseFn, predict_x0
from zoo.diffusion.schedules import Schedule
from zoo.diffusion.thresholding import check_dynamic_threshold, threshold_x0


def dpm_solver_pp_coefficients(
    sched: Schedule, steps: int
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Per-step constants of DPM-Solver++(2M), in the order the sampler runs (noisy first).

    Step k evaluates the model at index ``t[k]`` and moves x to the next kept
    index (the clean sample after the last one) by
    ``x <- ratio[k] x + c[k] (x0 + w[k] (x0 - x0_prev))``:
      - ratio = sigma_next / sigma_t (0 on the last step, sigma = 0 at the data);
      - c = -alpha_next expm1(-h), h = lambda_next - lambda_t (1 on the last step);
      - w = 1 / (2r) = h / (2 h_prev) on second-order steps, 0 on the first-order
        ones: the first, the one into ts[0] and the last (see the module docstring).
    Returns ``(t [S] int32, ratio [S], c [S], w [S])``, float32, S = ``steps``.
    """
    ts = ddim_timesteps(sched.num_timesteps, steps)[::-1]  # decreasing: noisy first
    # The schedule's sqrt columns were computed in float64: 1 - ab in float32
    # loses most digits near t = 0, where ab is within 1e-4 of 1.
    alpha = sched.sqrt_alphas_cumprod[ts]
    sigma = sched.sqrt_one_minus_alphas_cumprod[ts]
    lam = jnp.log(alpha) - jnp.log(sigma)  # increasing along the sampling direction
    h = lam[1:] - lam[:-1]  # [S-1], > 0
    one, zero = jnp.ones((1,)), jnp.zeros((1,))
    ratio = jnp.concatenate([sigma[1:] / sigma[:-1], zero])
    c = jnp.concatenate([-alpha[1:] * jnp.expm1(-h), one])  # expm1: h is small for large S
    # Second order on steps 1..S-3 only; [:steps] trims the padding when S < 3.
    w = jnp.concatenate([zero, h[1:-1] / (2.0 * h[:-2]), zero, zero])[:steps]  # [S]
    return jnp.asarray(ts, jnp.int32), ratio, c, w


def dpm_solver_pp_sample(
    denoise_fn: DenoiseFn,
    sched: Schedule,
    rng: jax.Array,
    shape: tuple[int, ...],
    *,
    steps: int,
    prediction: str = "eps",
    clip_denoised: bool = True,
    dynamic_threshold: float = 0.0,
) -> jax.Array:
    """Sample ``[B, ...]`` float32 with S = ``steps`` DPM-Solver++(2M) steps, one ``lax.scan``.

    denoise_fn: ``(x [B, ...], t [B] int32) -> model output [B, ...]`` of type
      ``prediction`` ("eps", "x0" or "v"); traced once, called S times.
    sched: the discrete schedule; steps: 1 <= S <= T network evaluations.
    shape: ``(B, ...)`` of the samples.
    clip_denoised / dynamic_threshold: applied to every data prediction before
      it enters the update (and the history): thresholding is why the paper
      solves in the data prediction. ``dynamic_threshold`` is a
      percentile in (0, 1) (0 = off) and replaces the static clip.

    Deterministic: only x_T ~ N(0, I) is drawn, from ``k_init`` of
    ``k_init, _ = split(rng)``, the same x_T as ``ddim_sample`` with that rng.
    S = 1 returns the data prediction at x_T; S <= 3 equals DDIM (eta = 0),
    since all of its steps are first order.
    """
    T = sched.num_timesteps
    if not 1 <= steps <= T:
        raise ValueError(f"DPM-Solver++ needs 1 <= steps <= T, got steps={steps}, T={T}")
    check_dynamic_threshold(dynamic_threshold)  # fail before tracing the model
    k_init, _ = jax.random.split(rng)
    x_T = jax.random.normal(k_init, shape, jnp.float32)

    def step(carry, inputs):
        x, x0_prev = carry
        t, ratio, c, w = inputs
        tb = jnp.full((shape[0],), t, jnp.int32)
        x0 = predict_x0(sched, x, tb, denoise_fn(x, tb), prediction)
        x0 = threshold_x0(x0, clip_denoised=clip_denoised, dynamic_threshold=dynamic_threshold)
        d = x0 + w * (x0 - x0_prev)  # = (1 + 1/(2r)) x0 - 1/(2r) x0_prev; w = 0: first order
        return (ratio * x + c * d, x0), None

    xs = dpm_solver_pp_coefficients(sched, steps)
    (x0, _), _ = jax.lax.scan(step, (x_T, jnp.zeros(shape, jnp.float32)), xs)
    return x0
