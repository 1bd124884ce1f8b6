"""Schedules, q(x_t | x_0), the posterior and the prediction conversions vs float64 numpy."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoo.diffusion import ddpm, schedules

T = 1000


def _numpy_betas(name, T):
    if name == "linear":
        return np.linspace(1e-4, 0.02, T)
    if name == "scaled_linear":  # Stable Diffusion: sqrt(beta) linear in t
        return np.linspace(math.sqrt(0.00085), math.sqrt(0.012), T) ** 2
    ab = [math.cos((t / T + 0.008) / 1.008 * math.pi / 2) ** 2 for t in range(T + 1)]
    return np.array([min(1 - ab[t + 1] / ab[t], 0.999) for t in range(T)])


@pytest.fixture(params=["linear", "cosine", "scaled_linear"])
def name(request):
    return request.param


def test_matches_float64_reference(name):
    s = schedules.make_schedule(name, T)
    betas = _numpy_betas(name, T)
    ab = np.cumprod(1 - betas)
    ab_prev = np.concatenate([[1.0], ab[:-1]])
    post_var = (1 - ab_prev) / (1 - ab) * betas  # beta-tilde, eq. 4.6
    ref = {
        "betas": betas,
        "alphas_cumprod": ab,
        "alphas_cumprod_prev": ab_prev,
        "sqrt_alphas_cumprod": np.sqrt(ab),  # eq. 4.3 mean scale
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1 - ab),  # eq. 4.3 std
        "posterior_variance": post_var,
        "posterior_mean_coef1": np.sqrt(ab_prev) * betas / (1 - ab),
        "posterior_mean_coef2": np.sqrt(1 - betas) * (1 - ab_prev) / (1 - ab),
    }
    for field, want in ref.items():
        got = np.asarray(getattr(s, field))
        assert got.dtype == np.float32 and got.shape == (T,), field
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-12, err_msg=field)
    np.testing.assert_allclose(
        s.posterior_log_variance_clipped[1:], np.log(post_var[1:]), rtol=1e-5
    )
    assert s.posterior_variance[0] == 0 and np.isfinite(s.posterior_log_variance_clipped[0])
    assert s.num_timesteps == T


def test_alpha_bar_strictly_decreasing(name):
    ab = np.asarray(schedules.make_schedule(name, T).alphas_cumprod, np.float64)
    assert np.all(np.diff(ab) < 0) and ab[0] < 1 and ab[-1] > 0


def test_cosine_ends_in_noise():
    s = schedules.make_schedule("cosine", T)
    assert float(s.alphas_cumprod[-1]) < 1e-6
    assert float(s.betas.max()) == pytest.approx(0.999)


def test_registry():
    assert {"linear", "cosine"} <= set(schedules.schedule_names())
    with pytest.raises(ValueError, match="unknown schedule"):
        schedules.make_schedule("nope", 10)
    with pytest.raises(ValueError, match="already registered"):
        schedules.register_schedule("linear")(schedules.linear_betas)


def test_q_sample_moments(name):
    """Empirical mean/var of x_t over many eps match sqrt(ab) x_0 and 1 - ab (eq. 4.3)."""
    s = schedules.make_schedule(name, T)
    n, t_idx = 20000, jnp.array([0, 250, 600, 999])
    x0 = jnp.array([0.7, -0.3, 1.0, -1.0]).reshape(4, 1)
    eps = jax.random.normal(jax.random.key(0), (4, n))
    xt = ddpm.q_sample(s, jnp.broadcast_to(x0, (4, n)), t_idx, eps)
    ab = np.asarray(s.alphas_cumprod)[np.asarray(t_idx)]
    se = np.sqrt(1 - ab) / np.sqrt(n)
    np.testing.assert_array_less(np.abs(xt.mean(1) - np.sqrt(ab) * x0[:, 0]), 5 * se + 1e-7)
    np.testing.assert_allclose(xt.var(1), 1 - ab, rtol=0.05, atol=1e-6)


def test_q_posterior_is_bayes(name):
    """eq. 4.6 vs the product q(x_t | x_{t-1}) q(x_{t-1} | x_0) normalised, in float64."""
    s = schedules.make_schedule(name, T)
    rng = np.random.default_rng(0)
    t = int(rng.integers(1, T))
    x0, xt = rng.uniform(-1, 1, 5), rng.normal(size=5)
    beta = float(np.float64(_numpy_betas(name, T)[t]))
    ab_prev = float(np.prod(1 - _numpy_betas(name, T)[:t]))
    # Gaussian product: precision 1/(1-ab_prev) + alpha/beta; natural mean accordingly.
    prec = 1 / (1 - ab_prev) + (1 - beta) / beta
    mean = (np.sqrt(ab_prev) * x0 / (1 - ab_prev) + np.sqrt(1 - beta) * xt / beta) / prec
    tb = jnp.full((5,), t)
    got_mean, got_var, got_logvar = ddpm.q_posterior(
        s, jnp.asarray(x0, jnp.float32)[:, None], jnp.asarray(xt, jnp.float32)[:, None], tb
    )
    np.testing.assert_allclose(got_mean[:, 0], mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got_var[:, 0], 1 / prec, rtol=1e-4)
    np.testing.assert_allclose(got_logvar[:, 0], np.log(1 / prec), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("prediction", ddpm.PREDICTIONS)
def test_prediction_round_trip(name, prediction):
    s = schedules.make_schedule(name, T)
    k0, k1 = jax.random.split(jax.random.key(1))
    x0 = jax.random.uniform(k0, (6, 4, 4, 2), minval=-1, maxval=1)
    eps = jax.random.normal(k1, x0.shape)
    t = jnp.array([0, 1, 100, 500, 900, 998])
    xt = ddpm.q_sample(s, x0, t, eps)
    out = ddpm.prediction_target(s, x0, eps, t, prediction)
    # Errors scale with 1/sqrt(ab) (x0 from eps) and 1/sqrt(1-ab) (eps from x0).
    scale = np.asarray(s.sqrt_recip_alphas_cumprod + 1 / s.sqrt_one_minus_alphas_cumprod)[t]
    tol = 1e-5 * scale[:, None, None, None]
    assert np.all(np.abs(ddpm.predict_x0(s, xt, t, out, prediction) - x0) < tol)
    assert np.all(np.abs(ddpm.predict_eps(s, xt, t, out, prediction) - eps) < tol)


def test_p_mean_matches_algorithm_4_2():
    """Posterior mean at the predicted x_0 = (x_t - beta/sqrt(1-ab) eps)/sqrt(alpha)."""
    s = schedules.make_schedule("linear", T)
    k0, k1 = jax.random.split(jax.random.key(2))
    xt, eps = jax.random.normal(k0, (5, 3)), jax.random.normal(k1, (5, 3))
    t = jnp.array([0, 3, 200, 700, 999])
    mean, _, _ = ddpm.p_mean_variance(s, eps, xt, t, prediction="eps", clip_denoised=False)
    e = lambda a: ddpm.extract(a, t, xt)  # noqa: E731
    want = (xt - e(s.betas) / e(s.sqrt_one_minus_alphas_cumprod) * eps) / jnp.sqrt(e(s.alphas))
    np.testing.assert_allclose(mean, want, rtol=1e-4, atol=1e-4)


def test_diffusion_loss_is_mse():
    pred, target = jnp.ones((2, 3, 3, 1)), jnp.zeros((2, 3, 3, 1))
    assert float(ddpm.diffusion_loss(pred, target)) == pytest.approx(1.0)
    assert float(ddpm.diffusion_loss(target, target)) == 0.0
