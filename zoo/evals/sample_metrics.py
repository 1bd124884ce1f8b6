"""Which sample-quality metrics a run gets, chosen by its dataset.

Each metric is a function ``samples -> {name: float}`` where ``samples`` is
what the objective's ``sample`` returned: ``{"image": [N, H, W, C] in [-1, 1],
...}`` plus any conditioning fields. The reference networks are trained on the
bundled data on first use and cached in the workdir.

- ``digits``: Fréchet distance of digits-classifier features (and the
  classifier's held-out accuracy, so a reader can judge the features).
- ``shapes``: the share of images whose shape, colour and position, as judged
  by the shapes reference classifier, match the attributes they were
  conditioned on (needs ``shape``, ``color``, ``position`` in the samples).
- ``ring``: modes covered and the share of high-quality 2-D samples.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

SampleMetric = Callable[[dict[str, np.ndarray]], dict[str, float]]


def sample_metrics(config, workdir: str) -> tuple[SampleMetric, ...]:
    """The metrics that fit ``config.data.name``; () when none do or none are asked for."""
    if not config.get("eval", {}).get("num_samples", 0):
        return ()
    name = config.data.name
    if name == "digits":
        return (_digits_frechet(config, workdir),)
    if name == "shapes":
        return (_shapes_caption_match(config, workdir),)
    if name == "ring":
        return (_ring_modes(config),)
    return ()


def _digits_frechet(config, workdir: str) -> SampleMetric:
    from zoo.evals.digits_classifier import DigitsFeatures, digits_frechet_distance

    features = DigitsFeatures.train(
        image_size=int(config.data.image_size),
        cache_path=os.path.join(workdir, "digits_classifier.npz"),
    )
    accuracy = {"classifier_accuracy": features.held_out_accuracy}
    return lambda samples: {**digits_frechet_distance(samples["image"], features), **accuracy}


def _shapes_caption_match(config, workdir: str) -> SampleMetric:
    from zoo.evals.shapes_classifier import ShapesClassifier, caption_match

    classifier = ShapesClassifier.train(
        image_size=int(config.data.image_size),
        cache_path=os.path.join(workdir, "shapes_classifier.npz"),
    )

    def metric(samples):
        missing = {"shape", "color", "position"} - set(samples)
        if missing:
            raise ValueError(
                f"caption match needs the attributes each sample was conditioned on; the "
                f"objective's sample returned no {sorted(missing)}"
            )
        return caption_match(
            samples["image"], samples["shape"], samples["color"], samples["position"], classifier
        )

    return metric


def _ring_modes(config) -> SampleMetric:
    from zoo.data.ring import ring_modes
    from zoo.evals.modes import mode_coverage

    radius = float(config.data.get("ring_radius", 2.0))
    std = float(config.data.get("ring_std", 0.02))
    modes = ring_modes(8, radius)
    return lambda samples: mode_coverage(samples["point"], modes, std)
