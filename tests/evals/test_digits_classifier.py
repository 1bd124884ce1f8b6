"""The digits feature network: accuracy, FD sanity, cache round-trip and failure modes."""

from __future__ import annotations

import math
import os
import warnings

import jax
import numpy as np
import pytest
from flax import nnx

from zoo.evals import digits_classifier as dc

STEPS = 150  # a tiny budget (~1-2 s on CPU); the default trains longer for ~98.6%


@pytest.fixture(scope="module")
def cache_path(tmp_path_factory):
    return str(tmp_path_factory.mktemp("digits") / "features_8.npz")


@pytest.fixture(scope="module")
def features(cache_path):
    return dc.DigitsFeatures.train(image_size=8, seed=0, steps=STEPS, cache_path=cache_path)


def test_held_out_accuracy_and_shapes(features):
    assert features.held_out_accuracy > 0.9
    images, labels = dc.digits_split("test", 8)
    assert images.shape == (297, 8, 8, 1) and images.min() >= -1 and images.max() <= 1
    feats = features.features(images[:300])
    assert feats.shape == (297, 128) and feats.dtype == np.float32
    predicted, confidence = features.predict(images)
    assert predicted.shape == confidence.shape == (297,)
    assert np.mean(predicted == labels) == pytest.approx(features.held_out_accuracy)
    assert ((confidence > 0.1) & (confidence <= 1)).all()


def test_real_digits_beat_noise(features):
    real = dc.digits_real_floor(features, 297, reference="train")
    noise = np.random.default_rng(0).uniform(-1, 1, (297, 8, 8, 1))
    fake = dc.digits_frechet_distance(noise, features, reference="train")
    assert set(real) == {"fd", "confident_share", "class_entropy"}
    assert 5 * real["fd"] < fake["fd"]
    assert real["confident_share"] > fake["confident_share"]
    assert math.log(10) - 0.1 < real["class_entropy"] <= math.log(10)
    one_digit = dc.digits_split("test", 8)[0][dc.digits_split("test", 8)[1] == 3]
    assert dc.digits_frechet_distance(one_digit, features)["class_entropy"] < 0.5


def test_nan_images_give_infinite_fd(features):
    images = dc.digits_split("test", 8)[0][:50].copy()
    images[10] = np.nan  # one NaN sample: its features are NaN, so are the stats
    assert dc.digits_frechet_distance(images, features)["fd"] == np.inf


def _bits(params) -> list[bytes]:
    return [np.asarray(leaf).tobytes() for leaf in jax.tree.leaves(params)]


def test_training_is_deterministic_and_on_the_cpu():
    # The same seed, no cache: bit-identical weights, so FDs agree between runs. Another
    # seed: other weights (the seed is used). On the CPU even where a GPU is the default.
    first, second = (dc.DigitsFeatures.train(steps=5) for _ in range(2))
    assert _bits(first._params) == _bits(second._params)
    assert _bits(dc.DigitsFeatures.train(steps=5, seed=1)._params) != _bits(first._params)
    for leaf in jax.tree.leaves(first._params):
        assert leaf.committed and {d.platform for d in leaf.devices()} == {"cpu"}


def test_cache_roundtrip_is_identical(features, cache_path):
    assert os.path.exists(cache_path)
    loaded = dc.DigitsFeatures.train(image_size=8, seed=0, steps=STEPS, cache_path=cache_path)
    images = dc.digits_split("test", 8)[0]
    np.testing.assert_array_equal(loaded.features(images), features.features(images))
    assert loaded.held_out_accuracy == features.held_out_accuracy
    for leaf in jax.tree.leaves(loaded._params):  # loaded weights run on the CPU too
        assert leaf.committed and {d.platform for d in leaf.devices()} == {"cpu"}


def test_cache_from_other_arguments_is_an_error(features, cache_path):
    with pytest.raises(ValueError, match="not comparable"):
        dc.DigitsFeatures.train(image_size=8, seed=1, steps=STEPS, cache_path=cache_path)


def test_corrupt_cache_warns_and_retrains(tmp_path):
    path = str(tmp_path / "corrupt.npz")
    with open(path, "wb") as f:
        f.write(b"not a zip file")
    with pytest.warns(UserWarning, match="unreadable"):
        dc.DigitsFeatures.train(steps=5, cache_path=path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rewritten cache now loads cleanly
        dc.DigitsFeatures.train(steps=5, cache_path=path)


def test_wrong_image_size_is_an_error(features):
    with pytest.raises(ValueError, match="image_size=8"):
        features.features(np.zeros((4, 16, 16, 1)))


@pytest.mark.parametrize("size, flat", [(16, 4 * 4 * 32), (28, 4 * 4 * 64)])
def test_larger_image_sizes_end_in_small_dense(size, flat):
    graphdef, state = nnx.split(nnx.eval_shape(lambda: dc.DigitsConvNet(size, rngs=nnx.Rngs(0))))
    assert nnx.merge(graphdef, state).hidden.in_features == flat
    x = jax.ShapeDtypeStruct((2, size, size, 1), np.float32)
    logits = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), state, x)
    assert logits.shape == (2, 10)
