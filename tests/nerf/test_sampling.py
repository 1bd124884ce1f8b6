"""Stratified (eq. 5.3) and inverse-CDF hierarchical samples: bins, order, histograms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoo.nerf.sampling import merge_samples, sample_pdf, stratified_samples


def test_stratified_one_sample_in_each_bin_and_sorted():
    near = jnp.array([2.0, 0.0, 1.0])
    far = jnp.array([6.0, 1.0, 1.5])
    N = 16
    t = np.asarray(stratified_samples(near, far, N, jax.random.key(0), batch_shape=(3,)))
    assert t.shape == (3, N) and t.dtype == np.float32
    edges = np.asarray(near)[:, None] + (np.asarray(far - near))[:, None] * np.arange(N + 1) / N
    assert np.all(t >= edges[:, :-1] - 1e-6) and np.all(t <= edges[:, 1:] + 1e-6)
    assert np.all(np.diff(t, axis=-1) > 0)
    # Jitter is real: not the midpoints, and different keys differ.
    mid = np.asarray(stratified_samples(near, far, N, batch_shape=(3,)))
    np.testing.assert_allclose(mid, 0.5 * (edges[:, 1:] + edges[:, :-1]), rtol=1e-6)
    assert np.abs(t - mid).max() > 1e-3
    t2 = np.asarray(stratified_samples(near, far, N, jax.random.key(1), batch_shape=(3,)))
    assert not np.allclose(t, t2)


def test_stratified_jitter_is_uniform_within_bins():
    t = np.asarray(stratified_samples(0.0, 1.0, 4, jax.random.key(3), batch_shape=(20000,)))
    frac = t * 4 - np.arange(4)  # position inside its bin, U[0, 1)
    hist = np.histogram(frac, bins=10, range=(0, 1))[0] / frac.size
    assert np.abs(hist - 0.1).max() < 0.01


def test_stratified_rejects_zero_samples():
    with pytest.raises(ValueError, match="num_samples"):
        stratified_samples(0.0, 1.0, 0)


def test_sample_pdf_histogram_matches_weights():
    bins = jnp.array([0.0, 1.0, 2.0, 4.0, 5.0])  # uneven widths
    weights = jnp.array([0.1, 0.5, 0.0, 0.4])
    S = 200_000
    t = np.asarray(sample_pdf(bins, weights, S, jax.random.key(0)))
    assert t.shape == (S,) and np.all(np.diff(t) >= 0)
    counts = np.histogram(t, bins=np.asarray(bins))[0] / S
    np.testing.assert_allclose(counts, [0.1, 0.5, 0.0, 0.4], atol=5e-3)
    # Uniform inside a bin (constant density): the [1, 2] bin split in halves.
    inside = t[(t >= 1) & (t < 2)]
    assert abs(np.mean(inside < 1.5) - 0.5) < 0.01


def test_sample_pdf_chi_square_batched():
    rng = np.random.default_rng(0)
    w = rng.uniform(0.05, 1.0, (3, 8)).astype(np.float32)
    bins = np.cumsum(rng.uniform(0.1, 1.0, (3, 9)), axis=-1).astype(np.float32)
    S = 20_000
    t = np.asarray(sample_pdf(bins, w, S, jax.random.key(1)))
    assert t.shape == (3, S)
    for r in range(3):
        obs = np.histogram(t[r], bins=bins[r])[0]
        exp = S * w[r] / w[r].sum()
        chi2 = np.sum((obs - exp) ** 2 / exp)
        assert chi2 < 24.3  # 99.9% quantile of chi-square with 7 dof


def test_sample_pdf_deterministic_is_the_inverse_cdf():
    bins = jnp.array([[0.0, 1.0, 2.0]])
    t = np.asarray(sample_pdf(bins, jnp.array([[1.0, 3.0]]), 5))
    # CDF: 0 at 0, 0.25 at 1, 1 at 2; u = 0, .25, .5, .75, 1.
    np.testing.assert_allclose(t[0], [0.0, 1.0, 4 / 3, 5 / 3, 2.0], atol=1e-4)


def test_sample_pdf_all_zero_weights_is_uniform_and_finite():
    t = np.asarray(sample_pdf(jnp.linspace(2.0, 6.0, 9), jnp.zeros(8), 9))
    np.testing.assert_allclose(t, np.linspace(2.0, 6.0, 9), atol=1e-5)


def test_sample_pdf_stops_gradients():
    def f(w, b):
        return jnp.sum(sample_pdf(b, w, 7, jax.random.key(0)))

    gw, gb = jax.grad(f, argnums=(0, 1))(jnp.array([0.2, 0.8]), jnp.array([0.0, 1.0, 2.0]))
    assert np.all(np.asarray(gw) == 0) and np.all(np.asarray(gb) == 0)


def test_sample_pdf_shape_mismatch_raises():
    with pytest.raises(ValueError, match="one more edge"):
        sample_pdf(jnp.zeros((4,)), jnp.ones((4,)), 3)


def test_merge_samples_sorted_union():
    tc = jnp.array([[1.0, 3.0, 5.0]])
    tf = jnp.array([[4.0, 2.0]])
    np.testing.assert_array_equal(np.asarray(merge_samples(tc, tf)), [[1, 2, 3, 4, 5]])
