"""Any other name: a tensorflow-datasets dataset, read without TensorFlow.

`builder.as_data_source(split)` gives random access to datasets prepared in the array_record
(or parquet) format and decodes images with numpy/PIL, so neither TensorFlow nor `tfds.load` is
needed. We call it on the builder rather than `tfds.data_source`, which would download and
prepare a missing dataset: nothing is downloaded at run time; an unprepared dataset is an error
that says where we looked and gives the command that prepares it (`prepare_command`).

Config: `data.path` is the tfds data_dir (default: tfds's own, `$TFDS_DATA_DIR` or
~/tensorflow_datasets); `data.train_split` / `data.eval_split` (default "train" / "test", any
tfds split string such as "train[:90%]"); `data.image_key` / `data.label_key` (default "image" /
"label"; a dataset without the default label key is unlabelled).
"""

import os
import shlex

from zoo.data import options
from zoo.data.sources import IndexedImages

# Preparing (download + write array_record) runs TensorFlow; tensorflow-datasets 4.9.10's
# `tfds` command also imports mlcroissant at start-up (scripts/cli/croissant.py, imported by
# scripts/cli/main.py), even for `tfds build`. Reading the prepared files here needs neither.
PREPARE_REQUIREMENTS = "pip install tensorflow mlcroissant"


def _builder(data_cfg, bundled: tuple[str, ...]):
    import tensorflow_datasets as tfds  # slow import; only for tfds names

    name = options.name(data_cfg)
    try:
        return tfds.builder(name, data_dir=data_cfg.get("path", None) or None)
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(
            f"unknown dataset {name!r}: the bundled datasets are {', '.join(bundled)}; any other "
            f"name is looked up in tensorflow-datasets, which has no dataset {name!r} "
            "(see https://www.tensorflow.org/datasets/catalog)"
        ) from None


def _split(data_cfg, train: bool) -> str:
    return data_cfg.get("train_split", "train") if train else data_cfg.get("eval_split", "test")


def prepare_command(data_cfg, builder, overwrite: bool = False) -> str:
    """The `tfds build` command that writes `data.name` where this config reads it.

    Flags as tensorflow-datasets 4.9.10's `tfds build` parses them (scripts/cli/build.py and
    cli_utils.py: `--file_format` from GenerationOptions, `--data_dir` from PathOptions). The
    dataset is named as the config names it ("name", "name/config", "name:version"), which
    `tfds build` accepts like `tfds.builder` does. The data_dir is `data.path`, or tfds's
    default root when unset, made absolute so the command can be run from anywhere.
    """
    data_dir = os.path.abspath(os.path.expanduser(str(builder.data_dir_root)))
    command = (
        f"tfds build {shlex.quote(options.name(data_cfg))} --file_format=array_record "
        f"--data_dir={shlex.quote(data_dir)}"
    )
    return command + " --overwrite" if overwrite else command


def _data_source(data_cfg, builder, split: str):
    """The random-access source of `split`; a clear error if it is not prepared for that."""
    try:
        return builder.as_data_source(split=split)
    except Exception as error:  # tfds raises ValueError, NotImplementedError, KeyError, ...
        name = builder.info.full_name
        how = (
            "Prepare it once, where the network is available (preparing needs TensorFlow and "
            f"the tfds command mlcroissant; reading it here needs neither):\n"
            f"    {PREPARE_REQUIREMENTS}\n    "
        )
        if not builder.is_prepared():
            raise ValueError(
                f"tfds dataset {builder.name!r} is not prepared in {builder.data_dir!s} and "
                f"nothing is downloaded at run time. {how}{prepare_command(data_cfg, builder)}"
            ) from error
        file_format = getattr(builder.info.file_format, "value", builder.info.file_format)
        if file_format not in ("array_record", "parquet"):
            raise ValueError(
                f"tfds dataset {name!r} in {builder.data_dir!s} is prepared as {file_format}, "
                f"which has no random access; it must be array_record. {how}"
                f"{prepare_command(data_cfg, builder, overwrite=True)}"
            ) from error
        splits = sorted(builder.info.splits)
        raise ValueError(
            f"cannot open split {split!r} of {name!r} in {builder.data_dir!s} for random "
            f"access (prepared splits: {splits}; set data.train_split / data.eval_split): {error}"
        ) from error


def _features(data_cfg, builder) -> tuple[str, str | None, int, int | None]:
    """(image_key, label_key or None, native channels, num_classes or None)."""
    features = builder.info.features
    image_key = data_cfg.get("image_key", "image")
    if image_key not in features:
        raise ValueError(
            f"tfds dataset {builder.name!r} has no image feature {image_key!r} "
            f"(features: {sorted(features)}); set data.image_key"
        )
    shape = features[image_key].shape
    # Grey (+ alpha) images are natively grey; RGB(A) or unknown are RGB (alpha is composited).
    native = 1 if len(shape) == 3 and shape[-1] in (1, 2) else 3
    label_key = data_cfg.get("label_key", None)
    if label_key is not None and label_key not in features:
        raise ValueError(
            f"tfds dataset {builder.name!r} has no label feature {label_key!r} "
            f"(features: {sorted(features)})"
        )
    label_key = label_key or ("label" if "label" in features else None)
    num_classes = None
    if label_key is not None:
        num_classes = getattr(features[label_key], "num_classes", None)
        num_classes = num_classes or data_cfg.get("num_classes", None)
        if num_classes is None:
            raise ValueError(
                f"tfds label {label_key!r} of {builder.name!r} is not a ClassLabel; "
                "set data.num_classes"
            )
    return image_key, label_key, native, num_classes


def check(data_cfg, bundled: tuple[str, ...]) -> None:
    """Name known to tfds, both splits prepared for random access, features present."""
    builder = _builder(data_cfg, bundled)
    _, _, native, _ = _features(data_cfg, builder)
    options.channels(data_cfg, native)
    _data_source(data_cfg, builder, _split(data_cfg, train=True))
    _data_source(data_cfg, builder, _split(data_cfg, train=False))


def open_split(data_cfg, train: bool, bundled: tuple[str, ...]) -> IndexedImages:
    builder = _builder(data_cfg, bundled)
    image_key, label_key, native, num_classes = _features(data_cfg, builder)
    source = _data_source(data_cfg, builder, _split(data_cfg, train))

    def read(i: int):
        record = source[i]
        return record[image_key], None if label_key is None else int(record[label_key])

    return IndexedImages(
        name=options.name(data_cfg),
        num_examples=len(source),
        read=read,
        image_size=options.image_size(data_cfg),
        channels=options.channels(data_cfg, native),
        num_classes=num_classes,
        background=options.background(data_cfg),
    )
