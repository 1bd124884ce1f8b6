"""Image preprocessing shared by every source: crop, resize, channels, scale, flip.

Every dataset hands one raw image at a time to `prepare_image`, which returns the model's
view of it: `[S, S, C] float32 in [-1, 1]`. Keeping this in one place means a digit, a PNG and
a tfds record go through identical arithmetic.
"""

import numpy as np
from PIL import Image

# Bicubic in PIL is area-aware when shrinking (its support widens with the scale factor), so
# one filter serves both upsampling 8x8 digits and anti-aliased downsampling of large photos.
RESAMPLE = Image.Resampling.BICUBIC

# ITU-R 601-2 luma, the weights PIL's convert("L") uses, so float and uint8 inputs agree.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def center_crop_box(width: int, height: int) -> tuple[int, int, int, int]:
    """The (left, top, right, bottom) box of the largest centred square."""
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def _prepare_pil(image: Image.Image, size: int, channels: int) -> np.ndarray:
    """uint8 path: PIL crops, converts and resizes natively (fast on large photos)."""
    image = image.convert("L" if channels == 1 else "RGB")
    image = image.crop(center_crop_box(*image.size))
    if image.size != (size, size):
        image = image.resize((size, size), RESAMPLE)
    x = np.asarray(image, np.float32) / 255.0
    return x.reshape(size, size, channels)


def _match_channels(x: np.ndarray, channels: int) -> np.ndarray:
    """[H, W, c] -> [H, W, channels] for c, channels in {1, 3}: repeat grey or take luma."""
    if x.shape[-1] == channels:
        return x
    if x.shape[-1] == 1 and channels == 3:
        return np.repeat(x, 3, axis=-1)
    if x.shape[-1] == 3 and channels == 1:
        return (x @ _LUMA)[..., None]
    raise ValueError(f"cannot convert an image with {x.shape[-1]} channels to {channels}")


def _prepare_float(x: np.ndarray, size: int, channels: int) -> np.ndarray:
    """Float path for images in [0, 1]: per-channel resize in PIL's 32-bit float mode "F"."""
    x = _match_channels(x.astype(np.float32), channels)
    left, top, right, bottom = center_crop_box(x.shape[1], x.shape[0])
    x = x[top:bottom, left:right]
    if x.shape[0] != size:
        planes = [
            np.asarray(
                Image.fromarray(np.ascontiguousarray(x[..., c])).resize((size, size), RESAMPLE)
            )
            for c in range(channels)
        ]
        # Bicubic overshoots at sharp edges; keep the [0, 1] contract.
        x = np.clip(np.stack(planes, axis=-1), 0.0, 1.0)
    return x


def prepare_image(image: Image.Image | np.ndarray, size: int, channels: int) -> np.ndarray:
    """Centre-crop to a square, resize to `size`, convert channels and scale to [-1, 1].

    Args:
      image: a PIL image, or an array `[H, W]` / `[H, W, C]` that is either uint8 in 0..255
        or float in [0, 1]. C must be 1 or 3 (or anything, for a PIL image).
      size: output height and width in pixels.
      channels: 1 (grey) or 3 (RGB).

    Returns:
      `[size, size, channels] float32 in [-1, 1]`.
    """
    if isinstance(image, np.ndarray) and image.dtype == np.uint8:
        squeezed = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
        image = Image.fromarray(squeezed)
    if isinstance(image, Image.Image):
        x = _prepare_pil(image, size, channels)
    else:
        x = np.asarray(image)
        x = _prepare_float(x[..., None] if x.ndim == 2 else x, size, channels)
    return (x * 2.0 - 1.0).astype(np.float32)


def flip_left_right(images: np.ndarray, flips: np.ndarray) -> np.ndarray:
    """Mirror the chosen images of a batch.

    Args:
      images: `[B, H, W, C]`.
      flips: `[B] bool`, which images to mirror.

    Returns:
      a new `[B, H, W, C]` array.
    """
    return np.where(flips[:, None, None, None], images[:, :, ::-1], images)
