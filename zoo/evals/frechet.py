"""Fréchet distance between Gaussians fitted to features (FID when the features are Inception's).

    FD = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2})        (Heusel et al. 2017, eq. 6)

The usual implementation takes ``scipy.linalg.sqrtm(S1 @ S2)``: a non-symmetric product,
whose square root picks up imaginary parts and fails on the singular covariances that
few samples in many dimensions give. Only the trace is needed, and
``Tr (S1 S2)^{1/2} = Tr (A S2 A)^{1/2}`` with ``A = S1^{1/2}`` (the two matrices are similar),
where ``A S2 A`` is symmetric positive semi-definite: two symmetric eigendecompositions,
real throughout, with tiny negative eigenvalues (round-off) clipped to zero.
"""

from __future__ import annotations

import numpy as np


def gaussian_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of ``features``: ``[N, D]`` -> (``[D]``, ``[D, D]``) float64.

    The covariance is the unbiased one (divides by N - 1), as in the reference FID code.
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"features must be [N, D] with N >= 2; got shape {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix; negative eigenvalues clipped to 0."""
    eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def trace_sqrt_product(sigma1, sigma2) -> float:
    """``Tr (S1 S2)^{1/2}`` for symmetric PSD ``[D, D]`` matrices, via ``Tr (A S2 A)^{1/2}``."""
    a = _psd_sqrt(np.asarray(sigma1, np.float64))
    middle = a @ np.asarray(sigma2, np.float64) @ a
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)
    return float(np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2); in squared feature units.

    Args:
      mu1, mu2: ``[D]`` means.
      sigma1, sigma2: ``[D, D]`` symmetric PSD covariances.

    Returns:
      FD >= 0 as a Python float (round-off below zero is clipped); ``inf`` when a mean or
      covariance holds a NaN or Inf (the statistics of non-finite samples): no distance is
      defined then, ``inf`` ranks it behind every real one, and eigh would fail to converge.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != 2 * mu1.shape:
        raise ValueError(
            f"shape mismatch: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}"
        )
    if not all(np.isfinite(x).all() for x in (mu1, sigma1, mu2, sigma2)):
        return float("inf")
    diff = mu1 - mu2
    covariance_term = np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2)
    return max(float(diff @ diff + covariance_term), 0.0)
