"""File-backed sources: image folders, npz files and tensorflow-datasets (mocked, no TF)."""

import io
import logging

import ml_collections
import numpy as np
import pytest
from PIL import Image

from zoo.data import check_data_config, image_folder, make_eval_source, make_source


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


def encoded(fmt: str, size=(16, 12), seed=0) -> bytes:
    """A noise image encoded as PNG or JPEG (noise, so no cut lands in a run of padding)."""
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def write_bad_folder(folder):
    """4 good images and 3 bad ones: a truncated PNG, a truncated JPEG and a non-image."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(4):
        (folder / f"good{i}.png").write_bytes(encoded("PNG", seed=i))
    png, jpeg = encoded("PNG", seed=9), encoded("JPEG", seed=9)
    (folder / "cut.png").write_bytes(png[: len(png) // 2])
    (folder / "cut.jpg").write_bytes(jpeg[: len(jpeg) - 2])  # only the end-of-image marker lost
    (folder / "text.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    return ["cut.jpg", "cut.png", "text.png"]


def test_image_folder_names_every_undecodable_file_before_training(tmp_path):
    bad = write_bad_folder(tmp_path)
    config = cfg(name="image_folder", path=str(tmp_path))
    with pytest.raises(ValueError, match="3 of 7 image files cannot be decoded") as error:
        check_data_config(config)  # before anything compiles, not when a step reaches the file
    named = [line.split(": ")[0].strip() for line in str(error.value).splitlines()[1:]]
    assert named == [str(tmp_path / name) for name in bad]  # every bad file, no good one
    with pytest.raises(ValueError, match="cut.jpg"):
        make_source(config, seed=0, examples_per_step=2)


def test_image_folder_skips_bad_images_with_a_warning(tmp_path, caplog):
    write_bad_folder(tmp_path)
    config = cfg(name="image_folder", path=str(tmp_path), eval_fraction=0.25, skip_bad_images=True)
    with caplog.at_level(logging.WARNING, logger="zoo.data.image_folder"):
        check_data_config(config)
        train = make_source(config, seed=0, examples_per_step=3)
        evals = make_eval_source(config)
    assert (train.num_examples, evals.num_examples) == (3, 1)  # the 4 good files, split 3 + 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("skipping 3 of 7 undecodable")
    for step in range(2):  # a whole epoch decodes
        assert train.batch(step)["image"].shape == (3, 8, 8, 3)
    with pytest.raises(ValueError, match="skip_bad_images must be a bool"):
        check_data_config(cfg(name="image_folder", path=str(tmp_path), skip_bad_images=1))


def test_image_folder_decodes_each_file_once_per_run(tmp_path, monkeypatch):
    write_images(tmp_path, 5, "png", (1, 2, 3))
    calls = []
    decode = image_folder._decode_error
    monkeypatch.setattr(image_folder, "_decode_error", lambda p: calls.append(p) or decode(p))
    config = cfg(name="image_folder", path=str(tmp_path), eval_fraction=0.2)
    check_data_config(config)
    make_source(config, seed=0, examples_per_step=4)
    make_eval_source(config)
    assert sorted(calls) == sorted(str(p) for p in tmp_path.iterdir())
    write_images(tmp_path, 1, "png", (9, 9, 9), size=(13, 10))  # rewritten: decoded again
    check_data_config(config)
    assert calls[-1] == str(tmp_path / "00.png") and len(calls) == 6


def test_sixteen_bit_grey_png_is_scaled_by_its_full_range(tmp_path):
    values = np.linspace(0, 65535, 16).astype(np.uint16).reshape(4, 4)  # 0, 4369, ..., 65535
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode in ("I;16", "I")
    for channels in (1, 3):
        config = cfg(
            name="image_folder",
            path=str(tmp_path),
            image_size=4,
            eval_fraction=0.0,
            channels=channels,
        )
        source = make_source(config, seed=0, examples_per_step=1)
        expect = (values.astype(np.float64) / 65535 * 2 - 1)[..., None].repeat(channels, -1)
        np.testing.assert_allclose(source.batch(0)["image"][0], expect, atol=1e-6)


RGBA_PIXELS = np.array(
    [[[255, 0, 0, 128], [0, 0, 255, 255]], [[0, 255, 0, 0], [40, 80, 120, 64]]], np.uint8
)


def over(background, pixels=RGBA_PIXELS):
    """Straight alpha over a solid colour in float64, mapped to [-1, 1]."""
    alpha = pixels[..., 3:] / 255.0
    blend = pixels[..., :3] / 255.0 * alpha + np.asarray(background) / 255.0 * (1 - alpha)
    return blend * 2 - 1


@pytest.mark.parametrize("background", [None, (0, 0, 0), (10, 200, 30)])
def test_transparent_png_is_composited_over_the_background(tmp_path, background):
    Image.fromarray(RGBA_PIXELS, "RGBA").save(tmp_path / "rgba.png")
    config = cfg(name="image_folder", path=str(tmp_path), image_size=2, eval_fraction=0.0)
    if background is not None:
        config.background = background
    image = make_source(config, seed=0, examples_per_step=1).batch(0)["image"][0]
    expect = over(background or (255, 255, 255))
    np.testing.assert_allclose(image, expect, atol=1e-6)
    assert np.allclose(image[1, 0], np.asarray(background or (255, 255, 255)) / 127.5 - 1)


def test_grey_alpha_and_palette_transparency_are_composited(tmp_path):
    grey = np.array([[[200, 255], [100, 0]], [[0, 128], [255, 255]]], np.uint8)  # L, A
    Image.fromarray(grey, "LA").save(tmp_path / "a.png")
    palette = Image.new("P", (2, 2))
    palette.putpalette([0, 0, 0, 255, 0, 0])  # index 0 black, 1 red
    palette.putdata([1, 0, 0, 1])
    palette.save(tmp_path / "b.png", transparency=0)  # index 0 fully transparent (tRNS)
    config = cfg(
        name="image_folder",
        path=str(tmp_path),
        image_size=2,
        eval_fraction=0.0,
        background=(0, 0, 255),
    )
    batch = make_source(config, seed=0, examples_per_step=2).batch(0)
    by_red = {float(x[0, 0, 0]): x for x in batch["image"]}
    rgba = np.concatenate([grey[..., :1].repeat(3, -1), grey[..., 1:]], -1)
    np.testing.assert_allclose(by_red[min(by_red)], over((0, 0, 255), rgba), atol=1e-6)
    red, blue = [1.0, -1.0, -1.0], [-1.0, -1.0, 1.0]
    np.testing.assert_array_equal(by_red[1.0], [[red, blue], [blue, red]])
    config.background = (0, 0, 256)
    with pytest.raises(ValueError, match="background must be an RGB triple"):
        check_data_config(config)


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


@pytest.mark.parametrize(
    "key, index, value, what",
    [("image", (12, 3, 4, 0), np.nan, "NaN"), ("image_eval", (0, 1, 2, 0), -np.inf, "-Inf")],
)
def test_npz_nan_or_inf_is_named_with_its_index_when_the_split_opens(
    tmp_path, key, index, value, what
):
    arrays = {"image": np.full((16, 6, 6, 1), 0.5, np.float32)}
    if key == "image_eval":
        arrays["image_eval"] = np.zeros((2, 6, 6, 1))
    arrays[key][index] = value
    arrays[key][(index[0] + 1, *index[1:])] = np.nan  # a later bad value is not the one named
    path = str(tmp_path / "x.npz")
    np.savez(path, **arrays)
    config = cfg(name="npz", path=path, image_size=6)
    # Without image_eval the whole file is checked, so the index is the file's row 12.
    opening = make_source if key == "image" else make_eval_source
    kwargs = {"seed": 0, "examples_per_step": 4} if key == "image" else {}
    message = f"npz {path!r}: array {key!r} holds {what} at index {index}"
    with pytest.raises(ValueError) as error:
        opening(config, **kwargs)
    assert str(error.value) == message


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
    with pytest.raises(ValueError, match="not prepared in") as error:
        check_data_config(cfg(name="cifar10", path=str(tmp_path)))
    assert not any(p.is_file() for p in tmp_path.rglob("*"))  # nothing fetched or written
    # The exact command, with data.path as the data_dir (flags of tfds 4.9.10's `tfds build`).
    lines = str(error.value).splitlines()
    assert lines[-2:] == [
        "    pip install tensorflow mlcroissant",
        f"    tfds build cifar10 --file_format=array_record --data_dir={tmp_path}",
    ]


def test_tfds_unknown_split_lists_the_prepared_splits(monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    array_record = tfds.core.file_adapters.FileFormat.ARRAY_RECORD

    def unknown(self, split):
        raise ValueError(f"Unknown split {split!r}")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "is_prepared", lambda self: True)
    monkeypatch.setattr(tfds.core.DatasetBuilder, "as_data_source", unknown)
    monkeypatch.setattr(tfds.core.DatasetInfo, "file_format", property(lambda self: array_record))
    with pytest.raises(ValueError, match="cannot open split 'valid'.*set data.train_split"):
        check_data_config(cfg(name="cifar10", train_split="valid"))


def test_tfds_dataset_prepared_without_random_access_gives_the_rebuild_command(
    tmp_path, monkeypatch
):
    tfds = pytest.importorskip("tensorflow_datasets")

    def tfrecord_only(self, split):  # what tfds raises for a dataset prepared as tfrecord
        raise NotImplementedError("Random access data source for file format FileFormat.TFRECORD")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "is_prepared", lambda self: True)
    monkeypatch.setattr(tfds.core.DatasetBuilder, "as_data_source", tfrecord_only)
    with pytest.raises(ValueError, match="prepared as tfrecord") as error:
        check_data_config(cfg(name="cifar10", path=str(tmp_path / "d")))
    command = f"tfds build cifar10 --file_format=array_record --data_dir={tmp_path / 'd'}"
    assert str(error.value).splitlines()[-1] == f"    {command} --overwrite"
