"""The three entry points the engine calls: check the config, build train and eval sources.

`data.name` picks the dataset: one of `BUNDLED`, or else a tensorflow-datasets name.
"""

from types import ModuleType

from zoo.data import arrays, digits, image_folder, npz, options, ring, shapes, tfds_source
from zoo.data.scenes import blender, llff
from zoo.data.sources import EvalSource, Examples, TrainSource

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
    if name in BUNDLED:
        BUNDLED[name].check(data_cfg)
    else:
        tfds_source.check(data_cfg, bundled=tuple(BUNDLED))


def _open(data_cfg, train: bool) -> Examples:
    check_data_config(data_cfg)
    name = options.name(data_cfg)
    if name in BUNDLED:
        return BUNDLED[name].open_split(data_cfg, train)
    return tfds_source.open_split(data_cfg, train, bundled=tuple(BUNDLED))


def make_source(
    data_cfg,
    *,
    seed: int,
    examples_per_step: int,
    process_index: int = 0,
    process_count: int = 1,
) -> TrainSource:
    """The training stream: `source.batch(step)` is this process's share of step `step`.

    Args:
      data_cfg: `config.data`.
      seed: fixes the epoch permutations and flips (not the data itself).
      examples_per_step: global batch size, split evenly over `process_count` processes.
      process_index, process_count: this process and how many read the stream.
    """
    return TrainSource(
        _open(data_cfg, train=True),
        seed=seed,
        examples_per_step=examples_per_step,
        process_index=process_index,
        process_count=process_count,
        random_flip=options.random_flip(data_cfg),
    )


def make_eval_source(data_cfg) -> EvalSource:
    """The held-out split, fixed order, no augmentation."""
    examples = _open(data_cfg, train=False)
    if examples.num_examples == 0:
        raise ValueError(
            f"dataset {examples.name!r} has no held-out examples: set data.eval_fraction > 0 "
            "or data.eval_path"
        )
    return EvalSource(examples)
