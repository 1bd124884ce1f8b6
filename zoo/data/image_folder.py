"""`image_folder`: PNG/JPEG files under `data.path`, decoded lazily with PIL.

Layouts:
  flat:     path/*.png             -> unlabelled
  classes:  path/<class>/**/*.png  -> label = index of <class> among the sorted subfolders

Images become RGB (or L when `data.channels == 1`), are centre-cropped to a square and resized.
The held-out split is the `data.eval_path` folder (same class names) when given, else a fixed
seeded `data.eval_fraction` (default 0.1) of the files. Native channels: 3.
"""

import os

from PIL import Image

from zoo.data import options, order
from zoo.data.sources import IndexedImages

EXTENSIONS = (".png", ".jpg", ".jpeg")


def _is_image(filename: str) -> bool:
    return filename.lower().endswith(EXTENSIONS) and not filename.startswith(".")


def list_images(root: str) -> tuple[list[str], list[int] | None, list[str] | None]:
    """Sorted image paths under `root`, their labels and the class names (None if flat).

    Raises:
      ValueError: `root` is not a folder, holds no images, or mixes loose images with
        class subfolders.
    """
    if not os.path.isdir(root):
        raise ValueError(f"image folder {root!r} does not exist or is not a directory")
    entries = sorted(e for e in os.listdir(root) if not e.startswith("."))
    classes = [e for e in entries if os.path.isdir(os.path.join(root, e))]
    loose = [os.path.join(root, e) for e in entries if _is_image(e)]
    if not classes:
        if not loose:
            raise ValueError(f"image folder {root!r} holds no {'/'.join(EXTENSIONS)} images")
        return loose, None, None
    if loose:
        raise ValueError(
            f"image folder {root!r} has class subfolders and also loose images "
            f"(e.g. {loose[0]!r}); put every image in a class subfolder"
        )
    paths, labels = [], []
    for label, name in enumerate(classes):
        for folder, subdirs, files in os.walk(os.path.join(root, name)):
            subdirs.sort()  # os.walk visits in list order: sorting makes the walk deterministic
            for f in sorted(files):
                if _is_image(f):
                    paths.append(os.path.join(folder, f))
                    labels.append(label)
    if not paths:
        raise ValueError(f"image folder {root!r}: class subfolders {classes} hold no images")
    return paths, labels, classes


def read_image(path: str) -> Image.Image:
    """Decode one file fully, turning any PIL/OS failure into an error that names the file."""
    try:
        with Image.open(path) as image:
            image.load()  # decode now: a truncated file fails here, not later in convert()
            return image.copy()
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"cannot read image {path!r}: {error}") from error


def check(data_cfg) -> None:
    options.channels(data_cfg, native=3)
    options.eval_fraction(data_cfg)
    _, _, classes = list_images(options.path(data_cfg))
    if data_cfg.get("eval_path", None):
        _, _, eval_classes = list_images(data_cfg.eval_path)
        _match_classes(classes, eval_classes, data_cfg.eval_path)


def _match_classes(classes, eval_classes, eval_path) -> dict[int, int] | None:
    """Map eval-folder labels onto train labels by class name."""
    if (classes is None) != (eval_classes is None):
        raise ValueError(f"eval_path {eval_path!r} must use the same layout as path")
    if classes is None:
        return None
    unknown = sorted(set(eval_classes) - set(classes))
    if unknown:
        raise ValueError(f"eval_path {eval_path!r} has classes not in path: {unknown}")
    return {i: classes.index(name) for i, name in enumerate(eval_classes)}


def open_split(data_cfg, train: bool) -> IndexedImages:
    paths, labels, classes = list_images(options.path(data_cfg))
    eval_path = data_cfg.get("eval_path", None)
    if eval_path:
        if not train:
            eval_paths, eval_labels, eval_classes = list_images(eval_path)
            remap = _match_classes(classes, eval_classes, eval_path)
            paths = eval_paths
            labels = None if remap is None else [remap[label] for label in eval_labels]
    else:
        num_eval = order.eval_count(len(paths), options.eval_fraction(data_cfg))
        train_idx, eval_idx = order.holdout_split(
            len(paths), num_eval, options.dataset_seed(data_cfg)
        )
        keep = train_idx if train else eval_idx
        paths = [paths[i] for i in keep]
        labels = None if labels is None else [labels[i] for i in keep]

    def read(i: int) -> tuple[Image.Image, int | None]:
        return read_image(paths[i]), None if labels is None else labels[i]

    return IndexedImages(
        name="image_folder",
        num_examples=len(paths),
        read=read,
        image_size=options.image_size(data_cfg),
        channels=options.channels(data_cfg, native=3),
        num_classes=None if classes is None else len(classes),
    )
