"""Mode coverage of samples from a mixture of Gaussians (ring of 8, grid of 25, ...).

The toy-data protocol of VEEGAN (Srivastava et al. 2017, sec. 5.1), after Metz et al. (2017):
each sample is assigned to its nearest mode; it is *high quality* when it lies within
`threshold_stds` (3) standard deviations of that mode. From this:

  high_quality:  the fraction of all samples that are high quality, in [0, 1].
  modes_covered: the number of modes that receive at least `min_share` of *all* N samples as
                 high-quality samples. The default `min_share` is a quarter of the uniform share,
                 1 / (4 K): with 8 modes, a mode needs 3.1% of the samples. A threshold (rather
                 than "at least one sample") keeps a few stray samples from counting as coverage;
                 PacGAN (Lin et al. 2018) uses a similar count cut-off (20 of 2500 samples on 25
                 modes, a fifth of the uniform share).
  mode_kl:       KL(p || uniform) in nats, p the histogram of high-quality samples over the K
                 modes: 0 when they spread evenly, log K when all sit on one mode; NaN when
                 there is no high-quality sample.

Pure numpy, float64 throughout.
"""

from __future__ import annotations

import numpy as np


def mode_coverage(
    points,
    modes,
    std: float,
    *,
    threshold_stds: float = 3.0,
    min_share: float | None = None,
) -> dict[str, float]:
    """Mode coverage metrics of `points` against the mixture's `modes`.

    Args:
      points: `[N, D]` samples (D = 2 for the ring), N >= 1.
      modes: `[K, D]` mode centres.
      std: the mixture components' standard deviation (same units as the points).
      threshold_stds: a sample within `threshold_stds * std` (Euclidean) of its nearest mode is
        high quality (VEEGAN: 3).
      min_share: share of all N samples a mode must receive as high-quality samples to count as
        covered; default 1 / (4 K).

    Returns:
      {"modes_covered": K' in [0, K] (a float), "high_quality": fraction in [0, 1],
       "mode_kl": KL(high-quality mode histogram || uniform) in nats, NaN if none}.
    """
    points = np.asarray(points, np.float64)
    modes = np.asarray(modes, np.float64)
    if points.ndim != 2 or modes.ndim != 2 or points.shape[1] != modes.shape[1]:
        raise ValueError(
            f"points [N, D] and modes [K, D] expected, got {points.shape}, {modes.shape}"
        )
    if points.shape[0] == 0 or modes.shape[0] == 0:
        raise ValueError("need at least one point and one mode")
    if not std > 0 or not threshold_stds > 0:
        raise ValueError(f"std and threshold_stds must be positive, got {std}, {threshold_stds}")
    n, k = points.shape[0], modes.shape[0]
    min_share = 1.0 / (4 * k) if min_share is None else float(min_share)
    if not 0 < min_share <= 1:
        raise ValueError(f"min_share must be in (0, 1], got {min_share}")

    squared = ((points[:, None, :] - modes[None, :, :]) ** 2).sum(axis=-1)  # [N, K]
    nearest = squared.argmin(axis=1)
    good = np.sqrt(squared[np.arange(n), nearest]) <= threshold_stds * std
    counts = np.bincount(nearest[good], minlength=k).astype(np.float64)

    total = counts.sum()
    if total > 0:
        p = counts / total
        nonzero = p > 0  # 0 log 0 = 0
        mode_kl = float(np.sum(p[nonzero] * np.log(p[nonzero] * k)))
    else:
        mode_kl = float("nan")
    return {
        "modes_covered": float(np.sum(counts >= min_share * n)),
        "high_quality": float(good.mean()),
        "mode_kl": mode_kl,
    }
