"""Pinhole cameras: rays through pixel centres, NDC rays and orbit poses (numpy, float32).

Convention (Blender / OpenGL, as the NeRF code): a camera-to-world matrix `c2w` `[3, 4]` or
`[4, 4]` has columns [right, up, back, centre] in world coordinates; the camera looks along its
-z axis, +y is up and +x is right in the image. Pixel (i, j) is (column, row), row 0 at the top,
and its ray passes through the pixel centre (i + 0.5, j + 0.5).

Ray directions are NOT normalised: in camera coordinates d = ((i + 0.5 - W/2) / f,
-(j + 0.5 - H/2) / f, -1), so the ray parameter t of r(t) = o + t d is the depth along the
optical axis (not the Euclidean distance), and Blender's near/far = 2/6 are depths.
"""

import numpy as np


def _check_pose(c2w: np.ndarray) -> np.ndarray:
    c2w = np.asarray(c2w, np.float64)
    if c2w.shape[-2:] not in ((3, 4), (4, 4)):
        raise ValueError(f"c2w must be [..., 3, 4] or [..., 4, 4], got shape {c2w.shape}")
    return c2w[..., :3, :4]


def rays_at_pixels(
    c2w: np.ndarray,
    height: int,
    width: int,
    focal: float,
    cols: np.ndarray,
    rows: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Rays through chosen pixel centres, one camera per pixel (vectorised over a batch).

    Args:
      c2w: `[..., 3 or 4, 4]` camera-to-world poses, broadcastable against `cols`/`rows`.
      height, width: image size H, W in pixels.
      focal: focal length in pixels.
      cols, rows: `[...]` integer pixel coordinates i (column) and j (row).

    Returns:
      origins `[..., 3]` float32 (the camera centre) and directions `[..., 3]` float32, whose
      camera-frame z component is -1 (see the module docstring).
    """
    pose = _check_pose(c2w)
    i = np.asarray(cols, np.float64) + 0.5
    j = np.asarray(rows, np.float64) + 0.5
    camera = np.stack(
        [(i - width / 2) / focal, -(j - height / 2) / focal, -np.ones_like(i)], axis=-1
    )
    # d_world = R @ d_camera, written as a sum over the camera axes so it broadcasts.
    directions = np.einsum("...ij,...j->...i", pose[..., :3, :3], camera)
    origins = np.broadcast_to(pose[..., :3, 3], directions.shape)
    return origins.astype(np.float32), directions.astype(np.float32)


def pixel_rays(
    height: int, width: int, focal: float, c2w: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The ray of every pixel of one camera.

    Args:
      height, width: image size H, W in pixels.
      focal: focal length in pixels (Blender: 0.5 * W / tan(0.5 * camera_angle_x)).
      c2w: `[3, 4]` or `[4, 4]` camera-to-world pose.

    Returns:
      origins `[H, W, 3]` float32 and directions `[H, W, 3]` float32, pixel (i, j) at
      `[j, i]`; d = R @ ((i + 0.5 - W/2) / f, -(j + 0.5 - H/2) / f, -1), not normalised.
    """
    pose = _check_pose(c2w)
    if pose.ndim != 2:
        raise ValueError(f"pixel_rays takes one pose, got shape {np.shape(c2w)}")
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return rays_at_pixels(pose, height, width, focal, cols, rows)


def ndc_rays(
    origins: np.ndarray,
    directions: np.ndarray,
    height: int,
    width: int,
    focal: float,
    near: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Map rays into normalised device coordinates (NeRF paper, appendix C; forward-facing).

    The frustum of a camera at the world origin looking along -z (the average LLFF camera
    after recentring) becomes the cube [-1, 1]^3. Each origin is first moved along its ray to
    the near plane z = -near; then, with a_x = -f / (W/2), a_y = -f / (H/2):
      o' = (a_x o_x / o_z, a_y o_y / o_z, 1 + 2 near / o_z)
      d' = (a_x (d_x / d_z - o_x / o_z), a_y (d_y / d_z - o_y / o_z), -2 near / o_z)
    so r'(t') = o' + t' d' runs from the near plane (z' = -1, t' = 0) to infinity (z' = +1,
    t' = 1), linear in disparity: NDC near/far are 0 and 1.

    Args:
      origins, directions: `[..., 3]` world-frame rays (directions need not be normalised,
        but must point into z < 0, d_z != 0).
      height, width, focal: the camera's image size and focal length in pixels.
      near: depth of the near plane (LLFF after rescaling: 1.0).

    Returns:
      NDC origins and directions, `[..., 3]` float32.
    """
    o = np.asarray(origins, np.float64)
    d = np.asarray(directions, np.float64)
    t = -(near + o[..., 2]) / d[..., 2]
    o = o + t[..., None] * d
    ox, oy, oz = o[..., 0], o[..., 1], o[..., 2]
    dx, dy, dz = d[..., 0], d[..., 1], d[..., 2]
    ax, ay = -focal / (width / 2.0), -focal / (height / 2.0)
    o_ndc = np.stack([ax * ox / oz, ay * oy / oz, 1.0 + 2.0 * near / oz], axis=-1)
    d_ndc = np.stack(
        [ax * (dx / dz - ox / oz), ay * (dy / dz - oy / oz), -2.0 * near / oz], axis=-1
    )
    return o_ndc.astype(np.float32), d_ndc.astype(np.float32)


def view_directions(directions: np.ndarray) -> np.ndarray:
    """Unit world directions `[..., 3]` float32 of rays `[..., 3]`: the NeRF MLP's view input.

    In NDC the MLP still sees these, not the NDC directions: the reference code
    (bmild/nerf `run_nerf.py`) sets `viewdirs = rays_d / |rays_d|` before `ndc_rays`.
    """
    d = np.asarray(directions, np.float64)
    return (d / np.linalg.norm(d, axis=-1, keepdims=True)).astype(np.float32)


def look_at(centre: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """The `[4, 4]` float32 c2w of a camera at `centre` looking at `target`, `up` roughly up.

    Raises ValueError when `up` is parallel to the viewing direction (the roll is undefined).
    """
    centre, target, up = (np.asarray(v, np.float64) for v in (centre, target, up))
    back = centre - target
    back /= np.linalg.norm(back)
    right = np.cross(up, back)
    norm = np.linalg.norm(right)
    if norm < 1e-6:
        raise ValueError(f"look_at: up {up} is parallel to the viewing direction {-back}")
    right /= norm
    pose = np.eye(4)
    pose[:3, :4] = np.stack([right, np.cross(back, right), back, centre], axis=1)
    return pose.astype(np.float32)


def orbit_pose(azimuth_deg: float, elevation_deg: float, radius: float) -> np.ndarray:
    """A camera on a sphere around the origin, looking at it, world z up (as Blender scenes).

    Args:
      azimuth_deg: angle around the world z axis, from +x towards +y, in degrees.
      elevation_deg: angle above the xy plane in degrees, strictly inside (-90, 90).
      radius: distance from the origin.

    Returns:
      `[4, 4]` float32 camera-to-world matrix; the camera centre is
      radius * (cos(el) cos(az), cos(el) sin(az), sin(el)) and image +y points towards +z.
    """
    if not -90.0 < elevation_deg < 90.0:
        raise ValueError(f"elevation_deg must be in (-90, 90), got {elevation_deg}")
    if radius <= 0:
        raise ValueError(f"radius must be positive, got {radius}")
    az, el = np.deg2rad(azimuth_deg), np.deg2rad(elevation_deg)
    centre = radius * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    return look_at(centre, np.zeros(3), np.array([0.0, 0.0, 1.0]))
