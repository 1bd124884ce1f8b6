"""Image preprocessing shared by every source: crop, resize, channels, scale, flip.

Every dataset hands one raw image at a time to `prepare_image`, which returns the model's
view of it: `[S, S, C] float32 in [-1, 1]`. Keeping this in one place means a digit, a PNG and
a tfds record go through identical arithmetic, including the two cases PIL's plain
`convert("RGB")` gets wrong: 16-bit grey (it clips to 255, so the image comes out white) and
transparency (it drops alpha, so a transparent pixel shows whatever colour it happens to hold).
"""

import numpy as np
from PIL import Image

# Bicubic in PIL is area-aware when shrinking (its support widens with the scale factor), so
# one filter serves both upsampling 8x8 digits and anti-aliased downsampling of large photos.
RESAMPLE = Image.Resampling.BICUBIC

# 16-bit PNGs open in these modes; their samples span 0..65535 (mode "I" is PIL's 32-bit int,
# which older Pillows use for 16-bit grey PNGs).
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_UINT16_MAX = 65535.0

WHITE = (255, 255, 255)

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


def _has_alpha(image: Image.Image) -> bool:
    """An alpha band (RGBA, LA, PA, RGBa) or a palette/colour-key transparency (PNG tRNS)."""
    if hasattr(image, "has_transparency_data"):  # Pillow >= 10.1: also RGBA palettes
        return image.has_transparency_data
    return "A" in image.getbands() or "a" in image.getbands() or "transparency" in image.info


def composite(x: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    """Alpha-blend over a solid colour: `[H, W, c + 1]` (c = 1 or 3, last = alpha) -> `[H, W, 3]`.

    Straight (not premultiplied) alpha, as PNG stores it: out = a * colour + (1 - a) * background,
    all float32 in [0, 1]. Grey is blended channel-wise too, so a coloured background shows.
    """
    colour, alpha = x[..., :-1], x[..., -1:]
    bg = np.asarray(background, np.float32) / 255.0
    return (colour * alpha + bg * (1.0 - alpha)).astype(np.float32)


def _array_to_unit(x: np.ndarray) -> np.ndarray:
    """uint8 / uint16 / float array -> float32 in [0, 1] (integers by their full range)."""
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    if x.dtype == np.uint16:
        return x.astype(np.float32) / _UINT16_MAX
    if np.issubdtype(x.dtype, np.floating):
        return x.astype(np.float32)
    raise ValueError(f"image arrays must be uint8, uint16 or float in [0, 1], got {x.dtype}")


def prepare_image(
    image: Image.Image | np.ndarray,
    size: int,
    channels: int,
    background: tuple[int, int, int] = WHITE,
) -> np.ndarray:
    """Centre-crop to a square, resize to `size`, convert channels and scale to [-1, 1].

    Args:
      image: a PIL image in any mode, or an array `[H, W]` / `[H, W, C]` that is uint8 in
        0..255, uint16 in 0..65535, or float in [0, 1]. C is 1 (grey), 2 (grey + alpha),
        3 (RGB) or 4 (RGBA). 16-bit PIL modes ("I;16", "I") are scaled by 65535.
      size: output height and width in pixels.
      channels: 1 (grey) or 3 (RGB).
      background: RGB in 0..255 under transparent pixels (alpha bands, and palette or
        colour-key transparency of PNGs).

    Returns:
      `[size, size, channels] float32 in [-1, 1]`.
    """
    if isinstance(image, np.ndarray):
        x = image[..., None] if image.ndim == 2 else image
        if x.ndim != 3 or x.shape[-1] not in (1, 2, 3, 4):
            raise ValueError(f"image arrays must be [H, W] or [H, W, 1|2|3|4], got {x.shape}")
        if x.dtype == np.uint8 and x.shape[-1] in (1, 3):
            # The common case keeps PIL's fast native crop + resize on uint8.
            image = Image.fromarray(x[..., 0] if x.shape[-1] == 1 else x)
        else:
            x = _array_to_unit(x)
            x = composite(x, background) if x.shape[-1] in (2, 4) else x
            return (_prepare_float(x, size, channels) * 2.0 - 1.0).astype(np.float32)
    if image.mode in _SIXTEEN_BIT_MODES:
        x = np.clip(np.asarray(image, np.float32) / _UINT16_MAX, 0.0, 1.0)[..., None]
    elif _has_alpha(image):
        # Exact float blend: PIL's own alpha_composite rounds to uint8 on the way.
        x = composite(np.asarray(image.convert("RGBA"), np.float32) / 255.0, background)
    else:
        x = _prepare_pil(image, size, channels)
        return (x * 2.0 - 1.0).astype(np.float32)
    return (_prepare_float(x, size, channels) * 2.0 - 1.0).astype(np.float32)


def flip_left_right(images: np.ndarray, flips: np.ndarray) -> np.ndarray:
    """Mirror the chosen images of a batch.

    Args:
      images: `[B, H, W, C]`.
      flips: `[B] bool`, which images to mirror.

    Returns:
      a new `[B, H, W, C]` array.
    """
    return np.where(flips[:, None, None, None], images[:, :, ::-1], images)
