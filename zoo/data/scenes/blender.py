"""`blender`: NeRF's synthetic-scene (Blender) folder format, and the zoo's procedural scene.

A folder holds transforms_{train,val,test}.json and RGBA PNGs. Each JSON is
  {"camera_angle_x": horizontal field of view in radians,
   "frames": [{"file_path": "./train/r_0", "transform_matrix": 4x4 c2w}, ...]}
with file_path relative to the folder, ".png" appended when it has no extension, and c2w in the
OpenGL convention of `zoo.data.scenes.cameras`. focal = 0.5 W / tan(0.5 camera_angle_x).

Config (`config.data`, name "blender"):
  dir: the scene folder; "" = the procedural scene of `zoo.data.scenes.procedural`
    (image_size pixels square, 100 train / 10 val / 25 test views, data.dataset_seed),
    written once into data.scene_cache (default "~/.cache/zoo/scenes") under a name
    encoding its parameters.
  image_size: output height (= width for square images). Smaller than the files: area
    (box-filter) downscale of the composited images, focal scaled by the same factor; equal:
    native; larger: ValueError.
  white_background, eval_split, num_eval_views: see `zoo.data.scenes.views`. RGBA is composited on
    white (True) or black (False).
Train examples are rays of the "train" split, eval examples whole views of data.eval_split;
near/far = 2, 6 (depths, see `zoo.data.scenes.cameras`).
"""

import json
import numbers
import os

import numpy as np

from zoo.data import options
from zoo.data.scenes import cameras, views

NEAR, FAR = 2.0, 6.0
SPLITS = ("train", "val", "test")
RENDER_VIEWS, RENDER_ELEVATION = 40, 30.0  # the turntable of render_poses
_VIEW_COUNTS = dict(num_train=100, num_val=10, num_test=25)  # of the procedural scene


def scene_dir(data_cfg, *, create: bool) -> str:
    """The scene folder: data.dir, or (dir "") the procedural scene, written if `create`."""
    root = data_cfg.get("dir", "")
    if not isinstance(root, str):
        raise ValueError(f"data.dir must be a string ('' = the procedural scene), got {root!r}")
    if root:
        root = os.path.expanduser(root)
        if not os.path.isdir(root):
            raise ValueError(f"data.dir: Blender scene folder {root!r} does not exist")
        return root
    cache = data_cfg.get("scene_cache", "~/.cache/zoo/scenes")
    if not isinstance(cache, str) or not cache:
        raise ValueError(f"data.scene_cache must be a non-empty string, got {cache!r}")
    params = dict(image_size=options.image_size(data_cfg), seed=options.dataset_seed(data_cfg))
    if create:
        from zoo.data.scenes import procedural  # imports jax: only when a scene is rendered

        return procedural.ensure_scene(cache, **params, **_VIEW_COUNTS)
    from zoo.data.scenes.procedural import scene_name

    return os.path.join(os.path.expanduser(cache), scene_name(**params, **_VIEW_COUNTS))


def read_transforms(root: str, split: str) -> tuple[float, list[str], np.ndarray]:
    """Parse transforms_{split}.json: (camera_angle_x, image paths, poses `[N, 4, 4]` float32).

    Raises ValueError naming the file and what is wrong with it.
    """
    path = os.path.join(root, f"transforms_{split}.json")
    if not os.path.isfile(path):
        raise ValueError(f"Blender scene {root!r} has no transforms_{split}.json")
    try:
        with open(path) as f:
            meta = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    angle = meta.get("camera_angle_x")
    if not isinstance(angle, numbers.Real) or isinstance(angle, bool) or not 0 < angle < np.pi:
        raise ValueError(f"{path}: camera_angle_x must be a number in (0, pi), got {angle!r}")
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise ValueError(f"{path}: 'frames' must be a non-empty list")
    paths, poses = [], []
    for k, frame in enumerate(frames):
        name = frame.get("file_path") if isinstance(frame, dict) else None
        if not isinstance(name, str) or not name:
            raise ValueError(f"{path}: frames[{k}].file_path must be a non-empty string")
        try:
            pose = np.asarray(frame.get("transform_matrix"), np.float64)
        except (TypeError, ValueError):
            pose = np.zeros(0)
        if pose.shape != (4, 4) or not np.all(np.isfinite(pose)):
            raise ValueError(f"{path}: frames[{k}].transform_matrix must be 4x4 finite numbers")
        image = os.path.normpath(os.path.join(root, name))
        paths.append(image if os.path.splitext(name)[1] else image + ".png")
        poses.append(pose)
    return float(angle), paths, np.stack(poses).astype(np.float32)


def _native_shape(root: str, split: str, paths: list[str]) -> tuple[int, int]:
    """The (H, W) every image of the split shares (file headers only)."""
    what = os.path.join(root, f"transforms_{split}.json")
    shapes = [views.image_shape(p, f"{what} frames[{k}]") for k, p in enumerate(paths)]
    for k, shape in enumerate(shapes):
        if shape != shapes[0]:
            raise ValueError(
                f"{what}: frames[{k}] image {paths[k]!r} is {shape[1]}x{shape[0]} but frames[0] "
                f"is {shapes[0][1]}x{shapes[0][0]}; all views must share one size"
            )
    return shapes[0]


def _split_of(data_cfg, train: bool) -> str:
    return "train" if train else views.eval_split(data_cfg)


def _count(data_cfg, train: bool, available: int, where: str) -> int:
    wanted = 0 if train else views.num_eval_views(data_cfg)
    if wanted > available:
        raise ValueError(f"data.num_eval_views={wanted} but {where} has {available} views")
    return wanted or available


def check(data_cfg) -> None:
    """Fields, and for a real folder its JSON and image headers (no decoding)."""
    views.check_common(data_cfg)
    root = scene_dir(data_cfg, create=False)
    if not data_cfg.get("dir", ""):
        return  # the procedural scene is written by open_split / scene_info
    for train in (True, False):
        split = _split_of(data_cfg, train)
        _, paths, _ = read_transforms(root, split)
        native = _native_shape(root, split, paths)
        views.output_shape(native, options.image_size(data_cfg), f"{root} ({split})")
        _count(data_cfg, train, len(paths), f"transforms_{split}.json")


def load_split(
    root: str, split: str, image_size: int, white_background: bool, num_views: int = 0
) -> tuple[np.ndarray, np.ndarray, float]:
    """Decode one split: images `[N, H, W, 3]` float32 in [0, 1], poses `[N, 4, 4]`, focal.

    num_views: keep the first num_views frames (0 = all).
    """
    angle, paths, poses = read_transforms(root, split)
    native = _native_shape(root, split, paths)
    height, width = views.output_shape(native, image_size, f"{root} ({split})")
    keep = num_views or len(paths)
    what = os.path.join(root, f"transforms_{split}.json")
    images = np.stack(
        [
            views.area_resize(
                views.composite(views.read_image(p, f"{what} frames[{k}]"), white_background),
                height,
                width,
            )
            for k, p in enumerate(paths[:keep])
        ]
    )
    focal = 0.5 * width / np.tan(0.5 * angle)  # the field of view is kept when downscaling
    return np.clip(images, 0.0, 1.0), poses[:keep], float(focal)


def open_split(data_cfg, train: bool) -> views.RayExamples | views.ViewExamples:
    """Train: rays of every training pixel. Eval: whole views of data.eval_split."""
    root = scene_dir(data_cfg, create=True)
    split = _split_of(data_cfg, train)
    _, paths, _ = read_transforms(root, split)
    num = _count(data_cfg, train, len(paths), f"transforms_{split}.json")
    images, poses, focal = load_split(
        root, split, options.image_size(data_cfg), views.white_background(data_cfg), num
    )
    kind = views.RayExamples if train else views.ViewExamples
    return kind("blender", images, poses, focal, ndc_near=None)


def scene_info(data_cfg) -> views.SceneInfo:
    """Cameras and ranges of the scene (reads JSON and one image header; may write the scene)."""
    views.check_common(data_cfg)
    root = scene_dir(data_cfg, create=True)
    angle, paths, train_poses = read_transforms(root, "train")
    native = views.image_shape(paths[0], f"{root} transforms_train.json frames[0]")
    height, width = views.output_shape(native, options.image_size(data_cfg), root)
    split = views.eval_split(data_cfg)
    _, eval_paths, eval_poses = read_transforms(root, split)
    num = _count(data_cfg, False, len(eval_paths), f"transforms_{split}.json")
    radius = float(np.median(np.linalg.norm(train_poses[:, :3, 3], axis=-1)))
    azimuths = np.linspace(0.0, 360.0, RENDER_VIEWS, endpoint=False)
    render = np.stack([cameras.orbit_pose(a, RENDER_ELEVATION, radius) for a in azimuths])
    return views.SceneInfo(
        near=NEAR,
        far=FAR,
        ndc=False,
        white_background=views.white_background(data_cfg),
        height=height,
        width=width,
        focal=float(0.5 * width / np.tan(0.5 * angle)),
        test_poses=eval_poses[:num],
        render_poses=render,
    )
