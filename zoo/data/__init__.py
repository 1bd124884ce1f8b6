"""Input pipeline: numpy batches in an order fixed by (seed, step).

    source = make_source(config.data, seed=0, examples_per_step=128)
    batch = source.batch(step)  # {"image": [128, H, W, C] float32 in [-1, 1], "label": [128]}
    with make_stream(config.data, source, start=step, stop=steps) as stream:
        for batch in stream: ...  # source.batch(step), ..., data.workers processes

Datasets: `digits`, `shapes`, `ring` (bundled), `image_folder`, `npz` (image files), `arrays`
(any named arrays, passed through unchanged: `write_arrays` writes them), or any
tensorflow-datasets name (read without TensorFlow, never downloaded at run time).
"""

from zoo.data.arrays import write_arrays
from zoo.data.pipeline import (
    BUNDLED,
    check_data_config,
    make_eval_source,
    make_source,
    make_stream,
)
from zoo.data.sources import EvalSource, TrainSource
from zoo.data.stream import TrainStream

__all__ = [
    "BUNDLED",
    "EvalSource",
    "TrainSource",
    "TrainStream",
    "check_data_config",
    "make_eval_source",
    "make_source",
    "make_stream",
    "write_arrays",
]
