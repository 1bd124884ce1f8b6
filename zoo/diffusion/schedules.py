"""Noise schedules of the forward process q(x_t | x_{t-1}) (survey eq. 4.1).

A schedule is fixed by its variances beta_1..beta_T; every other quantity the
losses and samplers need (alpha-bar of eq. 4.3, the posterior of eq. 4.6) is
precomputed here in float64 numpy and stored as float32 arrays ``[T]``.

Indexing convention: the array index ``t`` in ``{0, ..., T-1}`` stands for
the paper's time step ``t + 1`` in ``{1, ..., T}``. So ``alphas_cumprod[0]``
is alpha-bar_1 and ``alphas_cumprod_prev[0]`` is alpha-bar_0 = 1. The survey
writes alpha where it means alpha-bar in eqs. 4.3-4.6; we follow Ho et al.
(2020), where alpha_t = 1 - beta_t and alpha-bar_t = prod_{s<=t} alpha_s.

New schedules register themselves with ``@register_schedule("name")``: a
function ``(T, **kwargs) -> betas [T] float64``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

BetaFn = Callable[..., np.ndarray]
_SCHEDULES: dict[str, BetaFn] = {}


def register_schedule(name: str) -> Callable[[BetaFn], BetaFn]:
    """Decorator: register ``fn(T, **kwargs) -> betas [T]`` under ``name``."""

    def wrap(fn: BetaFn) -> BetaFn:
        if name in _SCHEDULES:
            raise ValueError(f"schedule {name!r} is already registered")
        _SCHEDULES[name] = fn
        return fn

    return wrap


def schedule_names() -> tuple[str, ...]:
    """Names accepted by :func:`make_schedule`."""
    return tuple(sorted(_SCHEDULES))


@register_schedule("linear")
def linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """Ho et al. (2020): betas linear from ``beta_start`` to ``beta_end``; ``[T]`` float64.

    The DDPM values (1e-4, 0.02) are meant for T=1000; for much smaller T pick a
    larger ``beta_end`` so that alpha-bar_T is still close to 0.
    """
    return np.linspace(beta_start, beta_end, T, dtype=np.float64)


@register_schedule("scaled_linear")
def scaled_linear_betas(T: int, beta_start: float = 0.00085, beta_end: float = 0.012) -> np.ndarray:
    """Latent diffusion / Stable Diffusion: ``sqrt(beta)`` linear from ``sqrt(beta_start)`` to
    ``sqrt(beta_end)``, i.e. ``betas = linspace(sqrt(b0), sqrt(b1), T) ** 2``; ``[T]`` float64.

    The defaults are Stable Diffusion 1.x's (T = 1000). It ends less noisy than DDPM's
    linear schedule: alpha-bar_T = 0.0047 against 4.0e-5.
    """
    return np.linspace(math.sqrt(beta_start), math.sqrt(beta_end), T, dtype=np.float64) ** 2


@register_schedule("cosine")
def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Nichol & Dhariwal (2021), eq. 17: alpha-bar(t) = f(t)/f(0), f(t) = cos^2((t/T+s)/(1+s) pi/2).

    beta_t = 1 - alpha-bar(t)/alpha-bar(t-1), clipped at ``max_beta`` to avoid the
    singularity at t=T; ``[T]`` float64.
    """
    steps = np.arange(T + 1, dtype=np.float64) / T
    f = np.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    return np.minimum(1 - f[1:] / f[:-1], max_beta)


class Schedule(NamedTuple):
    """Precomputed forward/posterior coefficients, each float32 ``[T]`` (a pytree).

    Index ``t`` is the paper's step ``t + 1`` (see the module docstring).
    """

    betas: jnp.ndarray  # beta_t
    alphas: jnp.ndarray  # alpha_t = 1 - beta_t
    alphas_cumprod: jnp.ndarray  # alpha-bar_t (eq. 4.3)
    alphas_cumprod_prev: jnp.ndarray  # alpha-bar_{t-1}, with alpha-bar_0 = 1
    sqrt_alphas_cumprod: jnp.ndarray  # sqrt(alpha-bar_t): mean scale of q(x_t | x_0)
    sqrt_one_minus_alphas_cumprod: jnp.ndarray  # sqrt(1 - alpha-bar_t): its std
    sqrt_recip_alphas_cumprod: jnp.ndarray  # 1 / sqrt(alpha-bar_t)
    sqrt_recipm1_alphas_cumprod: jnp.ndarray  # sqrt(1 / alpha-bar_t - 1)
    posterior_variance: jnp.ndarray  # beta-tilde_t = (1-ab_{t-1})/(1-ab_t) beta_t (eq. 4.6)
    posterior_log_variance_clipped: (
        jnp.ndarray
    )  # log beta-tilde_t, with beta-tilde_1 := beta-tilde_2
    posterior_mean_coef1: jnp.ndarray  # sqrt(ab_{t-1}) beta_t / (1-ab_t): weight of x_0
    posterior_mean_coef2: jnp.ndarray  # sqrt(alpha_t) (1-ab_{t-1}) / (1-ab_t): weight of x_t

    @property
    def num_timesteps(self) -> int:
        """T (a static Python int, also under jit)."""
        return self.betas.shape[0]


def schedule_from_betas(betas: np.ndarray) -> Schedule:
    """All coefficients from ``betas [T]`` (T >= 2), computed in float64, cast to float32."""
    betas = np.asarray(betas, dtype=np.float64)
    if betas.ndim != 1 or betas.shape[0] < 2:
        raise ValueError(f"betas must be a vector of length >= 2, got shape {betas.shape}")
    if not np.all((betas > 0) & (betas < 1)):
        raise ValueError("betas must lie in (0, 1)")
    alphas = 1.0 - betas
    ab = np.cumprod(alphas)
    ab_prev = np.append(1.0, ab[:-1])
    post_var = betas * (1.0 - ab_prev) / (1.0 - ab)  # eq. 4.6; exactly 0 at t=1
    arrays = dict(
        betas=betas,
        alphas=alphas,
        alphas_cumprod=ab,
        alphas_cumprod_prev=ab_prev,
        sqrt_alphas_cumprod=np.sqrt(ab),
        sqrt_one_minus_alphas_cumprod=np.sqrt(1.0 - ab),
        sqrt_recip_alphas_cumprod=np.sqrt(1.0 / ab),
        sqrt_recipm1_alphas_cumprod=np.sqrt(1.0 / ab - 1.0),
        posterior_variance=post_var,
        # beta-tilde_1 = 0 has log -inf: use beta-tilde_2 there, as Ho et al.'s code does.
        posterior_log_variance_clipped=np.log(np.append(post_var[1], post_var[1:])),
        posterior_mean_coef1=betas * np.sqrt(ab_prev) / (1.0 - ab),
        posterior_mean_coef2=(1.0 - ab_prev) * np.sqrt(alphas) / (1.0 - ab),
    )
    return Schedule(**{k: jnp.asarray(v, dtype=jnp.float32) for k, v in arrays.items()})


def respace(sched: Schedule, ts) -> Schedule:
    """The schedule of the sub-sequence ``ts`` (increasing indices into ``sched``, >= 2 of
    them) as its own chain: step k has alpha-bar ``sched``'s at ``ts[k]``, so its betas are
    ``1 - ab[ts[k]] / ab[ts[k-1]]`` (Nichol & Dhariwal 2021, sec. 4). Ancestral sampling on it
    takes ``len(ts)`` steps of the same forward process; a network trained on ``sched`` is
    called with ``ts[k]`` at step k."""
    ab = np.asarray(sched.alphas_cumprod, np.float64)[np.asarray(ts)]
    return schedule_from_betas(1.0 - ab / np.append(1.0, ab[:-1]))


def make_schedule(name: str, T: int, **kwargs) -> Schedule:
    """The registered schedule ``name`` with ``T`` steps; ``kwargs`` go to its beta function.

    Example: ``make_schedule("linear", 1000, beta_start=1e-4, beta_end=0.02)``.
    """
    if name not in _SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {schedule_names()}")
    return schedule_from_betas(_SCHEDULES[name](T, **kwargs))
