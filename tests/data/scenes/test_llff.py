"""The LLFF loader on a tiny forward-facing folder the tests write (4 images, 8 wide x 6 high)."""

import os

import ml_collections
import numpy as np
import pytest
from PIL import Image

from zoo.data import BUNDLED, check_data_config, make_eval_source, make_source
from zoo.data.scenes import cameras, llff

H, W, FOCAL = 6, 8, 7.0
BOUNDS = np.array([[2.0, 9.0], [2.5, 8.0], [2.2, 10.0], [3.0, 7.0]])


def _rotation(degrees: float) -> np.ndarray:
    c, s = np.cos(np.deg2rad(degrees)), np.sin(np.deg2rad(degrees))
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])  # about y: still roughly forward-facing


def write_folder(root, *, shape=(H, W), hwf=(H, W, FOCAL), small=True):
    """poses_bounds.npy, images/ and (small) images_2/; returns (OpenGL poses, images, small)."""
    rng = np.random.default_rng(0)
    rot = _rotation(20.0)
    centres = np.array([[0.0, 0, 0], [0.3, 0.1, 0], [-0.2, 0.3, 0.1], [0.1, -0.2, -0.1]]) + 5
    gl = np.tile(np.eye(4), (4, 1, 1))
    gl[:, :3, :3], gl[:, :3, 3] = rot, centres
    # LLFF columns: [down, right, back, centre, (H, W, focal)].
    mats = np.stack([-gl[:, :3, 1], gl[:, :3, 0], gl[:, :3, 2], gl[:, :3, 3]], axis=-1)
    mats = np.concatenate([mats, np.tile(np.array(hwf, float)[:, None], (4, 1, 1))], axis=-1)
    os.makedirs(root, exist_ok=True)
    np.save(
        os.path.join(root, "poses_bounds.npy"), np.concatenate([mats.reshape(4, 15), BOUNDS], 1)
    )
    images = rng.integers(0, 256, size=(4, *shape, 3), dtype=np.uint8)
    small_images = rng.integers(0, 256, size=(4, shape[0] // 2, shape[1] // 2, 3), dtype=np.uint8)
    for folder, ims in [("images", images)] + ([("images_2", small_images)] if small else []):
        os.makedirs(os.path.join(root, folder))
        for k, im in enumerate(ims):
            Image.fromarray(im).save(os.path.join(root, folder, f"IMG_{k:04d}.png"))
    return gl, images / 255.0, small_images / 255.0


def cfg(root, **kwargs) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {"name": "llff", "dir": str(root), "image_size": H, "batch_size": 8, **kwargs}
    )


def test_pose_conversion_rescale_and_recentre(tmp_path):
    gl, _, _ = write_folder(tmp_path)
    llff_poses, hwf, bounds = llff.read_poses_bounds(str(tmp_path))
    np.testing.assert_allclose(hwf, np.tile([H, W, FOCAL], (4, 1)))
    poses, scaled = llff.normalise_poses(llff_poses, bounds)
    scale = 1 / (BOUNDS.min() * 0.75)
    np.testing.assert_allclose(scaled, BOUNDS * scale)
    assert scaled.min() == pytest.approx(1 / 0.75)  # the NDC near plane (1) is in front
    # All cameras share rotation R: the average camera is [R | scale * mean centre], so the
    # normalised poses are [I | scale * R^T (c - mean c)].
    rot, centres = gl[0, :3, :3], gl[:, :3, 3]
    np.testing.assert_allclose(poses[:, :3, :3], np.tile(np.eye(3), (4, 1, 1)), atol=1e-12)
    expected = scale * (centres - centres.mean(0)) @ rot
    np.testing.assert_allclose(poses[:, :3, 3], expected, atol=1e-12)
    np.testing.assert_allclose(llff.average_pose(poses), np.eye(4), atol=1e-12)


def test_train_rays_are_ndc_rays_of_the_non_held_out_images(tmp_path):
    assert BUNDLED["llff"] is llff
    _, images, _ = write_folder(tmp_path)
    source = make_source(cfg(tmp_path), seed=0, examples_per_step=8)
    assert source.num_examples == 3 * H * W  # image 0 is held out (every 8th)
    poses, _ = llff.normalise_poses(*llff.read_poses_bounds(str(tmp_path))[::2])
    batch = source.batch(1)
    views, pixel = np.divmod(source.indices(1), H * W)
    rows, cols = np.divmod(pixel, W)
    ids = np.array([1, 2, 3])[views]
    o, d = cameras.rays_at_pixels(poses[ids], H, W, FOCAL, cols, rows)
    world = d / np.linalg.norm(d, axis=-1, keepdims=True)
    o, d = cameras.ndc_rays(o, d, H, W, FOCAL, near=1.0)
    np.testing.assert_allclose(batch["origins"], o, atol=1e-6)
    np.testing.assert_allclose(batch["directions"], d, atol=1e-6)
    np.testing.assert_allclose(batch["origins"][:, 2], -1.0, atol=1e-6)  # on the near plane
    np.testing.assert_allclose(batch["rgb"], images[ids, rows, cols], atol=1e-6)
    # The MLP's view direction: the unit world direction (the reference code's viewdirs).
    assert source.element_spec["viewdirs"] == ((3,), np.float32)
    np.testing.assert_allclose(batch["viewdirs"], world, atol=1e-6)


def test_eval_views_carry_world_viewdirs_in_ndc_only(tmp_path):
    write_folder(tmp_path)
    poses, _ = llff.normalise_poses(*llff.read_poses_bounds(str(tmp_path))[::2])
    evals = make_eval_source(cfg(tmp_path))
    assert evals.element_spec["viewdirs"] == ((H, W, 3), np.float32)
    view = next(evals.batches(1))
    _, d = cameras.pixel_rays(H, W, FOCAL, poses[0])
    np.testing.assert_allclose(view["viewdirs"][0], cameras.view_directions(d), atol=1e-6)
    # Without NDC the directions are world directions already: no extra field.
    assert "viewdirs" not in next(make_eval_source(cfg(tmp_path, ndc=False)).batches(1))
    assert "viewdirs" not in make_source(
        cfg(tmp_path, ndc=False), seed=0, examples_per_step=8
    ).batch(0)


def test_eval_views_and_holdout(tmp_path):
    _, images, _ = write_folder(tmp_path)
    evals = make_eval_source(cfg(tmp_path, holdout_every=2))
    assert evals.num_examples == 2 and evals.element_spec["rgb"] == ((H, W, 3), np.float32)
    batch = next(evals.batches(2))
    np.testing.assert_allclose(batch["rgb"], images[[0, 2]], atol=1e-6)
    assert batch["origins"].shape == (2, H, W, 3)
    assert make_source(
        cfg(tmp_path, holdout_every=2), seed=0, examples_per_step=8
    ).num_examples == (2 * H * W)
    assert make_eval_source(cfg(tmp_path, holdout_every=2, num_eval_views=1)).num_examples == 1


def test_scene_info_with_and_without_ndc(tmp_path):
    write_folder(tmp_path)
    info = llff.scene_info(cfg(tmp_path))
    assert (info.near, info.far, info.ndc, info.white_background) == (0.0, 1.0, True, False)
    assert (info.height, info.width, info.focal) == (H, W, FOCAL)
    assert info.test_poses.shape == (1, 4, 4)
    scale = 1 / (BOUNDS.min() * 0.75)
    plain = llff.scene_info(cfg(tmp_path, ndc=False))
    assert plain.near == pytest.approx(0.9 * BOUNDS.min() * scale)
    assert plain.far == pytest.approx(BOUNDS.max() * scale)
    rays = make_source(cfg(tmp_path, ndc=False), seed=0, examples_per_step=8).batch(0)
    assert np.abs(rays["origins"][:, 2] + 1).max() > 1e-3  # world-frame camera centres


def test_spiral_render_path(tmp_path):
    write_folder(tmp_path)
    path = llff.scene_info(cfg(tmp_path)).render_poses
    assert path.shape == (120, 4, 4) and path.dtype == np.float32
    rot = path[:, :3, :3].astype(np.float64)
    np.testing.assert_allclose(
        rot.transpose(0, 2, 1) @ rot, np.tile(np.eye(3), (120, 1, 1)), atol=1e-5
    )
    assert np.all(rot[:, 2, 2] > 0.9)  # all look along -z, as the recentred cameras do
    centres = path[:, :3, 3]
    assert np.linalg.norm(np.diff(centres, axis=0), axis=-1).min() > 1e-3  # it moves
    np.testing.assert_allclose(centres[:60, :2], centres[60:, :2], atol=1e-5)  # two turns...
    assert np.abs(centres[:60, 2] + centres[60:, 2]).max() < 1e-5  # ... bobbing once in z


def test_downscale_reads_images_k_or_area_resizes(tmp_path):
    _, images, small = write_folder(tmp_path)
    evals = make_eval_source(cfg(tmp_path, image_size=3))
    np.testing.assert_allclose(next(evals.batches(1))["rgb"][0], small[0], atol=1e-6)
    info = llff.scene_info(cfg(tmp_path, image_size=3))
    assert (info.height, info.width, info.focal) == (3, 4, FOCAL / 2)
    os.rename(tmp_path / "images_2", tmp_path / "spare")
    evals = make_eval_source(cfg(tmp_path, image_size=3))
    blocks = images[0].reshape(3, 2, 4, 2, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(next(evals.batches(1))["rgb"][0], blocks, atol=1e-5)
    with pytest.raises(ValueError, match="only downscale"):
        check_data_config(cfg(tmp_path, image_size=12))


def test_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        check_data_config(cfg(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="data.dir is required"):
        check_data_config(cfg(""))
    root = tmp_path / "s"
    write_folder(root)
    os.remove(root / "images" / "IMG_0003.png")
    with pytest.raises(ValueError, match="holds 3 images but poses_bounds.npy has 4 poses"):
        check_data_config(cfg(root))
    np.save(root / "poses_bounds.npy", np.zeros((4, 15)))
    with pytest.raises(ValueError, match=r"poses_bounds.npy: expected shape \[N, 17\].*\(4, 15\)"):
        check_data_config(cfg(root))
    os.remove(root / "poses_bounds.npy")
    with pytest.raises(ValueError, match="no poses_bounds.npy"):
        check_data_config(cfg(root))
    for kwargs, match in [(dict(ndc=1), "data.ndc"), (dict(random_flip=True), "random_flip")]:
        with pytest.raises(ValueError, match=match):
            check_data_config(cfg(tmp_path, **kwargs))


def test_clear_errors_for_bad_images(tmp_path):
    write_folder(tmp_path / "a", hwf=(H, H, FOCAL))
    with pytest.raises(ValueError, match="aspect ratios differ"):
        check_data_config(cfg(tmp_path / "a"))
    write_folder(tmp_path / "b", small=False)
    os.rename(tmp_path / "b" / "images", tmp_path / "b" / "pictures")
    with pytest.raises(ValueError, match="no images/ folder"):
        check_data_config(cfg(tmp_path / "b"))
    write_folder(tmp_path / "c", small=False)
    good = (tmp_path / "c" / "images" / "IMG_0001.png").read_bytes()
    (tmp_path / "c" / "images" / "IMG_0002.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match=r"image 2: cannot decode image .*IMG_0002.png"):
        make_source(cfg(tmp_path / "c"), seed=0, examples_per_step=8)
    Image.new("RGB", (W, H + 2)).save(tmp_path / "c" / "images" / "IMG_0002.png")
    with pytest.raises(ValueError, match=r"IMG_0002.png' is 8x8, but the first image is 8x6"):
        make_source(cfg(tmp_path / "c"), seed=0, examples_per_step=8)
