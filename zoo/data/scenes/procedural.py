"""A procedural scene, rendered by the zoo itself and written as a standard Blender folder.

Four solids inside [-1.5, 1.5]^3 (world z up): a red sphere, a blue box turned 30 degrees about
z, a green torus tilted 45 degrees and a yellow capped cylinder. The radiance field is
  sigma(x) = SIGMA_MAX * sigmoid(-sdf(x) / EDGE)     (sharp but smooth boundaries)
  c(x, d)  = albedo * (ambient + diffuse max(n.l, 0) + sky (1 + n_z) / 2)
             + specular max(n.h, 0)^SHININESS        (Blinn-Phong, fixed directional light)
with sdf the union (minimum) of the solids' signed distances, n its gradient, albedo that of the
nearest solid and h = normalise(l - d / |d|): the highlight moves with the viewer, so the
colour depends on the view direction as NeRF's 5D field allows (eq. 5.1's c(r(t), d)).

Each pixel is the quadrature of eq. 5.4 over SAMPLES deterministic midpoints of equal bins (eq.
5.3 without the jitter) of the ray's depth interval inside the BOUND sphere (within [NEAR, FAR];
outside it the density is < 1e-4), alpha = sum of the weights; the background is transparent.
Against a 2048-sample dense render the images differ by < 6e-3 (max over a 64x64 view). PNGs
store straight (not premultiplied) colour, as Blender's do, so compositing
rgb * alpha + background * (1 - alpha) recovers the render over any background.

Views: train and val cameras are random on the upper hemisphere (elevations 10..80 degrees,
uniform in area) at distance RADIUS, test cameras likewise from a third random stream (Blender's
test sets are a turntable; random views test the whole hemisphere instead). Rendering runs on
the CPU device in float32, so the folder is the same whichever accelerator the host has.
"""

import json
import os
import shutil
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from zoo.data.scenes import cameras

CAMERA_ANGLE_X = 0.6911112070083618  # Blender's nerf_synthetic field of view (radians)
RADIUS = 4.0  # camera distance from the origin, as Blender's scenes
NEAR, FAR = 2.0, 6.0  # depth range of the quadrature (and of NeRF's Blender config)
SAMPLES = 384  # per ray, over its chord of the BOUND sphere
WEIGHT_FLOOR = 1e-6  # points of smaller weight are not shaded (see render_rays)
BOUND = 1.35  # radius of a sphere holding every solid plus its soft edge
SIGMA_MAX = 400.0  # density inside a solid, per world unit
EDGE = 0.008  # sigmoid width of the boundary, world units
ELEVATIONS = (10.0, 80.0)  # degrees
SHININESS = 32.0
LIGHT = np.array([0.45, -0.35, 0.82]) / np.linalg.norm([0.45, -0.35, 0.82])
AMBIENT, DIFFUSE, SKY, SPECULAR = 0.15, 0.7, 0.2, 0.5
VERSION = 1  # part of the cache name: bump when the scene or its rendering changes
_CHUNK = 2048  # rays per compiled call: fixed shapes, one compile each
_POINT_CHUNK = 32768  # points per compiled shading call
_SPLIT_STREAMS = {"train": 0, "val": 1, "test": 2}

ALBEDO = np.array(
    [
        [0.85, 0.18, 0.14],  # sphere: red
        [0.16, 0.32, 0.88],  # box: blue
        [0.20, 0.75, 0.28],  # torus: green
        [0.92, 0.78, 0.16],  # cylinder: yellow
    ],
    np.float32,
)


def _length(*components: jnp.ndarray) -> jnp.ndarray:
    return jnp.sqrt(sum(c * c for c in components))


def _box_sdf(qx, qy, qz):
    """Distance to a box from |p| - half_extent per axis (exact outside and inside)."""
    outside = _length(jnp.maximum(qx, 0.0), jnp.maximum(qy, 0.0), jnp.maximum(qz, 0.0))
    return outside + jnp.minimum(jnp.maximum(jnp.maximum(qx, qy), qz), 0.0)


_C30, _S30 = np.cos(np.deg2rad(30.0)), np.sin(np.deg2rad(30.0))
_C45, _S45 = np.cos(np.deg2rad(45.0)), np.sin(np.deg2rad(45.0))


def _solid_sdfs(x: jnp.ndarray) -> jnp.ndarray:
    """Signed distances `[..., 4]` of the four solids at points x `[..., 3]` (negative inside).

    Written per component (no small matmuls): this is the renderer's inner loop.
    """
    px, py, pz = x[..., 0], x[..., 1], x[..., 2]
    sphere = _length(px + 0.5, py + 0.45, pz - 0.05) - 0.42
    # Box turned 30 degrees about z: rotate the point by -30 degrees into the box frame.
    bx, by = px - 0.5, py - 0.45
    box = _box_sdf(
        jnp.abs(_C30 * bx + _S30 * by) - 0.32,
        jnp.abs(-_S30 * bx + _C30 * by) - 0.32,
        jnp.abs(pz + 0.1) - 0.32,
    )
    # Torus (ring radius 0.34, tube 0.12) tilted 45 degrees about x.
    ty, tz = py + 0.5, pz + 0.2
    ring = _length(px - 0.45, _C45 * ty + _S45 * tz) - 0.34
    torus = _length(ring, -_S45 * ty + _C45 * tz) - 0.12
    # Capped cylinder along z: radius 0.2, half height 0.42.
    cylinder = _box_sdf(_length(px + 0.45, py - 0.5) - 0.2, jnp.abs(pz + 0.1) - 0.42, -1.0)
    return jnp.stack([sphere, box, torus, cylinder], axis=-1)


def _sdf(x: jnp.ndarray) -> jnp.ndarray:
    return _solid_sdfs(x).min(-1)


_TETRA = np.array([[1, -1, -1], [-1, -1, 1], [-1, 1, -1], [1, 1, 1]], np.float32)


def radiance(x: jnp.ndarray, d: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """The scene's radiance field at points x `[..., 3]` seen along directions d `[..., 3]`.

    Returns:
      sigma `[...]` (density per world unit) and rgb `[..., 3]` in [0, 1].
    """
    sdfs = _solid_sdfs(x)
    sigma = SIGMA_MAX * jax.nn.sigmoid(-sdfs.min(-1) / EDGE)
    # Normal: the SDF gradient by four tetrahedral differences (sum_k e_k sdf(x + h e_k)).
    h = 1e-3
    grad = sum(_TETRA[k] * _sdf(x + h * _TETRA[k])[..., None] for k in range(4))
    n = grad / (jnp.linalg.norm(grad, axis=-1, keepdims=True) + 1e-9)
    view = -d / jnp.linalg.norm(d, axis=-1, keepdims=True)
    half = LIGHT + view
    half = half / (jnp.linalg.norm(half, axis=-1, keepdims=True) + 1e-9)
    albedo = jnp.asarray(ALBEDO)[jnp.argmin(sdfs, axis=-1)]
    shade = AMBIENT + DIFFUSE * jnp.maximum(n @ LIGHT, 0.0) + SKY * (1.0 + n[..., 2]) / 2
    spec = SPECULAR * jnp.maximum((n * half).sum(-1), 0.0) ** SHININESS
    rgb = jnp.clip(albedo * shade[..., None] + spec[..., None], 0.0, 1.0)
    return sigma, rgb


def _bounded_depths(origins: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Depth interval `[R, 2]` of each ray inside the BOUND sphere, within [NEAR, FAR].

    t0 = t1 for a ray that misses the sphere.
    """
    # |o + t d|^2 = BOUND^2 is a quadratic a t^2 + 2 b t + c = 0 in the depth t.
    a = (directions**2).sum(-1)
    b = (origins * directions).sum(-1)
    c = (origins**2).sum(-1) - BOUND**2
    disc = np.maximum(b**2 - a * c, 0.0)
    t0 = np.clip((-b - np.sqrt(disc)) / a, NEAR, FAR)
    t1 = np.clip((-b + np.sqrt(disc)) / a, NEAR, FAR)
    t1 = np.where(b**2 - a * c > 0, t1, t0)
    return np.stack([t0, t1], axis=-1).astype(np.float32)


@jax.jit
def _weights_chunk(origins, directions, bounds):
    """Eq. 5.4's weights T_i (1 - exp(-sigma_i delta_i)) `[R, SAMPLES]` and depths t_i."""
    step = (bounds[:, 1] - bounds[:, 0])[:, None] / SAMPLES  # [R, 1]
    t = bounds[:, :1] + step * (jnp.arange(SAMPLES, dtype=jnp.float32) + 0.5)
    x = origins[:, None, :] + t[..., None] * directions[:, None, :]
    sigma = SIGMA_MAX * jax.nn.sigmoid(-_sdf(x) / EDGE)
    # delta_i is a depth step times |d|: the world distance between samples, as eq. 5.4 needs.
    tau = sigma * step * jnp.linalg.norm(directions, axis=-1, keepdims=True)
    transmittance = jnp.exp(-(jnp.cumsum(tau, axis=-1) - tau))  # T_i = exp(-sum_{j<i})
    return transmittance * (1.0 - jnp.exp(-tau)), t


_radiance_jit = jax.jit(radiance)


def _padded(n: int, chunk: int) -> int:
    return n + (-n % chunk)


def render_rays(origins: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Render rays `[R, 3]` (depth-parametrised, see `cameras`) -> `[R, 4]` float32 rgba.

    rgb is premultiplied by alpha (composited on black). Rays that miss the BOUND sphere get 0.
    Two passes: the weights of all SAMPLES points per ray (one SDF call each), then the colour
    (normals: four more SDF calls) only at the points whose weight exceeds WEIGHT_FLOOR; the
    skipped points carry < 1e-4 of a ray's weight (grazing rays spread it over ~100 samples,
    so a fixed top-k would not do).
    """
    o = np.asarray(origins, np.float32).reshape(-1, 3)
    d = np.asarray(directions, np.float32).reshape(-1, 3)
    bounds = _bounded_depths(o.astype(np.float64), d.astype(np.float64))
    hit = np.flatnonzero(bounds[:, 1] > bounds[:, 0])
    if len(hit) == 0:
        return np.zeros((len(o), 4), np.float32)
    idx = np.pad(hit, (0, _padded(len(hit), _CHUNK) - len(hit)), mode="edge")
    alpha = np.zeros(len(o), np.float32)
    rays, depths, weights = [], [], []
    with jax.default_device(jax.devices("cpu")[0]):
        for start in range(0, len(hit), _CHUNK):
            rows = idx[start : start + _CHUNK]
            w, t = map(np.asarray, _weights_chunk(o[rows], d[rows], bounds[rows]))
            real = min(_CHUNK, len(hit) - start)  # the padding repeats the last ray
            w, t, rows = w[:real], t[:real], rows[:real]
            alpha[rows] = w.sum(1)
            r, k = np.nonzero(w > WEIGHT_FLOOR)
            rays.append(rows[r])
            depths.append(t[r, k])
            weights.append(w[r, k])
        ray, depth, weight = map(np.concatenate, (rays, depths, weights))
        x = o[ray] + depth[:, None] * d[ray]
        size = _padded(max(len(ray), 1), _POINT_CHUNK)
        x = np.pad(x, ((0, size - len(ray)), (0, 0)))
        view = np.pad(d[ray], ((0, size - len(ray)), (0, 0)), constant_values=-1.0)
        rgb = np.concatenate(
            [
                np.asarray(_radiance_jit(x[s : s + _POINT_CHUNK], view[s : s + _POINT_CHUNK])[1])
                for s in range(0, size, _POINT_CHUNK)
            ]
        )[: len(ray)]
    colour = [np.bincount(ray, weight * rgb[:, c], minlength=len(o)) for c in range(3)]
    return np.stack([*colour, alpha], axis=-1).astype(np.float32)


def render_views(poses: np.ndarray, height: int, width: int, focal: float) -> np.ndarray:
    """Render the scene from cameras `poses` `[N, 4, 4]` (c2w).

    Returns:
      `[N, H, W, 4]` float32: rgb premultiplied by alpha (i.e. composited on black) and alpha,
      all in [0, 1].
    """
    rays = [cameras.pixel_rays(height, width, focal, p) for p in np.asarray(poses)]
    o = np.stack([r[0] for r in rays])
    d = np.stack([r[1] for r in rays])
    return render_rays(o, d).reshape(len(rays), height, width, 4)


def hemisphere_poses(num: int, rng: np.random.Generator) -> np.ndarray:
    """`[num, 4, 4]` cameras at RADIUS looking at the origin, uniform in area over ELEVATIONS."""
    lo, hi = np.sin(np.deg2rad(ELEVATIONS))
    elevations = np.rad2deg(np.arcsin(rng.uniform(lo, hi, num)))
    azimuths = rng.uniform(0.0, 360.0, num)
    return np.stack(
        [cameras.orbit_pose(a, e, RADIUS) for a, e in zip(azimuths, elevations, strict=True)]
    )


def scene_name(*, image_size: int, num_train: int, num_val: int, num_test: int, seed: int) -> str:
    """The folder name that encodes every parameter of a generated scene (and VERSION)."""
    return f"procedural-v{VERSION}-{image_size}px-{num_train}-{num_val}-{num_test}-seed{seed}"


def _to_png(rgba: np.ndarray) -> Image.Image:
    """Premultiplied float rgba `[H, W, 4]` -> straight-colour uint8 RGBA PNG image."""
    alpha = rgba[..., 3:]
    straight = np.where(alpha > 1e-4, rgba[..., :3] / np.maximum(alpha, 1e-4), 0.0)
    pixels = np.concatenate([np.clip(straight, 0, 1), alpha], axis=-1)
    return Image.fromarray(np.round(pixels * 255).astype(np.uint8), mode="RGBA")


def write_blender_scene(
    path: str,
    *,
    image_size: int = 64,
    num_train: int = 100,
    num_val: int = 10,
    num_test: int = 25,
    seed: int = 0,
) -> str:
    """Render the scene and write it as a Blender folder at `path`; returns `path`.

    Layout: transforms_{train,val,test}.json (camera_angle_x, frames[k].file_path
    "./{split}/r_{k}" without ".png", frames[k].transform_matrix 4x4 c2w) and {split}/r_{k}.png
    (image_size x image_size RGBA). The folder is written under a temporary name next to
    `path` and renamed at the end, so an interrupted write never looks like a scene; if another
    process finishes the same scene first, its folder is kept. Deterministic in the arguments.

    Raises:
      FileExistsError: `path` already exists.
      ValueError: a non-positive size or view count.
    """
    counts = {"train": num_train, "val": num_val, "test": num_test}
    if image_size <= 0 or min(counts.values()) <= 0:
        raise ValueError(f"image_size and view counts must be positive: {image_size}, {counts}")
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.exists(path):
        raise FileExistsError(f"{path!r} already exists; not overwriting a scene")
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    focal = 0.5 * image_size / np.tan(0.5 * CAMERA_ANGLE_X)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
    try:
        for split, num in counts.items():
            poses = hemisphere_poses(num, np.random.default_rng([seed, _SPLIT_STREAMS[split]]))
            images = render_views(poses, image_size, image_size, focal)
            os.makedirs(os.path.join(tmp, split))
            frames = []
            for k, (pose, image) in enumerate(zip(poses, images, strict=True)):
                _to_png(image).save(os.path.join(tmp, split, f"r_{k}.png"))
                frames.append({"file_path": f"./{split}/r_{k}", "transform_matrix": pose.tolist()})
            meta = {"camera_angle_x": CAMERA_ANGLE_X, "frames": frames}
            with open(os.path.join(tmp, f"transforms_{split}.json"), "w") as f:
                json.dump(meta, f, indent=2)
        try:
            os.rename(tmp, path)
        except OSError:
            if not os.path.isdir(path):  # a real failure, not a lost race
                raise
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
    return path


def ensure_scene(
    cache_dir: str,
    *,
    image_size: int = 64,
    num_train: int = 100,
    num_val: int = 10,
    num_test: int = 25,
    seed: int = 0,
) -> str:
    """The folder of the scene with these parameters under `cache_dir`, written if missing."""
    params = dict(
        image_size=image_size, num_train=num_train, num_val=num_val, num_test=num_test, seed=seed
    )
    path = os.path.join(os.path.expanduser(cache_dir), scene_name(**params))
    if not os.path.isdir(path):
        # Eager even when first asked for inside a jit trace (an objective that reads the
        # scene's geometry lazily): the renderer turns its arrays into PNGs.
        with jax.ensure_compile_time_eval():
            write_blender_scene(path, **params)
    return path
