"""Fréchet distance against closed forms and scipy's sqrtm."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from zoo.evals.frechet import frechet_distance, gaussian_stats, trace_sqrt_product


def _random_spd(rng, d, rank=None):
    x = rng.normal(size=(d, rank or 2 * d))
    return x @ x.T / x.shape[1]


def test_diagonal_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    a, b = rng.uniform(0.1, 3.0, size=5), rng.uniform(0.1, 3.0, size=5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_zero_for_identical_and_symmetric():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
    s1, s2 = _random_spd(rng, 16), _random_spd(rng, 16)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(
        frechet_distance(mu2, s2, mu1, s1), rel=1e-10
    )


@pytest.mark.parametrize("rank", [None, 5])  # full rank, and singular (few samples, many dims)
def test_agrees_with_scipy_sqrtm(rank):
    rng = np.random.default_rng(2)
    s1, s2 = _random_spd(rng, 12, rank), _random_spd(rng, 12, rank)
    reference = np.trace(scipy.linalg.sqrtm(s1 @ s2)).real
    assert trace_sqrt_product(s1, s2) == pytest.approx(reference, rel=1e-6)
    mu1, mu2 = rng.normal(size=12), rng.normal(size=12)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2) - 2 * reference
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6)


def test_gaussian_stats():
    x = np.random.default_rng(3).normal(size=(50, 4)).astype(np.float32)
    mu, sigma = gaussian_stats(x)
    assert mu.dtype == sigma.dtype == np.float64 and sigma.shape == (4, 4)
    np.testing.assert_allclose(sigma, np.cov(x.astype(np.float64).T))
    with pytest.raises(ValueError, match="N >= 2"):
        gaussian_stats(x[:1])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_stats_give_inf(bad):
    # The stats of NaN samples: numpy's eigh raised LinAlgError on them, killing the run.
    rng = np.random.default_rng(4)
    x = rng.normal(size=(30, 6))
    mu, sigma = gaussian_stats(x)
    x[3, 2] = bad
    with np.errstate(invalid="ignore"):  # inf - inf in the covariance
        bad_mu, bad_sigma = gaussian_stats(x)
    assert frechet_distance(bad_mu, bad_sigma, mu, sigma) == np.inf
    assert frechet_distance(mu, sigma, bad_mu, bad_sigma) == np.inf
    assert frechet_distance(mu, bad_sigma, mu, sigma) == np.inf
