"""The shapes caption judge: accuracy, caption matching, cache round-trip and failure modes."""

from __future__ import annotations

import os
import warnings

import jax
import numpy as np
import pytest

from zoo.data import shapes
from zoo.evals import shapes_classifier as sc

# A small budget (~5 s of CPU) that still reads ~96% of held-out captions right at 16x16;
# the default (4000 examples, 800 steps) reaches ~99.8%.
BUDGET = dict(num_train=2000, steps=300)


@pytest.fixture(scope="module")
def cache_path(tmp_path_factory):
    return str(tmp_path_factory.mktemp("shapes") / "classifier_16.npz")


@pytest.fixture(scope="module")
def classifier(cache_path):
    return sc.ShapesClassifier.train(16, cache_path, **BUDGET)


@pytest.fixture(scope="module")
def held_out():
    data = sc.shapes_split(False, sc.EVAL_SIZE, 16)
    return {k: v[:300] for k, v in data.items()}  # 300 > one 256-image prediction batch


def test_held_out_accuracy(classifier):
    accuracy = classifier.held_out_accuracy
    assert set(accuracy) == {"shape", "color", "position", "all"}
    assert accuracy["all"] >= 0.9
    assert accuracy["color"] >= 0.97 and accuracy["position"] >= 0.97
    assert accuracy["all"] <= min(accuracy["shape"], accuracy["color"], accuracy["position"])


def test_real_images_match_their_captions(classifier, held_out):
    assert held_out["image"].shape == (300, 16, 16, 3)
    predicted = classifier.predict(held_out["image"])
    assert set(predicted) == {"shape", "color", "position"}
    assert all(v.shape == (300,) and v.dtype == np.int32 for v in predicted.values())
    attributes = [held_out[k] for k in ("shape", "color", "position")]
    scores = sc.caption_match(held_out["image"], *attributes, classifier)
    assert set(scores) == {"caption_match", "shape_acc", "color_acc", "position_acc"}
    assert scores["caption_match"] >= 0.9
    both = (predicted["shape"] == attributes[0]) & (predicted["color"] == attributes[1])
    all_three = both & (predicted["position"] == attributes[2])
    assert scores["caption_match"] == pytest.approx(all_three.mean())


def test_wrong_captions_score_low(classifier, held_out):
    s, c, p = (held_out[k] for k in ("shape", "color", "position"))
    wrong_color = sc.caption_match(
        held_out["image"], s, (c + 1) % len(shapes.COLORS), p, classifier
    )
    assert wrong_color["caption_match"] < 0.05 and wrong_color["color_acc"] < 0.05
    assert wrong_color["position_acc"] >= 0.9  # only the colour was wrong
    # Shuffled captions: right only by chance (1/162 for all three attributes).
    perm = np.random.default_rng(0).permutation(len(s))
    shuffled = sc.caption_match(held_out["image"], s[perm], c[perm], p[perm], classifier)
    assert shuffled["caption_match"] < 0.05
    blank = sc.caption_match(-np.ones((300, 16, 16, 3)), s, c, p, classifier)
    assert blank["caption_match"] < 0.1  # an empty black image shows no caption


def test_training_is_deterministic_and_on_the_cpu():
    # The same seed, no cache: bit-identical weights. Another seed: other weights.
    def bits(classifier):
        return [np.asarray(leaf).tobytes() for leaf in jax.tree.leaves(classifier._params)]

    tiny = dict(num_train=64, steps=5)
    first, second = (sc.ShapesClassifier.train(8, **tiny) for _ in range(2))
    assert bits(first) == bits(second)
    assert bits(sc.ShapesClassifier.train(8, **tiny, seed=1)) != bits(first)
    for leaf in jax.tree.leaves(first._params):
        assert leaf.committed and {d.platform for d in leaf.devices()} == {"cpu"}


def test_cache_round_trips(classifier, cache_path, held_out):
    assert os.path.exists(cache_path)
    loaded = sc.ShapesClassifier.train(16, cache_path, **BUDGET)
    assert loaded.held_out_accuracy == classifier.held_out_accuracy
    for k, v in loaded.predict(held_out["image"]).items():
        np.testing.assert_array_equal(v, classifier.predict(held_out["image"])[k])


def test_cache_from_other_arguments_is_an_error(classifier, cache_path):
    with pytest.raises(ValueError, match="not comparable"):
        sc.ShapesClassifier.train(16, cache_path, num_train=2000, steps=300, seed=1)


def test_corrupt_cache_warns_and_retrains(tmp_path):
    path = str(tmp_path / "corrupt.npz")
    with open(path, "wb") as f:
        f.write(b"not a zip file")
    with pytest.warns(UserWarning, match="unreadable"):
        sc.ShapesClassifier.train(16, path, num_train=64, steps=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rewritten cache now loads cleanly
        sc.ShapesClassifier.train(16, path, num_train=64, steps=5)


def test_bad_input_is_an_error(classifier, held_out):
    with pytest.raises(ValueError, match="image_size=16"):
        classifier.predict(np.zeros((4, 32, 32, 3)))
    with pytest.raises(ValueError, match="16, 16, 3"):
        classifier.predict(np.zeros((4, 16, 16, 1)))
    with pytest.raises(ValueError, match="N > 0"):
        classifier.predict(np.zeros((0, 16, 16, 3)))
    images, s, c, p = (held_out[k][:4] for k in ("image", "shape", "color", "position"))
    with pytest.raises(ValueError, match=r"color must be \[N=4\]"):
        sc.caption_match(images, s, c[:3], p, classifier)
    with pytest.raises(ValueError, match="position indices"):
        sc.caption_match(images, s, c, p + 9, classifier)
    with pytest.raises(ValueError, match="image_size"):
        sc.ShapesClassifier.train(65)
    with pytest.raises(ValueError, match="steps"):
        sc.ShapesClassifier.train(16, steps=0)


def test_confusion_counts_each_wanted_class_by_what_was_read():
    wanted = np.array([0, 0, 0, 1, 2, 2])
    read = np.array([0, 1, 1, 1, 2, 0])
    table = sc.confusion(wanted, read, shapes.SHAPES)
    assert table == {
        "circle": {"circle": 1, "square": 2, "triangle": 0},
        "square": {"circle": 0, "square": 1, "triangle": 0},
        "triangle": {"circle": 1, "square": 0, "triangle": 1},
    }
