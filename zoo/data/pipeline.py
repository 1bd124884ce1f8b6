"""The entry points the engine calls: check the config, build the train source and stream, and
the eval source.

`data.name` picks the dataset: one of `BUNDLED`, or else a tensorflow-datasets name.
"""

import pickle
from types import ModuleType
from typing import Any

import ml_collections

from zoo.data import arrays, digits, image_folder, npz, options, ring, shapes, tfds_source
from zoo.data.scenes import blender, llff
from zoo.data.sources import Batch, EvalSource, Examples, TrainSource
from zoo.data.stream import TrainStream

BUNDLED: dict[str, ModuleType] = {
    "digits": digits,
    "shapes": shapes,
    "image_folder": image_folder,
    "npz": npz,
    "arrays": arrays,
    "ring": ring,
    "blender": blender,
    "llff": llff,
}


def check_data_config(data_cfg) -> None:
    """Validate `config.data` cheaply (listings and headers, no decoding); ValueError if bad.

    Called before anything compiles, so a typo costs seconds, not a compile.
    """
    name = options.name(data_cfg)
    options.image_size(data_cfg)
    options.random_flip(data_cfg)
    options.dataset_seed(data_cfg)
    options.background(data_cfg)
    options.workers(data_cfg)
    if name in BUNDLED:
        BUNDLED[name].check(data_cfg)
    else:
        tfds_source.check(data_cfg, bundled=tuple(BUNDLED))


def check_report(data_cfg) -> dict[str, Any]:
    """What checking `data_cfg` found in this process that opening its train split depends on,
    as plain data for `make_source(checked=...)`: `image_folder`'s undecodable files; `{}` for
    datasets whose check finds nothing that opening would not find again as cheaply."""
    report = getattr(BUNDLED.get(options.name(data_cfg)), "check_report", None)
    return {} if report is None else report(data_cfg)


def _open(data_cfg, train: bool, checked: dict[str, Any] | None = None) -> Examples:
    if checked is None:
        check_data_config(data_cfg)
    name = options.name(data_cfg)
    if name in BUNDLED:
        if checked:  # only from a dataset with a `check_report`
            return BUNDLED[name].open_split(data_cfg, train, checked=checked)
        return BUNDLED[name].open_split(data_cfg, train)
    return tfds_source.open_split(data_cfg, train, bundled=tuple(BUNDLED))


def make_source(
    data_cfg,
    *,
    seed: int,
    examples_per_step: int,
    process_index: int = 0,
    process_count: int = 1,
    checked: dict[str, Any] | None = None,
) -> TrainSource:
    """The training stream: `source.batch(step)` is this process's share of step `step`.

    Args:
      data_cfg: `config.data`.
      seed: fixes the epoch permutations and flips (not the data itself).
      examples_per_step: global batch size, split evenly over `process_count` processes.
      process_index, process_count: this process and how many read the stream.
      checked: `check_report(data_cfg)` of a process that checked `data_cfg` (a stream
        worker's parent): skip the check and take its findings, so no file is decoded twice.
    """
    return TrainSource(
        _open(data_cfg, train=True, checked=checked),
        seed=seed,
        examples_per_step=examples_per_step,
        process_index=process_index,
        process_count=process_count,
        random_flip=options.random_flip(data_cfg),
    )


def make_stream(data_cfg, source: TrainSource, *, start: int, stop: int) -> TrainStream:
    """`source.batch(step)` for steps [start, stop), loaded ahead by `data.workers` processes
    (`zoo.data.stream`); `source` must come from `make_source(data_cfg, ...)`."""
    workers = options.workers(data_cfg)
    load = StepLoader(data_cfg, source) if workers else source.batch
    return TrainStream(load, start=start, stop=stop, workers=workers)


class StepLoader:
    """`source.batch` for a stream's worker processes, which start empty (spawned).

    Pickles as plain data: `config.data` as a dict, `make_source`'s other arguments, and what
    the check found (`check_report`). Its first call, in a worker, opens the source with
    those, without checking again, and fails if the train split's size differs from the
    parent's (the data changed since the run started).
    """

    def __init__(self, data_cfg, source: TrainSource):
        self.data = data_cfg.to_dict()
        self.source_args = dict(
            seed=source.seed,
            examples_per_step=source.examples_per_step,
            process_index=source.process_index,
            process_count=source.process_count,
        )
        self.num_examples = source.num_examples
        self.checked = check_report(data_cfg)
        self._source: TrainSource | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_source": None}  # each process opens its own

    def __call__(self, step: int) -> Batch:
        if self._source is None:
            data_cfg = ml_collections.ConfigDict(self.data)
            source = make_source(data_cfg, checked=self.checked, **self.source_args)
            if source.num_examples != self.num_examples:
                raise RuntimeError(
                    f"dataset {options.name(data_cfg)!r}: a data.workers process opened "
                    f"{source.num_examples} training examples, the main process "
                    f"{self.num_examples}: did the data change since the run started?"
                )
            self._source = source
        try:
            return self._source.batch(step)
        except Exception as error:
            where = f"(loading train step {step} in a data.workers process)"
            try:  # grain hands it to the main process pickled
                pickle.loads(pickle.dumps(error))
            except Exception:  # it would arrive as another error, or never (dropped)
                raise RuntimeError(f"{type(error).__name__}: {error} {where}") from None
            error.add_note(where)
            raise


def make_eval_source(data_cfg) -> EvalSource:
    """The held-out split, fixed order, no augmentation."""
    examples = _open(data_cfg, train=False)
    if examples.num_examples == 0:
        raise ValueError(
            f"dataset {examples.name!r} has no held-out examples: set data.eval_fraction > 0 "
            "or data.eval_path"
        )
    return EvalSource(examples)
