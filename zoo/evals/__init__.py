"""Sample-quality numbers: Fréchet distance, and a feature network trained on bundled digits.

Usage, with ``samples`` ``[N, 8, 8, 1]`` in [-1, 1]::

    feats = DigitsFeatures.train(image_size=8, cache_path=".../digits_features_8.npz")
    digits_frechet_distance(samples, feats)  # {"fd", "confident_share", "class_entropy"}
    digits_real_floor(feats, num_samples=len(samples))  # what real digits score at that N
"""

from zoo.evals.digits_classifier import (
    DigitsFeatures,
    digits_frechet_distance,
    digits_real_floor,
    digits_split,
)
from zoo.evals.frechet import frechet_distance, gaussian_stats

__all__ = [
    "DigitsFeatures",
    "digits_frechet_distance",
    "digits_real_floor",
    "digits_split",
    "frechet_distance",
    "gaussian_stats",
]
