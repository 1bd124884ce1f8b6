"""What the reference networks (digits features, shapes classifier) share: the device they
run on, a fast initialisation and a cache of trained parameters keyed by their training
config. Their fit loop is in ``reference_fit``."""

from __future__ import annotations

import json
import os
import warnings

import jax
import numpy as np


def reference_device() -> jax.Device:
    """The device the reference networks train and run on: this process's first CPU.

    Not the default device: on a GPU, float32 convs and matmuls may run in TF32 at JAX's
    default precision, and cuDNN picks its algorithms per machine and library version, so the
    same seed would give other weights there, and FDs not comparable with CPU-trained ones.
    The networks are small enough (a few ms a step) for the CPU. Bit-identical weights still
    need the same CPU: XLA's reductions are split by the number of cores it sees (see
    ``DigitsFeatures.train``).
    """
    try:
        return jax.local_devices(backend="cpu")[0]
    except RuntimeError:  # JAX_PLATFORMS leaves out the CPU
        warnings.warn(
            "no CPU backend: the reference networks run on the default device, so their "
            "weights (and FDs) differ from CPU-trained ones",
            stacklevel=3,
        )
        return jax.local_devices()[0]


def initial_params(abstract, seed: int):
    """He-normal kernels and zero biases for the shapes of ``abstract``, drawn with numpy.

    Not the modules' own initialisers: each jax.random draw compiles a threefry program
    on CPU (about 0.5 s apiece), which would dominate the few seconds training takes.
    """
    rng = np.random.default_rng(seed)

    def draw(leaf):
        if leaf.ndim == 1:
            return np.zeros(leaf.shape, leaf.dtype)
        fan_in = np.prod(leaf.shape[:-1])
        return (rng.standard_normal(leaf.shape) * np.sqrt(2.0 / fan_in)).astype(leaf.dtype)

    return jax.device_put(jax.tree.map(draw, abstract), reference_device())


def save_cache(path: str, config: dict, params, held_out_accuracy) -> None:
    """Write params and metadata to ``path`` (.npz) atomically: a killed run leaves no half file.

    ``held_out_accuracy`` is any JSON value (a float, or a dict of floats).
    """
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    arrays = {jax.tree_util.keystr(key): np.asarray(leaf) for key, leaf in leaves}
    meta = json.dumps({**config, "held_out_accuracy": held_out_accuracy})
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}.npz"
    np.savez(tmp, __meta__=np.array(meta), **arrays)
    os.replace(tmp, path)


def load_cache(path: str, config: dict, abstract, what: str):
    """(params, held_out_accuracy as saved) from ``path``; None (with a warning) when it is
    unreadable or does not fit ``abstract``. ``what`` names the cache in messages.

    Raises ValueError when the cache is readable but was trained with another ``config``.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            stored = {k: data[k] for k in data.files}
        meta = json.loads(str(stored.pop("__meta__")))
        accuracy = meta.pop("held_out_accuracy")
    except Exception as error:  # zip, JSON and key errors all mean the same: unusable file
        warnings.warn(
            f"{what} {path!r} is unreadable ({type(error).__name__}: {error}); "
            "retraining and overwriting it",
            stacklevel=3,
        )
        return None
    if meta != config:
        raise ValueError(
            f"{what} {path!r} was trained with {meta}, but {config} was asked for; "
            "scores from different networks are not comparable: use another cache_path"
        )
    leaves, treedef = jax.tree_util.tree_flatten_with_path(abstract)
    device = reference_device()
    values = []
    for key, leaf in leaves:
        value = stored.get(jax.tree_util.keystr(key))
        if value is None or value.shape != leaf.shape:
            warnings.warn(
                f"{what} {path!r} does not match the network "
                f"({jax.tree_util.keystr(key)}); retraining and overwriting it",
                stacklevel=3,
            )
            return None
        values.append(jax.device_put(np.asarray(value, leaf.dtype), device))
    return jax.tree_util.tree_unflatten(treedef, values), accuracy
