"""`ring`: the ring of 8 Gaussians, the 2-D mode-collapse benchmark of Metz et al. (2017).

A mixture of K = `data.ring_modes` (default 8) equally weighted isotropic Gaussians whose means
are equally spaced on a circle of radius `data.ring_radius` (default 2.0), each with standard
deviation `data.ring_std` (default 0.02), as in the unrolled-GAN paper. Mode k sits at angle
2 pi k / K (mode 0 on the positive x axis). `zoo.evals.modes.mode_coverage` scores samples.

Example i of a split is a pure function of (data.dataset_seed, split, i), computed for a whole
batch at once: a counter-based hash (splitmix64) of (seed, split, i, draw) gives the uniforms
from which the mode (the label) and, by Box-Muller, the Gaussian offset are drawn. Train and eval
come from different streams. Sizes: `data.num_train` (default 100000), `data.num_eval` (default
10000). Batches carry `point` `[B, 2] float32` and `label` `[B] int32` (the mode index).
`data.image_size` is not used; `random_flip` is refused (there is no image to flip).
"""

import numbers

import numpy as np

from zoo.data import options

_SPLIT_STREAMS = {True: 0, False: 1}  # train, eval
_DRAWS = 3  # uniforms per example: mode, and two for Box-Muller
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def ring_modes(num_modes: int = 8, radius: float = 2.0) -> np.ndarray:
    """Mode centres `[K, 2] float32`: K points at angles 2 pi k / K on a circle of `radius`."""
    if not isinstance(num_modes, numbers.Integral) or num_modes < 1:
        raise ValueError(f"num_modes must be a positive int, got {num_modes!r}")
    angles = 2.0 * np.pi * np.arange(num_modes) / num_modes
    return (radius * np.stack([np.cos(angles), np.sin(angles)], axis=-1)).astype(np.float32)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser (Steele et al. 2014): a bijective mix of uint64 words."""
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps, by design
        x = x + _GOLDEN
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _uniforms(key: np.uint64, indices: np.ndarray) -> np.ndarray:
    """`[B, _DRAWS]` float64 uniforms in (0, 1), a pure function of (key, index, draw)."""
    counters = indices.astype(np.uint64)[:, None] * np.uint64(_DRAWS) + np.arange(
        _DRAWS, dtype=np.uint64
    )
    bits = _splitmix64(_splitmix64(counters) ^ key)
    # Top 53 bits -> (0, 1): the +0.5 keeps log() in Box-Muller finite.
    return ((bits >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53


class RingExamples:
    """One split of the ring dataset as `Examples`; example i is drawn from its index."""

    name = "ring"

    def __init__(
        self, num_examples: int, num_modes: int, radius: float, std: float, seed: int, train: bool
    ):
        self.num_examples, self.num_classes = num_examples, num_modes
        self.modes = ring_modes(num_modes, radius)
        self.std = std
        words = np.array([seed, _SPLIT_STREAMS[train]], np.uint64)
        self._key = _splitmix64(_splitmix64(words[:1]) ^ words[1:])[0]
        self.element_spec = {
            "point": ((2,), np.dtype(np.float32)),
            "label": ((), np.dtype(np.int32)),
        }

    def load(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """Examples `indices` (`[B] int`): `point` `[B, 2] float32`, `label` `[B] int32`."""
        indices = np.asarray(indices, np.int64).reshape(-1)
        if indices.size and (indices.min() < 0 or indices.max() >= self.num_examples):
            raise IndexError(f"ring indices must be in [0, {self.num_examples})")
        u = _uniforms(self._key, indices)
        label = np.minimum((u[:, 0] * self.num_classes).astype(np.int64), self.num_classes - 1)
        radius, angle = np.sqrt(-2.0 * np.log(u[:, 1])), 2.0 * np.pi * u[:, 2]
        offset = radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=-1)
        point = self.modes[label].astype(np.float64) + self.std * offset
        return {"point": point.astype(np.float32), "label": label.astype(np.int32)}


def _positive_float(data_cfg, key: str, default: float) -> float:
    value = data_cfg.get(key, default)
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"data.{key} must be a positive number, got {value!r}")
    return float(value)


def check(data_cfg) -> None:
    options.positive_int(data_cfg, "ring_modes", 8)
    _positive_float(data_cfg, "ring_radius", 2.0)
    _positive_float(data_cfg, "ring_std", 0.02)
    options.positive_int(data_cfg, "num_train", 100000)
    options.positive_int(data_cfg, "num_eval", 10000)
    if options.random_flip(data_cfg):
        raise ValueError("data.random_flip must be False for 'ring': it has points, not images")


def open_split(data_cfg, train: bool) -> RingExamples:
    key, default = ("num_train", 100000) if train else ("num_eval", 10000)
    return RingExamples(
        num_examples=options.positive_int(data_cfg, key, default),
        num_modes=options.positive_int(data_cfg, "ring_modes", 8),
        radius=_positive_float(data_cfg, "ring_radius", 2.0),
        std=_positive_float(data_cfg, "ring_std", 0.02),
        seed=options.dataset_seed(data_cfg),
        train=train,
    )
