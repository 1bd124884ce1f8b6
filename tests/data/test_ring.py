"""The ring of 8 Gaussians: modes, determinism, statistics, streams, registration."""

import ml_collections
import numpy as np
import pytest

from zoo.data import check_data_config, make_eval_source, make_source, ring
from zoo.engine.config import base_config


def cfg(**kwargs) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({"name": "ring", "image_size": 32, **kwargs})


def test_ring_modes_are_equally_spaced_on_the_circle():
    modes = ring.ring_modes()
    assert modes.shape == (8, 2) and modes.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(modes, axis=1), 2.0, rtol=1e-6)
    np.testing.assert_allclose(modes[0], [2.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(modes[2], [0.0, 2.0], atol=1e-6)
    gaps = np.linalg.norm(modes - np.roll(modes, 1, axis=0), axis=1)
    np.testing.assert_allclose(gaps, 2 * 2.0 * np.sin(np.pi / 8), rtol=1e-5)  # chord of 45 deg
    assert ring.ring_modes(3, 1.0).shape == (3, 2)
    with pytest.raises(ValueError, match="num_modes"):
        ring.ring_modes(0)


def test_batches_are_deterministic_with_spec_shapes_and_dtypes():
    a = make_source(cfg(), seed=0, examples_per_step=64)
    b = make_source(cfg(), seed=0, examples_per_step=64)
    batch = a.batch(3)
    assert set(batch) == {"point", "label"}
    assert batch["point"].shape == (64, 2) and batch["point"].dtype == np.float32
    assert batch["label"].shape == (64,) and batch["label"].dtype == np.int32
    for key in batch:
        np.testing.assert_array_equal(batch[key], b.batch(3)[key])
    assert a.element_spec == {"point": ((2,), np.float32), "label": ((), np.int32)}
    assert (a.num_examples, a.num_classes) == (100000, 8)
    assert make_eval_source(cfg()).num_examples == 10000


def test_example_is_a_pure_function_of_its_index():
    examples = ring.open_split(cfg(), train=True)
    whole = examples.load(np.arange(10))
    parts = examples.load(np.array([7, 3]))
    np.testing.assert_array_equal(parts["point"], whole["point"][[7, 3]])
    np.testing.assert_array_equal(parts["label"], whole["label"][[7, 3]])
    with pytest.raises(IndexError):
        examples.load(np.array([100000]))


def test_statistics_match_the_mixture():
    examples = ring.open_split(cfg(num_train=20000), train=True)
    batch = examples.load(np.arange(20000))
    points, labels = batch["point"].astype(np.float64), batch["label"]
    modes = ring.ring_modes()
    distances = np.linalg.norm(points[:, None] - modes[None], axis=-1)
    np.testing.assert_array_equal(distances.argmin(axis=1), labels)  # modes far apart vs std
    offsets = points - modes[labels]
    # Per-coordinate std 0.02, mean ~0; the distance to the mode is Rayleigh: mean std sqrt(pi/2).
    np.testing.assert_allclose(offsets.std(axis=0), 0.02, rtol=0.03)
    assert np.all(np.abs(offsets.mean(axis=0)) < 0.02 * 0.05)
    np.testing.assert_allclose(distances.min(axis=1).mean(), 0.02 * np.sqrt(np.pi / 2), rtol=0.03)
    counts = np.bincount(labels, minlength=8)
    assert counts.min() > 0.9 * 2500 and counts.max() < 1.1 * 2500  # uniform weights


def test_config_fields_change_the_data():
    batch = ring.open_split(
        cfg(ring_modes=4, ring_radius=5.0, ring_std=0.5, num_train=4000), train=True
    ).load(np.arange(4000))
    assert set(batch["label"]) == {0, 1, 2, 3}
    offsets = batch["point"] - ring.ring_modes(4, 5.0)[batch["label"]]
    np.testing.assert_allclose(offsets.std(axis=0), 0.5, rtol=0.06)


def test_splits_and_seeds_come_from_different_streams():
    train = ring.open_split(cfg(), train=True).load(np.arange(32))["point"]
    test = ring.open_split(cfg(), train=False).load(np.arange(32))["point"]
    other = ring.open_split(cfg(dataset_seed=1), train=True).load(np.arange(32))["point"]
    assert not np.any(np.all(train == test, axis=1))
    assert not np.any(np.all(train == other, axis=1))
    eval_first = next(make_eval_source(cfg()).batches(32))["point"]
    np.testing.assert_array_equal(eval_first, test)


def test_registered_and_base_config_passes():
    c = base_config()
    c.data.name = "ring"
    check_data_config(c.data)  # image_size/random_flip defaults are accepted
    assert make_source(c.data, seed=0, examples_per_step=8).batch(0)["point"].shape == (8, 2)


@pytest.mark.parametrize(
    "field, value",
    [
        ("ring_radius", 0.0),
        ("ring_std", -0.1),
        ("ring_modes", 0),
        ("num_train", 0),
        ("random_flip", True),
    ],
)
def test_bad_config_raises(field, value):
    with pytest.raises(ValueError, match=field):
        check_data_config(cfg(**{field: value}))
