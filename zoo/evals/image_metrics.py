"""Full-reference image quality: PSNR and SSIM (how NeRF papers score held-out views).

Both take images in ``[0, max_val]`` (NeRF renders in [0, 1]) and run in jnp,
so they can be jitted next to a renderer.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# Wang, Bovik, Sheikh & Simoncelli 2004, "Image quality assessment: from error
# visibility to structural similarity", sec. III-C: 11x11 circular-symmetric
# Gaussian window with standard deviation 1.5, K1 = 0.01, K2 = 0.03.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def psnr(a: jax.Array, b: jax.Array, max_val: float = 1.0, axis=None) -> jax.Array:
    """Peak signal-to-noise ratio ``10 log10(max_val^2 / MSE)`` in dB.

    Args:
      a, b: arrays of the same shape, values in ``[0, max_val]``.
      axis: axes the MSE averages over (``None``: all, a scalar; e.g.
        ``(-3, -2, -1)`` for one PSNR per image of ``[..., H, W, C]``).

    Returns:
      float32 PSNR (``inf`` where the images are identical).
    """
    if a.shape != b.shape:
        raise ValueError(f"psnr needs equal shapes, got {a.shape} and {b.shape}")
    mse = jnp.mean(jnp.square(jnp.asarray(a, jnp.float32) - jnp.asarray(b, jnp.float32)), axis)
    return 10.0 * jnp.log10(max_val**2 / mse)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """``[size]`` 1-D Gaussian taps summing to 1 (the 2-D window is its outer product)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return (w / w.sum()).astype(np.float32)


def _filter_valid(x: jax.Array, taps: np.ndarray) -> jax.Array:
    """Separable 'valid' filtering of ``x [..., H, W, C]`` -> ``[..., H-k+1, W-k+1, C]``."""
    k = len(taps)
    h, w = x.shape[-3], x.shape[-2]
    # A weighted sum of k shifted crops per axis: exact and cheap for k = 11.
    x = sum(float(taps[i]) * x[..., i : i + h - k + 1, :, :] for i in range(k))
    return sum(float(taps[i]) * x[..., :, i : i + w - k + 1, :] for i in range(k))


def ssim(a: jax.Array, b: jax.Array, max_val: float = 1.0) -> jax.Array:
    """Mean structural similarity (Wang et al. 2004, eq. 13 and the mean SSIM of eq. 17).

    Local means, variances and covariance use the 11x11 Gaussian window
    (sigma 1.5) over 'valid' positions only (no padding), per channel;
    ``C1 = (K1 max_val)^2``, ``C2 = (K2 max_val)^2``.

    Args:
      a, b: ``[..., H, W, C]`` images in ``[0, max_val]``, ``H, W >= 11``.

    Returns:
      ``[...]`` float32 mean SSIM over the map and channels (1 for identical images).
    """
    if a.shape != b.shape:
        raise ValueError(f"ssim needs equal shapes, got {a.shape} and {b.shape}")
    if a.ndim < 3 or min(a.shape[-3], a.shape[-2]) < SSIM_WINDOW:
        raise ValueError(f"ssim needs [..., H, W, C] with H, W >= {SSIM_WINDOW}; got {a.shape}")
    a = jnp.asarray(a, jnp.float32)
    b = jnp.asarray(b, jnp.float32)
    taps = gaussian_window()
    mu_a, mu_b = _filter_valid(a, taps), _filter_valid(b, taps)
    var_a = _filter_valid(a * a, taps) - mu_a**2
    var_b = _filter_valid(b * b, taps) - mu_b**2
    cov = _filter_valid(a * b, taps) - mu_a * mu_b
    c1, c2 = (SSIM_K1 * max_val) ** 2, (SSIM_K2 * max_val) ** 2
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return jnp.mean(num / den, axis=(-3, -2, -1))
