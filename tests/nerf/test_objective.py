"""The NeRF objective: hierarchical rendering, chunking, config checks and a loss that learns."""

import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from PIL import Image

from zoo.engine.objective import Context
from zoo.engine.state import split_modules
from zoo.engine.step import Models
from zoo.nerf import objective as nerf_objective
from zoo.nerf.field import NeRF

TINY = dict(depth=2, width=16, skip=0, pos_freqs=3, dir_freqs=1, view_width=8)
KW = dict(near=2.0, far=6.0, num_coarse=8, num_fine=6, white_background=True)


def _rays(n, seed=0):
    """Rays from a sphere of radius 4 towards the origin region (Blender-like)."""
    rng = np.random.default_rng(seed)
    o = rng.normal(size=(n, 3))
    o = 4.0 * o / np.linalg.norm(o, axis=-1, keepdims=True)
    d = -o / 4.0 + 0.2 * rng.normal(size=(n, 3))
    return jnp.asarray(o, jnp.float32), jnp.asarray(d, jnp.float32)


def _sphere_colours(o, d):
    """Ground truth of a toy scene: a red unit sphere at the origin on white."""
    o, d = np.asarray(o, np.float64), np.asarray(d, np.float64)
    b = np.sum(o * d, -1)
    disc = b**2 - np.sum(d * d, -1) * (np.sum(o * o, -1) - 1.0)
    hit = disc > 0
    return np.where(hit[:, None], [1.0, 0.1, 0.1], [1.0, 1.0, 1.0]).astype(np.float32)


def test_render_rays_shapes_and_fine_samples_per_ray():
    model = NeRF(fine=True, rngs=nnx.Rngs(0), **TINY)
    o, d = _rays(5)
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(jnp.arange(5))
    render = jax.jit(lambda keys: nerf_objective.render_rays(model, o, d, keys=keys, **KW))
    out = render(keys)
    assert out["coarse"]["weights"].shape == (5, 8)
    assert out["fine"]["weights"].shape == (5, 14) and out["fine"]["rgb"].shape == (5, 3)
    # Deterministic without keys, random (per ray) with them.
    a = render(None)["fine"]["rgb"]
    b = render(None)["fine"]["rgb"]
    np.testing.assert_array_equal(a, b)
    assert np.abs(np.asarray(out["fine"]["rgb"] - a)).max() > 0
    coarse_only = NeRF(fine=False, rngs=nnx.Rngs(0), **TINY)
    out = nerf_objective.render_rays(coarse_only, o, d, **{**KW, "num_fine": 0})
    assert out["fine"] is out["coarse"]


def test_render_chunked_matches_one_pass():
    model = NeRF(fine=True, rngs=nnx.Rngs(1), **TINY)
    o, d = _rays(2 * 3 * 5, seed=1)
    whole = jax.jit(lambda: nerf_objective.render_rays(model, o, d, **KW)["fine"])()
    # 30 rays in chunks of 7: padding and cropping must not change anything.
    chunked = jax.jit(
        lambda: nerf_objective.render_chunked(
            model, o.reshape(2, 3, 5, 3), d.reshape(2, 3, 5, 3), 7, **KW
        )
    )()
    assert chunked["rgb"].shape == (2, 3, 5, 3) and chunked["depth"].shape == (2, 3, 5)
    np.testing.assert_allclose(chunked["rgb"].reshape(-1, 3), whole["rgb"], atol=2e-5)
    np.testing.assert_allclose(chunked["acc"].reshape(-1), whole["acc"], atol=2e-5)


def _config(**nerf):
    c = nerf_objective.nerf_config()
    c.nerf.update(dict(**TINY, num_coarse=8, num_fine=8, render_chunk=64))
    c.nerf.update(nerf)
    c.data.batch_size = 64
    c.optim.update(dict(lr=1e-2, schedule="constant"))
    c.train.steps = 40
    return c


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(skip=1), "skip"),
        (dict(num_coarse=2), "num_coarse >= 3"),
        (dict(num_coarse=0, num_fine=0), "num_coarse"),
        (dict(render_chunk=0), "render_chunk"),
    ],
)
def test_bad_configs_raise_before_compiling(change, message):
    with pytest.raises(ValueError, match=message):
        nerf_objective.build_objective(_config(**change))


def test_bad_dataset_and_flip_raise():
    c = _config()
    c.data.name = "digits"
    with pytest.raises(ValueError, match="blender"):
        nerf_objective.build_objective(c)
    c = _config()
    c.data.random_flip = True
    with pytest.raises(ValueError, match="random_flip"):
        nerf_objective.build_objective(c)


def test_config_builds_without_data_and_paper_size():
    c = nerf_objective.nerf_config()
    c.data.dir = "/nonexistent/scene"  # geometry is read on first use, not at build
    obj = nerf_objective.build_objective(c)
    obj.check()
    model = obj.modules["field"]
    n = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert n == 2 * 595_844  # coarse + fine, paper size each
    assert [p.updates for p in obj.players] == ["field"]


@pytest.mark.parametrize("num_fine", [8, 0])
def test_loss_decreases_on_a_toy_scene(monkeypatch, num_fine):
    info = types.SimpleNamespace(near=2.0, far=6.0, ndc=False, white_background=True)
    monkeypatch.setattr(nerf_objective, "scene_info", lambda data_cfg: info)
    c = _config(num_fine=num_fine)
    obj = nerf_objective.build_objective(c)
    graphs, params, rest = split_modules(obj.modules)
    tx = obj.optimizers["field"]
    loss_fn = obj.players[0].loss

    @jax.jit
    def step(p, opt_state, batch, i):
        ids = jnp.arange(64, dtype=jnp.int32)
        ctx = Context(jax.random.fold_in(jax.random.key(0), i), i, jnp.int32(0), ids)

        def f(p):
            return loss_fn(Models(graphs, {"field": p}, rest), batch, ctx)

        (value, aux), grads = jax.value_and_grad(f, has_aux=True)(p)
        updates, opt_state = tx.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state, aux

    p, opt_state = params["field"], tx.init(params["field"])
    steps = 150
    o, d = _rays(64 * steps, seed=2)
    rgb = _sphere_colours(o, d)
    # The best constant colour scores the colour variance per network; beating
    # it by far needs the sphere's geometry (density), not just a mean colour.
    constant = np.mean((rgb - rgb.mean(0)) ** 2) * (2 if num_fine else 1)
    losses = []
    for i in range(steps):
        sl = slice(64 * i, 64 * (i + 1))
        batch = {"origins": o[sl], "directions": d[sl], "rgb": jnp.asarray(rgb[sl])}
        p, opt_state, aux = step(p, opt_state, batch, i)
        losses.append(float(aux["loss"]))
        assert np.isfinite(float(aux["psnr"]))
    first, last = np.mean(losses[:5]), np.mean(losses[-10:])
    assert last < 0.5 * first and last < 0.5 * constant, np.round(losses[::10], 3).tolist()


def write_llff_scene(root, num=9, height=24, width=32, focal=30.0):
    """A small forward-facing LLFF folder: poses_bounds.npy and images/ (coloured gradients)."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    rows = []
    for k in range(num):
        centre = np.array([0.3 * np.cos(k), 0.2 * np.sin(k), 0.1 * rng.normal()])
        # LLFF columns: down, right, back (camera looks along -back), centre, then (H, W, f).
        mat = np.stack([[0, -1, 0], [1, 0, 0], [0, 0, 1], centre, [height, width, focal]], -1)
        rows.append(np.concatenate([mat.reshape(-1), [2.0, 8.0]]))
        y, x = np.mgrid[0:height, 0:width] / max(height, width)
        image = np.stack([x, y, 0.5 + 0.3 * np.sin(6 * x + k)], -1)
        Image.fromarray((image * 255).astype(np.uint8)).save(root / "images" / f"{k:03d}.png")
    np.save(root / "poses_bounds.npy", np.stack(rows))
    return root


def test_llff_tiny_trains_in_ndc_and_samples_match_the_loader(tmp_path):
    from configs import nerf_llff
    from zoo.data.scenes import llff
    from zoo.main import run

    c = nerf_llff.get_config("tiny")
    c.data.dir = str(write_llff_scene(tmp_path / "scene"))
    info = nerf_objective.scene_info(c.data)
    assert info.ndc and (info.near, info.far) == (0.0, 1.0)
    # The sample views' rays (from poses) are the eval loader's rays (NDC, near plane 1).
    views = llff.open_split(c.data, train=False).load(np.arange(2))
    o, d = nerf_objective.view_rays(info, info.test_poses[:2])
    np.testing.assert_allclose(o, views["origins"], atol=1e-5)
    np.testing.assert_allclose(d, views["directions"], atol=1e-5)

    state = run(c, str(tmp_path / "run"))
    assert int(state.step) == c.train.steps
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    evals = [json.loads(x) for x in lines if "eval/psnr" in x]
    assert evals and np.isfinite(evals[-1]["eval/psnr"]) and "eval/ssim" in evals[-1]
    sample = Image.open(tmp_path / "run" / "samples" / "step_0000004.png")
    assert sample.size[1] >= 12


def test_sphere_bounds_clip_rays_to_the_scene_sphere():
    from zoo.nerf.objective import sphere_bounds

    origins = np.array([[0.0, 0.0, 4.0], [0.0, 3.0, 4.0], [0.0, 0.0, 4.0]], np.float32)
    directions = np.array([[0.0, 0.0, -2.0], [0.0, 0.0, -1.0], [0.0, 0.0, 1.0]], np.float32)
    near, far = sphere_bounds(origins, directions, 1.5, 2.0, 6.0)
    # Ray 0 (|d| = 2) meets the sphere at z = 1.5 and -1.5: t = 1.25 -> clipped to near 2,
    # and t = 2.75. Ray 1 passes 3 units from the centre: a miss. Ray 2 points away.
    np.testing.assert_allclose(np.asarray(near), [2.0, 2.0, 2.0], atol=1e-6)
    np.testing.assert_allclose(np.asarray(far), [2.75, 6.0, 6.0], atol=1e-6)
