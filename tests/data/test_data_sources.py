"""Bundled datasets, ordering/resume/sharding, shapes and config checks."""

import json

import ml_collections
import numpy as np
import pytest

from zoo.data import check_data_config, make_eval_source, make_source, order, shapes
from zoo.data.preprocess import prepare_image


def cfg(**kwargs) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({"image_size": 8, **kwargs})


# --- digits ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [8, 16, 32])
def test_digits_batch_shapes_dtypes_and_range(size):
    source = make_source(cfg(name="digits", image_size=size), seed=0, examples_per_step=32)
    batch = source.batch(0)
    assert set(batch) == {"image", "label"}
    assert batch["image"].shape == (32, size, size, 1) and batch["image"].dtype == np.float32
    assert batch["label"].shape == (32,) and batch["label"].dtype == np.int32
    assert -1.0 <= batch["image"].min() < -0.9 and 0.9 < batch["image"].max() <= 1.0
    assert set(batch["label"]) <= set(range(10))
    assert source.element_spec["image"] == ((size, size, 1), np.float32)
    assert source.num_classes == 10


def test_digits_native_size_is_exact_and_rgb_repeats_grey():
    grey = make_source(cfg(name="digits"), seed=0, examples_per_step=4).batch(0)["image"]
    assert np.allclose(grey * 8 + 8, np.round(grey * 8 + 8), atol=1e-5)  # 0..16 levels, no resize
    rgb = make_source(cfg(name="digits", channels=3), seed=0, examples_per_step=4).batch(0)
    np.testing.assert_allclose(rgb["image"], np.repeat(grey, 3, axis=-1), atol=1e-6)


def test_digits_train_and_test_are_disjoint():
    train = make_source(cfg(name="digits"), seed=0, examples_per_step=1500)
    test = make_eval_source(cfg(name="digits"))
    assert (train.num_examples, test.num_examples) == (1500, 297)
    train_images = {x.tobytes() for x in train.batch(0)["image"]}
    test_batches = list(test.batches(128))
    assert [len(b["image"]) for b in test_batches] == [128, 128, 41]  # last batch kept, smaller
    test_images = {x.tobytes() for b in test_batches for x in b["image"]}
    assert not train_images & test_images
    with pytest.raises(ValueError, match="holds 297"):
        next(test.batches(10, num_examples=298))


# --- ordering, resume, sharding -------------------------------------------------------------


def test_batches_are_pure_functions_of_seed_and_step():
    config = cfg(name="digits", random_flip=True)
    a = make_source(config, seed=3, examples_per_step=64)
    b = make_source(config, seed=3, examples_per_step=64)
    sequential = [a.batch(s) for s in range(30)]  # 30 * 64 > 1500: crosses an epoch
    for step in (29, 7, 0, 23):  # random access on a fresh source, in any order
        for key in ("image", "label"):
            np.testing.assert_array_equal(b.batch(step)[key], sequential[step][key])
    other = make_source(config, seed=4, examples_per_step=64).batch(7)
    assert not np.array_equal(other["image"], sequential[7]["image"])
    json.dumps(a.state(29))
    assert a.state(29)["epoch"] == 29 * 64 // 1500


def test_process_shards_concatenate_to_the_global_batch():
    config = cfg(name="digits", random_flip=True)
    whole = make_source(config, seed=1, examples_per_step=48)
    shards = [
        make_source(config, seed=1, examples_per_step=48, process_index=p, process_count=2)
        for p in range(2)
    ]
    for step in (0, 31):  # 31 * 48 crosses the first epoch boundary
        for key in ("image", "label"):
            joined = np.concatenate([s.batch(step)[key] for s in shards])
            np.testing.assert_array_equal(joined, whole.batch(step)[key])
    with pytest.raises(ValueError, match="multiple of process_count"):
        make_source(config, seed=1, examples_per_step=48, process_index=0, process_count=5)


def test_every_example_appears_once_per_epoch():
    source = make_source(cfg(name="digits"), seed=0, examples_per_step=100)  # 1500 = 15 steps
    for epoch in range(2):
        seen = np.concatenate([source.indices(s) for s in range(15 * epoch, 15 * epoch + 15)])
        np.testing.assert_array_equal(np.sort(seen), np.arange(1500))
    assert not np.array_equal(source.indices(0), source.indices(15))  # reshuffled per epoch


def test_flips_are_fair_and_mirror_the_image():
    flips = order.coin_flips(0, np.arange(10000))
    assert 0.47 < flips.mean() < 0.53
    plain = make_source(cfg(name="digits"), seed=5, examples_per_step=64).batch(2)["image"]
    flipped = make_source(cfg(name="digits", random_flip=True), seed=5, examples_per_step=64)
    which = order.coin_flips(5, flipped.positions(2))
    expect = np.where(which[:, None, None, None], plain[:, :, ::-1], plain)
    np.testing.assert_array_equal(flipped.batch(2)["image"], expect)


def test_float_and_uint8_preprocessing_agree():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    for size, channels in ((20, 3), (20, 1), (10, 3)):
        a = prepare_image(image, size, channels)
        b = prepare_image(image / 255.0, size, channels)
        assert a.shape == (size, size, channels)
        np.testing.assert_allclose(a, b, atol=0.03)  # PIL rounds to uint8 on the fast path


# --- shapes ---------------------------------------------------------------------------------


def shapes_cfg(**kwargs):
    return cfg(**{"name": "shapes", "image_size": 16, "num_train": 64, "num_eval": 16, **kwargs})


def test_shapes_batch_is_deterministic_and_captions_match_attributes():
    a = make_source(shapes_cfg(), seed=0, examples_per_step=32).batch(1)
    b = make_source(shapes_cfg(), seed=0, examples_per_step=32).batch(1)
    assert a["image"].shape == (32, 16, 16, 3) and a["caption"].dtype == object
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    for i in range(32):
        s, c, p = a["shape"][i], a["color"][i], a["position"][i]
        assert a["caption"][i] == shapes.caption(s, c, p)
        assert (
            a["caption"][i]
            == f"a {shapes.COLORS[c]} {shapes.SHAPES[s]} at the {shapes.POSITIONS[p]}"
        )
        assert shapes.attributes_of(a["label"][i]) == (s, c, p)
    assert shapes.caption("circle", "red", "top left") == "a red circle at the top left"


def test_shapes_examples_depend_on_seed_split_and_attributes():
    examples = shapes.open_split(shapes_cfg(), train=True)
    first = examples.example(5)
    np.testing.assert_array_equal(first["image"], examples.example(5)["image"])
    other_seed = shapes.open_split(shapes_cfg(dataset_seed=1), train=True)
    assert not np.array_equal(other_seed.example(5)["image"], first["image"])
    eval_first = next(make_eval_source(shapes_cfg()).batches(16))
    train_images = {x.tobytes() for x in examples.load(np.arange(64))["image"]}
    assert not train_images & {x.tobytes() for x in eval_first["image"]}
    # Attributes show in the pixels: the shape's colour and where the lit pixels are.
    rng = np.random.default_rng(0)
    red_top_left = np.asarray(shapes.draw(0, 0, 0, 16, rng))
    blue_bottom_right = np.asarray(shapes.draw(0, 2, 8, 16, rng))
    size = red_top_left.shape[0]
    lit = red_top_left.max(-1) > 0
    assert lit[: size // 3, : size // 3].sum() == lit.sum()
    assert red_top_left[lit][:, 0].mean() > 200 and blue_bottom_right.max(-1)[-size // 3 :].any()
    assert blue_bottom_right[..., 2].max() > 200 and blue_bottom_right[..., 0].max() < 60


def test_shapes_refuses_random_flip():
    with pytest.raises(ValueError, match="random_flip must be False"):
        check_data_config(shapes_cfg(random_flip=True))


# --- config checks --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config, message",
    [
        (cfg(name="digits", image_size=0), "image_size must be a positive int"),
        (cfg(name="digits", image_size=8.0), "image_size must be a positive int"),
        (ml_collections.ConfigDict({"name": "digits"}), "image_size"),
        (cfg(name="digits", channels=2), "channels must be 1, 3"),
        (cfg(name="digits", random_flip="yes"), "random_flip must be a bool"),
        (cfg(name=""), "data.name"),
        (cfg(name="image_folder"), "data.path is required"),
        (cfg(name="npz", path="/nonexistent/x.npz"), "does not exist"),
        (cfg(name="image_folder", path="/nonexistent"), "does not exist"),
        (shapes_cfg(num_train=0), "num_train must be a positive int"),
    ],
)
def test_check_data_config_errors(config, message):
    with pytest.raises(ValueError, match=message):
        check_data_config(config)
