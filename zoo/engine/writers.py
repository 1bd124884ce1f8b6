"""What a training run writes: metrics as JSONL, TensorBoard summaries, image grids.

Layout of a workdir::

    workdir/metrics.jsonl   one JSON object per ``scalars`` call: {"step": 100, "loss": 0.1}
    workdir/tb/events.*     TensorBoard event files (scalars, images, text)

The event files live in ``tb/`` so they sit apart from checkpoints; both
``tensorboard --logdir workdir`` and ``--logdir runs/`` (many workdirs) find them.
They are written with the ``tensorboard`` package's own pure-Python writer and
protos, so neither writing nor reading needs TensorFlow.
"""

from __future__ import annotations

import io
import json
import math
import os
import time

import numpy as np
from PIL import Image
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
from tensorboard.plugins.text import metadata as text_metadata
from tensorboard.summary.writer.event_file_writer import EventFileWriter

METRICS_FILE = "metrics.jsonl"
TB_DIR = "tb"


def image_grid(images, ncol: int | None = None, pad: int = 1, pad_value: int = 128) -> np.ndarray:
    """Tile images into one picture.

    Args:
      images: ``[N, H, W, C]`` float in [-1, 1], C = 1 or 3 (numpy or jax).
        Values outside the range are clipped; NaN shows as mid grey, so a
        diverged model still gets a picture instead of a crash.
      ncol: images per row; default ``ceil(sqrt(N))``.
      pad: border in pixels around and between images.
      pad_value: border grey level in 0..255; mid grey stays visible on both the
        black background of digits and the white one of most photos.

    Returns:
      ``[nrow * (H + pad) + pad, ncol * (W + pad) + pad, C]`` uint8, -1 -> 0, 1 -> 255.
    """
    x = np.asarray(images, dtype=np.float32)
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"images must be [N, H, W, C] with C = 1 or 3; got shape {x.shape}")
    n, h, w, c = x.shape
    ncol = min(ncol or math.ceil(math.sqrt(n)), n)
    nrow = math.ceil(n / ncol)
    x = np.nan_to_num(x, nan=0.0)
    pixels = np.rint((np.clip(x, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
    grid = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), pad_value, np.uint8)
    for i in range(n):
        top, left = pad + (i // ncol) * (h + pad), pad + (i % ncol) * (w + pad)
        grid[top : top + h, left : left + w] = pixels[i]
    return grid


def save_image_grid(
    path: str, images, ncol: int | None = None, scale: int | None = None, min_width: int = 256
) -> np.ndarray:
    """Write ``image_grid(images, ncol)`` as a PNG and return the uint8 grid written.

    Args:
      path: output file (``.png``); parent folders are created.
      images: ``[N, H, W, C]`` float in [-1, 1], C = 1 or 3.
      scale: integer nearest-neighbour upscaling of each image before tiling
        (the 1 px borders stay thin). Default: the smallest factor that makes
        the grid at least ``min_width`` pixels wide, since a grid of 8x8
        digits is unreadable at native size.
    """
    x = np.asarray(images, dtype=np.float32)
    if x.ndim != 4:
        raise ValueError(f"images must be [N, H, W, C]; got shape {x.shape}")
    if scale is None:
        ncol_eff = min(ncol or math.ceil(math.sqrt(x.shape[0])), x.shape[0])
        scale = max(1, math.ceil(min_width / (ncol_eff * x.shape[2])))
    if scale > 1:
        x = x.repeat(scale, axis=1).repeat(scale, axis=2)
    grid = image_grid(x, ncol)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(path)
    return grid


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a ``[H, W, C]`` (C = 1 or 3) or ``[H, W]`` uint8 image."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image (see image_grid); got dtype {image.dtype}")
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] != 3):
        raise ValueError(f"expected [H, W], [H, W, 1] or [H, W, 3]; got shape {image.shape}")
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def read_metrics(workdir: str) -> list[dict]:
    """The records of ``workdir/metrics.jsonl`` in file order.

    A resumed run appends, so a step can appear twice (the killed run's tail
    after its last checkpoint, then the rerun); a truncated last line (killed
    mid-write) is skipped.
    """
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.exists(path):
        return []
    records = []
    with open(path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


class MetricWriter:
    """Appends metrics to ``workdir/metrics.jsonl`` and TensorBoard events to ``workdir/tb/``.

    Args:
      workdir: the run's folder; created if missing.
      enabled: write anything at all. Default: only JAX process 0, so every
        process of a multi-host run can call the writer unconditionally.
      start_step: the first step a resumed run will log. A TensorBoard
        ``SessionLog.START`` event at this step makes TensorBoard hide earlier
        runs' events at steps >= start_step (the killed run's tail after its
        last checkpoint), so curves do not overlap. ``metrics.jsonl`` keeps
        both; see ``read_metrics``.

    Values go through ``float()``, which syncs with the device: call
    ``scalars`` every N steps, not every step.
    """

    def __init__(self, workdir: str, enabled: bool | None = None, start_step: int | None = None):
        if enabled is None:
            import jax  # only for the default, so the writer itself does not need jax

            enabled = jax.process_index() == 0
        self.workdir = workdir
        self.enabled = enabled
        self._jsonl = None
        self._events = None
        if not enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        # Append mode: a resumed run continues the same file.
        self._jsonl = open(os.path.join(workdir, METRICS_FILE), "a")
        # Each writer opens a new event file (time, host, pid and a counter in
        # the name); TensorBoard reads all files of the folder in order.
        self._events = EventFileWriter(os.path.join(workdir, TB_DIR), flush_secs=10)
        if start_step:
            start = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
            self._add(int(start_step), session_log=start)

    def _writing(self) -> bool:
        """False on disabled processes; raises once closed (a silent drop would hide a bug)."""
        if self.enabled and self._jsonl is None:
            raise RuntimeError(f"MetricWriter({self.workdir!r}) is closed")
        return self.enabled

    def _add(self, step: int, **fields) -> None:
        self._events.add_event(event_pb2.Event(wall_time=time.time(), step=step, **fields))

    def scalars(self, step: int, metrics: dict) -> None:
        """Write ``{name: scalar}`` at ``step`` to both sinks and flush.

        Scalars may be Python, numpy or jax numbers. Non-finite values are kept
        (JSON ``NaN``/``Infinity``, which Python's json reads back): a NaN loss
        is exactly what the log must show.
        """
        if not self._writing():
            return
        values = {}
        for name, value in metrics.items():
            array = np.asarray(value)
            if array.size != 1:
                raise ValueError(f"metric {name!r} is not a scalar: shape {array.shape}")
            values[name] = float(array.reshape(()))
        self._jsonl.write(json.dumps({"step": int(step), **values}) + "\n")
        # Flushed to the OS each call: a killed process keeps its metrics.
        self._jsonl.flush()
        summary = summary_pb2.Summary(
            value=[summary_pb2.Summary.Value(tag=k, simple_value=v) for k, v in values.items()]
        )
        self._add(int(step), summary=summary)
        self._events.flush()

    def images(self, step: int, name: str, image: np.ndarray) -> None:
        """Write one ``[H, W, C]`` uint8 image (e.g. from ``image_grid``) as a PNG summary."""
        if not self._writing():
            return
        image = np.asarray(image)
        png = encode_png(image)
        height, width = image.shape[:2]
        channels = 1 if image.ndim == 2 else image.shape[-1]
        proto = summary_pb2.Summary.Image(
            height=height, width=width, colorspace=channels, encoded_image_string=png
        )
        value = summary_pb2.Summary.Value(tag=name, image=proto)
        self._add(int(step), summary=summary_pb2.Summary(value=[value]))
        self._events.flush()

    def text(self, step: int, name: str, text: str) -> None:
        """Write a string (markdown in TensorBoard's Text tab), e.g. the config."""
        if not self._writing():
            return
        tensor = tensor_pb2.TensorProto(
            dtype=types_pb2.DT_STRING,
            string_val=[text.encode("utf-8")],
            tensor_shape=tensor_shape_pb2.TensorShapeProto(),
        )
        meta = text_metadata.create_summary_metadata(display_name=name, description="")
        value = summary_pb2.Summary.Value(tag=name, metadata=meta, tensor=tensor)
        self._add(int(step), summary=summary_pb2.Summary(value=[value]))
        self._events.flush()

    def flush(self) -> None:
        if self._writing():
            self._jsonl.flush()
            self._events.flush()

    def close(self) -> None:
        """Flush and close both sinks; later writes raise. Safe to call twice."""
        if self.enabled and self._jsonl is not None:
            self._jsonl.close()
            self._events.close()
            self._jsonl = self._events = None

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
