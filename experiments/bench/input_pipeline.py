"""Input throughput: images/s of the train stream (`zoo.data.stream`) by `data.workers`.

    python experiments/bench/input_pipeline.py --json experiments/bench/results/cpu2_input.json
    python experiments/bench/input_pipeline.py --images 64 --batch 16 --steps 8 --repeats 1  # smoke

Writes, into a temporary folder, `--images` random smooth RGB images of `--source_size`
pixels (low-resolution noise upsampled bicubically, so they compress like photos rather than
like noise) as JPEG (quality 90) in 8 class subfolders, and the same images as a
tensorflow-datasets dataset in array_record format (built in-process by a small builder:
nothing is downloaded; without TensorFlow the images are JPEG-encoded with PIL). Then, for
each source (`image_folder`, tfds) and each `--workers` count, it times the stream the train
loop reads, `make_stream(config.data, source, start, stop)` with `data.workers` set: 0 loads
each step in this process, W > 0 in W spawned worker processes, each opening its own source
(`zoo.data.pipeline.StepLoader`). Every step: decode, centre-crop, resize, scale to [-1, 1],
flip and stack, at `data.image_size = --size`, `random_flip` on, `--batch` examples.

A point is the median of `--repeats` runs of `--steps` steps, each on a new stream (so new
workers), after one untimed warm-up run without workers (imports, the OS page cache: the
numbers are decode-bound, not disk-bound). Each run reports its time to the first batch
(worker start-up: new interpreters importing zoo and grain, then opening the source) and its
rate over the second half of its steps, once the batches the first workers buffered while
the others started are drained.

The table compares each rate with the GPU train steps at 64x64 in
`results/h100_gan_step.json` (one H100, batch 64): a ratio >= 1 means the input keeps up
with that step on this many cores. Prints one JSON object on stdout (the table and progress
on stderr); `--json PATH` also writes it there.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import ml_collections
import numpy as np
import PIL
from PIL import Image, features

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from zoo.data import check_data_config, make_source, make_stream  # noqa: E402

CLASSES = 8
TFDS_NAME = "zoo_bench_images"  # the builder below, registered by defining it
GPU_STEPS = ROOT / "experiments" / "bench" / "results" / "h100_gan_step.json"


def smooth_image(rng: np.random.Generator, size: int) -> Image.Image:
    """`[size, size, 3]` uint8: 8x8 noise upsampled bicubically, plus mild grain."""
    coarse = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    smooth = np.asarray(coarse.resize((size, size), Image.Resampling.BICUBIC), np.int16)
    grain = rng.integers(-8, 9, smooth.shape, dtype=np.int16)
    return Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8))


def images(count: int, size: int, seed: int = 0):
    """(image, label) pairs, the same for both sources."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        yield smooth_image(rng, size), i % CLASSES


def write_folder(root: Path, count: int, size: int) -> None:
    for i, (image, label) in enumerate(images(count, size)):
        folder = root / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{i:06d}.jpg", quality=90)


def jpeg_bytes(image) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@contextmanager
def pil_image_encoding(tfds):
    """tfds encodes images with TensorFlow; without it, encode them with PIL instead."""
    try:
        import tensorflow  # noqa: F401

        yield
        return
    except ImportError:
        pass
    original = tfds.features.Image.encode_example
    tfds.features.Image.encode_example = lambda self, image: jpeg_bytes(image)
    try:
        yield
    finally:
        tfds.features.Image.encode_example = original


def write_tfds(data_dir: Path, count: int, size: int) -> None:
    """`TFDS_NAME` in array_record format under `data_dir`: `count` train, 16 test images."""
    import tensorflow_datasets as tfds

    class ZooBenchImages(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            image = tfds.features.Image(shape=(size, size, 3), encoding_format="jpeg")
            labels = tfds.features.ClassLabel(num_classes=CLASSES)
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict({"image": image, "label": labels}),
            )

        def _split_generators(self, dl_manager):
            return {
                "train": self._generate_examples(count, 0),
                "test": self._generate_examples(16, 1),
            }

        def _generate_examples(self, n, seed):
            for i, (image, label) in enumerate(images(n, size, seed)):
                yield i, {"image": np.asarray(image), "label": label}

    with pil_image_encoding(tfds):
        builder = ZooBenchImages(data_dir=str(data_dir), file_format="array_record")
        builder.download_and_prepare()


def time_stream(cfg, source, start: int, steps: int) -> tuple[float, float]:
    """The engine's stream over [start, start + steps) at `cfg.workers`: (seconds from opening
    it to the first batch, images/s over the second half of the steps)."""
    t0 = time.perf_counter()
    arrivals, sizes = [], []
    with make_stream(cfg, source, start=start, stop=start + steps) as stream:
        for batch in stream:
            arrivals.append(time.perf_counter())
            sizes.append(len(batch["image"]))
            del batch  # with workers, batches come in shared memory: release each at once
    half = len(arrivals) // 2
    return arrivals[0] - t0, sum(sizes[half + 1 :]) / (arrivals[-1] - arrivals[half])


def bench_source(name: str, cfg, args) -> dict:
    check_data_config(cfg)
    source = make_source(cfg, seed=0, examples_per_step=args.batch)
    out = {"num_examples": source.num_examples, "workers": {}}
    for step in range(args.warmup):  # untimed, in this process
        source.batch(step)
    for workers in args.workers:
        cfg.workers = workers
        runs = [
            time_stream(cfg, source, args.warmup + r * args.steps, args.steps)
            for r in range(args.repeats)
        ]
        first, rates = [r[0] for r in runs], [r[1] for r in runs]
        rate = statistics.median(rates)
        out["workers"][workers] = {"images_per_s": rate, "rates": rates, "first_batch_s": first}
        print(
            f"{name} workers={workers}: {rate:,.0f} images/s, first batch after "
            f"{statistics.median(first):.2f} s",
            file=sys.stderr,
            flush=True,
        )
    return out


def gpu_steps() -> dict[str, float]:
    """images/s of the train steps in `GPU_STEPS` at 64x64, by model."""
    if not GPU_STEPS.exists():
        return {}
    rows = json.loads(GPU_STEPS.read_text())
    return {f"{r['model']} (H100)": r["images_per_s"] for r in rows if r.get("image_size") == 64}


def table(result: dict) -> str:
    steps = result["gpu_train_images_per_s"]
    head = ["source", "workers", "images/s", "first batch (s)"] + [f"/ {k}" for k in steps]
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for name, out in result["sources"].items():
        for workers, point in out["workers"].items():
            rate = point["images_per_s"]
            cells = [name, str(workers), f"{rate:,.0f}"]
            cells += [f"{statistics.median(point['first_batch_s']):.2f}"]
            cells += [f"{rate / v:.2f}" for v in steps.values()]
            lines.append(" | ".join(cells))
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=2048, help="images written per source")
    p.add_argument("--source_size", type=int, default=64, help="pixels of the written images")
    p.add_argument("--size", type=int, default=64, help="data.image_size")
    p.add_argument("--batch", type=int, default=256, help="examples per step")
    p.add_argument("--workers", default="0,1,2,4", help="data.workers values (processes)")
    p.add_argument("--steps", type=int, default=48, help="steps per timed run")
    p.add_argument("--warmup", type=int, default=2, help="steps of the untimed warm-up run")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per point (median)")
    p.add_argument("--sources", default="folder,tfds", help="folder, tfds or both")
    p.add_argument("--json", default="", help="also write the JSON here")
    args = p.parse_args(argv)
    args.workers = [int(w) for w in args.workers.split(",") if w]
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"warning: load average {load:.2f}: is something else running?", file=sys.stderr)
    result = {
        "bench": "input_pipeline",
        "args": vars(args),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": load,
        "python": platform.python_version(),
        "pillow": PIL.__version__,
        "libjpeg_turbo": bool(features.check_feature("libjpeg_turbo")),
        "numpy": np.__version__,
        "gpu_train_images_per_s": gpu_steps(),
        "sources": {},
    }
    base = dict(image_size=args.size, random_flip=True)
    with tempfile.TemporaryDirectory() as tmp:
        sources = args.sources.split(",")
        if "folder" in sources:
            write_folder(Path(tmp) / "folder", args.images, args.source_size)
            cfg = dict(name="image_folder", path=f"{tmp}/folder", eval_fraction=0.0, **base)
            result["sources"]["image_folder (JPEG)"] = bench_source(
                "folder", ml_collections.ConfigDict(cfg), args
            )
        if "tfds" in sources:
            write_tfds(Path(tmp) / "tfds", args.images, args.source_size)
            cfg = dict(name=TFDS_NAME, path=f"{tmp}/tfds", **base)
            result["sources"]["tfds (array_record, JPEG)"] = bench_source(
                "tfds", ml_collections.ConfigDict(cfg), args
            )
    print(table(result), file=sys.stderr)
    text = json.dumps(result, indent=1)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
