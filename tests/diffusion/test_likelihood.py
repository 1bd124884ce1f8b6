"""The variational bound in bits/dim: its pieces vs float64 references, and its estimators."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from zoo.diffusion import ddpm, likelihood, schedules

LN2 = math.log(2.0)


class TinyDenoiser(nnx.Module):
    """Stand-in for the U-Net with its call signature: conv, time embedding, conv."""

    def __init__(self, channels: int, T: int, *, rngs: nnx.Rngs):
        self.conv_in = nnx.Conv(channels, 8, (3, 3), rngs=rngs)
        self.emb = nnx.Embed(T, 8, rngs=rngs)
        self.conv_out = nnx.Conv(8, channels, (3, 3), rngs=rngs)

    def __call__(self, x, t, y=None, *, dropout_key=None):
        h = nnx.silu(self.conv_in(x) + self.emb(t)[:, None, None, :])
        return self.conv_out(h)


def grid_images(key, shape):
    """Images on the 256-level grid of [-1, 1]."""
    return jax.random.randint(key, shape, 0, 256).astype(jnp.float32) / 127.5 - 1.0


def _phi_mass(lo, hi):
    """P(lo < Z < hi) for Z ~ N(0, 1) in float64, accurate in both tails."""
    if lo > 0:
        lo, hi = -hi, -lo
    return 0.5 * (math.erfc(-hi / math.sqrt(2)) - math.erfc(-lo / math.sqrt(2)))


def _ref_loglik(x, mean, scale):
    w = 1 / 255
    if x < -0.999:
        return math.log(_phi_mass(-math.inf, (x + w - mean) / scale))
    if x > 0.999:
        return math.log(_phi_mass((x - w - mean) / scale, math.inf))
    return math.log(_phi_mass((x - w - mean) / scale, (x + w - mean) / scale))


def test_normal_kl_matches_closed_form():
    rng = np.random.default_rng(0)
    m1, m2, lv1, lv2 = rng.normal(size=(4, 50))
    s1, s2 = np.exp(0.5 * lv1), np.exp(0.5 * lv2)
    want = np.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5
    got = likelihood.normal_kl(*(jnp.asarray(a, jnp.float32) for a in (m1, lv1, m2, lv2)))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert float(likelihood.normal_kl(0.3, -1.0, 0.3, -1.0)) == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize(
    "x,mean,scale",
    [
        (0.0, 0.0, 1.0),
        (0.0, 0.01, 0.003),
        (0.2, -0.3, 0.1),  # 5 sd from the mean: lower-tail interval
        (-0.4, 0.3, 0.1),  # upper tail
        (-1.0, -0.9, 0.05),  # edge bins integrate to -inf / +inf
        (1.0, 0.2, 0.5),
        (1.0, 1.5, 0.01),
        (-1.0, 0.5, 0.3),
    ],
)
def test_discretized_loglik_matches_erf(x, mean, scale):
    got = likelihood.discretized_gaussian_log_likelihood(
        jnp.float32(x), jnp.float32(mean), jnp.float32(math.log(scale))
    )
    assert float(got) == pytest.approx(_ref_loglik(x, mean, scale), rel=2e-4, abs=1e-5)


@pytest.mark.parametrize("mean,scale", [(0.0, 0.3), (0.95, 0.02), (-0.5, 2.0), (0.1, 1e-3)])
def test_discretized_decoder_sums_to_one(mean, scale):
    x = jnp.arange(256, dtype=jnp.float32) / 127.5 - 1.0
    ll = likelihood.discretized_gaussian_log_likelihood(x, mean, jnp.log(scale))
    assert float(jnp.sum(jnp.exp(ll))) == pytest.approx(1.0, abs=1e-4)


def test_prior_bpd_matches_numpy():
    sched = schedules.make_schedule("linear", 30, beta_end=0.2)
    x0 = grid_images(jax.random.key(0), (3, 4, 4, 1))
    ab = float(np.prod(1 - np.linspace(1e-4, 0.2, 30)))
    m, v = np.sqrt(ab) * np.asarray(x0, np.float64), 1 - ab
    want = (0.5 * (-1 - np.log(v) + v + m**2)).mean(axis=(1, 2, 3)) / LN2
    np.testing.assert_allclose(likelihood.prior_bpd(sched, x0), want, rtol=1e-4)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_oracle_bound_is_prior_plus_decoder(prediction):
    """A model that knows x_0 has the true posterior mean: every L_t, t > 1, is 0
    (fixed_small variance = beta-tilde), so the bound is L_T + L_0 exactly."""
    sched = schedules.make_schedule("linear", 20, beta_end=0.3)
    x0 = grid_images(jax.random.key(1), (2, 4, 4, 3))

    def oracle(xt, t):
        eps = ddpm.eps_from_x0(sched, xt, t, x0)
        return ddpm.prediction_target(sched, x0, eps, t, prediction)

    kw = dict(prediction=prediction, variance="fixed_small", clip_denoised=False)
    terms = likelihood.vlb_terms(oracle, sched, jax.random.key(2), x0, **kw)
    assert terms.shape == (20, 2)
    np.testing.assert_allclose(terms[1:], 0.0, atol=5e-4)
    # L_0: the decoder N(x_0, beta-tilde_2) integrated over x_0's own bin.
    scale = math.sqrt(float(sched.posterior_variance[1]))
    l0 = np.array([[-_ref_loglik(float(v), float(v), scale) for v in np.ravel(x)] for x in x0])
    np.testing.assert_allclose(terms[0], l0.mean(1) / LN2, rtol=1e-4)


@pytest.fixture(scope="module")
def tiny():
    T = 20
    sched = schedules.make_schedule("linear", T, beta_end=0.3)
    net = TinyDenoiser(1, T, rngs=nnx.Rngs(0))
    x0 = grid_images(jax.random.key(3), (4, 8, 8, 1))
    return sched, (lambda x, t: net(x, t)), x0


def test_exact_and_mc_bpd_agree(tiny):
    """Both finite and positive; the MC estimate is unbiased for the exact bound."""
    sched, fn, x0 = tiny
    calls = []

    def counted(x, t):
        calls.append(1)  # at trace time
        return fn(x, t)

    exact = jax.jit(
        lambda k, c: likelihood.exact_bpd(counted, sched, k, x0, chunk=c), static_argnums=1
    )
    # chunk=7 pads 20 steps to 21; the noise of step t depends on t only, so
    # chunking changes nothing. One trace of the network per chunk size, whatever T.
    np.testing.assert_allclose(exact(jax.random.key(0), 1), exact(jax.random.key(0), 7), rtol=1e-5)
    assert len(calls) == 2
    exacts = np.stack([exact(jax.random.key(i), 7) for i in range(4)])  # [K, B]
    assert np.all(np.isfinite(exacts)) and np.all(exacts > 0)
    reps = 128  # MC draws per example, one batched call
    x_rep = jnp.tile(x0, (reps, 1, 1, 1))
    mc = np.asarray(jax.jit(lambda k: likelihood.mc_bpd(fn, sched, k, x_rep))(jax.random.key(9)))
    assert np.all(np.isfinite(mc)) and np.all(mc > 0)
    mc_mean = mc.reshape(reps, -1).mean(0)  # [B]
    se = np.sqrt(mc.reshape(reps, -1).var(0) / reps + exacts.var(0) / len(exacts))
    assert np.all(np.abs(mc_mean - exacts.mean(0)) < 4 * se + 1e-3), (mc_mean, exacts.mean(0), se)
