"""`digits`: scikit-learn's bundled handwritten digits (offline, 1797 real images).

Each image is 8x8 with values 0..16 and a label 0..9 (Alpaydin & Kaynak's UCI optdigits test
set). A fixed seeded split (`data.dataset_seed`, default 0) holds out 297 images:
1500 train / 297 test. Native size 8, native channels 1.
"""

import functools

import numpy as np

from zoo.data import options, order
from zoo.data.sources import IndexedImages

NUM_EXAMPLES = 1797
NUM_EVAL = 297
NUM_TRAIN = NUM_EXAMPLES - NUM_EVAL  # 1500
NUM_CLASSES = 10


@functools.cache
def _load() -> tuple[np.ndarray, np.ndarray]:
    """All digits: images `[1797, 8, 8] float32 in [0, 1]`, labels `[1797] int32`."""
    from sklearn.datasets import load_digits  # sklearn is slow to import; only when used.

    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int32)


def check(data_cfg) -> None:
    options.channels(data_cfg, native=1)


def open_split(data_cfg, train: bool) -> IndexedImages:
    """The 1500-image train split or the 297-image test split."""
    images, labels = _load()
    train_idx, eval_idx = order.holdout_split(
        NUM_EXAMPLES, NUM_EVAL, options.dataset_seed(data_cfg)
    )
    split = train_idx if train else eval_idx

    def read(i: int) -> tuple[np.ndarray, int]:
        return images[split[i]], int(labels[split[i]])

    return IndexedImages(
        name="digits",
        num_examples=len(split),
        read=read,
        image_size=options.image_size(data_cfg),
        channels=options.channels(data_cfg, native=1),
        num_classes=NUM_CLASSES,
    )
