"""PSNR and SSIM: limits, a known MSE, and SSIM vs a float64 numpy implementation."""

import numpy as np
import pytest

from zoo.evals.image_metrics import psnr, ssim


def _ssim_reference(a, b, max_val=1.0):
    """Wang et al. 2004 in float64 numpy: full 2-D 11x11 Gaussian (sigma 1.5), valid windows."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    x = np.arange(11) - 5.0
    g = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * 1.5**2))
    g /= g.sum()
    H, W, C = a.shape
    c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
    vals = []
    for i in range(H - 10):
        for j in range(W - 10):
            for c in range(C):
                pa, pb = a[i : i + 11, j : j + 11, c], b[i : i + 11, j : j + 11, c]
                ma, mb = (g * pa).sum(), (g * pb).sum()
                va, vb = (g * (pa - ma) ** 2).sum(), (g * (pb - mb) ** 2).sum()
                cov = (g * (pa - ma) * (pb - mb)).sum()
                vals.append(
                    (2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
                )
    return np.mean(vals)


def test_identical_images():
    img = np.random.default_rng(0).uniform(size=(2, 16, 16, 3)).astype(np.float32)
    assert np.isinf(float(psnr(img, img)))
    np.testing.assert_allclose(ssim(img, img), [1.0, 1.0], atol=1e-6)


def test_psnr_of_known_mse():
    a = np.zeros((4, 4, 3), np.float32)
    b = a + 0.1  # MSE 0.01 -> 20 dB at max 1, 10 log10(4 / 0.01) = 26.02 dB at max 2
    np.testing.assert_allclose(psnr(a, b), 20.0, rtol=1e-5)
    np.testing.assert_allclose(psnr(a, b, max_val=2.0), 10 * np.log10(400), rtol=1e-5)
    two = np.stack([b, a + 0.01])
    np.testing.assert_allclose(
        psnr(np.zeros_like(two), two, axis=(-3, -2, -1)), [20, 40], rtol=1e-5
    )


def test_ssim_drops_with_noise():
    rng = np.random.default_rng(1)
    img = rng.uniform(size=(24, 24, 3)).astype(np.float32)
    scores = [
        float(ssim(img, np.clip(img + s * rng.normal(size=img.shape), 0, 1).astype(np.float32)))
        for s in (0.02, 0.1, 0.3)
    ]
    assert 1.0 > scores[0] > scores[1] > scores[2]


def test_ssim_matches_float64_reference():
    rng = np.random.default_rng(2)
    a = rng.uniform(size=(14, 17, 2))
    b = np.clip(a + 0.2 * rng.normal(size=a.shape), 0, 1)
    got = float(ssim(a.astype(np.float32), b.astype(np.float32)))
    np.testing.assert_allclose(got, _ssim_reference(a, b), rtol=1e-4)
    got2 = float(ssim(2 * a.astype(np.float32), 2 * b.astype(np.float32), max_val=2.0))
    np.testing.assert_allclose(got2, _ssim_reference(2 * a, 2 * b, 2.0), rtol=1e-4)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="H, W >= 11"):
        ssim(np.zeros((8, 8, 3)), np.zeros((8, 8, 3)))
    with pytest.raises(ValueError, match="equal shapes"):
        psnr(np.zeros((2, 3)), np.zeros((3, 2)))
