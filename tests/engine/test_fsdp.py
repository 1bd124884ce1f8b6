"""Sharded state (``config.mesh``): the rules, bad meshes, and whole runs on 8 CPU devices."""

import json
from pathlib import Path

import pytest
from jax.sharding import PartitionSpec as P

from tests.engine.test_runs import assert_same_run, run_tiny
from zoo.engine import parallel
from zoo.engine.config import check_config


# -- rules ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "shape, fsdp, min_size, want",
    [
        ((3, 3, 64, 128), 8, 0, P(None, None, None, "fsdp")),  # the largest dimension
        ((3, 3, 128, 64), 8, 0, P(None, None, "fsdp")),
        ((128, 128), 8, 0, P("fsdp")),  # ties: the first
        ((3, 3, 64, 100), 8, 0, P(None, None, "fsdp")),  # 100 is not divisible: the next
        ((3, 5, 7), 8, 0, P()),  # nothing divides: replicated
        ((4096, 8), 8, 2**14, P("fsdp")),  # 32768 entries: large enough
        ((64,), 8, 2**14, P()),  # small: replicated
        ((), 8, 0, P()),  # scalars (the step counter)
        ((1024, 1024), 1, 0, P()),  # no fsdp axis
    ],
)
def test_fsdp_spec(shape, fsdp, min_size, want):
    assert parallel.fsdp_spec(shape, fsdp, min_size) == want


@pytest.mark.parametrize(
    "data, fsdp, devices, want",
    [(-1, 1, 8, (8, 1)), (-1, 8, 8, (1, 8)), (2, -1, 8, (2, 4)), (2, 4, 8, (2, 4))],
)
def test_mesh_shape(data, fsdp, devices, want):
    assert parallel.mesh_shape(data, fsdp, devices) == want


@pytest.mark.parametrize(
    "mesh, mode, message",
    [
        (dict(fsdp=3), "jit", "3 does not divide the 8 devices"),
        (dict(data=2, fsdp=2), "jit", "mesh.data=2 x mesh.fsdp=2 must be the 8 devices"),
        (dict(data=-1, fsdp=-1), "jit", "cannot both be -1"),
        (dict(fsdp=0), "jit", r"mesh.fsdp=0; use a positive size or -1"),
        (dict(fsdp=2), "pmap", "needs parallel='jit'"),
    ],
)
def test_bad_mesh_raises(mesh, mode, message):
    with pytest.raises(ValueError, match=message):
        parallel.mesh_shape(mesh.get("data", -1), mesh.get("fsdp", 1), 8, mode=mode)


def test_bad_mesh_is_a_config_error():
    """Checked with the config, before anything is built (this process has 1 device)."""
    from configs.ddpm_digits import get_config

    config = get_config("tiny")
    config.mesh.fsdp = 2
    with pytest.raises(ValueError, match="2 does not divide the 1 devices"):
        check_config(config)
    config.mesh.fsdp = -2
    with pytest.raises(ValueError, match=r"mesh.fsdp must be an integer >= -1 \(-1: the rest\)"):
        check_config(config)


# -- whole runs ------------------------------------------------------------------------
def run(workdir, *args):
    return run_tiny(workdir, "--config", "ddpm_digits", *args)


@pytest.mark.slow  # six tiny runs in fresh processes: 7 min 23 s beside two trainings
def test_sharded_runs_match_replicated_and_restore_onto_another_mesh(tmp_path):
    """fsdp 8 and fsdp 4 x data 2 train as the replicated state does, each device holding
    about 1/fsdp of the params, Adam moments and EMA; a checkpoint saved from fsdp 8 on 8
    devices resumes on 4 devices with fsdp 4 and lands where an unbroken run does."""
    small = ("--set", "mesh.fsdp_min_size=0")  # shard every tiny tensor that divides
    ref = run(tmp_path / "replicated", "--devices", 8, "--steps", 5)
    assert ref["device_bytes"] == ref["total_bytes"]
    # fsdp 8 also draws a sample grid from its sharded EMA (read back as one array)
    grid = ("--set", "train.sample_every=5")
    for name, mesh, fsdp in (("fsdp8", grid, 8), ("fsdp4_data2", ("--set", "mesh.data=2"), 4)):
        got = run(
            tmp_path / name,
            "--devices",
            8,
            "--steps",
            5,
            "--set",
            f"mesh.fsdp={fsdp}",
            *mesh,
            *small,
        )
        assert_same_run(tmp_path / "replicated", ref, tmp_path / name, got)
        if name == "fsdp8":
            assert (tmp_path / name / "samples" / "step_0000005.png").exists()
        # A few tensors have no dimension that fsdp divides (the 1-channel output bias...).
        assert got["device_bytes"] < 1.01 * got["total_bytes"] / fsdp, (name, got)

    # Saved from fsdp 8 at step 3, resumed on 4 devices (fsdp 4) to step 5.
    moved = tmp_path / "moved"
    run(moved, "--devices", 8, "--steps", 3, "--set", "mesh.fsdp=8", *small)
    got = run(moved, "--devices", 4, "--steps", 5, "--set", "mesh.fsdp=4", *small)
    assert got["devices"] == 4
    config = json.loads((Path(moved) / "config.json").read_text())
    assert config["mesh"]["fsdp"] == 4
    assert_same_run(tmp_path / "replicated", ref, moved, got)
