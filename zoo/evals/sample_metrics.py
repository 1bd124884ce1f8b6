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

Non-finite samples. With ``train.on_nonfinite="skip"`` a run goes on past a NaN, and its
generator may then draw NaN or Inf samples. Every metric goes through ``checked``, which
then reports the metric's *non-finite result* instead of scoring: distances ``inf``, rates,
accuracies, counts and entropies ``NaN``, and numbers about the reference network itself
(``classifier_accuracy``) as they are; with a ``RuntimeWarning`` that names the metric and
how many of the N samples were non-finite. A run is never stopped by its metrics (its final
checkpoint still gets written), and no score is made up: one non-finite sample is enough,
since scoring only the finite ones would score a different, selected distribution and could
rank a broken generator above a sound one. ``inf`` for a distance keeps such a step from
ever looking best; ``NaN`` for a rate says "undefined" rather than a made-up 0 (a NaN image
is classified as class 0, which matched every caption of class 0 before this check).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import numpy as np

SampleMetric = Callable[[dict[str, np.ndarray]], dict[str, float]]
INF, NAN = float("inf"), float("nan")


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


def checked(
    name: str, metric: SampleMetric, needs: tuple[str, ...], when_nonfinite: dict[str, float]
) -> SampleMetric:
    """``metric`` behind the checks every sample metric needs.

    Args:
      name: the metric's name in messages.
      metric: ``samples -> {key: float}``.
      needs: the sample fields ``metric`` reads; the first is the one it scores, ``[N, ...]``.
      when_nonfinite: what ``metric`` reports when a scored sample holds a NaN or Inf: the
        same keys as its result (see the module docstring for the values).

    Returns:
      The checked metric: ValueError naming any field of ``needs`` that the samples lack;
      ``when_nonfinite`` with a ``RuntimeWarning`` when k of the N samples are non-finite.
    """

    def checked_metric(samples: dict[str, np.ndarray]) -> dict[str, float]:
        missing = [k for k in needs if k not in samples]
        if missing:
            raise ValueError(
                f"{name} needs the sample fields {list(needs)}; the objective's sample "
                f"returned no {missing}"
            )
        scored = np.asarray(samples[needs[0]])
        if np.issubdtype(scored.dtype, np.inexact):
            finite = np.isfinite(scored.reshape(len(scored), -1)).all(axis=1)
            if not finite.all():
                warnings.warn(
                    f"{name}: {int((~finite).sum())} of {len(scored)} samples are non-finite "
                    f"(NaN or Inf in {needs[0]!r}); reporting {when_nonfinite} instead of a score",
                    RuntimeWarning,
                    stacklevel=2,
                )
                return dict(when_nonfinite)
        return metric(samples)

    return checked_metric


def _digits_frechet(config, workdir: str) -> SampleMetric:
    from zoo.evals.digits_classifier import DigitsFeatures, digits_frechet_distance

    features = DigitsFeatures.train(
        image_size=int(config.data.image_size),
        cache_path=os.path.join(workdir, "digits_classifier.npz"),
    )
    accuracy = {"classifier_accuracy": features.held_out_accuracy}
    return checked(
        "digits Fréchet distance",
        lambda samples: {**digits_frechet_distance(samples["image"], features), **accuracy},
        needs=("image",),
        when_nonfinite={"fd": INF, "confident_share": NAN, "class_entropy": NAN, **accuracy},
    )


def _shapes_caption_match(config, workdir: str) -> SampleMetric:
    from zoo.evals.shapes_classifier import ShapesClassifier, caption_match

    classifier = ShapesClassifier.train(
        image_size=int(config.data.image_size),
        cache_path=os.path.join(workdir, "shapes_classifier.npz"),
    )
    return checked(
        "shapes caption match",
        lambda samples: caption_match(
            samples["image"], samples["shape"], samples["color"], samples["position"], classifier
        ),
        needs=("image", "shape", "color", "position"),
        when_nonfinite=dict.fromkeys(
            ("caption_match", "shape_acc", "color_acc", "position_acc"), NAN
        ),
    )


def _ring_modes(config) -> SampleMetric:
    from zoo.data.ring import ring_modes
    from zoo.evals.modes import mode_coverage

    radius = float(config.data.get("ring_radius", 2.0))
    std = float(config.data.get("ring_std", 0.02))
    modes = ring_modes(8, radius)
    return checked(
        "ring mode coverage",
        lambda samples: mode_coverage(samples["point"], modes, std),
        needs=("point",),
        when_nonfinite=dict.fromkeys(("modes_covered", "high_quality", "mode_kl"), NAN),
    )
