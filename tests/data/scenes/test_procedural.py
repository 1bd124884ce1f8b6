"""The procedural scene: field, quadrature, the written Blender folder, determinism."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from zoo.data.scenes import blender, cameras
from zoo.data.scenes import procedural as scene

SMALL = dict(image_size=8, num_train=3, num_val=1, num_test=2, seed=0)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return scene.write_blender_scene(str(tmp_path_factory.mktemp("scene") / "s"), **SMALL)


def test_field_is_dense_inside_empty_outside_and_view_dependent():
    centre, r = np.array([-0.5, -0.45, 0.05]), 0.42  # the red sphere
    light = np.asarray(scene.LIGHT, np.float32)
    surface = (centre + r * light).astype(np.float32)
    points = np.stack([centre, surface, centre + 3 * r * light]).astype(np.float32)
    sigma, _ = scene.radiance(jnp.asarray(points), jnp.asarray(-np.tile(light, (3, 1))))
    assert sigma[0] == pytest.approx(scene.SIGMA_MAX, rel=1e-3)
    assert sigma[1] == pytest.approx(scene.SIGMA_MAX / 2, rel=0.05)  # sigmoid(0) at the surface
    assert sigma[2] < 1e-6
    # Facing the light head-on the highlight is at its peak; from the side it is gone.
    side = np.cross(light, [0, 0, 1.0]).astype(np.float32)
    side = side / np.linalg.norm(side) - 0.3 * light
    views = np.stack([-light, -side]).astype(np.float32)
    s, rgb = scene.radiance(jnp.asarray(np.stack([surface] * 2)), jnp.asarray(views))
    assert s[0] == s[1]  # density ignores the view
    # Colour does not: the white highlight adds SPECULAR to green and blue (red is clipped).
    np.testing.assert_allclose(rgb[0, 1:] - rgb[1, 1:], scene.SPECULAR, atol=0.02)
    assert float(rgb.min()) >= 0 and float(rgb.max()) <= 1


def test_every_solid_fits_inside_the_bound_sphere():
    rng = np.random.default_rng(0)
    dirs = rng.normal(size=(4096, 3))
    on_bound = scene.BOUND * dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)
    sdfs = np.asarray(scene._solid_sdfs(jnp.asarray(on_bound, jnp.float32)))
    assert sdfs.min() > 10 * scene.EDGE  # negligible density outside the sphere we sample
    assert scene.BOUND < 1.5  # and the scene lies in [-1.5, 1.5]^3


def test_quadrature_matches_a_dense_reference():
    pose = cameras.orbit_pose(30.0, 35.0, scene.RADIUS)
    focal = 0.5 * 8 / np.tan(0.5 * scene.CAMERA_ANGLE_X)
    o, d = (x.reshape(-1, 3) for x in cameras.pixel_rays(8, 8, focal, pose))
    fast = scene.render_rays(o, d)
    # Eq. 5.4 with 4096 midpoints over all of [near, far], every point shaded.
    n = 4096
    step = (scene.FAR - scene.NEAR) / n
    t = scene.NEAR + step * (np.arange(n) + 0.5)
    x = o[:, None] + t[None, :, None] * d[:, None]
    sigma, rgb = jax.jit(scene.radiance)(x, np.broadcast_to(d[:, None], x.shape))
    tau = np.asarray(sigma, np.float64) * step * np.linalg.norm(d, axis=-1, keepdims=True)
    w = np.exp(-(np.cumsum(tau, -1) - tau)) * (1 - np.exp(-tau))
    ref = np.concatenate([(w[..., None] * np.asarray(rgb)).sum(1), w.sum(1, keepdims=True)], -1)
    assert 0.05 < ref[:, 3].mean() < 0.95  # the view sees both objects and background
    np.testing.assert_allclose(fast, ref, atol=1e-2)
    assert np.abs(fast - ref).mean() < 1e-3


def test_written_folder_is_a_blender_scene(folder):
    assert sorted(os.listdir(folder)) == [
        "test",
        "train",
        "transforms_test.json",
        "transforms_train.json",
        "transforms_val.json",
        "val",
    ]
    with open(os.path.join(folder, "transforms_train.json")) as f:
        meta = json.load(f)
    assert meta["camera_angle_x"] == pytest.approx(0.6911112070083618)
    assert [fr["file_path"] for fr in meta["frames"]] == [
        "./train/r_0",
        "./train/r_1",
        "./train/r_2",
    ]
    with Image.open(os.path.join(folder, "train", "r_0.png")) as image:
        assert image.mode == "RGBA" and image.size == (8, 8)
    poses = np.array([fr["transform_matrix"] for fr in meta["frames"]])
    radii = np.linalg.norm(poses[:, :3, 3], axis=-1)
    np.testing.assert_allclose(radii, scene.RADIUS, rtol=1e-5)
    elevations = np.rad2deg(np.arcsin(poses[:, 2, 3] / radii))
    assert np.all((elevations >= 10 - 1e-3) & (elevations <= 80 + 1e-3))  # upper hemisphere


def test_images_are_not_blank_and_load_with_the_blender_loader(folder):
    rgba = np.stack(
        [np.asarray(Image.open(os.path.join(folder, "train", f"r_{k}.png"))) for k in range(3)]
    )
    alpha = rgba[..., 3] / 255.0
    assert alpha.min() == 0.0 and alpha.max() == 1.0  # transparent background, opaque objects
    assert 0.1 < (alpha > 0.5).mean() < 0.9
    opaque = rgba[..., :3][alpha > 0.99]
    assert opaque.std(axis=0).max() > 20  # several colours, shading
    images, poses, focal = blender.load_split(folder, "train", 8, white_background=True)
    assert images.shape == (3, 8, 8, 3) and poses.shape == (3, 4, 4)
    assert focal == pytest.approx(0.5 * 8 / np.tan(0.5 * scene.CAMERA_ANGLE_X))
    np.testing.assert_allclose(images[alpha == 0], 1.0)  # background composited on white


def test_same_arguments_give_byte_identical_folders(folder, tmp_path):
    again = scene.write_blender_scene(str(tmp_path / "again"), **SMALL)
    names = sorted(
        os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs
    )
    assert len(names) == 3 + 3 + 1 + 2
    for name in names:
        with (
            open(os.path.join(folder, name), "rb") as a,
            open(os.path.join(again, name), "rb") as b,
        ):
            assert a.read() == b.read(), name
    other = scene.write_blender_scene(str(tmp_path / "other"), **{**SMALL, "seed": 1})
    with open(os.path.join(folder, "transforms_train.json")) as a:
        with open(os.path.join(other, "transforms_train.json")) as b:
            assert a.read() != b.read()  # the seed picks the cameras


def test_write_is_atomic_and_never_overwrites(folder, tmp_path):
    with pytest.raises(FileExistsError):
        scene.write_blender_scene(folder, **SMALL)
    parent = os.path.dirname(folder)
    assert os.listdir(parent) == ["s"]  # no temporary folder left behind
    cached = scene.ensure_scene(parent, **SMALL)
    assert os.path.basename(cached) == scene.scene_name(**SMALL)
    stamp = os.path.getmtime(cached)
    assert scene.ensure_scene(parent, **SMALL) == cached  # the second call only reads
    assert os.path.getmtime(cached) == stamp
    with pytest.raises(ValueError, match="positive"):
        scene.write_blender_scene(str(tmp_path / "bad"), image_size=0)


def test_rays_that_miss_the_scene_are_transparent():
    o = np.array([[0.0, -4.0, 0.0], [0.0, -4.0, 0.0]], np.float32)
    d = np.array([[0.0, 1.0, 1.0], [0.0, 1.0, -1.0]], np.float32)  # pass far above and below
    np.testing.assert_array_equal(scene.render_rays(o, d), 0.0)
    o = np.array([[0.0, -4.0, 0.0], [-0.5, -4.0, 0.05]], np.float32)  # the second one hits
    out = scene.render_rays(o, np.array([[0.0, 1.0, 1.0], [0.0, 1.0, 0.0]], np.float32))
    np.testing.assert_array_equal(out[0], 0.0)
    assert out[1, 3] > 0.99 and out[1, 0] > 2 * out[1, 1:3].max()  # the red sphere


def test_scene_is_written_even_when_first_asked_for_inside_a_jit_trace(tmp_path):
    # The NeRF objective reads the scene's geometry lazily, possibly while tracing its loss.
    @jax.jit
    def traced(x):
        scene.ensure_scene(str(tmp_path), image_size=8, num_train=2, num_val=1, num_test=1)
        return x + 1

    traced(jnp.zeros(()))
    (folder,) = tmp_path.iterdir()
    assert (folder / "transforms_train.json").exists()
