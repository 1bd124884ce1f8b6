"""End to end: `python -m zoo.main` trains the tiny Blender config, `python -m zoo.nerf.render`
renders from its checkpoint; a workdir without a checkpoint is a clear error."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from configs import nerf_blender
from zoo.nerf import render

ROOT = Path(__file__).resolve().parents[2]


def _run(*args):
    out = subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    return out


def test_tiny_config_trains_then_renders(tmp_path):
    workdir = tmp_path / "run"
    out = _run(
        "zoo.main",
        "--config=configs/nerf_blender.py:tiny",
        f"--workdir={workdir}",
        f"--config.data.scene_cache={tmp_path / 'scenes'}",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    evals = [x for x in lines if "eval/psnr" in x]
    assert evals and np.isfinite(evals[-1]["eval/psnr"]) and -1 <= evals[-1]["eval/ssim"] <= 1
    assert any("nerf/loss" in x for x in lines)
    assert (workdir / "samples" / "step_0000004.png").exists()

    out = _run("zoo.nerf.render", f"--workdir={workdir}", "--views=1", "--frames=2", "--chunk=100")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "1 test views" in out.stdout
    rendered = workdir / "render"
    metrics = json.loads((rendered / "test_metrics.json").read_text())
    assert metrics["step"] == 4 and len(metrics["views"]) == 1
    assert np.isfinite(metrics["mean_psnr"]) and "ssim" in metrics["views"][0]
    pair = Image.open(rendered / "test_000.png")
    assert pair.size == (32, 16)  # render | ground truth, 16x16 each
    gif = Image.open(rendered / "turntable.gif")
    assert gif.n_frames == 2 and gif.size == (16, 16)


def test_workdir_without_checkpoint_is_a_clear_error(tmp_path):
    config = nerf_blender.get_config("tiny")
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        render.restore_field(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        render.restore_field(str(tmp_path / "elsewhere"))
    out = _run("zoo.nerf.render", f"--workdir={tmp_path}")
    assert out.returncode != 0 and "error: no checkpoint" in out.stderr
    assert "Traceback" not in out.stderr
