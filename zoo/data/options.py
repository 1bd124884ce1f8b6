"""Reading and validating the `config.data` fields every dataset shares.

Each reader raises ValueError naming the field, so `check_data_config` fails before anything
compiles. Optional fields are read with `data_cfg.get(key, default)`.
"""

import numbers
from typing import Any


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def name(data_cfg) -> str:
    value = data_cfg.get("name")
    if not isinstance(value, str) or not value:
        raise ValueError(f"data.name must be a non-empty string, got {value!r}")
    return value


def image_size(data_cfg) -> int:
    """Output height = width in pixels."""
    value = data_cfg.get("image_size")
    if not _is_int(value) or value <= 0:
        raise ValueError(f"data.image_size must be a positive int, got {value!r}")
    return int(value)


def channels(data_cfg, native: int) -> int:
    """Output channels: `data.channels` (1 or 3) or, when absent, the dataset's `native`."""
    value = data_cfg.get("channels", None)
    if value is None:
        return native
    if not _is_int(value) or value not in (1, 3):
        raise ValueError(f"data.channels must be 1, 3 or absent (native), got {value!r}")
    return int(value)


def random_flip(data_cfg) -> bool:
    value = data_cfg.get("random_flip", False)
    if not isinstance(value, bool):
        raise ValueError(f"data.random_flip must be a bool, got {value!r}")
    return value


def dataset_seed(data_cfg) -> int:
    """Fixes the data itself (holdout splits, procedural content), not the training order."""
    value = data_cfg.get("dataset_seed", 0)
    if not _is_int(value) or value < 0:
        raise ValueError(f"data.dataset_seed must be a non-negative int, got {value!r}")
    return int(value)


def eval_fraction(data_cfg) -> float:
    """Fraction of examples held out when a dataset has no separate eval split."""
    value = data_cfg.get("eval_fraction", 0.1)
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0 <= value < 1:
        raise ValueError(f"data.eval_fraction must be in [0, 1), got {value!r}")
    return float(value)


def positive_int(data_cfg, key: str, default: int) -> int:
    value = data_cfg.get(key, default)
    if not _is_int(value) or value <= 0:
        raise ValueError(f"data.{key} must be a positive int, got {value!r}")
    return int(value)


def path(data_cfg, key: str = "path") -> str:
    """A required path field, as a string (existence is checked by the dataset)."""
    value = data_cfg.get(key, None)
    if not isinstance(value, str) or not value:
        raise ValueError(f"data.{key} is required for dataset {data_cfg.get('name')!r}")
    return value


def skip_bad_images(data_cfg) -> bool:
    """Whether undecodable image files are dropped (with a warning) instead of an error."""
    value = data_cfg.get("skip_bad_images", False)
    if not isinstance(value, bool):
        raise ValueError(f"data.skip_bad_images must be a bool, got {value!r}")
    return value


def background(data_cfg) -> tuple[int, int, int]:
    """RGB in 0..255 that transparent pixels are composited over (default white)."""
    value = data_cfg.get("background", (255, 255, 255))
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 3
        or not all(_is_int(v) and 0 <= v <= 255 for v in value)
    ):
        raise ValueError(f"data.background must be an RGB triple of ints in 0..255, got {value!r}")
    return tuple(int(v) for v in value)


def workers(data_cfg) -> int:
    """Worker processes that load train batches ahead of the step (`zoo.data.stream`); 0:
    none, the train loop's own prefetch thread loads one step at a time."""
    value = data_cfg.get("workers", 0)
    if not _is_int(value) or value < 0:
        raise ValueError(f"data.workers must be a non-negative int, got {value!r}")
    return int(value)
