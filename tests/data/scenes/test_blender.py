"""The Blender loader on small folders the tests write, its errors, and the procedural default."""

import json
import os

import ml_collections
import numpy as np
import pytest
from PIL import Image

from zoo.data import BUNDLED, check_data_config, make_eval_source, make_source
from zoo.data.scenes import blender, cameras
from zoo.data.scenes import procedural as scene

ANGLE = 0.6911112070083618


def write_folder(root, size=8, counts=(("train", 3), ("val", 2), ("test", 2)), seed=0):
    """A Blender folder of random RGBA PNGs; returns {split: (rgba uint8 [N,S,S,4], poses)}."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in counts:
        os.makedirs(os.path.join(root, split), exist_ok=True)
        rgba = rng.integers(0, 256, size=(n, size, size, 4), dtype=np.uint8)
        rgba[:, 0, 0, 3], rgba[:, 0, 1, 3] = 0, 255  # one transparent, one opaque pixel
        poses = np.stack([cameras.orbit_pose(40.0 * k, 20.0 + 10 * k, 4.0) for k in range(n)])
        frames = []
        for k in range(n):
            Image.fromarray(rgba[k], "RGBA").save(os.path.join(root, split, f"r_{k}.png"))
            frames.append({"file_path": f"./{split}/r_{k}", "transform_matrix": poses[k].tolist()})
        with open(os.path.join(root, f"transforms_{split}.json"), "w") as f:
            json.dump({"camera_angle_x": ANGLE, "frames": frames}, f)
        out[split] = (rgba, poses)
    return out


def cfg(root, **kwargs) -> ml_collections.ConfigDict:
    base = dict(name="blender", dir=str(root), image_size=8, batch_size=16)
    return ml_collections.ConfigDict({**base, **kwargs})


def test_registered_and_train_examples_are_rays_of_every_training_pixel(tmp_path):
    assert BUNDLED["blender"] is blender
    data = write_folder(tmp_path)
    source = make_source(cfg(tmp_path), seed=0, examples_per_step=16)
    assert source.num_examples == 3 * 8 * 8
    assert source.element_spec == {k: ((3,), np.float32) for k in ("origins", "directions", "rgb")}
    batch = source.batch(2)
    rgba, poses = data["train"]
    focal = 0.5 * 8 / np.tan(0.5 * ANGLE)
    for k, index in enumerate(source.indices(2)):
        view, pixel = divmod(int(index), 64)
        row, col = divmod(pixel, 8)
        o, d = cameras.pixel_rays(8, 8, focal, poses[view])
        np.testing.assert_allclose(batch["origins"][k], o[row, col], atol=1e-6)
        np.testing.assert_allclose(batch["directions"][k], d[row, col], atol=1e-6)
        a = rgba[view, row, col, 3] / 255.0
        expected = rgba[view, row, col, :3] / 255.0 * a + (1 - a)  # composited on white
        np.testing.assert_allclose(batch["rgb"][k], expected, atol=1e-6)
    assert all(v.dtype == np.float32 and v.shape == (16, 3) for v in batch.values())


def test_eval_examples_are_whole_views_of_the_eval_split(tmp_path):
    data = write_folder(tmp_path)
    source = make_eval_source(cfg(tmp_path, white_background=False, eval_split="val"))
    assert source.num_examples == 2
    assert source.element_spec["rgb"] == ((8, 8, 3), np.float32)
    (batch,) = list(source.batches(5))
    rgba, poses = data["val"]
    o, d = cameras.pixel_rays(8, 8, 0.5 * 8 / np.tan(0.5 * ANGLE), poses[1])
    np.testing.assert_allclose(batch["origins"][1], o, atol=1e-6)
    np.testing.assert_allclose(batch["directions"][1], d, atol=1e-6)
    expected = rgba[..., :3] / 255.0 * (rgba[..., 3:] / 255.0)  # composited on black
    np.testing.assert_allclose(batch["rgb"], expected, atol=1e-6)
    one = make_eval_source(cfg(tmp_path, num_eval_views=1))
    assert one.num_examples == 1


def test_downscale_is_an_area_average_and_scales_the_focal(tmp_path):
    data = write_folder(tmp_path)
    images, poses, focal = blender.load_split(str(tmp_path), "train", 4, white_background=True)
    rgba = data["train"][0] / 255.0
    full = rgba[..., :3] * rgba[..., 3:] + 1 - rgba[..., 3:]
    blocks = full.reshape(3, 4, 2, 4, 2, 3).mean(axis=(2, 4))
    np.testing.assert_allclose(images, blocks, atol=1e-5)
    assert focal == pytest.approx(0.5 * 4 / np.tan(0.5 * ANGLE))
    info = blender.scene_info(cfg(tmp_path, image_size=4))
    assert (info.height, info.width, info.focal) == (4, 4, pytest.approx(focal))
    with pytest.raises(ValueError, match="only downscale"):
        check_data_config(cfg(tmp_path, image_size=16))


def test_scene_info(tmp_path):
    data = write_folder(tmp_path)
    info = blender.scene_info(cfg(tmp_path, num_eval_views=1))
    assert (info.near, info.far, info.ndc, info.white_background) == (2.0, 6.0, False, True)
    np.testing.assert_allclose(info.test_poses, data["test"][1][:1])
    assert info.render_poses.shape == (40, 4, 4)
    np.testing.assert_allclose(np.linalg.norm(info.render_poses[:, :3, 3], axis=-1), 4.0, rtol=1e-5)


def _rewrite_json(root, split, edit):
    path = os.path.join(root, f"transforms_{split}.json")
    with open(path) as f:
        meta = json.load(f)
    edit(meta)
    with open(path, "w") as f:
        json.dump(meta, f)


def test_clear_errors_for_broken_folders(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        check_data_config(cfg(tmp_path / "nowhere"))
    root = tmp_path / "s"
    write_folder(root)
    os.remove(root / "transforms_test.json")
    with pytest.raises(ValueError, match="no transforms_test.json"):
        check_data_config(cfg(root))
    with open(root / "transforms_test.json", "w") as f:
        f.write('{"camera_angle_x": 0.7, "frames": [')
    with pytest.raises(ValueError, match=r"transforms_test.json: not valid JSON"):
        check_data_config(cfg(root))


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda m: m.pop("camera_angle_x"), "camera_angle_x must be a number"),
        (lambda m: m.update(frames=[]), "'frames' must be a non-empty list"),
        (lambda m: m["frames"][1].pop("file_path"), r"frames\[1\].file_path"),
        (lambda m: m["frames"][2].update(transform_matrix=[[1, 0], [0, 1]]), r"frames\[2\].trans"),
        (lambda m: m["frames"][1].update(file_path="./train/missing"), r"frames\[1\].*not found"),
    ],
)
def test_clear_errors_for_malformed_transforms(tmp_path, edit, match):
    write_folder(tmp_path)
    _rewrite_json(tmp_path, "train", edit)
    with pytest.raises(ValueError, match=match) as info:
        check_data_config(cfg(tmp_path))
    assert "transforms_train.json" in str(info.value)


def test_clear_errors_for_bad_images(tmp_path):
    write_folder(tmp_path)
    Image.new("RGBA", (6, 6)).save(tmp_path / "train" / "r_2.png")
    with pytest.raises(ValueError, match=r"frames\[2\] .*r_2.png.* is 6x6 but frames\[0\] is 8x8"):
        check_data_config(cfg(tmp_path))
    (tmp_path / "train" / "r_2.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match=r"frames\[2\].*r_2.png.*not a readable image"):
        check_data_config(cfg(tmp_path))
    good = (tmp_path / "train" / "r_1.png").read_bytes()
    (tmp_path / "train" / "r_2.png").write_bytes(good[: len(good) // 2])  # header intact
    check_data_config(cfg(tmp_path))
    with pytest.raises(ValueError, match=r"frames\[2\].*cannot decode image.*r_2.png"):
        make_source(cfg(tmp_path), seed=0, examples_per_step=4)


def test_bad_options_are_refused(tmp_path):
    write_folder(tmp_path)
    for kwargs, match in [
        (dict(random_flip=True), "random_flip"),
        (dict(eval_split="train"), "eval_split"),
        (dict(num_eval_views=-1), "num_eval_views"),
        (dict(num_eval_views=3), "num_eval_views=3 but transforms_test.json has 2"),
        (dict(white_background="yes"), "white_background"),
        (dict(dir=3), "data.dir"),
    ]:
        with pytest.raises(ValueError, match=match):
            check_data_config(cfg(tmp_path, **kwargs))


def test_empty_dir_generates_the_procedural_scene_once(tmp_path):
    config = cfg("", image_size=8, scene_cache=str(tmp_path), batch_size=1024)
    check_data_config(config)
    assert os.listdir(tmp_path) == []  # checking writes nothing
    source = make_source(config, seed=0, examples_per_step=1024)
    assert source.num_examples == 100 * 8 * 8
    batch = source.batch(0)
    assert batch["rgb"].shape == (1024, 3) and batch["rgb"].min() >= 0
    name = scene.scene_name(image_size=8, num_train=100, num_val=10, num_test=25, seed=0)
    assert os.listdir(tmp_path) == [name]
    stamp = os.path.getmtime(tmp_path / name)
    evals = make_eval_source(config)
    assert evals.num_examples == 25 and evals.element_spec["rgb"][0] == (8, 8, 3)
    assert os.path.getmtime(tmp_path / name) == stamp  # read, not rewritten
    info = blender.scene_info(config)
    assert (info.height, info.width, len(info.test_poses)) == (8, 8, 25)
