"""Train and eval sources over a random-access set of examples.

A dataset module only has to provide `Examples`: a length and `load(indices)`. Ordering,
sharding across processes and augmentation live here, once, for every dataset.
"""

from collections.abc import Callable, Iterator
from typing import Any, Protocol

import numpy as np
from PIL import Image

from zoo.data import order
from zoo.data.preprocess import WHITE, flip_left_right, prepare_image

Batch = dict[str, np.ndarray]
ElementSpec = dict[str, tuple[tuple[int, ...], np.dtype]]


class Examples(Protocol):
    """A random-access, preprocessed split of a dataset.

    Attributes:
      name: the dataset name, as in the config.
      num_examples: N, the number of examples.
      num_classes: number of label values, or None when there are no labels.
      element_spec: per-example `{key: (shape, dtype)}` of every field `load` returns.
    """

    name: str
    num_examples: int
    num_classes: int | None
    element_spec: ElementSpec

    def load(self, indices: np.ndarray) -> Batch:
        """Examples `indices` (`[B] int`), stacked: each field `[B, *shape]` of its spec's dtype.

        Image datasets return `image` `[B, H, W, C] float32 in [-1, 1]` (and `label` `[B] int32`);
        others (`arrays`, `ring`) return their own fields.
        """
        ...


class IndexedImages:
    """`Examples` built from a function that reads raw example i.

    Args:
      name: dataset name.
      num_examples: N.
      read: i -> (image, label or None); image is a PIL image or an `[H, W(, C)]` array,
        uint8 in 0..255 or float in [0, 1], in any size (it is centre-cropped and resized).
      image_size: output height and width.
      channels: output channels, 1 or 3.
      num_classes: number of labels, or None for an unlabelled dataset.
      background: RGB in 0..255 under transparent pixels (see `prepare_image`).
    """

    def __init__(
        self,
        name: str,
        num_examples: int,
        read: Callable[[int], tuple[Image.Image | np.ndarray, int | None]],
        image_size: int,
        channels: int,
        num_classes: int | None,
        background: tuple[int, int, int] = WHITE,
    ):
        self.name = name
        self.num_examples = num_examples
        self.num_classes = num_classes
        self._read = read
        self._size, self._channels, self._background = image_size, channels, background
        self.element_spec: ElementSpec = {
            "image": ((image_size, image_size, channels), np.dtype(np.float32))
        }
        if num_classes is not None:
            self.element_spec["label"] = ((), np.dtype(np.int32))

    def load(self, indices: np.ndarray) -> Batch:
        images, labels = [], []
        for i in indices:
            image, label = self._read(int(i))
            images.append(prepare_image(image, self._size, self._channels, self._background))
            labels.append(label)
        batch = {"image": np.stack(images)}
        if self.num_classes is not None:
            batch["label"] = np.asarray(labels, np.int32)
        return batch


class _ExamplesView:
    """What both sources report about the examples they read."""

    _examples: Examples

    @property
    def num_examples(self) -> int:
        """N, the number of examples in the split (an epoch)."""
        return self._examples.num_examples

    @property
    def num_classes(self) -> int | None:
        return self._examples.num_classes

    @property
    def element_spec(self) -> ElementSpec:
        return self._examples.element_spec


class TrainSource(_ExamplesView):
    """This process's share of each training step, a pure function of (seed, step).

    Global position g = step * examples_per_step + j, j in [0, examples_per_step). Epoch
    e = g // N visits the examples in `order.epoch_permutation(seed, e, N)`; process p of P
    returns positions j in [p * L, (p + 1) * L), L = examples_per_step // P. So `batch(7)` is the
    same whether or not `batch(0..6)` ran, and concatenating all processes' batches gives the
    single-process batch.
    """

    def __init__(
        self,
        examples: Examples,
        *,
        seed: int,
        examples_per_step: int,
        process_index: int = 0,
        process_count: int = 1,
        random_flip: bool = False,
    ):
        if examples_per_step <= 0 or examples_per_step % process_count:
            raise ValueError(
                f"examples_per_step={examples_per_step} must be a positive multiple of "
                f"process_count={process_count}"
            )
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index={process_index} not in [0, {process_count})")
        if examples.num_examples <= 0:
            raise ValueError(f"dataset {examples.name!r} has no training examples")
        self._examples = examples
        self.seed, self.examples_per_step = seed, examples_per_step
        self.process_index, self.process_count = process_index, process_count
        self.per_process = examples_per_step // process_count
        self._offset = process_index * self.per_process
        self.random_flip = random_flip
        self._permutations: dict[int, np.ndarray] = {}

    def _permutation(self, epoch: int) -> np.ndarray:
        # A step straddles at most a few epochs; keep only the recent ones.
        if epoch not in self._permutations:
            if len(self._permutations) >= 4:
                self._permutations.pop(min(self._permutations))
            self._permutations[epoch] = order.epoch_permutation(self.seed, epoch, self.num_examples)
        return self._permutations[epoch]

    def positions(self, step: int) -> np.ndarray:
        """Global positions g this process reads at `step`: `[L] int64`."""
        start = step * self.examples_per_step + self._offset
        return np.arange(start, start + self.per_process, dtype=np.int64)

    def indices(self, step: int) -> np.ndarray:
        """Dataset indices this process reads at `step`: `[L] int64`."""
        g = self.positions(step)
        epochs, within = np.divmod(g, self.num_examples)
        out = np.empty_like(g)
        for e in np.unique(epochs):
            mask = epochs == e
            out[mask] = self._permutation(int(e))[within[mask]]
        return out

    def batch(self, step: int) -> Batch:
        """The examples of train step `step` for this process: every field `[L, ...]`.

        `random_flip` mirrors the `image` field (`[L, H, W, C]`) only; datasets without one
        (`arrays` of tokens or embeddings, `ring`) pass through untouched.
        """
        batch = self._examples.load(self.indices(step))
        if self.random_flip and "image" in batch:
            flips = order.coin_flips(self.seed, self.positions(step))
            batch["image"] = flip_left_right(batch["image"], flips)
        return batch

    def state(self, step: int) -> dict[str, Any]:
        """JSON-serialisable position of `step` in the stream, stored with checkpoints."""
        first = step * self.examples_per_step
        return {
            "name": self._examples.name,
            "seed": self.seed,
            "examples_per_step": self.examples_per_step,
            "step": step,
            "epoch": first // self.num_examples,
            "position_in_epoch": first % self.num_examples,
            "num_examples": self.num_examples,
        }


class EvalSource(_ExamplesView):
    """The held-out split in a fixed order (0, 1, ..., N-1), without augmentation."""

    def __init__(self, examples: Examples):
        self._examples = examples

    def batches(self, batch_size: int, num_examples: int | None = None) -> Iterator[Batch]:
        """Yield the first `num_examples` (default: all) examples in batches of `batch_size`.

        The last batch is kept even when smaller, so every requested example is seen once.
        Asking for more examples than the split holds is an error, not a silent shortfall.
        """
        total = self.num_examples if num_examples is None else num_examples
        if batch_size <= 0:
            raise ValueError(f"batch_size={batch_size} must be positive")
        if not 0 <= total <= self.num_examples:
            raise ValueError(
                f"asked for {total} eval examples but {self._examples.name!r} holds "
                f"{self.num_examples}"
            )
        for start in range(0, total, batch_size):
            stop = min(start + batch_size, total)
            yield self._examples.load(np.arange(start, stop))
