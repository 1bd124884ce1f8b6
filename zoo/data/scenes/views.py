"""What the Blender and LLFF loaders share: config fields, image reading, and the two `Examples`.

Train examples are single rays drawn across all training images (NeRF's batching); eval
examples are whole views. Both compute rays on demand from (view, row, column), vectorised, so a
scene costs its images' memory, not 9 floats per pixel.

Config fields read here: data.white_background (bool; default True for Blender scenes, False
for LLFF photos), data.eval_split ("test" or
"val", default "test"), data.num_eval_views (int >= 0, default 0 = all views of the split).
"""

import numbers
from typing import NamedTuple

import numpy as np
from PIL import Image

from zoo.data import options
from zoo.data.scenes import cameras

ElementSpec = dict[str, tuple[tuple[int, ...], np.dtype]]
_F32 = np.dtype(np.float32)


class SceneInfo(NamedTuple):
    """What a NeRF model and its renders need to know about a scene (no images).

    near, far: ray depth range (Blender 2, 6; LLFF with NDC 0, 1).
    ndc: rays are in normalised device coordinates (forward-facing LLFF).
    white_background: the target images were composited on white (render with the same).
    height, width, focal: the (possibly downscaled) image size and focal length in pixels.
    test_poses: `[N, 4, 4]` float32 c2w of the eval views, in the eval source's order.
    render_poses: `[M, 4, 4]` float32 c2w of a smooth path for videos (turntable / spiral).
    """

    near: float
    far: float
    ndc: bool
    white_background: bool
    height: int
    width: int
    focal: float
    test_poses: np.ndarray
    render_poses: np.ndarray


def white_background(data_cfg, default: bool = True) -> bool:
    value = data_cfg.get("white_background", default)
    if not isinstance(value, bool):
        raise ValueError(f"data.white_background must be a bool, got {value!r}")
    return value


def eval_split(data_cfg) -> str:
    value = data_cfg.get("eval_split", "test")
    if value not in ("test", "val"):
        raise ValueError(f"data.eval_split must be 'test' or 'val', got {value!r}")
    return value


def num_eval_views(data_cfg) -> int:
    value = data_cfg.get("num_eval_views", 0)
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
        raise ValueError(f"data.num_eval_views must be an int >= 0 (0 = all), got {value!r}")
    return int(value)


def check_common(data_cfg) -> None:
    """The fields every NeRF dataset reads; random_flip is refused (it would mirror rays)."""
    white_background(data_cfg, default=False)  # the type; each dataset picks the default
    eval_split(data_cfg)
    num_eval_views(data_cfg)
    if options.random_flip(data_cfg):
        raise ValueError(
            f"data.random_flip must be False for {data_cfg.get('name')!r}: a NeRF example is "
            "a ray, and mirroring the image would not move its camera"
        )


def image_shape(path: str, what: str) -> tuple[int, int]:
    """(height, width) from an image file's header; `what` names it in errors."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except FileNotFoundError:
        raise ValueError(f"{what}: image file {path!r} not found") from None
    except (OSError, SyntaxError) as e:
        raise ValueError(f"{what}: {path!r} is not a readable image ({e})") from None
    return height, width


def read_image(path: str, what: str) -> np.ndarray:
    """Decode an image to `[H, W, 4]` float32 RGBA in [0, 1] (alpha 1 where the file has none)."""
    try:
        with Image.open(path) as image:
            image.load()
            rgba = np.asarray(image.convert("RGBA"), np.float32) / 255.0
    except FileNotFoundError:
        raise ValueError(f"{what}: image file {path!r} not found") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"{what}: cannot decode image {path!r} ({e})") from None
    return rgba


def composite(rgba: np.ndarray, white: bool) -> np.ndarray:
    """Straight-alpha RGBA `[..., 4]` -> RGB `[..., 3]` over a white or black background."""
    rgb, alpha = rgba[..., :3], rgba[..., 3:]
    return rgb * alpha + (1.0 - alpha) * (1.0 if white else 0.0)


def output_shape(native: tuple[int, int], image_size: int, where: str) -> tuple[int, int]:
    """(height, width) after downscaling native (H, W) so that height = image_size."""
    height, width = native
    if image_size > height:
        raise ValueError(
            f"{where}: data.image_size={image_size} is larger than the images' height {height}; "
            "NeRF loaders only downscale"
        )
    return image_size, max(1, round(width * image_size / height))


def area_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Box-filter (area-average) resize of `[h, w, C]` float32 to `[height, width, C]`."""
    if image.shape[:2] == (height, width):
        return image
    planes = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(image[..., c])).resize(
                (width, height), Image.Resampling.BOX
            )
        )
        for c in range(image.shape[-1])
    ]
    return np.stack(planes, axis=-1).astype(np.float32)


class _Rays:
    """Rays of views `poses` `[N, 4, 4]` of size H x W, optionally mapped to NDC."""

    num_classes = None

    def __init__(
        self,
        name: str,
        images: np.ndarray,
        poses: np.ndarray,
        focal: float,
        ndc_near: float | None,
    ):
        if len(images) != len(poses):
            raise ValueError(f"{name}: {len(images)} images but {len(poses)} poses")
        self.name = name
        self.images = np.asarray(images, np.float32)
        self.poses = np.asarray(poses, np.float32)
        self.focal, self.ndc_near = float(focal), ndc_near
        self.height, self.width = self.images.shape[1:3]

    def _rays(self, poses, rows, cols) -> tuple[np.ndarray, np.ndarray]:
        o, d = cameras.rays_at_pixels(poses, self.height, self.width, self.focal, cols, rows)
        if self.ndc_near is not None:
            o, d = cameras.ndc_rays(o, d, self.height, self.width, self.focal, self.ndc_near)
        return o, d


class RayExamples(_Rays):
    """Train `Examples`: example k is pixel k of the views' pixels in (view, row, column) order.

    load(indices `[B]`) -> {"origins", "directions", "rgb"}: `[B, 3]` float32, rgb in [0, 1].
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.num_examples = len(self.images) * self.height * self.width
        self.element_spec: ElementSpec = {
            key: ((3,), _F32) for key in ("origins", "directions", "rgb")
        }

    def load(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        indices = np.asarray(indices, np.int64)
        views, pixel = np.divmod(indices, self.height * self.width)
        rows, cols = np.divmod(pixel, self.width)
        origins, directions = self._rays(self.poses[views], rows, cols)
        rgb = self.images[views, rows, cols]
        return {"origins": origins, "directions": directions, "rgb": rgb}


class ViewExamples(_Rays):
    """Eval `Examples`: example k is view k, all of its pixels.

    load(indices `[B]`) -> {"origins", "directions", "rgb"}: `[B, H, W, 3]` float32.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.num_examples = len(self.images)
        self.element_spec: ElementSpec = {
            key: ((self.height, self.width, 3), _F32) for key in ("origins", "directions", "rgb")
        }

    def load(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        views = np.asarray(indices, np.int64)
        rows, cols = np.meshgrid(np.arange(self.height), np.arange(self.width), indexing="ij")
        # Poses [B, 1, 1, 4, 4] against pixels [H, W] broadcast to rays [B, H, W, 3].
        origins, directions = self._rays(self.poses[views][:, None, None], rows, cols)
        return {"origins": origins, "directions": directions, "rgb": self.images[views]}
