"""`arrays`: any named arrays in a numpy `.npz` file at `data.path`, passed through unchanged.

For data that a trained stage has already encoded once, to be trained on many times: a
tokenizer's token ids, an autoencoder's latents, a text encoder's embeddings.

    write_arrays("latents.npz", {"latent": z, "label": y})  # z: [N, 8, 8, 4] float16
    config.data = dict(name="arrays", path="latents.npz")   # batch["latent"]: [B, 8, 8, 4]

File layout:
  <key>       [N, ...] any dtype, any trailing shape; every array shares the leading N
  <key>_eval  held-out rows, [M, ...] with the trailing shape and dtype of <key>; give one for
              every <key> or for none

Every array becomes a batch field of the same name, `[B, *trailing] <dtype>`, exactly as stored:
no resizing, no scaling, no flips (`data.random_flip` needs an `image` field `[N, H, W, C]`).
Without `_eval` arrays a fixed seeded `data.eval_fraction` (default 0.1) of the rows is held out.
A `label` array must be integer `[N]`; `num_classes` is `data.num_classes` or, if absent,
1 + the largest label. `data.image_size` is not used (only validated, as for every dataset).
Float arrays holding NaN or Inf are refused when a split is opened, naming the array and the
first bad index.
"""

import os
import tempfile
import zipfile

import numpy as np

from zoo.data import options, order

EVAL_SUFFIX = "_eval"
Headers = dict[str, tuple[tuple[int, ...], np.dtype]]


def read_headers(path: str, kind: str = "arrays") -> Headers:
    """`{name: (shape, dtype)}` of every array in an .npz, from the .npy headers only (cheap).

    `kind` ("arrays", "npz") prefixes the error messages.
    """
    if not os.path.isfile(path):
        raise ValueError(f"{kind} file {path!r} does not exist")
    headers = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                with archive.open(member) as f:
                    major, minor = np.lib.format.read_magic(f)
                    # numpy writes version 1.0, or 2.0 for huge headers; 3.0 is not expected.
                    read_header = getattr(np.lib.format, f"read_array_header_{major}_{minor}")
                    shape, _, dtype = read_header(f)
                headers[member.removesuffix(".npy")] = (shape, dtype)
    except (zipfile.BadZipFile, AttributeError, ValueError, OSError) as error:
        raise ValueError(f"cannot read {kind} file {path!r}: {error}") from error
    return headers


def check_finite(kind: str, path: str, name: str, array: np.ndarray) -> None:
    """ValueError naming `name` and the first NaN/Inf index (C order) of a float array.

    A NaN slips past range checks (every comparison with it is False) and only shows up as a
    NaN loss many steps later, so it is caught here. Checked in chunks of rows, so the
    temporary mask stays small for large arrays.
    """
    if array.dtype.kind not in "fc" or array.size == 0:
        return
    rows = max(1, (1 << 24) // max(1, array[:1].size))
    for start in range(0, len(array), rows):
        chunk = array[start : start + rows]
        bad = ~np.isfinite(chunk)
        if bad.any():
            index = np.argwhere(bad)[0]
            value = chunk[tuple(index)]
            index[0] += start
            what = "NaN" if np.isnan(value) else ("-Inf" if np.real(value) < 0 else "Inf")
            raise ValueError(
                f"{kind} {path!r}: array {name!r} holds {what} at index "
                f"{tuple(int(i) for i in index)}"
            )


def _check_headers(path: str, headers: Headers) -> tuple[list[str], bool]:
    """Validate names, lengths, dtypes and the eval arrays; returns (train keys, has eval)."""
    where = f"arrays {path!r}"
    if not headers:
        raise ValueError(f"{where} holds no arrays")
    keys = sorted(k for k in headers if not k.endswith(EVAL_SUFFIX))
    evals = sorted(k for k in headers if k.endswith(EVAL_SUFFIX))
    orphans = [k for k in evals if k[: -len(EVAL_SUFFIX)] not in headers]
    if orphans:
        raise ValueError(f"{where}: array {orphans[0]!r} has no train array of the same name")
    if not keys:
        raise ValueError(f"{where} holds only held-out arrays: {evals}")
    if evals and len(evals) != len(keys):
        missing = [k for k in keys if k + EVAL_SUFFIX not in headers]
        raise ValueError(
            f"{where}: give an '_eval' array for every array or for none; "
            f"array {missing[0] + EVAL_SUFFIX!r} is missing"
        )
    for group in (keys, evals):
        lengths = {}
        for key in group:
            shape, dtype = headers[key]
            if dtype.hasobject:
                raise ValueError(
                    f"{where}: array {key!r} holds Python objects (pickled); store numbers "
                    "or fixed-width strings"
                )
            if len(shape) == 0:
                raise ValueError(f"{where}: array {key!r} is a scalar; arrays must be [N, ...]")
            lengths[key] = shape[0]
        first = group[0] if group else None
        for key in group:
            if lengths[key] != lengths[first]:
                raise ValueError(
                    f"{where}: array {key!r} has {lengths[key]} rows but {first!r} has "
                    f"{lengths[first]}; every array must share its leading length"
                )
        if first is not None and lengths[first] == 0:
            raise ValueError(f"{where}: array {first!r} has no rows")
    for key in keys if evals else ():
        (shape, dtype), (eval_shape, eval_dtype) = headers[key], headers[key + EVAL_SUFFIX]
        if eval_shape[1:] != shape[1:] or eval_dtype != dtype:
            raise ValueError(
                f"{where}: array {key + EVAL_SUFFIX!r} has rows of shape {eval_shape[1:]} "
                f"{eval_dtype} but {key!r} has {shape[1:]} {dtype}; they must match"
            )
    if "label" in headers:
        shape, dtype = headers["label"]
        if len(shape) != 1 or dtype.kind not in "iu":
            raise ValueError(f"{where}: array 'label' must be [N] integer, got {shape} {dtype}")
    return keys, bool(evals)


def write_arrays(path: str, arrays: dict, eval_arrays: dict | None = None) -> None:
    """Write an `arrays` dataset file atomically (a temporary file, then `os.replace`).

    Args:
      path: the `.npz` file to write; its folder is created if missing. A reader never sees a
        half-written file: an interrupted encode leaves the previous file (or none).
      arrays: `{name: [N, ...] array}`, any dtypes; all share N. Names must not end in "_eval".
      eval_arrays: optional held-out rows `{name: [M, ...]}` with the same names, trailing
        shapes and dtypes as `arrays`; stored as `<name>_eval`.

    Raises:
      ValueError: the layout `check` would refuse, or a float array holding NaN/Inf.
    """
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    eval_arrays = {k: np.asarray(v) for k, v in (eval_arrays or {}).items()}
    bad = [k for k in arrays if not isinstance(k, str) or k.endswith(EVAL_SUFFIX) or "/" in k]
    if bad:
        raise ValueError(f"array names must be strings without '/' or an '_eval' end: {bad}")
    if eval_arrays and set(eval_arrays) != set(arrays):
        raise ValueError(
            f"eval_arrays must have the names of arrays: {sorted(eval_arrays)} != {sorted(arrays)}"
        )
    everything = {**arrays, **{k + EVAL_SUFFIX: v for k, v in eval_arrays.items()}}
    _check_headers(path, {k: (v.shape, v.dtype) for k, v in everything.items()})
    for name, array in everything.items():
        check_finite("arrays", path, name, array)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    # Same folder as the target, so os.replace is a rename on one file system (atomic).
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **everything)  # uncompressed: reading latents back should be cheap
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def check(data_cfg) -> None:
    """Layout from the headers only (no array is read); ValueError naming the bad array."""
    path = options.path(data_cfg)
    headers = read_headers(path)
    _check_headers(path, headers)
    options.eval_fraction(data_cfg)
    if "label" in headers and data_cfg.get("num_classes", None) is not None:
        options.positive_int(data_cfg, "num_classes", 1)
    if options.random_flip(data_cfg):
        shape = headers.get("image", ((),))[0]
        if len(shape) != 4:
            raise ValueError(
                f"data.random_flip needs an 'image' array [N, H, W, C] in arrays {path!r}; "
                f"it has {sorted(headers)}"
            )


class ArrayExamples:
    """One split of an `arrays` file as `Examples`: rows of in-memory arrays, unchanged."""

    def __init__(self, fields: dict[str, np.ndarray], num_classes: int | None):
        self.name = "arrays"
        self._fields = fields
        self.num_examples = len(next(iter(fields.values())))
        self.num_classes = num_classes
        self.element_spec = {k: (v.shape[1:], v.dtype) for k, v in fields.items()}

    def load(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """Rows `indices` (`[B] int`) of every field: `{name: [B, *trailing] <dtype>}`."""
        indices = np.asarray(indices, np.int64)
        return {k: v[indices] for k, v in self._fields.items()}


def open_split(data_cfg, train: bool) -> ArrayExamples:
    path = options.path(data_cfg)
    keys, has_eval = _check_headers(path, read_headers(path))
    with np.load(path, allow_pickle=False) as data:
        if has_eval:
            suffix = "" if train else EVAL_SUFFIX
            fields = {k: data[k + suffix] for k in keys}
            for k, v in fields.items():
                check_finite("arrays", path, k + suffix, v)
            labels = [data["label"], data["label_eval"]] if "label" in keys else []
        else:
            fields = {k: data[k] for k in keys}
            for k, v in fields.items():  # whole arrays, so an index names the row in the file
                check_finite("arrays", path, k, v)
            labels = [fields["label"]] if "label" in keys else []
            n = len(fields[keys[0]])
            num_eval = order.eval_count(n, options.eval_fraction(data_cfg))
            train_idx, eval_idx = order.holdout_split(n, num_eval, options.dataset_seed(data_cfg))
            keep = train_idx if train else eval_idx
            fields = {k: v[keep] for k, v in fields.items()}
    num_classes = None
    if labels:
        largest = max(int(x.max(initial=-1)) for x in labels)
        smallest = min(int(x.min(initial=0)) for x in labels)
        num_classes = data_cfg.get("num_classes", None) or largest + 1
        if smallest < 0 or largest >= num_classes:
            raise ValueError(
                f"arrays {path!r}: labels must lie in [0, {num_classes}), "
                f"got [{smallest}, {largest}]"
            )
    return ArrayExamples(fields, num_classes)
