"""DDPM (Ho et al. 2020): forward noising, posterior, training loss and ancestral sampling.

Survey eqs. 4.3 (q(x_t | x_0)), 4.6 (the posterior q(x_{t-1} | x_t, x_0)) and
Algorithms 4.1 (training) and 4.2 (sampling); the survey writes alpha for
alpha-bar in places, we follow the paper. Time steps are 0-based indices into
a :class:`~zoo.diffusion.schedules.Schedule` (index t is the paper's t+1).

The network may predict one of three quantities (``prediction``):
  - ``"eps"``: the noise eps of x_t = sqrt(ab) x_0 + sqrt(1-ab) eps (Ho et al.);
  - ``"x0"``: the clean image x_0;
  - ``"v"``: v = sqrt(ab) eps - sqrt(1-ab) x_0 (Salimans & Ho 2022).
All three are affine in the model output for fixed (x_t, t), so any of them
converts to x_0 and eps, which is all the samplers and the bound need.

Images are ``[B, H, W, C]`` float32 in [-1, 1]; any ``[B, ...]`` shape works.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from zoo.diffusion.schedules import Schedule
from zoo.diffusion.thresholding import check_dynamic_threshold, threshold_x0

PREDICTIONS = ("eps", "x0", "v")
VARIANCES = ("fixed_small", "fixed_large")

# denoise_fn(x [B, ...], t [B] int32) -> model output [B, ...] (what ``prediction`` names).
DenoiseFn = Callable[[jax.Array, jax.Array], jax.Array]
# mean_shift(mean [B, ...], variance [B, 1..1], x_t [B, ...], t [B]) -> guided mean [B, ...].
MeanShift = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]


def extract(coef: jax.Array, t: jax.Array, x: jax.Array) -> jax.Array:
    """``coef[t]`` reshaped to ``[B, 1, ..., 1]`` to broadcast against ``x [B, ...]``."""
    return coef[t].reshape((-1,) + (1,) * (x.ndim - 1))


def _check(prediction: str) -> None:
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction {prediction!r}; choose one of {PREDICTIONS}")


def q_sample(sched: Schedule, x0: jax.Array, t: jax.Array, eps: jax.Array) -> jax.Array:
    """Draw x_t ~ q(x_t | x_0) (eq. 4.3): sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps.

    x0, eps: ``[B, ...]``; t: ``[B]`` int. Returns ``[B, ...]``.
    """
    return (
        extract(sched.sqrt_alphas_cumprod, t, x0) * x0
        + extract(sched.sqrt_one_minus_alphas_cumprod, t, x0) * eps
    )


def q_posterior(
    sched: Schedule, x0: jax.Array, xt: jax.Array, t: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """q(x_{t-1} | x_t, x_0) = N(mu-tilde, beta-tilde I) (eq. 4.6).

    Returns ``(mean [B, ...], variance [B, 1..1], log_variance [B, 1..1])``; the
    log variance is the clipped one (finite at t=0, see the schedule).
    """
    mean = (
        extract(sched.posterior_mean_coef1, t, xt) * x0
        + extract(sched.posterior_mean_coef2, t, xt) * xt
    )
    var = extract(sched.posterior_variance, t, xt)
    log_var = extract(sched.posterior_log_variance_clipped, t, xt)
    return mean, var, log_var


def predict_x0(
    sched: Schedule, xt: jax.Array, t: jax.Array, out: jax.Array, prediction: str
) -> jax.Array:
    """x_0 implied by the model output ``out`` of type ``prediction``; ``[B, ...]``."""
    _check(prediction)
    if prediction == "x0":
        return out
    if prediction == "eps":  # invert eq. 4.3
        return (
            extract(sched.sqrt_recip_alphas_cumprod, t, xt) * xt
            - extract(sched.sqrt_recipm1_alphas_cumprod, t, xt) * out
        )
    # v: x_0 = sqrt(ab) x_t - sqrt(1-ab) v
    return (
        extract(sched.sqrt_alphas_cumprod, t, xt) * xt
        - extract(sched.sqrt_one_minus_alphas_cumprod, t, xt) * out
    )


def predict_eps(
    sched: Schedule, xt: jax.Array, t: jax.Array, out: jax.Array, prediction: str
) -> jax.Array:
    """eps implied by the model output ``out`` of type ``prediction``; ``[B, ...]``."""
    _check(prediction)
    if prediction == "eps":
        return out
    if prediction == "x0":
        return eps_from_x0(sched, xt, t, out)
    # v: eps = sqrt(1-ab) x_t + sqrt(ab) v
    return (
        extract(sched.sqrt_one_minus_alphas_cumprod, t, xt) * xt
        + extract(sched.sqrt_alphas_cumprod, t, xt) * out
    )


def eps_from_x0(sched: Schedule, xt: jax.Array, t: jax.Array, x0: jax.Array) -> jax.Array:
    """eps = (x_t - sqrt(ab_t) x_0) / sqrt(1 - ab_t) (eq. 4.3 solved for eps)."""
    return (extract(sched.sqrt_recip_alphas_cumprod, t, xt) * xt - x0) / extract(
        sched.sqrt_recipm1_alphas_cumprod, t, xt
    )


def prediction_target(
    sched: Schedule, x0: jax.Array, eps: jax.Array, t: jax.Array, prediction: str
) -> jax.Array:
    """What a network of type ``prediction`` should output for (x_0, eps, t); ``[B, ...]``."""
    _check(prediction)
    if prediction == "eps":
        return eps
    if prediction == "x0":
        return x0
    return (
        extract(sched.sqrt_alphas_cumprod, t, x0) * eps
        - extract(sched.sqrt_one_minus_alphas_cumprod, t, x0) * x0
    )


def diffusion_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Algorithm 4.1 line 5: ||target - pred||^2, averaged over pixels and batch; a scalar.

    With ``target = eps`` this is L_simple of Ho et al.; for x0/v targets it is
    the same unweighted MSE on the other parametrisation.
    """
    return jnp.mean(jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32)))


def model_log_variance(sched: Schedule, variance: str) -> jax.Array:
    """log Sigma_t of p(x_{t-1} | x_t) (eq. 4.5) for a fixed variance; ``[T]``.

    ``fixed_small``: beta-tilde_t (the posterior variance, clipped at t=1);
    ``fixed_large``: beta_t, with beta-tilde_2 at t=1 as in Ho et al.'s code so
    that the decoder L_0 has a sensible scale. Both are equally good for
    sampling (Ho et al. sec. 3.2) but give different bounds.
    """
    if variance == "fixed_small":
        return sched.posterior_log_variance_clipped
    if variance == "fixed_large":
        return jnp.log(jnp.concatenate([sched.posterior_variance[1:2], sched.betas[1:]]))
    raise ValueError(f"unknown variance {variance!r}; choose one of {VARIANCES}")


def p_mean_variance(
    sched: Schedule,
    out: jax.Array,
    xt: jax.Array,
    t: jax.Array,
    *,
    prediction: str = "eps",
    variance: str = "fixed_small",
    clip_denoised: bool = True,
    dynamic_threshold: float = 0.0,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Mean and log variance of p(x_{t-1} | x_t) (eq. 4.5) from a model output.

    The mean is the posterior mean (eq. 4.6) at the predicted x_0, optionally
    clipped to [-1, 1] (``clip_denoised``) or, when ``dynamic_threshold`` (a
    percentile in (0, 1), 0 = off) is set, dynamically thresholded instead
    (Imagen, see :mod:`zoo.diffusion.thresholding`); without either and for eps
    prediction this equals Algorithm 4.2 line 4:
    (x_t - beta_t / sqrt(1-ab_t) eps) / sqrt(alpha_t).
    Returns ``(mean [B, ...], log_variance [B, 1..1], x0_pred [B, ...])``.
    """
    x0 = predict_x0(sched, xt, t, out, prediction)
    x0 = threshold_x0(x0, clip_denoised=clip_denoised, dynamic_threshold=dynamic_threshold)
    mean, _, _ = q_posterior(sched, x0, xt, t)
    log_var = extract(model_log_variance(sched, variance), t, xt)
    return mean, log_var, x0


def ancestral_sample(
    denoise_fn: DenoiseFn,
    sched: Schedule,
    rng: jax.Array,
    shape: tuple[int, ...],
    *,
    prediction: str = "eps",
    variance: str = "fixed_small",
    clip_denoised: bool = True,
    dynamic_threshold: float = 0.0,
    mean_shift: MeanShift | None = None,
) -> jax.Array:
    """Algorithm 4.2: x_T ~ N(0, I), then x_{t-1} ~ p(x_{t-1} | x_t) for t = T..1.

    One ``lax.scan`` over the T steps: ``denoise_fn`` is traced once, whatever T.
    The noise of step t is drawn from ``fold_in(k_steps, t)`` and x_T from
    ``k_init``, where ``k_init, k_steps = split(rng)`` (shared with
    :func:`zoo.diffusion.ddim.ddim_sample`, so the two can be compared path-wise).

    shape: ``(B, ...)`` of the samples. ``clip_denoised`` / ``dynamic_threshold``
    act on each predicted x_0 as in :func:`p_mean_variance`. ``mean_shift(mean, variance,
    x_t, t)`` replaces each step's mean (guidance by a classifier or CLIP, which needs the
    step's variance: :func:`zoo.diffusion.clip_guidance.clip_mean_shift`).
    Returns x_0 ``[B, ...]`` float32.
    """
    check_dynamic_threshold(dynamic_threshold)  # fail before tracing the model
    T = sched.num_timesteps
    k_init, k_steps = jax.random.split(rng)
    x_T = jax.random.normal(k_init, shape, jnp.float32)

    def step(x, t):
        tb = jnp.full((shape[0],), t, jnp.int32)
        mean, log_var, _ = p_mean_variance(
            sched,
            denoise_fn(x, tb),
            x,
            tb,
            prediction=prediction,
            variance=variance,
            clip_denoised=clip_denoised,
            dynamic_threshold=dynamic_threshold,
        )
        if mean_shift is not None:
            mean = mean_shift(mean, jnp.exp(log_var), x, tb)
        z = jax.random.normal(jax.random.fold_in(k_steps, t), shape, jnp.float32)
        # Line 3: no noise on the last step (t = 1 in the paper, index 0 here).
        z = jnp.where(t > 0, z, 0.0)
        return mean + jnp.exp(0.5 * log_var) * z, None

    x0, _ = jax.lax.scan(step, x_T, jnp.arange(T - 1, -1, -1, dtype=jnp.int32))
    return x0
