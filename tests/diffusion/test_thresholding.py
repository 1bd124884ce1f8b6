"""Dynamic thresholding (Imagen, Saharia et al. 2022, sec. 2.3), checked against numpy.

The samplers are checked with a denoiser that always predicts the same x_0 =
X: whatever the path, every sampler's last step returns its (thresholded) x_0
prediction, so the sample must be the numpy-thresholded X exactly.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoo.diffusion import ddim, ddpm, dpm_solver, schedules
from zoo.diffusion.thresholding import dynamic_threshold, threshold_x0


def numpy_threshold(x, p):
    """Reference in float64: s = max(quantile_p |x|, 1) per example, clip(x, -s, s) / s."""
    x = np.asarray(x, np.float64)
    s = np.maximum(np.quantile(np.abs(x).reshape(len(x), -1), p, axis=1), 1.0)
    s = s.reshape((-1,) + (1,) * (x.ndim - 1))
    return np.clip(x, -s, s) / s, s.ravel()


def known_quantile_batch(scales, seed=0):
    """Examples ``[B, 3, 67]`` whose |x| are c_b * j / 200, j = 0..200, in random order
    and with random signs: the linear-interpolation p-quantile of |x| is c_b * p exactly
    when 200 p is an integer (it falls on the order statistic j = 200 p)."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in scales:
        v = c * np.arange(201) / 200 * rng.choice([-1.0, 1.0], 201)
        rows.append(rng.permutation(v).reshape(3, 67))
    return np.stack(rows).astype(np.float32)


@pytest.mark.parametrize("p", [0.995, 0.9])
def test_dynamic_threshold_clips_to_the_named_percentile(p):
    scales = [3.0, 1.5, 0.6]  # the last one has its quantile below 1: s = 1
    x = known_quantile_batch(scales)
    ref, s = numpy_threshold(x, p)
    np.testing.assert_allclose(s, np.maximum(np.array(scales) * p, 1.0), rtol=1e-6)
    y = np.asarray(dynamic_threshold(jnp.asarray(x), p))
    assert y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-6)
    for b in (0, 1):  # s > 1: the max is 1, reached by exactly the top 1 - p of |x|
        assert np.abs(y[b]).max() == pytest.approx(1.0, abs=1e-6)
        saturated = np.sum(np.abs(y[b]) >= 1.0 - 1e-6)
        assert saturated == 201 - round(200 * p)
    np.testing.assert_array_equal(y[2], x[2])  # already in [-1, 1]: unchanged


def test_dynamic_threshold_leaves_in_range_examples_unchanged():
    x = jax.random.uniform(jax.random.key(0), (4, 8, 8, 3), minval=-1.0, maxval=1.0)
    np.testing.assert_array_equal(dynamic_threshold(x, 0.995), x)
    np.testing.assert_array_equal(jax.jit(dynamic_threshold, static_argnums=1)(x, 0.995), x)


def test_dynamic_threshold_is_per_example():
    """Scaling one example must not change another's threshold."""
    x = 3.0 * jax.random.normal(jax.random.key(1), (2, 16, 16, 3))
    y = dynamic_threshold(x, 0.995)
    z = dynamic_threshold(x.at[1].multiply(10.0), 0.995)
    np.testing.assert_array_equal(y[0], z[0])
    np.testing.assert_allclose(y, numpy_threshold(x, 0.995)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("p", [0.0, 1.0, -0.5, 1.5, float("nan")])
def test_dynamic_threshold_rejects_bad_percentile(p):
    with pytest.raises(ValueError, match="percentile"):
        dynamic_threshold(jnp.ones((2, 3)), p)


def test_threshold_x0_dynamic_replaces_static_clip():
    x = 3.0 * jax.random.normal(jax.random.key(2), (3, 5, 5, 2))
    dyn = dynamic_threshold(x, 0.99)
    for clip in (True, False):
        np.testing.assert_array_equal(
            threshold_x0(x, clip_denoised=clip, dynamic_threshold=0.99), dyn
        )
    np.testing.assert_array_equal(
        threshold_x0(x, clip_denoised=True, dynamic_threshold=0.0), jnp.clip(x, -1, 1)
    )
    np.testing.assert_array_equal(threshold_x0(x, clip_denoised=False, dynamic_threshold=0.0), x)


SAMPLERS = {
    "ancestral": lambda fn, sched, key, shape, **kw: ddpm.ancestral_sample(
        fn, sched, key, shape, **kw
    ),
    "ancestral_large": lambda fn, sched, key, shape, **kw: ddpm.ancestral_sample(
        fn, sched, key, shape, variance="fixed_large", **kw
    ),
    "ddim": lambda fn, sched, key, shape, **kw: ddim.ddim_sample(
        fn, sched, key, shape, steps=5, **kw
    ),
    "ddim_eta1": lambda fn, sched, key, shape, **kw: ddim.ddim_sample(
        fn, sched, key, shape, steps=20, eta=1.0, **kw
    ),
    "dpm_solver_pp": lambda fn, sched, key, shape, **kw: dpm_solver.dpm_solver_pp_sample(
        fn, sched, key, shape, steps=6, **kw
    ),
}


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_samplers_apply_dynamic_threshold(name):
    sched = schedules.make_schedule("linear", 20, beta_end=0.3)
    X = 2.5 * jax.random.normal(jax.random.key(3), (3, 4, 4, 2))  # far outside [-1, 1]
    denoise = lambda x, t: X  # noqa: E731  predicts x_0 = X at every step
    kw = dict(prediction="x0", dynamic_threshold=0.995)
    x = jax.jit(lambda k: SAMPLERS[name](denoise, sched, k, X.shape, **kw))(jax.random.key(0))
    ref = numpy_threshold(X, 0.995)[0]
    np.testing.assert_allclose(x, ref, rtol=1e-5, atol=1e-5)
    assert not np.allclose(ref, np.clip(X, -1, 1), atol=1e-2)  # not the static clip


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("bad", [-0.1, 1.0, 2.0])
def test_samplers_reject_bad_dynamic_threshold(name, bad):
    sched = schedules.make_schedule("linear", 20, beta_end=0.3)
    with pytest.raises(ValueError, match="dynamic_threshold"):
        SAMPLERS[name](lambda x, t: x, sched, jax.random.key(0), (2, 3), dynamic_threshold=bad)


def test_p_mean_variance_thresholds_its_x0():
    sched = schedules.make_schedule("linear", 20, beta_end=0.3)
    xt = jax.random.normal(jax.random.key(4), (2, 6, 6, 1))
    out = 4.0 * jax.random.normal(jax.random.key(5), xt.shape)
    t = jnp.array([3, 17])
    _, _, x0 = ddpm.p_mean_variance(sched, out, xt, t, prediction="x0", dynamic_threshold=0.9)
    np.testing.assert_allclose(x0, numpy_threshold(out, 0.9)[0], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="dynamic_threshold"):
        ddpm.p_mean_variance(sched, out, xt, t, dynamic_threshold=1.5)
