"""The NeRF objective for the engine: one player over ray batches (paper sec. 5).

Config fields read (``config.model == "nerf"``):
  data: name ('blender' | 'llff'), batch_size (rays per step) and what the
    loaders read (dir, image_size, white_background, eval_split, ...); near,
    far, ndc and white_background come from their :func:`scene_info`
  nerf: pos_freqs, dir_freqs (L of eq. 4), depth, width, skip, view_width (the
    MLP, :class:`~zoo.nerf.field.NeRFMLP`), num_coarse (N_c), num_fine (N_f; 0
    = one network and stratified samples only), perturb (jitter the stratified
    samples and draw random u for the fine ones while training), render_chunk
    (rays per ``lax.map`` step when rendering whole views)
  optim, train.steps, seed

One module, role ``"field"``, holds both networks (:class:`~zoo.nerf.field.NeRF`)
so that one player ``"nerf"`` updates them with the paper's loss
``||C_c(r) - C(r)||^2 + ||C_f(r) - C(r)||^2`` averaged over the ray batch.
Each ray's sample jitter comes from its own key (``zoo.engine.rng``), so a run
draws the same samples whatever the device count.

The scene's geometry (near/far, NDC, test poses) is read on first use, not at
build time: a config builds without its data (the engine's data check runs
first and reports a missing folder).
"""

from __future__ import annotations

import functools
import importlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from zoo.engine.objective import Objective, Player
from zoo.engine.optim import make_optimizer
from zoo.engine.rng import example_keys
from zoo.evals.image_metrics import SSIM_WINDOW, psnr, ssim
from zoo.nerf.field import NeRF
from zoo.nerf.sampling import merge_samples, sample_pdf, stratified_samples
from zoo.nerf.volume import volume_render

DATASETS = ("blender", "llff")
ROLE = "field"


def scene_info(data_cfg):
    """The :class:`SceneInfo` of ``config.data`` from its loader (blender or llff)."""
    if data_cfg.name not in DATASETS:
        raise ValueError(f"nerf needs data.name in {DATASETS}, got {data_cfg.name!r}")
    return importlib.import_module(f"zoo.data.scenes.{data_cfg.name}").scene_info(data_cfg)


def nerf_config():
    """The paper's settings for Blender scenes (Mildenhall et al. 2020, sec. 5.3 and app. A).

    L = 10 / 4, an 8 x 256 MLP with the input again after the fifth layer, a
    128-unit view layer, 64 coarse + 128 fine samples, 4096 rays per step,
    Adam 5e-4 decaying exponentially to 5e-5 over the run, white background.
    ``nerf.skip < 0`` means no skip connection.
    """
    import ml_collections

    from zoo.engine.config import base_config
    from zoo.engine.stages import stage_entry

    c = base_config()
    c.init.field = stage_entry("field")  # --config.init.field.workdir=RUN starts from RUN
    c.model = "nerf"
    c.data.update(
        dict(
            name="blender",
            dir="",  # "": the procedural scene (zoo.data.scenes.procedural)
            image_size=0,
            white_background=True,
            batch_size=4096,
            random_flip=False,
            eval_split="test",
            num_eval_views=0,
        )
    )
    c.nerf = ml_collections.ConfigDict(
        dict(
            pos_freqs=10,
            dir_freqs=4,
            depth=8,
            width=256,
            skip=4,
            view_width=128,
            num_coarse=64,
            num_fine=128,
            perturb=True,
            render_chunk=4096,
            near=-1.0,  # < 0: the scene's bounds (Blender 2 / 6, NDC 0 / 1)
            far=-1.0,
            bound_radius=0.0,  # > 0: sample only each ray's chord of this sphere
        )
    )
    c.optim.update(
        dict(name="adam", lr=5e-4, schedule="exponential", end_lr_factor=0.1, grad_clip=0.0)
    )
    c.train.update(
        dict(
            steps=200_000,
            log_every=100,
            sample_every=10_000,
            eval_every=10_000,
            checkpoint_every=10_000,
            num_samples=4,
        )
    )
    c.eval.update(dict(batch_size=8, num_examples=0, num_samples=0))
    return c


def check_config(config) -> None:
    """ValueError on a nerf config that cannot work (before anything compiles)."""
    if config.model != "nerf":
        raise ValueError(f"nerf objective builds model 'nerf', not {config.model!r}")
    if config.data.name not in DATASETS:
        raise ValueError(f"nerf needs data.name in {DATASETS}, got {config.data.name!r}")
    n = config.nerf
    if int(n.num_coarse) < 1 or int(n.num_fine) < 0:
        raise ValueError(
            f"nerf.num_coarse must be >= 1 and num_fine >= 0; got {n.num_coarse}, {n.num_fine}"
        )
    if int(n.num_fine) > 0 and int(n.num_coarse) < 3:
        # The fine PDF lives on the coarse midpoints' N_c - 2 interior bins.
        raise ValueError(f"nerf.num_fine > 0 needs nerf.num_coarse >= 3, got {n.num_coarse}")
    if int(n.render_chunk) < 1:
        raise ValueError(f"nerf.render_chunk must be >= 1, got {n.render_chunk}")
    if n.skip is not None and int(n.skip) >= max(int(n.depth) - 1, 0):
        raise ValueError(f"nerf.skip={n.skip} must be < nerf.depth - 1 = {int(n.depth) - 1}")
    if config.data.get("random_flip", False):
        raise ValueError("nerf trains on rays: set data.random_flip=False")
    near, far = float(n.get("near", -1.0)), float(n.get("far", -1.0))
    if (near >= 0) != (far >= 0) or (near >= 0 and not near < far):
        raise ValueError(
            f"nerf.near/far must both be < 0 (the scene's) or 0 <= near < far; got {near}, {far}"
        )


def field_from_config(n, *, rngs: nnx.Rngs) -> NeRF:
    """The :class:`NeRF` module of ``config.nerf`` (coarse + fine unless num_fine == 0)."""
    return NeRF(
        fine=int(n.num_fine) > 0,
        depth=int(n.depth),
        width=int(n.width),
        skip=None if n.skip is None or int(n.skip) < 0 else int(n.skip),
        pos_freqs=int(n.pos_freqs),
        dir_freqs=int(n.dir_freqs),
        view_width=int(n.get("view_width", int(n.width) // 2)),
        rngs=rngs,
    )


def render_rays(
    model: NeRF,
    origins: jax.Array,
    directions: jax.Array,
    *,
    viewdirs: jax.Array | None = None,
    near: float,
    far: float,
    num_coarse: int,
    num_fine: int,
    white_background: bool,
    keys: jax.Array | None = None,
    bound_radius: float = 0.0,
) -> dict[str, dict[str, jax.Array]]:
    """Hierarchical volume rendering of rays ``r(t) = o + t d`` (paper sec. 5.2).

    Args:
      model: coarse (+ fine) MLPs.
      origins, directions: ``[R, 3]`` rays (directions unnormalised; world or NDC).
      viewdirs: ``[R, 3]`` the MLP's view direction (NDC scenes: the unit world
        direction of each ray); None: ``directions`` (normalised by the MLP).
      near, far: the ray segment in ``t``.
      num_coarse: N_c stratified samples (eq. 5.3).
      num_fine: N_f samples drawn from the coarse weights; the fine network sees
        all N_c + N_f. 0: coarse only.
      keys: ``[R]`` PRNG keys, one per ray (jittered stratified samples, random u);
        None: bin midpoints and evenly spaced u (deterministic evaluation).
      bound_radius: > 0: the scene lies inside the sphere of this radius around
        the origin, so each ray samples only its chord through that sphere
        (within [near, far]); rays that miss it keep [near, far]. The same
        samples then cover less empty space (the bounded-scene trick of later
        NeRF work); 0 samples every ray over [near, far] as the paper does.

    In NDC (LLFF) the MLP sees NDC positions and, as the reference code does
    (bmild/nerf ``run_nerf.py``: ``viewdirs`` is ``rays_d`` normalised before
    ``ndc_rays``), the world direction of each ray as its view direction: the NDC
    directions of one camera's pixels are nearly parallel (all rays start on the
    near plane z' = -1 and end at z' = 1), so they would hide the view
    dependence. The LLFF loader hands over both.

    Returns:
      ``{"coarse": ..., "fine": ...}``, each :func:`~zoo.nerf.volume.volume_render`'s
      dict for ``[R]`` rays plus ``t [R, N]``, where that pass sampled (the fine pass:
      the sorted union of coarse and fine samples); ``"fine"`` is the coarse result
      when ``num_fine == 0``.
    """
    num_rays = origins.shape[0]
    if bound_radius > 0:
        near, far = sphere_bounds(origins, directions, bound_radius, near, far)

    view = (directions if viewdirs is None else viewdirs)[:, None, :]

    def field(net, t):
        points = origins[:, None, :] + t[..., None] * directions[:, None, :]  # [R, N, 3]
        sigma, rgb = net(points, view)
        out = volume_render(sigma, rgb, t, directions, white_background=white_background)
        return {**out, "t": t}

    if keys is None:
        t_c = stratified_samples(near, far, num_coarse, None, (num_rays,))
    else:
        near, far = (
            jnp.broadcast_to(jnp.asarray(x, jnp.float32), (num_rays,)) for x in (near, far)
        )
        t_c = jax.vmap(
            lambda k, a, b: stratified_samples(a, b, num_coarse, jax.random.fold_in(k, 0))
        )(keys, near, far)
    coarse = field(model.coarse, t_c)
    if num_fine == 0:
        return {"coarse": coarse, "fine": coarse}
    # Paper sec. 5.2 (and its code): the PDF's bins are the midpoints between
    # coarse samples, weighted by the interior samples' weights.
    mids = 0.5 * (t_c[..., 1:] + t_c[..., :-1])
    w = coarse["weights"][..., 1:-1]
    if keys is None:
        t_f = sample_pdf(mids, w, num_fine)
    else:
        t_f = jax.vmap(lambda b, wi, k: sample_pdf(b, wi, num_fine, jax.random.fold_in(k, 1)))(
            mids, w, keys
        )
    fine = field(model.fine, merge_samples(t_c, t_f))
    return {"coarse": coarse, "fine": fine}


def sphere_bounds(origins, directions, radius: float, near: float, far: float):
    """Per-ray ``(near [R], far [R])``: the chord of ``|o + t d| <= radius`` within [near, far].

    Solves ``|d|^2 t^2 + 2 (o.d) t + |o|^2 - r^2 = 0``; a ray that misses the sphere
    (or meets it outside [near, far]) keeps [near, far].
    """
    a = jnp.sum(directions * directions, axis=-1)
    b = jnp.sum(origins * directions, axis=-1)
    c = jnp.sum(origins * origins, axis=-1) - radius**2
    disc = b * b - a * c
    root = jnp.sqrt(jnp.maximum(disc, 0.0))
    t0 = jnp.maximum((-b - root) / a, near)
    t1 = jnp.minimum((-b + root) / a, far)
    hit = (disc > 0) & (t1 > t0)
    return jnp.where(hit, t0, near), jnp.where(hit, t1, far)


def render_chunked(
    model: NeRF,
    origins: jax.Array,
    directions: jax.Array,
    chunk: int,
    viewdirs: jax.Array | None = None,
    **kw,
):
    """Deterministic render of rays of any leading shape, ``chunk`` rays at a time.

    ``jax.lax.map`` over chunks bounds memory by one chunk whatever the image size.

    Args:
      origins, directions: ``[..., 3]``; e.g. whole views ``[V, H, W, 3]``.
      chunk: rays per step.
      viewdirs: ``[..., 3]`` or None: see :func:`render_rays`.
      **kw: :func:`render_rays`'s other keyword arguments except ``keys``.

    Returns:
      dict ``rgb [..., 3]``, ``depth [...]``, ``acc [...]`` of the final (fine) pass.
    """
    shape = origins.shape[:-1]
    rays = {"o": origins, "d": directions}
    if viewdirs is not None:
        rays["v"] = viewdirs
    n = int(np.prod(shape))
    chunk = max(1, min(int(chunk), n))
    pad = (-n) % chunk
    # Edge padding: real (finite) rays, whose results are cropped away.
    rays = {
        k: jnp.pad(v.reshape(-1, 3), ((0, pad), (0, 0)), mode="edge").reshape(-1, chunk, 3)
        for k, v in rays.items()
    }

    def one(r):
        out = render_rays(model, r["o"], r["d"], viewdirs=r.get("v"), **kw)["fine"]
        return {k: out[k] for k in ("rgb", "depth", "acc")}

    out = jax.lax.map(one, rays)
    return {
        k: v.reshape(-1, *v.shape[2:])[:n].reshape(*shape, *v.shape[2:]) for k, v in out.items()
    }


def view_rays(info, poses: np.ndarray) -> dict[str, np.ndarray]:
    """Rays of whole views at ``poses [V, 4, 4]``, as the eval loaders give them.

    ``{"origins", "directions"}``, ``[V, H, W, 3]`` each, in NDC if the scene is;
    NDC scenes add ``"viewdirs"``, the unit world directions (see :func:`render_rays`).
    """
    from zoo.data.scenes import cameras

    rays = [cameras.pixel_rays(info.height, info.width, info.focal, p) for p in poses]
    o, d = (np.stack(x) for x in zip(*rays, strict=True))
    if not info.ndc:
        return {"origins": o, "directions": d}
    o_ndc, d_ndc = cameras.ndc_rays(o, d, info.height, info.width, info.focal, near=1.0)
    return {"origins": o_ndc, "directions": d_ndc, "viewdirs": cameras.view_directions(d)}


def view_metrics(rgb: jax.Array, target: jax.Array) -> dict[str, jax.Array]:
    """Mean PSNR (and SSIM, for views of at least 11x11) of ``[V, H, W, 3]`` in [0, 1]."""
    out = {"psnr": jnp.mean(psnr(rgb, target, axis=(-3, -2, -1)))}
    if min(rgb.shape[-3], rgb.shape[-2]) >= SSIM_WINDOW:
        out["ssim"] = jnp.mean(ssim(rgb, target))
    return out


def render_kwargs(config, info) -> dict:
    """:func:`render_rays`'s settings (without keys) for ``config`` and its ``info``."""
    near, far = float(config.nerf.get("near", -1.0)), float(config.nerf.get("far", -1.0))
    return dict(
        near=near if near >= 0 else float(info.near),
        far=far if far >= 0 else float(info.far),
        num_coarse=int(config.nerf.num_coarse),
        num_fine=int(config.nerf.num_fine),
        white_background=bool(info.white_background),
        bound_radius=0.0 if info.ndc else float(config.nerf.get("bound_radius", 0.0)),
    )


def build_objective(config) -> Objective:
    """The NeRF :class:`~zoo.engine.objective.Objective` described by ``config``."""
    check_config(config)
    n, data = config.nerf, config.data
    module = field_from_config(n, rngs=nnx.Rngs(config.seed))
    num_fine = int(n.num_fine)
    perturb, chunk = bool(n.perturb), int(n.render_chunk)
    info = functools.cache(lambda: scene_info(data))

    def render_kw():
        return render_kwargs(config, info())

    def loss(models, batch, ctx):
        """Paper's loss on ``batch`` rays: origins/directions/rgb (in [0, 1]) and, for NDC
        scenes, viewdirs, each ``[B, 3]``."""
        model = models(ROLE)
        keys = example_keys(ctx) if perturb else None
        o, d, v = batch["origins"], batch["directions"], batch.get("viewdirs")
        out = render_rays(model, o, d, viewdirs=v, keys=keys, **render_kw())
        target = batch["rgb"].astype(jnp.float32)
        mse_c = jnp.mean(jnp.square(out["coarse"]["rgb"] - target))
        mse_f = jnp.mean(jnp.square(out["fine"]["rgb"] - target))
        value = mse_c + mse_f if num_fine > 0 else mse_c
        aux = {"loss": value, "psnr": -10.0 * jnp.log10(mse_f)}
        if num_fine > 0:
            aux["psnr_coarse"] = -10.0 * jnp.log10(mse_c)
        return value, aux

    def evaluate(models, batch, rng):
        """Renders whole held-out views ``[V, H, W, 3]``: ``{"psnr", "ssim"}`` means."""
        del rng  # deterministic samples: the score of a checkpoint is one number
        model = models(ROLE, train=False)
        o, d, v = batch["origins"], batch["directions"], batch.get("viewdirs")
        out = render_chunked(model, o, d, chunk, viewdirs=v, **render_kw())
        return view_metrics(jnp.clip(out["rgb"], 0.0, 1.0), batch["rgb"].astype(jnp.float32))

    def sample(models, rng, num: int):
        """The first ``num`` test views (cycling) ``[num, H, W, 3]`` in [-1, 1]."""
        del rng
        s = info()
        poses = np.asarray(s.test_poses)[np.arange(num) % len(s.test_poses)]
        rays = view_rays(s, poses)
        o, d, v = rays["origins"], rays["directions"], rays.get("viewdirs")
        out = render_chunked(models(ROLE, train=False), o, d, chunk, viewdirs=v, **render_kw())
        return 2.0 * jnp.clip(out["rgb"], 0.0, 1.0) - 1.0

    return Objective(
        modules={ROLE: module},
        optimizers={ROLE: make_optimizer(config.optim, config.train.steps)},
        players=(Player("nerf", ROLE, loss),),
        sample=sample,
        evaluate=evaluate,
    )
