"""Pinhole rays through pixel centres, NDC rays (NeRF appendix C) and orbit poses."""

import numpy as np
import pytest

from zoo.data.scenes import cameras


def _pose(seed: int = 0) -> np.ndarray:
    """A random rotation (det +1) and centre as a [4, 4] c2w."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = q, rng.normal(size=3) * 3
    return pose


def test_centre_ray_points_along_minus_z_and_origins_are_the_camera_centre():
    pose = _pose()
    origins, directions = cameras.pixel_rays(5, 7, 4.0, pose)  # odd sizes: a centre pixel
    assert origins.shape == directions.shape == (5, 7, 3)
    assert origins.dtype == directions.dtype == np.float32
    np.testing.assert_allclose(directions[2, 3], -pose[:3, 2], atol=1e-6)
    np.testing.assert_allclose(origins, np.broadcast_to(pose[:3, 3], (5, 7, 3)), atol=1e-6)
    # The camera-frame z of every direction is -1: t is depth along the optical axis.
    camera = directions.reshape(-1, 3) @ pose[:3, :3]
    np.testing.assert_allclose(camera[:, 2], -1.0, atol=1e-6)
    # A [3, 4] pose gives the same rays.
    _, d34 = cameras.pixel_rays(5, 7, 4.0, pose[:3])
    np.testing.assert_array_equal(d34, directions)


@pytest.mark.parametrize("height,width,focal", [(4, 6, 5.0), (7, 3, 2.5)])
def test_rays_pass_through_pixel_centres(height, width, focal):
    pose = _pose(1)
    origins, directions = cameras.pixel_rays(height, width, focal, pose)
    points = origins + 2.7 * directions
    # Project back with the pinhole model (camera looks along -z, image y down).
    cam = (points - pose[:3, 3]) @ pose[:3, :3]
    u = focal * cam[..., 0] / -cam[..., 2] + width / 2
    v = -focal * cam[..., 1] / -cam[..., 2] + height / 2
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    np.testing.assert_allclose(u, cols + 0.5, atol=1e-4)
    np.testing.assert_allclose(v, rows + 0.5, atol=1e-4)


def test_rays_at_pixels_matches_pixel_rays_for_batched_cameras():
    poses = np.stack([_pose(2), _pose(3)])
    views, rows, cols = np.array([0, 1, 1]), np.array([0, 3, 2]), np.array([4, 1, 0])
    o, d = cameras.rays_at_pixels(poses[views], 4, 5, 3.0, cols, rows)
    for k in range(3):
        po, pd = cameras.pixel_rays(4, 5, 3.0, poses[views[k]])
        np.testing.assert_allclose(o[k], po[rows[k], cols[k]], atol=1e-6)
        np.testing.assert_allclose(d[k], pd[rows[k], cols[k]], atol=1e-6)


def test_bad_pose_shapes_raise():
    with pytest.raises(ValueError, match="c2w"):
        cameras.pixel_rays(4, 4, 2.0, np.eye(3))
    with pytest.raises(ValueError, match="one pose"):
        cameras.pixel_rays(4, 4, 2.0, np.stack([np.eye(4)] * 2))


def test_ndc_maps_near_plane_to_minus_one_and_infinity_to_plus_one():
    height, width, focal, near = 6, 8, 7.0, 1.0
    pose = np.eye(4)
    pose[:3, 3] = [0.1, -0.2, 0.3]  # forward-facing: looks along -z
    o, d = cameras.pixel_rays(height, width, focal, pose)
    o_ndc, d_ndc = cameras.ndc_rays(o, d, height, width, focal, near)
    assert o_ndc.shape == d_ndc.shape == (height, width, 3)
    np.testing.assert_allclose(o_ndc[..., 2], -1.0, atol=1e-6)  # t' = 0: the near plane
    np.testing.assert_allclose((o_ndc + d_ndc)[..., 2], 1.0, atol=1e-6)  # t' = 1: infinity
    # Every world point on a ray lands on the NDC ray, at z' = 1 + 2 near / z.
    ax, ay = -focal / (width / 2), -focal / (height / 2)
    for t in (1.5, 4.0, 40.0):
        p = (o + t * d).astype(np.float64)
        z = p[..., 2]
        mapped = np.stack([ax * p[..., 0] / z, ay * p[..., 1] / z, 1 + 2 * near / z], axis=-1)
        t_ndc = (mapped[..., 2] - o_ndc[..., 2]) / d_ndc[..., 2]
        assert np.all((t_ndc > 0) & (t_ndc < 1))
        np.testing.assert_allclose(o_ndc + t_ndc[..., None] * d_ndc, mapped, atol=1e-5)
    # For a camera at the origin, NDC x, y of a ray are its pixel centre's position in [-1, 1].
    o, d = cameras.pixel_rays(height, width, focal, np.eye(4))
    o_ndc, d_ndc = cameras.ndc_rays(o, d, height, width, focal, near)
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    np.testing.assert_allclose(o_ndc[..., 0], (cols + 0.5) / (width / 2) - 1, atol=1e-6)
    np.testing.assert_allclose(o_ndc[..., 1], 1 - (rows + 0.5) / (height / 2), atol=1e-6)
    np.testing.assert_allclose(d_ndc[..., :2], 0.0, atol=1e-6)  # rays through 0 stay parallel


@pytest.mark.parametrize("azimuth,elevation", [(0.0, 30.0), (125.0, 60.0), (-40.0, -10.0)])
def test_orbit_pose_looks_at_the_origin_with_z_up(azimuth, elevation):
    pose = cameras.orbit_pose(azimuth, elevation, 4.0)
    assert pose.shape == (4, 4) and pose.dtype == np.float32
    rot, centre = pose[:3, :3].astype(np.float64), pose[:3, 3].astype(np.float64)
    np.testing.assert_allclose(rot.T @ rot, np.eye(3), atol=1e-6)
    assert np.linalg.det(rot) == pytest.approx(1.0, abs=1e-5)
    az, el = np.deg2rad(azimuth), np.deg2rad(elevation)
    expected = 4.0 * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    np.testing.assert_allclose(centre, expected, atol=1e-5)
    np.testing.assert_allclose(-rot[:, 2], -centre / 4.0, atol=1e-6)  # looks at the origin
    assert abs(rot[2, 0]) < 1e-6 and rot[2, 1] > 0  # right is level, image up points up
    _, d = cameras.pixel_rays(5, 5, 3.0, pose)
    np.testing.assert_allclose(centre + 4.0 * d[2, 2], 0.0, atol=1e-5)  # centre ray hits 0
    np.testing.assert_array_equal(pose[3], [0, 0, 0, 1])


def test_orbit_pose_rejects_the_poles():
    with pytest.raises(ValueError, match="elevation"):
        cameras.orbit_pose(0.0, 90.0, 4.0)
    with pytest.raises(ValueError, match="parallel"):
        cameras.look_at(np.array([0, 0, 3.0]), np.zeros(3), np.array([0, 0, 1.0]))


def test_view_directions_are_unit_and_parallel_to_the_rays():
    _, d = cameras.pixel_rays(3, 4, 2.0, cameras.orbit_pose(30.0, 20.0, 4.0))
    v = cameras.view_directions(d)
    assert v.dtype == np.float32 and v.shape == (3, 4, 3)
    np.testing.assert_allclose(np.linalg.norm(v, axis=-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.cross(v, d), 0.0, atol=1e-6)
    assert np.all(np.sum(v * d, axis=-1) > 0)
