"""`llff`: forward-facing real scenes in the LLFF format (NeRF paper, section 6 / appendix C).

Folder: poses_bounds.npy, `[N, 17]` float: per image a 3x5 matrix (row-major) whose columns
are the camera's three axes, its centre, and (H, W, focal) of the full-resolution images,
followed by the near and far scene depths seen from that camera; and the N images, sorted by
file name, in images/ (full resolution) and optionally images_<k>/ (downscaled by k).

Conversion (as NeRF's loader): LLFF's axis columns are [down, right, back]; the zoo's (OpenGL)
are [right, up, back]. So the new x axis is LLFF's second column, the new y axis is LLFF's
first column negated, and z stays. Then, in order:
  rescale: world units scaled by 1 / (0.75 * smallest near bound), so every near bound is
    >= 1 / 0.75 and the NDC near plane at depth 1 lies in front of all content;
  recentre: the average camera (mean centre, mean back and up axes) becomes the identity, so
    the scene faces -z as NDC assumes;
  rays: with data.ndc (default True) mapped to NDC (`cameras.ndc_rays`, near 1), near/far 0, 1,
    and each example carries `viewdirs`, the unit world direction the NeRF MLP takes as its
    view direction (as the reference code); otherwise near/far = 0.9 * min bound, max bound.

Config (`config.data`, name "llff"): dir (the folder, required); image_size = output height
(width keeps the aspect ratio): read from the images_<k>/ folder (or images/) with the smallest
height >= image_size and area-downscaled to it if needed, focal scaled by image_size / H of
poses_bounds; holdout_every (default 8): images 0, 8, 16, ... are the eval split (the paper's
protocol; data.eval_split "test" and "val" both name it), the rest train; ndc (default True);
white_background (default False: photos have no alpha); num_eval_views (see
`zoo.data.scenes.views`).
`render_poses` is NeRF's spiral: 120 views, two turns around the mean camera, focused at a
depth between the nearest and the farthest content.
"""

import os
import re

import numpy as np

from zoo.data import options
from zoo.data.scenes import cameras, views

EXTENSIONS = (".png", ".jpg", ".jpeg")
BOUND_FACTOR = 0.75  # the paper's rescaling: smallest near bound -> 1 / 0.75
SPIRAL_VIEWS, SPIRAL_TURNS = 120, 2


def _root(data_cfg) -> str:
    root = options.path(data_cfg, "dir")
    root = os.path.expanduser(root)
    if not os.path.isdir(root):
        raise ValueError(f"data.dir: LLFF scene folder {root!r} does not exist")
    return root


def read_poses_bounds(root: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """poses_bounds.npy -> LLFF poses `[N, 3, 4]`, hwf `[N, 3]` (H, W, focal), bounds `[N, 2]`."""
    path = os.path.join(root, "poses_bounds.npy")
    if not os.path.isfile(path):
        raise ValueError(f"LLFF scene {root!r} has no poses_bounds.npy")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable .npy array ({e})") from None
    if data.ndim != 2 or data.shape[1] != 17 or len(data) == 0:
        raise ValueError(
            f"{path}: expected shape [N, 17] (a 3x5 pose and 2 bounds per image), got {data.shape}"
        )
    data = data.astype(np.float64)
    if not np.all(np.isfinite(data)):
        raise ValueError(f"{path}: holds non-finite values")
    mats, bounds = data[:, :15].reshape(-1, 3, 5), data[:, 15:]
    if np.any(bounds <= 0) or np.any(mats[:, :, 4] <= 0):
        raise ValueError(f"{path}: bounds and (H, W, focal) must be positive")
    return mats[:, :, :4], mats[:, :, 4], bounds


def list_images(folder: str) -> list[str]:
    names = sorted(
        n for n in os.listdir(folder) if n.lower().endswith(EXTENSIONS) and not n.startswith(".")
    )
    return [os.path.join(folder, n) for n in names]


def _source(root: str, count: int, image_size: int) -> tuple[list[str], tuple[int, int]]:
    """The image files to read (images/ or images_<k>/) and their (H, W); see module doc."""
    folders = [n for n in os.listdir(root) if n == "images" or re.fullmatch(r"images_\d+", n)]
    if "images" not in folders:
        raise ValueError(f"LLFF scene {root!r} has no images/ folder")
    best = None
    for name in sorted(folders):
        paths = list_images(os.path.join(root, name))
        if len(paths) != count:
            if name == "images":
                raise ValueError(
                    f"{os.path.join(root, name)} holds {len(paths)} images but poses_bounds.npy "
                    f"has {count} poses"
                )
            continue  # an incomplete downscaled copy: fall back to another folder
        shape = views.image_shape(paths[0], f"LLFF scene {root!r}")
        if shape[0] >= image_size and (best is None or shape[0] < best[1][0]):
            best = (paths, shape)
    if best is None:
        height = views.image_shape(list_images(os.path.join(root, "images"))[0], root)[0]
        views.output_shape((height, 1), image_size, f"LLFF scene {root!r}")  # raises
    return best


def _normalise(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def average_pose(poses: np.ndarray) -> np.ndarray:
    """`[4, 4]` c2w with the mean centre, facing the normalised mean back axis, mean up."""
    centre = poses[:, :3, 3].mean(0)
    back = _normalise(poses[:, :3, 2].sum(0))
    right = _normalise(np.cross(poses[:, :3, 1].sum(0), back))
    pose = np.eye(4)
    pose[:3] = np.stack([right, np.cross(back, right), back, centre], axis=1)
    return pose


def normalise_poses(llff_poses: np.ndarray, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """LLFF `[N, 3, 4]` [down, right, back | centre] -> recentred, rescaled OpenGL `[N, 4, 4]`.

    Returns the poses and the bounds in the new units.
    """
    down, right, back, centre = (llff_poses[:, :, k] for k in range(4))
    poses = np.tile(np.eye(4), (len(llff_poses), 1, 1))
    poses[:, :3, :4] = np.stack([right, -down, back, centre], axis=-1)
    scale = 1.0 / (bounds.min() * BOUND_FACTOR)
    poses[:, :3, 3] *= scale
    poses = np.linalg.inv(average_pose(poses)) @ poses
    return poses, bounds * scale


def spiral_poses(poses: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """NeRF's spiral render path `[SPIRAL_VIEWS, 4, 4]` around normalised `poses`.

    The camera circles the mean camera in its image plane (radii: the 90th percentile of the
    cameras' offsets) while bobbing in depth, always looking at a focus point on the mean axis.
    The focus depth is the harmonic blend 1 / (0.25 / near + 0.75 / far) of near = 0.9 * the
    closest bound and far = 5 * the farthest, i.e. mostly towards the far content.
    """
    mean = average_pose(poses)
    up = _normalise(poses[:, :3, 1].sum(0))
    near, far = bounds.min() * 0.9, bounds.max() * 5.0
    focus = 1.0 / (0.25 / near + 0.75 / far)
    radii = np.percentile(np.abs(poses[:, :3, 3]), 90, axis=0)
    target = mean[:3, :4] @ np.array([0.0, 0.0, -focus, 1.0])
    out = []
    for theta in np.linspace(0.0, 2 * np.pi * SPIRAL_TURNS, SPIRAL_VIEWS, endpoint=False):
        offset = np.array([np.cos(theta), -np.sin(theta), -np.sin(0.5 * theta)]) * radii
        centre = mean[:3, :4] @ np.append(offset, 1.0)
        out.append(cameras.look_at(centre, target, up))
    return np.stack(out).astype(np.float32)


def holdout_every(data_cfg) -> int:
    return options.positive_int(data_cfg, "holdout_every", 8)


def _ndc(data_cfg) -> bool:
    value = data_cfg.get("ndc", True)
    if not isinstance(value, bool):
        raise ValueError(f"data.ndc must be a bool, got {value!r}")
    return value


def _white(data_cfg) -> bool:
    return views.white_background(data_cfg, default=False)


class _Scene:
    """Everything but the pixels: cameras, split indices, sizes (cheap to build)."""

    def __init__(self, data_cfg):
        views.check_common(data_cfg)
        self.ndc = _ndc(data_cfg)
        self.root = _root(data_cfg)
        llff_poses, hwf, bounds = read_poses_bounds(self.root)
        count = len(llff_poses)
        image_size = options.image_size(data_cfg)
        self.paths, (src_h, src_w) = _source(self.root, count, image_size)
        full_h, full_w, full_focal = hwf[0]
        if abs(src_w / src_h - full_w / full_h) > 0.01 * full_w / full_h:
            raise ValueError(
                f"LLFF scene {self.root!r}: images are {src_w}x{src_h} but poses_bounds.npy "
                f"says {full_w:g}x{full_h:g}; the aspect ratios differ"
            )
        self.source_shape = (src_h, src_w)
        self.height, self.width = views.output_shape((src_h, src_w), image_size, self.root)
        self.focal = float(full_focal * self.height / full_h)
        self.poses, self.bounds = normalise_poses(llff_poses, bounds)
        every = holdout_every(data_cfg)
        self.eval_ids = np.arange(0, count, every)
        self.train_ids = np.setdiff1d(np.arange(count), self.eval_ids)
        wanted = views.num_eval_views(data_cfg)
        if wanted > len(self.eval_ids):
            raise ValueError(
                f"data.num_eval_views={wanted} but LLFF scene {self.root!r} holds out "
                f"{len(self.eval_ids)} views (every {every}th of {count})"
            )
        self.eval_ids = self.eval_ids[: wanted or None]


def _world_viewdirs(examples: views.RayExamples | views.ViewExamples, poses, rows, cols):
    _, d = cameras.rays_at_pixels(
        poses, examples.height, examples.width, examples.focal, cols, rows
    )
    return cameras.view_directions(d)


class NDCRayExamples(views.RayExamples):
    """Train rays in NDC plus `viewdirs` `[B, 3]`: each ray's unit world direction.

    The NeRF MLP's view-direction input (`cameras.view_directions`): one camera's NDC
    directions are nearly parallel, its world directions are not.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.element_spec["viewdirs"] = ((3,), np.dtype(np.float32))

    def load(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        batch = super().load(indices)
        ids, pixel = np.divmod(np.asarray(indices, np.int64), self.height * self.width)
        rows, cols = np.divmod(pixel, self.width)
        batch["viewdirs"] = _world_viewdirs(self, self.poses[ids], rows, cols)
        return batch


class NDCViewExamples(views.ViewExamples):
    """Eval views in NDC plus `viewdirs` `[B, H, W, 3]` (see `NDCRayExamples`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.element_spec["viewdirs"] = ((self.height, self.width, 3), np.dtype(np.float32))

    def load(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        batch = super().load(indices)
        ids = np.asarray(indices, np.int64)
        rows, cols = np.meshgrid(np.arange(self.height), np.arange(self.width), indexing="ij")
        batch["viewdirs"] = _world_viewdirs(self, self.poses[ids][:, None, None], rows, cols)
        return batch


def check(data_cfg) -> None:
    """Fields, poses_bounds.npy, image counts and one header per folder (no decoding)."""
    _Scene(data_cfg)


def open_split(data_cfg, train: bool) -> views.RayExamples | views.ViewExamples:
    """Train: rays of every non-held-out pixel. Eval: the held-out views, whole.

    In NDC each example also carries `viewdirs` (`NDCRayExamples`, `NDCViewExamples`).
    """
    s = _Scene(data_cfg)
    ids = s.train_ids if train else s.eval_ids
    white = _white(data_cfg)
    images = []
    for k in ids:
        what = f"LLFF scene {s.root!r} image {k}"
        image = views.read_image(s.paths[k], what)
        if image.shape[:2] != s.source_shape:
            raise ValueError(
                f"{what}: {s.paths[k]!r} is {image.shape[1]}x{image.shape[0]}, but the first "
                f"image is {s.source_shape[1]}x{s.source_shape[0]}"
            )
        rgb = views.composite(image, white)
        images.append(views.area_resize(rgb, s.height, s.width))
    images = np.clip(np.stack(images), 0.0, 1.0) if images else np.zeros((0, s.height, s.width, 3))
    if s.ndc:
        kind = NDCRayExamples if train else NDCViewExamples
        return kind("llff", images, s.poses[ids], s.focal, ndc_near=1.0)
    kind = views.RayExamples if train else views.ViewExamples
    return kind("llff", images, s.poses[ids], s.focal, ndc_near=None)


def scene_info(data_cfg) -> views.SceneInfo:
    """Cameras and ranges of the scene (reads poses_bounds.npy and one image header)."""
    s = _Scene(data_cfg)
    near, far = (0.0, 1.0) if s.ndc else (0.9 * s.bounds.min(), s.bounds.max())
    return views.SceneInfo(
        near=float(near),
        far=float(far),
        ndc=s.ndc,
        white_background=_white(data_cfg),
        height=s.height,
        width=s.width,
        focal=s.focal,
        test_poses=s.poses[s.eval_ids].astype(np.float32),
        render_poses=spiral_poses(s.poses, s.bounds),
    )
