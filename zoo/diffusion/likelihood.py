"""Bits per dimension from the variational bound (Ho et al. 2020 eq. 5; Nichol & Dhariwal 2021).

    -log p(x_0) <= L_T + sum_{t>1} L_{t-1} + L_0,
    L_T     = KL(q(x_T | x_0) || N(0, I)),
    L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)),     x_t ~ q(x_t | x_0),
    L_0     = -log p(x_0 | x_1), a Gaussian discretised to the 256 pixel values.

Data are in [-1, 1] on the grid of 256 values (bin width 2/255); the edge bins
extend to -inf / +inf, so the decoder is a proper distribution over 256 values.
Every term is reported in bits per dimension: nats / (D ln 2), D = H * W * C.
Time steps are 0-based schedule indices: index 0 carries L_0, index t >= 1
carries L_t (the paper's L_{t}, between steps t+1 and t).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import log_ndtr

from zoo.diffusion.ddpm import DenoiseFn, p_mean_variance, q_posterior, q_sample
from zoo.diffusion.schedules import Schedule

BIN_HALF_WIDTH = 1.0 / 255.0  # half the distance between two of the 256 levels in [-1, 1]


def mean_flat(x: jax.Array) -> jax.Array:
    """Mean over all but the batch axis: ``[B, ...] -> [B]``."""
    return jnp.mean(x, axis=tuple(range(1, x.ndim)))


def normal_kl(mean1, logvar1, mean2, logvar2) -> jax.Array:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) elementwise, in nats (broadcasts)."""
    return 0.5 * (
        -1.0
        + logvar2
        - logvar1
        + jnp.exp(logvar1 - logvar2)
        + jnp.square(mean1 - mean2) * jnp.exp(-logvar2)
    )


def _log_prob_interval(lo: jax.Array, hi: jax.Array) -> jax.Array:
    """log(Phi(hi) - Phi(lo)) for lo < hi, stable in both tails (no cancellation)."""
    # Reflect intervals in the upper tail to the lower one, where log Phi is accurate.
    flip = lo > 0
    lo, hi = jnp.where(flip, -hi, lo), jnp.where(flip, -lo, hi)
    log_hi, log_lo = log_ndtr(hi), log_ndtr(lo)
    # log(Phi(hi) - Phi(lo)) = log Phi(hi) + log(1 - exp(log Phi(lo) - log Phi(hi))).
    return log_hi + jnp.log(jnp.maximum(-jnp.expm1(log_lo - log_hi), 1e-30))


def discretized_gaussian_log_likelihood(
    x: jax.Array, mean: jax.Array, log_scale: jax.Array
) -> jax.Array:
    """log P(x) for x on the 256-level grid of [-1, 1] under N(mean, e^{2 log_scale}), in nats.

    The mass of x's bin [x - 1/255, x + 1/255], with the bins of -1 and +1
    extended to -inf and +inf. Elementwise, broadcasting; ``log_scale`` is log std.
    """
    inv_std = jnp.exp(-log_scale)
    lo = (x - mean - BIN_HALF_WIDTH) * inv_std
    hi = (x - mean + BIN_HALF_WIDTH) * inv_std
    return jnp.where(
        x < -0.999,
        log_ndtr(hi),  # edge bin (-inf, -1 + 1/255]
        jnp.where(x > 0.999, log_ndtr(-lo), _log_prob_interval(lo, hi)),
    )


def prior_bpd(sched: Schedule, x0: jax.Array) -> jax.Array:
    """L_T = KL(q(x_T | x_0) || N(0, I)) in bits/dim; ``x0 [B, ...] -> [B]``."""
    t = jnp.full((x0.shape[0],), sched.num_timesteps - 1, jnp.int32)
    ab = sched.alphas_cumprod[t].reshape((-1,) + (1,) * (x0.ndim - 1))
    kl = normal_kl(jnp.sqrt(ab) * x0, jnp.log1p(-ab), 0.0, 0.0)
    return mean_flat(kl) / math.log(2.0)


def vlb_term_bpd(
    denoise_fn: DenoiseFn,
    sched: Schedule,
    x0: jax.Array,
    t: jax.Array,
    eps: jax.Array,
    *,
    prediction: str = "eps",
    variance: str = "fixed_small",
    clip_denoised: bool = True,
) -> jax.Array:
    """One term of the bound per example, in bits/dim: L_0 where t == 0, else L_t; ``[B]``.

    x0, eps: ``[B, ...]``; t: ``[B]`` int. x_t = q_sample(x0, t, eps) (one draw).
    """
    xt = q_sample(sched, x0, t, eps)
    mean, log_var, _ = p_mean_variance(
        sched,
        denoise_fn(xt, t),
        xt,
        t,
        prediction=prediction,
        variance=variance,
        clip_denoised=clip_denoised,
    )
    true_mean, _, true_log_var = q_posterior(sched, x0, xt, t)
    kl = mean_flat(normal_kl(true_mean, true_log_var, mean, log_var))
    nll = -mean_flat(discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_var))
    return jnp.where(t == 0, nll, kl) / math.log(2.0)


def vlb_terms(
    denoise_fn: DenoiseFn,
    sched: Schedule,
    rng: jax.Array,
    x0: jax.Array,
    *,
    chunk: int = 1,
    **kwargs,
) -> jax.Array:
    """All T terms of the bound (L_0, L_1, ..., L_{T-1}) in bits/dim; ``[T, B]``.

    A ``lax.scan`` over chunks of ``chunk`` time steps: each chunk is one call of
    ``denoise_fn`` on the batch tiled ``chunk`` times (``jnp.tile`` order, so a
    closure holding per-example conditioning must tile it the same way).
    The noise of step t is ``normal(fold_in(rng, t))``. ``kwargs`` as for
    :func:`vlb_term_bpd`.
    """
    T, B = sched.num_timesteps, x0.shape[0]
    n_chunks = -(-T // chunk)
    # Pad the last chunk with copies of step T-1; their terms are dropped below.
    ts = np.minimum(np.arange(n_chunks * chunk), T - 1).reshape(n_chunks, chunk)
    x_rep = jnp.tile(x0, (chunk,) + (1,) * (x0.ndim - 1))  # [chunk * B, ...]

    def body(_, tc):  # tc: [chunk]
        eps = jax.vmap(lambda t: jax.random.normal(jax.random.fold_in(rng, t), x0.shape))(tc)
        t = jnp.repeat(tc, B)
        terms = vlb_term_bpd(denoise_fn, sched, x_rep, t, eps.reshape(x_rep.shape), **kwargs)
        return None, terms.reshape(chunk, B)

    _, terms = jax.lax.scan(body, None, jnp.asarray(ts, jnp.int32))
    return terms.reshape(n_chunks * chunk, B)[:T]


def exact_bpd(
    denoise_fn: DenoiseFn,
    sched: Schedule,
    rng: jax.Array,
    x0: jax.Array,
    *,
    chunk: int = 1,
    **kwargs,
) -> jax.Array:
    """The full bound L_T + sum_t L_t + L_0 in bits/dim, all T terms evaluated; ``[B]``.

    Costs T network evaluations per example (T / chunk calls). Each KL term is
    still evaluated at one draw of x_t, as in Ho et al.
    """
    terms = vlb_terms(denoise_fn, sched, rng, x0, chunk=chunk, **kwargs)
    return prior_bpd(sched, x0) + jnp.sum(terms, axis=0)


def mc_bpd(
    denoise_fn: DenoiseFn, sched: Schedule, rng: jax.Array, x0: jax.Array, **kwargs
) -> jax.Array:
    """Unbiased estimate of :func:`exact_bpd` from two network calls per example; ``[B]``.

    L_T and the decoder term L_0 are computed exactly (L_0 alone is a large
    share of the bound, and sampling it with probability 1/T made the estimate
    swing by bits); the KL terms are estimated as (T - 1) L_t with t drawn
    from 1..T-1, stratified over the batch (example i gets a t in its own 1/B
    slice of the range, slices in random order) so a batch covers all noise
    levels. Each t is still marginally uniform, so the batch mean is unbiased.
    """
    k_perm, k_u, k_eps0, k_eps = jax.random.split(rng, 4)
    T, B = sched.num_timesteps, x0.shape[0]
    strata = jax.random.permutation(k_perm, B)
    v = (strata + jax.random.uniform(k_u, (B,))) / B  # uniform in [0, 1) per example
    t = 1 + jnp.minimum(jnp.floor(v * (T - 1)).astype(jnp.int32), T - 2)
    eps0 = jax.random.normal(k_eps0, x0.shape, jnp.float32)
    eps = jax.random.normal(k_eps, x0.shape, jnp.float32)
    decoder = vlb_term_bpd(denoise_fn, sched, x0, jnp.zeros((B,), jnp.int32), eps0, **kwargs)
    kl = vlb_term_bpd(denoise_fn, sched, x0, t, eps, **kwargs)
    return prior_bpd(sched, x0) + decoder + (T - 1) * kl
