"""Image grids, metrics.jsonl and TensorBoard events read back without TensorFlow."""

from __future__ import annotations

import glob
import io
import json
import math
import os
import sys

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from zoo.engine import writers


def _accumulator(workdir):
    acc = EventAccumulator(os.path.join(workdir, writers.TB_DIR), size_guidance={"images": 0})
    acc.Reload()
    return acc


@pytest.mark.parametrize("channels", [1, 3])
def test_image_grid_shape_and_values(channels):
    images = np.zeros((10, 8, 6, channels), np.float32)
    images[0], images[1] = -1.0, 1.0
    grid = writers.image_grid(images, pad=1)
    # ncol = ceil(sqrt(10)) = 4, nrow = 3.
    assert grid.shape == (3 * 9 + 1, 4 * 7 + 1, channels)
    assert grid.dtype == np.uint8
    assert (grid[1:9, 1:7] == 0).all()  # image 0: -1 -> 0
    assert (grid[1:9, 8:14] == 255).all()  # image 1: 1 -> 255
    assert (grid[0] == 128).all()  # border


def test_image_grid_clips_and_survives_nan():
    images = np.array([np.nan, -3.0, 3.0, 0.0], np.float32).reshape(4, 1, 1, 1)
    grid = writers.image_grid(images, ncol=4, pad=0)
    assert grid[0, :, 0].tolist() == [128, 0, 255, 128]


def test_save_image_grid_upscales_small_images(tmp_path):
    images = np.linspace(-1, 1, 10 * 8 * 8).reshape(10, 8, 8, 1)
    path = str(tmp_path / "sub" / "grid.png")
    grid = writers.save_image_grid(path, images)
    with Image.open(path) as png:
        assert png.mode == "L" and png.size == (grid.shape[1], grid.shape[0])
        np.testing.assert_array_equal(np.asarray(png), grid[..., 0])
    assert grid.shape[1] >= 256
    assert writers.save_image_grid(path, images, scale=1).shape == (28, 37, 1)


def test_metric_writer_roundtrip(tmp_path):
    workdir = str(tmp_path)
    grid = writers.image_grid(np.random.default_rng(0).uniform(-1, 1, (4, 5, 5, 3)))
    with writers.MetricWriter(workdir, enabled=True) as writer:
        writer.scalars(1, {"loss": np.float32(0.5), "lr": 1e-3})
        writer.scalars(2, {"loss": 0.25, "nan": float("nan")})
        writer.images(2, "samples", grid)
        writer.text(2, "config", "lr: 0.001")
    assert "tensorflow" not in sys.modules

    records = writers.read_metrics(workdir)
    assert records[0] == {"step": 1, "loss": 0.5, "lr": 1e-3}
    assert records[1]["step"] == 2 and math.isnan(records[1]["nan"])

    acc = _accumulator(workdir)
    assert [(e.step, e.value) for e in acc.Scalars("loss")] == [(1, 0.5), (2, 0.25)]
    (image,) = acc.Images("samples")
    assert (image.step, image.height, image.width) == (2, *grid.shape[:2])
    decoded = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)))
    np.testing.assert_array_equal(decoded, grid)
    assert "config" in acc.Tags()["tensors"]


def test_metric_writer_resume_appends(tmp_path):
    workdir = str(tmp_path)
    with writers.MetricWriter(workdir, enabled=True) as writer:
        for step in (1, 2, 3):
            writer.scalars(step, {"loss": float(step)})
    # Resumed from a checkpoint after step 2: the first run's step 3 is stale.
    with writers.MetricWriter(workdir, enabled=True, start_step=3) as writer:
        writer.scalars(3, {"loss": 30.0})
    assert [r["step"] for r in writers.read_metrics(workdir)] == [1, 2, 3, 3]
    assert len(glob.glob(os.path.join(workdir, writers.TB_DIR, "events.*"))) == 2
    assert [(e.step, e.value) for e in _accumulator(workdir).Scalars("loss")] == [
        (1, 1.0),
        (2, 2.0),
        (3, 30.0),
    ]


def test_read_metrics_skips_truncated_line(tmp_path):
    with open(tmp_path / writers.METRICS_FILE, "w") as f:
        f.write(json.dumps({"step": 1, "loss": 1.0}) + '\n{"step": 2, "lo')
    assert writers.read_metrics(str(tmp_path)) == [{"step": 1, "loss": 1.0}]


def test_disabled_writer_writes_nothing(tmp_path):
    workdir = tmp_path / "run"
    writer = writers.MetricWriter(str(workdir), enabled=False)
    writer.scalars(1, {"loss": 1.0})
    writer.close()
    assert not workdir.exists()


def test_errors_are_clear(tmp_path):
    writer = writers.MetricWriter(str(tmp_path), enabled=True)
    with pytest.raises(ValueError, match="'x' is not a scalar"):
        writer.scalars(1, {"x": np.zeros(3)})
    with pytest.raises(TypeError, match="uint8"):
        writer.images(1, "bad", np.zeros((4, 4, 3), np.float32))
    writer.close()
    with pytest.raises(RuntimeError, match="closed"):
        writer.scalars(2, {"loss": 1.0})
