"""Checkpointer: round trip, keep-N, corrupt-latest fallback, other-model error."""

import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from zoo.engine.checkpoint import Checkpointer, CheckpointError
from zoo.engine.state import TrainState


def make_state(step, width=3):
    return TrainState(
        step=jnp.int32(step),
        params={"model": {"w": jnp.full((2, width), float(step))}},
        rest={"model": {}},
        opt={"model": (jnp.zeros(2),)},
        ema={"model": {"w": jnp.ones((2, width))}},
        nonfinite=jnp.full((1,), -1, jnp.int32),
    )


def abstract(state):
    rep = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), P())
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep), state)


def save_steps(workdir, steps, keep=5):
    ck = Checkpointer(str(workdir), keep=keep)
    for s in steps:
        ck.save(s, make_state(s), {"model": "toy"}, {"step": s})
    ck.close()


def test_round_trip_and_keep(tmp_path):
    save_steps(tmp_path, [1, 2, 3, 4], keep=2)
    ck = Checkpointer(str(tmp_path))
    assert ck.steps() == [3, 4]
    state, config, data = ck.restore_latest(abstract(make_state(0)))
    assert int(state.step) == 4 and data["step"] == 4 and config == {"model": "toy"}
    np.testing.assert_array_equal(state.params["model"]["w"], np.full((2, 3), 4.0))


@pytest.mark.parametrize("part", ["state", "data"])
def test_corrupt_latest_falls_back_and_keeps_files(tmp_path, part, caplog):
    save_steps(tmp_path, [2, 4])
    for f in glob.glob(str(tmp_path / "checkpoints" / "4" / part / "**" / "*"), recursive=True):
        if os.path.isfile(f):
            with open(f, "r+b") as fh:
                fh.truncate(max(0, os.path.getsize(f) // 3))
    ck = Checkpointer(str(tmp_path))
    state, _, data = ck.restore_latest(abstract(make_state(0)))
    assert int(state.step) == 2 and data["step"] == 2
    assert "step 4 could not be restored" in caplog.text
    assert os.path.isdir(tmp_path / "checkpoints" / "corrupt-4")  # moved aside, not deleted
    # the run can save step 4 again after falling back
    ck.save(4, make_state(4), {}, {"step": 4})
    ck.close()
    assert Checkpointer(str(tmp_path)).steps() == [2, 4]


def test_half_written_checkpoint_is_ignored(tmp_path):
    save_steps(tmp_path, [2])
    # an interrupted save leaves a temporary folder that is not a step
    os.makedirs(tmp_path / "checkpoints" / "4.orbax-checkpoint-tmp-123" / "state")
    ck = Checkpointer(str(tmp_path))
    state, _, _ = ck.restore_latest(abstract(make_state(0)))
    assert int(state.step) == 2


def test_other_model_is_a_clear_error(tmp_path):
    save_steps(tmp_path, [2])
    ck = Checkpointer(str(tmp_path))
    with pytest.raises(ValueError, match="other shapes"):
        ck.restore_latest(abstract(make_state(0, width=5)))
    assert ck.steps() == [2]


def test_empty_workdir_restores_nothing(tmp_path):
    assert Checkpointer(str(tmp_path)).restore_latest(abstract(make_state(0))) is None


def test_a_storage_error_is_raised_as_it_is_and_nothing_moves(tmp_path, monkeypatch):
    import errno

    save_steps(tmp_path, [2, 4])
    ck = Checkpointer(str(tmp_path))

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path))

    monkeypatch.setattr(ck._manager, "restore", denied)
    with pytest.raises(PermissionError):
        ck.restore_latest(abstract(make_state(0)))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]


def test_when_no_checkpoint_restores_the_run_stops(tmp_path):
    save_steps(tmp_path, [2, 4])
    for f in glob.glob(str(tmp_path / "checkpoints" / "*" / "state" / "**" / "*"), recursive=True):
        if os.path.isfile(f):
            with open(f, "r+b") as fh:
                fh.truncate(max(0, os.path.getsize(f) // 3))
    ck = Checkpointer(str(tmp_path))
    with pytest.raises(CheckpointError, match=r"none of the checkpoints \[2, 4\]"):
        ck.restore_latest(abstract(make_state(0)))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]  # nothing moved aside
