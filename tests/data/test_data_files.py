"""File-backed sources: image folders, npz files and tensorflow-datasets (mocked, no TF)."""

import ml_collections
import numpy as np
import pytest
from PIL import Image

from zoo.data import check_data_config, make_eval_source, make_source


def cfg(**kwargs) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({"image_size": 8, **kwargs})


def write_images(folder, count, fmt, color, size=(12, 10)):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", size, color).save(folder / f"{i:02d}.{fmt}")


# --- image folder ---------------------------------------------------------------------------


def test_image_folder_with_class_subfolders(tmp_path):
    write_images(tmp_path / "b_red", 10, "png", (255, 0, 0))
    write_images(tmp_path / "a_blue", 10, "jpg", (0, 0, 255))
    (tmp_path / "a_blue" / "notes.txt").write_text("not an image")
    config = cfg(name="image_folder", path=str(tmp_path), eval_fraction=0.2)
    check_data_config(config)
    train = make_source(config, seed=0, examples_per_step=16)
    evals = make_eval_source(config)
    assert (train.num_examples, evals.num_examples, train.num_classes) == (16, 4, 2)
    batch = train.batch(0)
    assert batch["image"].shape == (16, 8, 8, 3) and batch["label"].dtype == np.int32
    # Sorted subfolders: a_blue is class 0, b_red class 1; colours survive crop + resize.
    red = batch["image"][..., 0].mean(axis=(1, 2)) > 0.9
    np.testing.assert_array_equal(red, batch["label"] == 1)
    grey = make_source(
        cfg(name="image_folder", path=str(tmp_path), channels=1), seed=0, examples_per_step=4
    ).batch(0)
    assert grey["image"].shape == (4, 8, 8, 1)


def test_image_folder_flat_and_eval_path(tmp_path):
    write_images(tmp_path / "train", 5, "png", (0, 255, 0))
    write_images(tmp_path / "held_out", 3, "jpeg", (0, 255, 0))
    config = cfg(
        name="image_folder", path=str(tmp_path / "train"), eval_path=str(tmp_path / "held_out")
    )
    train = make_source(config, seed=0, examples_per_step=5)
    assert train.num_examples == 5 and "label" not in train.batch(0)
    batches = list(make_eval_source(config).batches(2))
    assert [len(b["image"]) for b in batches] == [2, 1]


def test_image_folder_corrupt_file_is_named(tmp_path):
    write_images(tmp_path, 3, "png", (1, 2, 3))
    (tmp_path / "01.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    source = make_source(
        cfg(name="image_folder", path=str(tmp_path), eval_fraction=0.0), seed=0, examples_per_step=3
    )
    with pytest.raises(ValueError, match="01.png"):
        source.batch(0)
    with pytest.raises(ValueError, match="no held-out examples"):
        make_eval_source(cfg(name="image_folder", path=str(tmp_path), eval_fraction=0.0))


def test_image_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="holds no"):
        check_data_config(cfg(name="image_folder", path=str(tmp_path)))
    write_images(tmp_path / "cls", 2, "png", (0, 0, 0))
    write_images(tmp_path, 1, "png", (0, 0, 0))
    with pytest.raises(ValueError, match="loose images"):
        check_data_config(cfg(name="image_folder", path=str(tmp_path)))


# --- npz ------------------------------------------------------------------------------------


def test_npz_uint8_with_holdout(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", image=images, label=np.arange(20) % 4)
    config = cfg(name="npz", path=str(tmp_path / "d.npz"), eval_fraction=0.25)
    check_data_config(config)
    train = make_source(config, seed=0, examples_per_step=15)
    assert (train.num_examples, make_eval_source(config).num_examples) == (15, 5)
    assert train.num_classes == 4
    batch = train.batch(0)
    # Native size: images come back exactly, scaled to [-1, 1].
    originals = {x.tobytes() for x in images.astype(np.float32) / 127.5 - 1}
    assert all(x.tobytes() in originals for x in batch["image"])


def test_npz_float_grey_with_eval_arrays(tmp_path):
    path = tmp_path / "g.npz"
    np.savez(path, image=np.full((6, 4, 4), 0.5), image_eval=np.zeros((2, 4, 4), np.float32))
    config = cfg(name="npz", path=str(path), image_size=4)
    batch = make_source(config, seed=0, examples_per_step=6).batch(0)
    assert batch["image"].shape == (6, 4, 4, 1) and "label" not in batch
    np.testing.assert_allclose(batch["image"], 0.0)
    (eval_batch,) = make_eval_source(config).batches(8)
    np.testing.assert_allclose(eval_batch["image"], -1.0)


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"images": np.zeros((2, 4, 4), np.uint8)}, "no 'image' array; it has \\['images'\\]"),
        ({"image": np.zeros((2, 4), np.uint8)}, "must be \\[N, H, W\\]"),
        ({"image": np.zeros((2, 4, 4), np.uint8), "label": np.zeros(3)}, "'label' must have"),
        ({"image": np.zeros((2, 4, 4), np.int64)}, "uint8 or float"),
        ({"image": np.zeros((2, 4, 4)), "label_eval": np.zeros(2)}, "no 'image_eval'"),
    ],
)
def test_npz_errors(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=message):
        check_data_config(cfg(name="npz", path=str(tmp_path / "bad.npz")))


# --- tensorflow-datasets (mocked: no TensorFlow, no download) -------------------------------


def test_tfds_cifar10_through_make_source_without_tensorflow():
    tfds = pytest.importorskip("tensorflow_datasets")
    config = cfg(name="cifar10", image_size=16, random_flip=True)
    with tfds.testing.mock_data(num_examples=20):
        check_data_config(config)
        train = make_source(config, seed=0, examples_per_step=8, process_index=1, process_count=2)
        batch = train.batch(3)
        evals = make_eval_source(config)
        assert [len(b["label"]) for b in evals.batches(8)] == [8, 8, 4]
    assert train.num_examples == 20 and train.num_classes == 10
    assert batch["image"].shape == (4, 16, 16, 3) and batch["image"].dtype == np.float32
    assert batch["label"].dtype == np.int32 and set(batch["label"]) <= set(range(10))
    assert -1.0 <= batch["image"].min() and batch["image"].max() <= 1.0


def test_tfds_unknown_name_is_a_clear_error():
    with pytest.raises(
        ValueError, match="bundled datasets are digits, shapes.*tensorflow-datasets"
    ):
        check_data_config(cfg(name="no_such_dataset_xyz"))


def test_tfds_unprepared_dataset_is_not_downloaded(tmp_path):
    with pytest.raises(ValueError, match="not prepared in .*tfds build cifar10"):
        check_data_config(cfg(name="cifar10", path=str(tmp_path)))
    assert not any(p.is_file() for p in tmp_path.rglob("*"))  # nothing fetched or written
