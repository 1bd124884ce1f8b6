"""Keeping the predicted x_0 in the data range: static clipping and dynamic thresholding.

Samplers turn each model output into a prediction of the clean image x_0 and
then move x_t towards it. Far from the data (large guidance weights, early
high-noise steps) that prediction can leave [-1, 1]; the samplers then clip it.

- Static clipping (Ho et al. 2020): x_0 -> clip(x_0, -1, 1). Pixels outside
  the range saturate, which with large guidance gives flat, over-saturated images.
- Dynamic thresholding (Imagen, Saharia et al. 2022, sec. 2.3): per example, s
  is the ``percentile`` quantile of |x_0| over all pixels and channels, s =
  max(s, 1), and x_0 -> clip(x_0, -s, s) / s. Only the rare extreme pixels
  (the top 1 - percentile) saturate; the rest are rescaled into [-1, 1], so the
  image keeps its contrast. An example whose quantile is <= 1 gets s = 1 and is
  only statically clipped, so images already in range are unchanged.

Both are selected with the samplers' ``clip_denoised`` and ``dynamic_threshold``
keywords; :func:`threshold_x0` is the one place that reads them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def check_dynamic_threshold(value: float) -> float:
    """Validate a sampler's ``dynamic_threshold``: 0 (off) or a percentile in (0, 1).

    Returns it as a Python float; raises ``ValueError`` otherwise (also for NaN).
    It must be static (a Python number): it decides which code is traced.
    """
    value = float(value)
    if value != 0.0 and not 0.0 < value < 1.0:
        raise ValueError(
            f"dynamic_threshold must be 0 (off) or a percentile in (0, 1), e.g. 0.995; got {value}"
        )
    return value


def dynamic_threshold(x0: jax.Array, percentile: float) -> jax.Array:
    """Imagen's dynamic thresholding (Saharia et al. 2022, sec. 2.3) of a predicted x_0.

    x0: ``[B, ...]`` float, the predicted clean images (nominally in [-1, 1]).
    percentile: a Python float in (0, 1), e.g. 0.995 (Imagen's value): the
      quantile of |x0| taken over all non-batch axes of each example (linear
      interpolation between order statistics, as ``numpy.quantile``).
    Returns ``[B, ...]``, same dtype, in [-1, 1]: clip(x0, -s, s) / s with
    s = max(quantile, 1) per example (s broadcast as ``[B, 1, ..., 1]``).
    """
    p = float(percentile)
    if not 0.0 < p < 1.0:  # also rejects NaN
        raise ValueError(f"percentile must lie in (0, 1), e.g. 0.995; got {percentile}")
    flat = jnp.abs(x0).reshape(x0.shape[0], -1).astype(jnp.float32)
    s = jnp.maximum(jnp.quantile(flat, p, axis=1), 1.0)  # [B]; s = 1: a plain clip
    s = s.reshape((-1,) + (1,) * (x0.ndim - 1)).astype(x0.dtype)
    return jnp.clip(x0, -s, s) / s


# threshold_x0's keyword ``dynamic_threshold`` (the samplers' name) shadows the function.
_dynamic_threshold = dynamic_threshold


def threshold_x0(x0: jax.Array, *, clip_denoised: bool, dynamic_threshold: float) -> jax.Array:
    """The x_0 prediction as the samplers use it; ``[B, ...]`` -> ``[B, ...]``.

    ``dynamic_threshold > 0`` applies :func:`dynamic_threshold` with that
    percentile and replaces the static clip (it generalises it: s = 1 is the
    static clip), whatever ``clip_denoised`` says; otherwise ``clip_denoised``
    clips to [-1, 1]; otherwise x0 is returned unchanged.
    """
    p = check_dynamic_threshold(dynamic_threshold)
    if p > 0.0:
        return _dynamic_threshold(x0, p)
    if clip_denoised:
        return jnp.clip(x0, -1.0, 1.0)
    return x0
