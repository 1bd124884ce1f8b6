"""Ancestral (Algorithm 4.2) and DDIM samplers with an analytic optimal denoiser.

For data x_0 ~ N(mu, s^2 I), x_t = a x_0 + sigma eps is Gaussian and the
optimal predictors are affine in x_t: E[eps | x_t] = sigma (x_t - a mu) /
(a^2 s^2 + sigma^2). Every sampler step is then affine plus Gaussian noise,
so the exact mean and variance of its output follow from a float64 recursion;
the samples must match it (and, for T -> inf, N(mu, s^2): with T = 100 the
fixed_small chain is 3.5% too narrow, a real property of the discrete chain).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.diffusion.helpers import MU, S, gaussian_denoiser
from zoo.diffusion import ddim, ddpm, schedules

N = 8000  # samples: standard errors of mean/std are about 0.006 / 0.004


def chain_moments(betas, steps, eta=None, variance="fixed_small"):
    """Exact (mean, std) of the sampler output in float64; eta=None: ancestral."""
    b = np.asarray(betas, np.float64)
    ab = np.cumprod(1 - b)
    ts = np.round(np.linspace(0, len(b) - 1, steps)).astype(int)
    m, v = 0.0, 1.0
    for i in range(len(ts) - 1, -1, -1):
        t = ts[i]
        ab_s = ab[ts[i - 1]] if i > 0 else 1.0
        a, sig2 = np.sqrt(ab[t]), 1 - ab[t]
        k = a * S**2 / (a**2 * S**2 + sig2)  # x0_pred = k x + m0
        m0 = MU - k * a * MU
        if eta is None:  # posterior mean at x0_pred (eq. 4.6)
            c1 = b[t] * np.sqrt(ab_s) / (1 - ab[t])
            c2 = (1 - ab_s) * np.sqrt(1 - b[t]) / (1 - ab[t])
            A, B = c1 * k + c2, c1 * m0
            small = b[t] * (1 - ab_s) / (1 - ab[t])  # beta-tilde
            noise = 0.0 if t == 0 else (b[t] if variance == "fixed_large" else small)
        else:  # DDIM eq. 12 with eps_pred = (x - a x0_pred) / sigma_t
            sd2 = eta**2 * (1 - ab_s) / (1 - ab[t]) * (1 - ab[t] / ab_s)
            c = np.sqrt(max(1 - ab_s - sd2, 0.0)) / np.sqrt(sig2)
            A, B = np.sqrt(ab_s) * k + c * (1 - a * k), np.sqrt(ab_s) * m0 - c * a * m0
            noise = sd2
        m, v = A * m + B, A * A * v + noise
    return m, np.sqrt(v)


def check_moments(x, mean, std):
    assert abs(float(jnp.mean(x)) - mean) < 4 * std / np.sqrt(x.size)
    assert abs(float(jnp.std(x)) - std) < 4 * std / np.sqrt(2 * x.size)


@pytest.mark.parametrize(
    "prediction,variance",
    [("eps", "fixed_small"), ("x0", "fixed_small"), ("v", "fixed_large")],
)
def test_ancestral_matches_exact_chain(prediction, variance):
    sched = schedules.make_schedule("cosine", 100)
    x = ddpm.ancestral_sample(
        gaussian_denoiser(sched, prediction),
        sched,
        jax.random.key(0),
        (N, 1),
        prediction=prediction,
        variance=variance,
        clip_denoised=False,
    )
    check_moments(x, *chain_moments(sched.betas, 100, variance=variance))


@pytest.mark.parametrize("steps,eta", [(100, 1.0), (20, 0.0), (10, 0.5)])
def test_ddim_matches_exact_chain(steps, eta):
    sched = schedules.make_schedule("cosine", 100)
    x = ddim.ddim_sample(
        gaussian_denoiser(sched),
        sched,
        jax.random.key(1),
        (N, 1),
        steps=steps,
        eta=eta,
        clip_denoised=False,
    )
    check_moments(x, *chain_moments(sched.betas, steps, eta))


def test_chains_approach_data_distribution():
    """The reference itself: with T = 1000 both chains are within 1% of N(mu, s^2)."""
    betas = schedules.cosine_betas(1000)
    for kw in (dict(), dict(variance="fixed_large"), dict(eta=0.0), dict(eta=1.0)):
        mean, std = chain_moments(betas, 1000, **kw)
        assert abs(mean - MU) < 1e-3 and abs(std - S) < 0.01 * S, kw


@pytest.mark.parametrize("clip", [False, True])
def test_ddim_full_eta1_is_ancestral_fixed_small(clip):
    """S = T, eta = 1: sigma^2 = beta-tilde and the same mean, so with the same keys the
    two samplers follow the same path (not only the same distribution)."""
    sched = schedules.make_schedule("linear", 50, beta_end=0.2)
    kw = dict(prediction="eps", clip_denoised=clip)
    key, shape = jax.random.key(3), (64, 3)
    a = ddpm.ancestral_sample(gaussian_denoiser(sched), sched, key, shape, **kw)
    b = ddim.ddim_sample(gaussian_denoiser(sched), sched, key, shape, steps=50, eta=1.0, **kw)
    np.testing.assert_allclose(a, b, atol=2e-4)


def _sample(kind, key, shape=(3, 4, 4, 2), T=20, **kw):
    sched = schedules.make_schedule("linear", T, beta_end=0.3)
    fn = gaussian_denoiser(sched)
    if kind == "ancestral":
        return ddpm.ancestral_sample(fn, sched, key, shape, **kw)
    return ddim.ddim_sample(fn, sched, key, shape, steps=kw.pop("steps", 5), **kw)


@pytest.mark.parametrize(
    "kind,kw",
    [
        ("ancestral", dict(variance="fixed_small")),
        ("ancestral", dict(variance="fixed_large")),
        ("ddim", dict(eta=0.0)),
        ("ddim", dict(eta=1.0, steps=20)),
    ],
)
def test_shapes_range_and_determinism(kind, kw):
    jitted = jax.jit(lambda k: _sample(kind, k, **dict(kw)))
    x = jitted(jax.random.key(0))
    assert x.shape == (3, 4, 4, 2) and x.dtype == jnp.float32
    assert bool(jnp.all(jnp.abs(x) <= 1.0))  # clip_denoised: the last step returns x0_pred
    np.testing.assert_array_equal(x, jitted(jax.random.key(0)))
    assert not np.allclose(x, jitted(jax.random.key(1)))


def _count_traced_calls(kind, T):
    calls = []
    sched = schedules.make_schedule("linear", T, beta_end=0.3)
    inner = gaussian_denoiser(sched)

    def fn(x, t):
        calls.append(1)  # runs at trace time only
        return inner(x, t)

    if kind == "ancestral":
        run = lambda k: ddpm.ancestral_sample(fn, sched, k, (2, 3))  # noqa: E731
    else:
        run = lambda k: ddim.ddim_sample(fn, sched, k, (2, 3), steps=T)  # noqa: E731
    jax.make_jaxpr(run)(jax.random.key(0))
    return len(calls)


@pytest.mark.parametrize("kind", ["ancestral", "ddim"])
def test_denoiser_traced_once_whatever_T(kind):
    assert _count_traced_calls(kind, 5) == _count_traced_calls(kind, 60) == 1


def test_ddim_timesteps():
    np.testing.assert_array_equal(ddim.ddim_timesteps(10, 10), np.arange(10))
    ts = ddim.ddim_timesteps(1000, 50)
    assert ts[0] == 0 and ts[-1] == 999 and len(np.unique(ts)) == 50
    with pytest.raises(ValueError):
        ddim.ddim_timesteps(10, 11)
