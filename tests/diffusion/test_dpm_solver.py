"""DPM-Solver++(2M) against the exact probability-flow ODE of Gaussian data.

For data x_0 ~ N(mu, s^2) per dimension, x_t = a x_0 + sigma eps (a = sqrt(ab_t),
sigma = sqrt(1 - ab_t)) is N(a mu, a^2 s^2 + sigma^2), and the optimal noise
prediction is affine in x_t: E[eps | x_t] = sigma (x_t - a mu) / (a^2 s^2 + sigma^2).
The probability-flow ODE transports N(m_T, sd_T^2) to N(mu, s^2) by an affine,
increasing map, so it matches standardised values: x_0 = mu + s (x_T - m_T) / sd_T.
A deterministic sampler fed this exact denoiser must converge to that x_0.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.diffusion.helpers import MU, S, gaussian_denoiser
from zoo.diffusion import ddim, schedules
from zoo.diffusion.dpm_solver import dpm_solver_pp_coefficients, dpm_solver_pp_sample

N = 4096  # draws of x_T; the error is max |x - exact| over them


def exact_ode_solution(name, key, shape):
    """x_T as the samplers draw it (k_init of split(key)) and the exact x_0, float64."""
    k_init, _ = jax.random.split(key)
    x_T = np.asarray(jax.random.normal(k_init, shape, jnp.float32), np.float64)
    betas = {"linear": schedules.linear_betas, "cosine": schedules.cosine_betas}[name](1000)
    ab_T = np.prod(1.0 - betas)  # float64, independent of the float32 schedule
    m_T, sd_T = np.sqrt(ab_T) * MU, np.sqrt(ab_T * S**2 + 1.0 - ab_T)
    return x_T, MU + S * (x_T - m_T) / sd_T


def toy_errors(name, steps_list):
    sched = schedules.make_schedule(name, 1000)
    key, shape = jax.random.key(0), (N, 1)
    _, exact = exact_ode_solution(name, key, shape)
    fn, kw = gaussian_denoiser(sched), dict(clip_denoised=False)
    dpm, dd = [], []
    for n in steps_list:
        x = dpm_solver_pp_sample(fn, sched, key, shape, steps=n, **kw)
        y = ddim.ddim_sample(fn, sched, key, shape, steps=n, eta=0.0, **kw)
        dpm.append(float(np.max(np.abs(np.asarray(x, np.float64) - exact))))
        dd.append(float(np.max(np.abs(np.asarray(y, np.float64) - exact))))
    return np.array(dpm), np.array(dd)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_gaussian_toy_converges_and_beats_ddim(name):
    """Measured (max error over 4096 x_T; DPM-Solver++ / DDIM at 10, 20, 50 steps):
    linear 0.41, 0.089, 0.0055 / 0.52, 0.26, 0.11;
    cosine 0.12, 0.0062, 0.0041 / 0.30, 0.15, 0.058."""
    e, e_ddim = toy_errors(name, [10, 20, 50])
    print(name, "dpm-solver++", e, "ddim", e_ddim)
    assert e[0] > e[1] > e[2] and e[2] < 1e-2
    # Second order vs first order: DDIM's error roughly halves per doubling of the
    # steps; DPM-Solver++'s falls much faster until its floor (the first-order
    # step into index 0, see the module docstring).
    assert e[0] < e_ddim[0]
    assert np.all(e[1:] < 0.35 * e_ddim[1:])


def test_prediction_types_agree():
    sched = schedules.make_schedule("cosine", 1000)
    key, shape = jax.random.key(1), (64, 2)
    xs = [
        dpm_solver_pp_sample(
            gaussian_denoiser(sched, p),
            sched,
            key,
            shape,
            steps=15,
            prediction=p,
            clip_denoised=False,
        )
        for p in ("eps", "x0", "v")
    ]
    np.testing.assert_allclose(xs[1], xs[0], atol=1e-4)
    np.testing.assert_allclose(xs[2], xs[0], atol=1e-4)


@pytest.mark.parametrize("steps", [1, 2, 3])
@pytest.mark.parametrize("clip", [False, True])
def test_first_order_steps_are_ddim(steps, clip):
    """S <= 3: every step is first order, and first-order DPM-Solver++ is DDIM (eta = 0)."""
    sched = schedules.make_schedule("linear", 50, beta_end=0.2)
    fn, key, shape = gaussian_denoiser(sched), jax.random.key(2), (32, 3)
    x = dpm_solver_pp_sample(fn, sched, key, shape, steps=steps, clip_denoised=clip)
    y = ddim.ddim_sample(fn, sched, key, shape, steps=steps, clip_denoised=clip)
    np.testing.assert_allclose(x, y, atol=2e-5)
    assert x.shape == shape and x.dtype == jnp.float32


def test_one_step_is_the_data_prediction_at_x_T():
    sched = schedules.make_schedule("linear", 1000)
    x_T, _ = exact_ode_solution("linear", jax.random.key(3), (16, 4))
    a, sig = float(sched.sqrt_alphas_cumprod[-1]), float(sched.sqrt_one_minus_alphas_cumprod[-1])
    x0_pred = MU + a * S**2 / (a**2 * S**2 + sig**2) * (x_T - a * MU)  # E[x_0 | x_T]
    x = dpm_solver_pp_sample(
        gaussian_denoiser(sched), sched, jax.random.key(3), (16, 4), steps=1, clip_denoised=False
    )
    # float32: predict_x0 divides x_T - sigma eps by a = 0.0064, amplifying rounding 160x.
    np.testing.assert_allclose(x, x0_pred, atol=3e-4)


def test_coefficients():
    """Second order exactly on steps 1..S-3; the last step returns the data prediction."""
    sched = schedules.make_schedule("cosine", 100)
    t, ratio, c, w = (np.asarray(v, np.float64) for v in dpm_solver_pp_coefficients(sched, 8))
    np.testing.assert_array_equal(t, ddim.ddim_timesteps(100, 8)[::-1])
    assert ratio[-1] == 0.0 and c[-1] == 1.0
    assert w[0] == w[-2] == w[-1] == 0.0 and np.all(w[1:-2] > 0)
    # A first-order step with a constant data prediction x0 maps x_s to the exact
    # x_t = alpha_t x0 + (sigma_t / sigma_s)(x_s - alpha_s x0): ratio alpha_s + c = alpha_t.
    ab = np.cumprod(1.0 - np.asarray(schedules.cosine_betas(100)))
    alpha = np.sqrt(np.append(ab[t.astype(int)], 1.0))
    np.testing.assert_allclose(ratio * alpha[:-1] + c, alpha[1:], rtol=1e-5)


@pytest.mark.parametrize("steps", [0, -1, 1001])
def test_bad_steps_raise(steps):
    sched = schedules.make_schedule("linear", 1000)
    with pytest.raises(ValueError, match="steps"):
        dpm_solver_pp_sample(lambda x, t: x, sched, jax.random.key(0), (2, 3), steps=steps)


def _count_traced_calls(steps):
    calls = []
    sched = schedules.make_schedule("linear", 100)
    inner = gaussian_denoiser(sched)

    def fn(x, t):
        calls.append(1)  # runs at trace time only
        return inner(x, t)

    run = jax.jit(lambda k: dpm_solver_pp_sample(fn, sched, k, (2, 3), steps=steps))
    x = run(jax.random.key(0))
    np.testing.assert_array_equal(x, run(jax.random.key(0)))  # cached: no retrace
    assert not np.allclose(x, run(jax.random.key(1)))  # x_T depends on the key
    return len(calls)


def test_jit_traces_the_denoiser_once_whatever_steps():
    assert _count_traced_calls(5) == _count_traced_calls(60) == 1


@pytest.mark.parametrize("kw", [dict(clip_denoised=True), dict(dynamic_threshold=0.9)])
def test_limited_predictions_keep_samples_in_range(kw):
    """Unlimited, the toy samples leave [-1, 1]; clipping / thresholding each prediction
    keeps them inside (the last step returns the limited prediction)."""
    sched = schedules.make_schedule("cosine", 1000)
    shape = (8, 4, 4, 3)
    x = dpm_solver_pp_sample(
        gaussian_denoiser(sched), sched, jax.random.key(4), shape, steps=20, **kw
    )
    free = dpm_solver_pp_sample(
        gaussian_denoiser(sched), sched, jax.random.key(4), shape, steps=20, clip_denoised=False
    )
    assert float(jnp.max(jnp.abs(free))) > 1.2
    assert float(jnp.max(jnp.abs(x))) <= 1.0 + 1e-6
