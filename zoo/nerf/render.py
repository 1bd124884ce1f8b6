r"""Render a trained NeRF: every held-out view beside its ground truth, PSNR/SSIM, a turntable.

    python -m zoo.nerf.render --workdir=runs/lego
    python -m zoo.nerf.render --workdir=runs/lego --split=val --views=4 --frames=120 \
        --chunk=8192 --out=/tmp/r

Reads ``<workdir>/config.json``, restores the newest checkpoint (the EMA copy
where the run kept one) and writes to ``--out`` (default ``<workdir>/render``):
``<split>_NNN.png`` (render | ground truth), ``<split>_metrics.json`` (per-view
and mean PSNR/SSIM) and ``turntable.gif`` (``--frames`` poses of the scene's
render path; 0 skips it).
"""

from __future__ import annotations

import functools
import json
import logging
import os

import jax
import ml_collections
import numpy as np
from absl import app, flags
from flax import nnx
from PIL import Image
from tqdm.auto import tqdm


def restore_field(workdir: str):
    """``(config, module, step)``: the run's config, its trained NeRF module, the checkpoint step.

    Raises FileNotFoundError when the workdir has no config.json or no checkpoint, ValueError
    when its config.json is not JSON or not a NeRF run's.
    """
    from zoo import registry
    from zoo.engine.checkpoint import Checkpointer
    from zoo.engine.config import load_run_config
    from zoo.engine.parallel import Runner
    from zoo.engine.state import init_state, split_modules
    from zoo.nerf.objective import ROLE

    config = load_run_config(workdir)
    if config.model != "nerf":
        raise ValueError(f"{workdir} holds a {config.model!r} run, not a nerf one")
    objective = registry.build_objective(config)
    graphs, params, rest = split_modules(objective.modules)
    sharding = Runner("jit").replicated
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
        jax.eval_shape(functools.partial(init_state, objective), params, rest),
    )
    checkpointer = Checkpointer(workdir, async_save=False)
    try:
        if not checkpointer.steps():
            raise FileNotFoundError(
                f"no checkpoint in {checkpointer.directory}: train first "
                f"(python -m zoo.main --config=... --workdir={workdir})"
            )
        restored = checkpointer.restore_latest(abstract)
    finally:
        checkpointer.close()
    if restored is None:
        raise FileNotFoundError(f"no readable checkpoint in {checkpointer.directory}")
    state, _, data = restored
    trained = {**state.params, **state.ema}
    module = nnx.merge(graphs.eval[ROLE], trained[ROLE], state.rest[ROLE], copy=True)
    return config, module, int(data["step"])


def _png(rgb: np.ndarray) -> Image.Image:
    return Image.fromarray((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8))


def render_workdir(workdir: str, *, split="test", views=0, frames=60, chunk=0, out="") -> dict:
    """Render ``workdir``'s held-out ``split`` and a turntable; returns the metrics dict."""
    from zoo import data as zdata
    from zoo.nerf.objective import (
        render_chunked,
        render_kwargs,
        scene_info,
        view_metrics,
        view_rays,
    )

    config, module, step = restore_field(workdir)
    out = out or os.path.join(workdir, "render")
    os.makedirs(out, exist_ok=True)
    info = scene_info(config.data)
    kw = render_kwargs(config, info)
    chunk = int(chunk) or int(config.nerf.render_chunk)
    graph, variables = nnx.split(module)

    @jax.jit
    def render(variables, rays):  # rays: origins, directions (and viewdirs in NDC), [H, W, 3]
        o, d, v = rays["origins"], rays["directions"], rays.get("viewdirs")
        return render_chunked(nnx.merge(graph, variables), o, d, chunk, viewdirs=v, **kw)["rgb"]

    @jax.jit
    def metrics(rgb, target):
        return view_metrics(rgb[None], target[None])

    data_cfg = ml_collections.ConfigDict(config.data.to_dict())
    data_cfg.eval_split = split
    data_cfg.num_eval_views = 0  # every view of the split, then the first `views`
    source = zdata.make_eval_source(data_cfg)
    total = min(int(views) or source.num_examples, source.num_examples)
    views = []
    for batch in tqdm(source.batches(1, total), total=total, desc=f"{split} views"):
        target = np.asarray(batch["rgb"][0], np.float32)
        rays = {k: batch[k][0] for k in ("origins", "directions", "viewdirs") if k in batch}
        rgb = np.clip(np.asarray(render(variables, rays)), 0, 1)
        k = len(views)
        _png(np.concatenate([rgb, target], axis=1)).save(os.path.join(out, f"{split}_{k:03d}.png"))
        views.append({"index": k, **{n: float(v) for n, v in metrics(rgb, target).items()}})
    result = {"step": step, "split": split, "views": views}
    for name in views[0] if views else ():
        if name != "index":
            result[f"mean_{name}"] = float(np.mean([v[name] for v in views]))
    with open(os.path.join(out, f"{split}_metrics.json"), "w") as f:
        json.dump(result, f, indent=2)

    if frames > 0:
        poses = np.asarray(info.render_poses)
        poses = poses[np.linspace(0, len(poses), frames, endpoint=False).astype(int)]
        images = []
        for pose in tqdm(poses, desc="turntable"):
            rays = {k: v[0] for k, v in view_rays(info, pose[None]).items()}
            images.append(_png(np.asarray(render(variables, rays))))
        images[0].save(
            os.path.join(out, "turntable.gif"),
            save_all=True,
            append_images=images[1:],
            duration=max(20, 3000 // len(images)),
            loop=0,
        )
    return result


def define_flags() -> None:
    """The CLI's flags; defined only when run as a program, so that importing this module
    next to ``zoo.main`` (which also defines --workdir) does not clash in absl's registry."""
    flags.DEFINE_string("workdir", None, "A run directory written by zoo.main.")
    flags.DEFINE_string("split", "test", "Held-out split to render: test or val.")
    flags.DEFINE_integer("views", 0, "Render the first N views of the split (0: all).")
    flags.DEFINE_integer("frames", 60, "Turntable frames (0: no GIF).")
    flags.DEFINE_integer("chunk", 0, "Rays per render step (0: config nerf.render_chunk).")
    flags.DEFINE_string("out", "", "Output directory (default <workdir>/render).")
    flags.mark_flags_as_required(["workdir"])


def main(argv):
    del argv
    f = flags.FLAGS
    for noisy in ("absl", "orbax", "jax"):  # Orbax logs every restore step at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        result = render_workdir(
            f.workdir, split=f.split, views=f.views, frames=f.frames, chunk=f.chunk, out=f.out
        )
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    means = ", ".join(f"{k} {v:.4g}" for k, v in result.items() if k.startswith("mean_"))
    print(f"step {result['step']}, {len(result['views'])} {result['split']} views: {means}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
