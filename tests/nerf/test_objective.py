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
    rays = nerf_objective.view_rays(info, info.test_poses[:2])
    assert sorted(rays) == ["directions", "origins", "viewdirs"] and "viewdirs" in views
    for key in ("origins", "directions", "viewdirs"):
        np.testing.assert_allclose(rays[key], views[key], atol=1e-5)

    state = run(c, str(tmp_path / "run"))
    assert int(state.step) == c.train.steps
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    evals = [json.loads(x) for x in lines if "eval/psnr" in x]
    assert evals and np.isfinite(evals[-1]["eval/psnr"]) and "eval/ssim" in evals[-1]
    sample = Image.open(tmp_path / "run" / "samples" / "step_0000004.png")
    assert sample.size[1] >= 12
    # The render CLI's path for an NDC scene (eval views and the spiral carry viewdirs).
    from zoo.nerf.render import render_workdir

    result = render_workdir(str(tmp_path / "run"), views=1, frames=2, chunk=64)
    assert len(result["views"]) == 1 and np.isfinite(result["mean_psnr"])
    assert (tmp_path / "run" / "render" / "turntable.gif").exists()


class DirectionSpy:
    """Stands in for the NeRF module: records the view direction each MLP call is given."""

    def __init__(self):
        self.seen = []
        self.coarse = self.fine = self.mlp

    def mlp(self, points, directions):
        jax.debug.callback(lambda d: self.seen.append(np.asarray(d)), directions)
        return jnp.zeros(points.shape[:-1]), jnp.full((*points.shape[:-1], 3), 0.5)


def _spied_loss(config, batch):
    """Run the objective's loss once on ``batch``; the (unit) directions its MLPs saw."""
    obj = nerf_objective.build_objective(config)
    spy = DirectionSpy()
    jax.jit(lambda b: obj.players[0].loss(lambda role, train=True: spy, b, None))(batch)
    jax.effects_barrier()
    assert len(spy.seen) == 2  # coarse and fine
    d = spy.seen[0][:, 0, :]
    return d / np.linalg.norm(d, axis=-1, keepdims=True)


def test_llff_ndc_mlp_sees_each_pixels_world_direction(tmp_path):
    """In NDC the MLP's view direction is the ray's world direction (bmild/nerf run_nerf.py:
    viewdirs = rays_d normalised before ndc_rays), not the NDC one."""
    from configs import nerf_llff
    from zoo.data.scenes import cameras, llff

    c = nerf_llff.get_config("tiny")
    c.data.dir = str(write_llff_scene(tmp_path / "scene"))
    c.nerf.perturb = False
    examples = llff.open_split(c.data, train=True)
    h, w = examples.height, examples.width
    # Two opposite corners of the first training camera.
    pixels = np.array([0, h * w - 1])
    batch = {k: jnp.asarray(v) for k, v in examples.load(pixels).items()}
    seen = _spied_loss(c, batch)

    # Independently: the world rays of those pixels from the normalised LLFF poses.
    poses, _ = llff.normalise_poses(*llff.read_poses_bounds(c.data.dir)[::2])
    train_ids = np.setdiff1d(np.arange(9), np.arange(0, 9, 8))
    pose = poses[train_ids[0]]
    _, d = cameras.rays_at_pixels(pose, h, w, examples.focal, np.array([0, w - 1]), [0, h - 1])
    world = d / np.linalg.norm(d, axis=-1, keepdims=True)
    np.testing.assert_allclose(seen, world, atol=1e-5)
    angle = lambda a, b: np.arccos(np.clip(np.dot(a, b), -1, 1))  # noqa: E731
    assert angle(*world) > 0.3  # the corners look ~20 degrees apart...
    assert abs(angle(*seen) - angle(*world)) < 1e-4  # ... and so do the MLP's inputs
    # (The NDC directions of one camera are nearly parallel: what the MLP saw before.)
    ndc = np.asarray(batch["directions"]) / np.linalg.norm(batch["directions"], axis=-1)[:, None]
    assert angle(*ndc) < 0.5 * angle(*world)


def test_blender_rays_feed_their_own_normalised_direction(monkeypatch):
    """Without viewdirs (Blender, LLFF without NDC) the MLP sees the ray's direction."""
    info = types.SimpleNamespace(near=2.0, far=6.0, ndc=False, white_background=True)
    monkeypatch.setattr(nerf_objective, "scene_info", lambda data_cfg: info)
    c = _config(perturb=False)
    o, d = _rays(4)
    seen = _spied_loss(c, {"origins": o, "directions": d, "rgb": jnp.zeros((4, 3))})
    np.testing.assert_allclose(seen, d / jnp.linalg.norm(d, axis=-1, keepdims=True), atol=1e-6)


def test_render_chunked_passes_viewdirs():
    model = NeRF(fine=True, rngs=nnx.Rngs(3), **TINY)
    o, d = _rays(12, seed=3)
    v = jnp.asarray(np.random.default_rng(3).normal(size=(12, 3)), jnp.float32)

    @jax.jit
    def renders(v):
        with_v = nerf_objective.render_rays(model, o, d, viewdirs=v, **KW)["fine"]["rgb"]
        without = nerf_objective.render_rays(model, o, d, **KW)["fine"]["rgb"]
        chunked = nerf_objective.render_chunked(
            model, o.reshape(3, 4, 3), d.reshape(3, 4, 3), 5, viewdirs=v.reshape(3, 4, 3), **KW
        )["rgb"]
        return with_v, without, chunked.reshape(-1, 3)

    with_v, without, chunked = renders(v)
    assert np.abs(np.asarray(with_v - without)).max() > 1e-4  # the colour depends on it
    np.testing.assert_allclose(chunked, with_v, atol=2e-5)


class PeakedField:
    """Stands in for the NeRF module along rays o = 0, d = +z (so t = z): the coarse MLP has
    density ``sigma[i]`` at the i-th coarse sample and none elsewhere; the fine MLP is empty."""

    def __init__(self, t_coarse, sigma):
        self.t_coarse, self.sigma = jnp.asarray(t_coarse), jnp.asarray(sigma, jnp.float32)

    def coarse(self, points, directions):
        t = points[..., 2]
        hit = jnp.abs(t[..., None] - self.t_coarse) < 1e-4  # [R, N, Nc]
        return jnp.sum(jnp.where(hit, self.sigma, 0.0), -1), jnp.zeros((*t.shape, 3))

    def fine(self, points, directions):
        return jnp.zeros(points.shape[:-1]), jnp.zeros((*points.shape[:-1], 3))


def test_fine_samples_follow_the_interior_coarse_weights():
    """Hierarchical sampling (paper sec. 5.2, bmild/nerf sample_pdf(z_vals_mid,
    weights[..., 1:-1])): the fine samples are the inverse CDF of the coarse weights of the
    N_c - 2 interior samples on the bins between coarse midpoints. Checked against a float64
    inverse CDF (np.interp) of a hand-built, sharply peaked weight vector, so drawing from
    any other slice of the weights (say ``weights[..., :-2]``) fails."""
    near, far, nc, nf = 2.0, 6.0, 8, 33
    t_c = near + (far - near) * (np.arange(nc) + 0.5) / nc  # deterministic: bin midpoints
    delta = (far - near) / nc
    # alpha 0.3 at sample 2, opaque at sample 5: weights (eq. 5.4) 0.3 and 0.7, 0 elsewhere.
    alpha = np.zeros(nc)
    alpha[2], alpha[5] = 0.3, 1.0
    sigma = -np.log1p(-np.minimum(alpha, 1 - 1e-12)) / delta  # 1e-12: opaque enough
    weights = alpha * np.cumprod(np.concatenate([[1.0], 1.0 - alpha[:-1]]))
    np.testing.assert_allclose(weights, [0, 0, 0.3, 0, 0, 0.7, 0, 0], atol=1e-12)

    field = PeakedField(t_c, sigma)
    o = jnp.zeros((1, 3))
    d = jnp.asarray([[0.0, 0.0, 1.0]])
    kw = dict(near=near, far=far, num_coarse=nc, num_fine=nf, white_background=False)
    out = jax.jit(lambda: nerf_objective.render_rays(field, o, d, **kw))()
    np.testing.assert_allclose(out["coarse"]["t"][0], t_c, atol=1e-6)
    np.testing.assert_allclose(out["coarse"]["weights"][0], weights, atol=1e-6)

    # The reference: bins between midpoints, the interior samples' weights (+ the reference
    # code's 1e-5 padding), inverse CDF at evenly spaced u.
    mids = 0.5 * (t_c[1:] + t_c[:-1])
    pdf = weights[1:-1] + 1e-5
    cdf = np.concatenate([[0.0], np.cumsum(pdf / pdf.sum())])
    t_f = np.interp(np.linspace(0.0, 1.0, nf), cdf, mids)
    seen = out["fine"]["t"][0]  # the fine network's samples: coarse and fine, sorted
    np.testing.assert_allclose(seen, np.sort(np.concatenate([t_c, t_f])), atol=1e-4)
    # Most fine samples sit around the peaks: inside the bins centred on samples 2 and 5.
    in_peaks = ((t_f > mids[1]) & (t_f < mids[2])) | ((t_f > mids[4]) & (t_f < mids[5]))
    assert in_peaks.sum() >= nf - 4


def test_sphere_bounds_clip_rays_to_the_scene_sphere():
    from zoo.nerf.objective import sphere_bounds

    origins = np.array([[0.0, 0.0, 4.0], [0.0, 3.0, 4.0], [0.0, 0.0, 4.0]], np.float32)
    directions = np.array([[0.0, 0.0, -2.0], [0.0, 0.0, -1.0], [0.0, 0.0, 1.0]], np.float32)
    near, far = sphere_bounds(origins, directions, 1.5, 2.0, 6.0)
    # Ray 0 (|d| = 2) meets the sphere at z = 1.5 and -1.5: t = 1.25 -> clipped to near 2,
    # and t = 2.75. Ray 1 passes 3 units from the centre: a miss. Ray 2 points away.
    np.testing.assert_allclose(np.asarray(near), [2.0, 2.0, 2.0], atol=1e-6)
    np.testing.assert_allclose(np.asarray(far), [2.75, 6.0, 6.0], atol=1e-6)
