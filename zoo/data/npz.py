"""`npz`: images in a numpy `.npz` file at `data.path`.

Keys:
  image       [N, H, W, C] or [N, H, W]; uint8 in 0..255 or float in [0, 1]   (required)
  label       [N] int                                                         (optional)
  image_eval  held-out images, same layout                                    (optional)
  label_eval  held-out labels; required when both `label` and `image_eval` exist

Without `image_eval`, a fixed seeded `data.eval_fraction` (default 0.1) of `image` is held out.
The number of classes is `data.num_classes` or, if absent, 1 + the largest label. Native
channels: C (1 for [N, H, W]). Float images holding NaN or Inf are refused when a split is
opened, naming the array and the first bad index.
"""

import numpy as np

from zoo.data import options, order
from zoo.data.arrays import Headers, check_finite, read_headers
from zoo.data.sources import IndexedImages


def _headers(path: str) -> Headers:
    return read_headers(path, kind="npz")


def _check_arrays(path: str, headers: dict) -> None:
    """Validate keys, ranks, dtypes and matching lengths from the headers."""
    if "image" not in headers:
        raise ValueError(f"npz file {path!r} has no 'image' array; it has {sorted(headers)}")
    for images, labels in (("image", "label"), ("image_eval", "label_eval")):
        if images not in headers:
            continue
        shape, dtype = headers[images]
        if len(shape) not in (3, 4) or (len(shape) == 4 and shape[-1] not in (1, 3)):
            raise ValueError(
                f"npz {path!r}: '{images}' must be [N, H, W] or [N, H, W, 1|3], got {shape}"
            )
        if dtype != np.uint8 and not np.issubdtype(dtype, np.floating):
            raise ValueError(f"npz {path!r}: '{images}' must be uint8 or float, got {dtype}")
        if labels in headers and headers[labels][0] != shape[:1]:
            raise ValueError(
                f"npz {path!r}: '{labels}' must have shape [{shape[0]}], got {headers[labels][0]}"
            )
    if "label_eval" in headers and "image_eval" not in headers:
        raise ValueError(f"npz {path!r} has 'label_eval' but no 'image_eval'")
    if "image_eval" in headers and ("label" in headers) != ("label_eval" in headers):
        raise ValueError(f"npz {path!r}: give both 'label' and 'label_eval', or neither")


def _native_channels(shape: tuple[int, ...]) -> int:
    return shape[3] if len(shape) == 4 else 1


def check(data_cfg) -> None:
    path = options.path(data_cfg)
    headers = _headers(path)
    _check_arrays(path, headers)
    options.channels(data_cfg, native=_native_channels(headers["image"][0]))
    options.eval_fraction(data_cfg)


def open_split(data_cfg, train: bool) -> IndexedImages:
    path = options.path(data_cfg)
    headers = _headers(path)
    _check_arrays(path, headers)
    with np.load(path, allow_pickle=False) as data:
        if "image_eval" in headers:
            suffix = "" if train else "_eval"
            images = data["image" + suffix]
            check_finite("npz", path, "image" + suffix, images)
            labels = data["label" + suffix] if "label" in headers else None
            all_labels = (
                None if labels is None else np.concatenate([data["label"], data["label_eval"]])
            )
        else:
            images = data["image"]
            check_finite("npz", path, "image", images)  # before the split: file indices
            labels = all_labels = data["label"] if "label" in headers else None
            num_eval = order.eval_count(len(images), options.eval_fraction(data_cfg))
            train_idx, eval_idx = order.holdout_split(
                len(images), num_eval, options.dataset_seed(data_cfg)
            )
            keep = train_idx if train else eval_idx
            images = images[keep]
            labels = None if labels is None else labels[keep]
    if (
        np.issubdtype(images.dtype, np.floating)
        and images.size
        and (images.min() < 0 or images.max() > 1)
    ):
        raise ValueError(
            f"npz {path!r}: float images must lie in [0, 1], got [{images.min()}, {images.max()}]"
        )
    num_classes = None
    if all_labels is not None:
        num_classes = data_cfg.get("num_classes", None) or int(all_labels.max(initial=-1)) + 1

    def read(i: int) -> tuple[np.ndarray, int | None]:
        return images[i], None if labels is None else int(labels[i])

    return IndexedImages(
        name="npz",
        num_examples=len(images),
        read=read,
        image_size=options.image_size(data_cfg),
        # Native channels come from `image` for both splits, so their element specs agree.
        channels=options.channels(data_cfg, native=_native_channels(headers["image"][0])),
        num_classes=num_classes,
        background=options.background(data_cfg),
    )
