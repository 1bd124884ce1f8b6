"""Sample metrics on non-finite samples: inf / NaN and a warning, never an exception."""

from __future__ import annotations

import functools
import math

import ml_collections
import numpy as np
import pytest

from zoo.data.ring import ring_modes
from zoo.evals import digits_classifier as dc
from zoo.evals import shapes_classifier as sc
from zoo.evals.sample_metrics import sample_metrics

N = 40
INF, NAN = math.inf, math.nan
# Tiny reference networks: what is checked here is the handling of non-finite samples,
# not the networks' quality (their own tests check that).
BUDGETS = {dc.DigitsFeatures: {"steps": 5}, sc.ShapesClassifier: {"num_train": 64, "steps": 5}}


@pytest.fixture(scope="module")
def metrics(tmp_path_factory):
    """{dataset: (its one sample metric, finite samples)} for digits, shapes and ring."""
    workdir = str(tmp_path_factory.mktemp("sample_metrics"))
    with pytest.MonkeyPatch.context() as patch:
        for cls, budget in BUDGETS.items():
            patch.setattr(
                cls, "train", classmethod(functools.partial(cls.train.__func__, **budget))
            )
        out = {}
        for name, size in (("digits", 8), ("shapes", 8), ("ring", 0)):
            config = ml_collections.ConfigDict(
                {"data": {"name": name, "image_size": size}, "eval": {"num_samples": N}}
            )
            (out[name],) = sample_metrics(config, workdir)
    shapes_data = sc.shapes_split(False, N, 8)
    samples = {
        "digits": {"image": dc.digits_split("test", 8)[0][:N]},
        "shapes": {k: shapes_data[k] for k in ("image", "shape", "color", "position")},
        "ring": {"point": ring_modes(8, 2.0)[np.arange(N) % 8]},
    }
    return {name: (out[name], samples[name]) for name in out}


EXPECTED = {  # distances inf; rates, counts and entropies NaN
    "digits": (
        "digits Fréchet distance",
        {"fd": INF, "confident_share": NAN, "class_entropy": NAN},
    ),
    "shapes": (
        "shapes caption match",
        dict.fromkeys(("caption_match", "shape_acc", "color_acc", "position_acc"), NAN),
    ),
    "ring": (
        "ring mode coverage",
        dict.fromkeys(("modes_covered", "high_quality", "mode_kl"), NAN),
    ),
}


@pytest.mark.parametrize("bad", [NAN, INF, -INF])
@pytest.mark.parametrize("dataset", ["digits", "shapes", "ring"])
def test_nonfinite_samples_give_inf_or_nan_and_a_warning(metrics, dataset, bad):
    metric, samples = metrics[dataset]
    clean = metric(samples)
    assert all(np.isfinite(v) for v in clean.values())
    field = "point" if dataset == "ring" else "image"
    broken = {**samples, field: samples[field].astype(np.float32)}
    broken[field][[1, 5, 7]] = bad  # 3 whole samples
    broken[field][9].flat[0] = bad  # and one value of a 4th
    name, expected = EXPECTED[dataset]
    with pytest.warns(RuntimeWarning, match=rf"{name}: 4 of {N} samples are non-finite"):
        result = metric(broken)
    assert set(result) == set(clean)  # the same keys as a scored result
    if dataset == "digits":  # a number about the network, not the samples: still reported
        expected = {**expected, "classifier_accuracy": clean["classifier_accuracy"]}
    np.testing.assert_equal(result, expected)


def test_missing_fields_are_an_error(metrics):
    metric, samples = metrics["shapes"]
    with pytest.raises(ValueError, match=r"returned no \['color'\]"):
        metric({k: v for k, v in samples.items() if k != "color"})
