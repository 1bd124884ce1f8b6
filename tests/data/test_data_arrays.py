"""The `arrays` dataset: encoded data (token ids, latents, embeddings) passed through unchanged."""

import os

import ml_collections
import numpy as np
import pytest

from zoo.data import check_data_config, make_eval_source, make_source, order, ring, write_arrays
from zoo.data.sources import TrainSource

N = 20


def cfg(path, **kwargs) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {"name": "arrays", "path": str(path), "image_size": 8, **kwargs}
    )


def encoded(n=N, seed=0) -> dict[str, np.ndarray]:
    """What a tokenizer, an autoencoder and a text encoder would have written."""
    rng = np.random.default_rng(seed)
    return {
        "tokens": rng.integers(0, 1024, (n, 4, 4)).astype(np.int32),
        "latent": rng.normal(size=(n, 2, 2, 3)).astype(np.float16),
        "embedding": rng.normal(size=(n, 8)).astype(np.float32),
        "keep": rng.random(n) < 0.5,
        "label": rng.integers(0, 5, n),
    }


def assert_rows(batch, arrays, rows):
    assert set(batch) == set(arrays)
    for key, array in arrays.items():
        assert batch[key].dtype == array.dtype, key
        np.testing.assert_array_equal(batch[key], array[rows], err_msg=key)


def test_round_trip_through_the_holdout_split(tmp_path):
    arrays = encoded()
    np.savez(tmp_path / "enc.npz", **arrays)  # any writer: np.savez works as well
    config = cfg(tmp_path / "enc.npz", eval_fraction=0.25, dataset_seed=3)
    check_data_config(config)
    train = make_source(config, seed=7, examples_per_step=6)
    evals = make_eval_source(config)
    train_rows, eval_rows = order.holdout_split(N, 5, seed=3)
    assert (train.num_examples, evals.num_examples, train.num_classes) == (15, 5, 5)
    assert train.element_spec == {k: (v.shape[1:], v.dtype) for k, v in arrays.items()}
    for step in (0, 1, 2, 9):  # step 2 straddles the first epoch boundary
        g = np.arange(step * 6, step * 6 + 6)  # global positions; epoch e = g // 15
        within = [order.epoch_permutation(7, e, 15)[w] for e, w in zip(*divmod(g, 15), strict=True)]
        assert_rows(train.batch(step), arrays, train_rows[within])
    (batch,) = evals.batches(8)
    assert_rows(batch, arrays, eval_rows)


def test_round_trip_of_eval_arrays_written_by_write_arrays(tmp_path):
    arrays, held_out = encoded(), encoded(n=3, seed=1)
    path = tmp_path / "new" / "enc.npz"
    write_arrays(str(path), arrays, held_out)
    assert os.listdir(path.parent) == ["enc.npz"]  # no temporary file left behind
    config = cfg(path)
    train = make_source(config, seed=0, examples_per_step=N)
    assert_rows(train.batch(0), arrays, train.indices(0))
    assert sorted(train.indices(0)) == list(range(N))
    assert_rows(next(make_eval_source(config).batches(3)), held_out, np.arange(3))


def test_write_arrays_replaces_atomically_and_refuses_nan(tmp_path):
    path = str(tmp_path / "enc.npz")
    write_arrays(path, {"x": np.zeros((4, 2), np.float32)})
    write_arrays(path, {"x": np.ones((5, 2), np.float32)})  # replaces the old file
    latent = np.ones((6, 2, 2), np.float32)
    latent[4, 1, 0] = np.inf
    with pytest.raises(ValueError, match=r"array 'z' holds Inf at index \(4, 1, 0\)"):
        write_arrays(path, {"z": latent})
    with pytest.raises(ValueError, match="must have the names of arrays"):
        write_arrays(path, {"x": np.ones(3)}, {"y": np.ones(1)})
    with pytest.raises(ValueError, match="'_eval' end"):
        write_arrays(path, {"x_eval": np.ones(3)})
    assert os.listdir(tmp_path) == ["enc.npz"]  # failed writes left the file and no debris
    with np.load(path) as data:
        np.testing.assert_array_equal(data["x"], np.ones((5, 2)))


def test_nan_is_named_with_its_file_index_when_the_split_opens(tmp_path):
    arrays = encoded()
    arrays["latent"][13, 1, 0, 2] = np.nan
    np.savez(tmp_path / "enc.npz", **arrays)
    config = cfg(tmp_path / "enc.npz")
    check_data_config(config)  # headers only: the values are read when a split opens
    message = f"arrays {str(tmp_path / 'enc.npz')!r}: array 'latent' holds NaN at index"
    for opening in (
        lambda: make_source(config, seed=0, examples_per_step=2),
        lambda: make_eval_source(config),
    ):
        with pytest.raises(ValueError) as error:
            opening()
        assert str(error.value) == f"{message} (13, 1, 0, 2)"


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({}, "holds no arrays"),
        ({"a": np.zeros((3, 2)), "b": np.zeros(4)}, "array 'b' has 4 rows but 'a' has 3"),
        ({"a": np.zeros(3), "a_eval": np.zeros(2), "b": np.zeros(3)}, "'b_eval' is missing"),
        (
            {"a": np.zeros((3, 2)), "a_eval": np.zeros((2, 3))},
            r"'a_eval' has rows of shape \(3,\) float64 but 'a' has \(2,\)",
        ),
        (
            {"a": np.zeros(3), "a_eval": np.zeros(2, np.float32)},
            "'a_eval' has rows of shape \\(\\) float32 but 'a' has \\(\\) float64",
        ),
        ({"a": np.zeros(3), "b_eval": np.zeros(1)}, "'b_eval' has no train array"),
        ({"a": np.zeros(())}, "'a' is a scalar"),
        ({"a": np.zeros((0, 2))}, "'a' has no rows"),
        ({"label": np.zeros(3)}, "'label' must be \\[N\\] integer"),
    ],
)
def test_layout_errors_from_headers(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=message):
        check_data_config(cfg(tmp_path / "bad.npz"))


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match="arrays file '/nonexistent/x.npz' does not exist"):
        check_data_config(cfg("/nonexistent/x.npz"))
    np.savez(tmp_path / "tok.npz", tokens=np.zeros((4, 3), np.int32))
    with pytest.raises(ValueError, match="random_flip needs an 'image' array"):
        check_data_config(cfg(tmp_path / "tok.npz", random_flip=True))
    np.savez(tmp_path / "lab.npz", x=np.zeros(4), label=np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\), got \[0, 3\]"):
        make_source(cfg(tmp_path / "lab.npz", num_classes=3), seed=0, examples_per_step=2)


def test_random_flip_mirrors_only_an_image_field(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (N, 3, 4, 2), dtype=np.uint8)
    tokens = rng.integers(0, 9, (N, 3, 4)).astype(np.int32)
    np.savez(tmp_path / "img.npz", image=image, tokens=tokens)
    config = cfg(tmp_path / "img.npz", random_flip=True, eval_fraction=0.0)
    source = make_source(config, seed=2, examples_per_step=8)
    batch, rows = source.batch(1), source.indices(1)
    flips = order.coin_flips(2, source.positions(1))
    assert 0 < flips.sum() < 8
    expect = np.where(flips[:, None, None, None], image[rows][:, :, ::-1], image[rows])
    np.testing.assert_array_equal(batch["image"], expect)
    np.testing.assert_array_equal(batch["tokens"], tokens[rows])  # same shape, not flipped


def test_random_flip_leaves_datasets_without_an_image_alone():
    points = ring.RingExamples(64, num_modes=8, radius=2.0, std=0.02, seed=0, train=True)
    source = TrainSource(points, seed=0, examples_per_step=16, random_flip=True)
    np.testing.assert_array_equal(source.batch(3)["point"], points.load(source.indices(3))["point"])


def test_every_numeric_field_reaches_the_device_batch(tmp_path):
    from zoo.engine.loop import numeric  # what Trainer.host_batch keeps of a batch

    arrays = {**encoded(), "name": np.array([f"row{i}" for i in range(N)])}
    np.savez(tmp_path / "enc.npz", **arrays)
    batch = make_source(cfg(tmp_path / "enc.npz"), seed=0, examples_per_step=4).batch(0)
    assert batch["name"].dtype.kind == "U"  # strings stay on the host, like captions
    kept = numeric(batch)
    assert set(kept) == set(arrays) - {"name"}
    assert {k: (v.dtype, v.shape[1:]) for k, v in kept.items()} == {
        k: (v.dtype, v.shape[1:]) for k, v in arrays.items() if k != "name"
    }
