"""`image_folder`: PNG/JPEG files under `data.path`, decoded lazily with PIL.

Layouts:
  flat:     path/*.png             -> unlabelled
  classes:  path/<class>/**/*.png  -> label = index of <class> among the sorted subfolders

Images become RGB (or L when `data.channels == 1`), are centre-cropped to a square and resized;
16-bit PNGs are scaled by 65535 and transparent pixels are composited over `data.background`
(see `preprocess.prepare_image`). The held-out split is the `data.eval_path` folder (same class
names) when given, else a fixed seeded `data.eval_fraction` (default 0.1) of the files. Native
channels: 3.

Every file is decoded once before anything compiles (`scan`): an undecodable file is an error
naming every bad file, or, with `data.skip_bad_images=True`, is dropped with a warning.
"""

import logging
import os
from concurrent.futures import ThreadPoolExecutor

from PIL import Image
from tqdm import tqdm

from zoo.data import options, order
from zoo.data.sources import IndexedImages

log = logging.getLogger(__name__)

# (path, mtime_ns, size) -> None if the file decodes, else the error text. check() and both
# open_split() calls of a run list the same files, so only the first of them decodes anything;
# a file rewritten since has a new key and is decoded again.
_VERDICTS: dict[tuple[str, int, int], str | None] = {}
_WARNED: set[frozenset[str]] = set()  # skipped sets already logged: warn once, not per split

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


def _decode_error(path: str) -> str | None:
    """None if `path` fully decodes, else why not.

    A full decode (`load()`), not `verify()`: Pillow's JPEG plugin has no `verify`, so a
    truncated JPEG passes it, while `load()` raises "image file is truncated" for a JPEG cut
    anywhere, even 2 bytes short, and for a PNG cut inside its pixel data. It is the decode a
    training step runs (same decoder, same bytes), so it flags exactly what training would hit.
    `draft` lets libjpeg decode at 1/8 scale: it still reads every entropy-coded byte (so
    truncation is still caught) but costs 0.7 ms instead of 1.8 ms for a 1024x1024 JPEG. PNGs
    decode in full (about 20 ms at 1024x1024).
    """
    try:
        with Image.open(path) as image:
            if image.format == "JPEG":
                image.draft(None, (1, 1))
            image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        return f"{type(error).__name__}: {error}"
    return None


def _key(path: str) -> tuple[str, int, int]:
    stat = os.stat(path)
    return path, stat.st_mtime_ns, stat.st_size


def scan(paths: list[str]) -> dict[str, str]:
    """Decode every file not decoded before, in parallel; `{path: error}` of the bad ones.

    Threads suffice: Pillow releases the GIL while it decodes.
    """
    keys = [_key(p) for p in paths]
    todo = [k for k in keys if k not in _VERDICTS]
    if todo:
        with ThreadPoolExecutor(max_workers=min(32, (os.cpu_count() or 1) + 4)) as pool:
            verdicts = pool.map(_decode_error, [k[0] for k in todo])
            bar = tqdm(verdicts, total=len(todo), desc="checking images", unit="file")
            for key, verdict in zip(todo, bar, strict=True):
                _VERDICTS[key] = verdict
    return {k[0]: _VERDICTS[k] for k in keys if _VERDICTS[k] is not None}


def _usable(
    data_cfg, paths: list[str], labels: list[int] | None, known_bad: dict[str, str] | None = None
) -> tuple[list[str], list[int] | None]:
    """`paths` (and labels) without undecodable files, or a ValueError naming every one.

    `known_bad`: another process's verdicts (`check_report`), taken instead of a `scan`.
    """
    if known_bad is None:
        bad = scan(paths)
    else:
        bad = {p: known_bad[p] for p in paths if p in known_bad}
    if not bad:
        return paths, labels
    listing = "\n".join(f"  {p}: {error}" for p, error in sorted(bad.items()))
    if not options.skip_bad_images(data_cfg):
        raise ValueError(
            f"{len(bad)} of {len(paths)} image files cannot be decoded (set "
            f"data.skip_bad_images=True to leave them out):\n{listing}"
        )
    if known_bad is None and frozenset(bad) not in _WARNED:  # else that process warned
        _WARNED.add(frozenset(bad))
        log.warning("skipping %d of %d undecodable image files:\n%s", len(bad), len(paths), listing)
    keep = [i for i, p in enumerate(paths) if p not in bad]
    if not keep:
        raise ValueError(f"none of the {len(paths)} image files can be decoded:\n{listing}")
    return [paths[i] for i in keep], None if labels is None else [labels[i] for i in keep]


def check(data_cfg) -> None:
    options.channels(data_cfg, native=3)
    options.eval_fraction(data_cfg)
    options.skip_bad_images(data_cfg)
    paths, labels, classes = list_images(options.path(data_cfg))
    _usable(data_cfg, paths, labels)
    if data_cfg.get("eval_path", None):
        eval_paths, eval_labels, eval_classes = list_images(data_cfg.eval_path)
        _match_classes(classes, eval_classes, data_cfg.eval_path)
        _usable(data_cfg, eval_paths, eval_labels)


def check_report(data_cfg) -> dict[str, dict[str, str]]:
    """`{"bad": {path: error}}`: the undecodable files under `data.path` (and `eval_path`)
    that this process found, as they are now.

    A stream worker process (`zoo.data.pipeline.StepLoader`) opens the split with these
    instead of decoding every file again. A file broken since is not among them: it fails
    when a step reads it (`read_image`), in the worker as it would in this process.
    """
    roots = [options.path(data_cfg), data_cfg.get("eval_path", None)]
    prefixes = tuple(os.path.join(root, "") for root in roots if root)
    bad = {}
    for key, error in list(_VERDICTS.items()):
        path = key[0]
        if error and path.startswith(prefixes) and os.path.exists(path) and _key(path) == key:
            bad[path] = error
    return {"bad": bad}


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


def open_split(data_cfg, train: bool, checked: dict | None = None) -> IndexedImages:
    """`checked`: another process's `check_report`, taken instead of decoding every file."""
    known_bad = None if checked is None else checked["bad"]
    paths, labels, classes = list_images(options.path(data_cfg))
    eval_path = data_cfg.get("eval_path", None)
    if eval_path:
        if train:
            paths, labels = _usable(data_cfg, paths, labels, known_bad)
        else:
            eval_paths, eval_labels, eval_classes = list_images(eval_path)
            remap = _match_classes(classes, eval_classes, eval_path)
            paths, eval_labels = _usable(data_cfg, eval_paths, eval_labels, known_bad)
            labels = None if remap is None else [remap[label] for label in eval_labels]
    else:
        # Bad files go before the holdout split, so train and eval partition the usable ones.
        paths, labels = _usable(data_cfg, paths, labels, known_bad)
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
        background=options.background(data_cfg),
    )
