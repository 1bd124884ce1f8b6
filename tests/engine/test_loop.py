"""The train loop in-process: a NaN stops the run naming step and player, keeping checkpoints."""

import dataclasses
import multiprocessing
import os
import signal
import sys

import cloudpickle
import jax.numpy as jnp
import pytest
from PIL import Image

from configs.ddpm_digits import get_config
from zoo import registry
from zoo.data.pipeline import StepLoader
from zoo.engine.loop import Trainer, numeric
from zoo.engine.writers import read_metrics

# FailingAtStep3 runs in spawned data workers, which cannot import this file by name.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def nan_from(objective, bad_step):
    """The objective with its loss made NaN from train step ``bad_step`` on."""
    (player,) = objective.players

    def loss(models, batch, ctx):
        value, aux = player.loss(models, batch, ctx)
        return jnp.where(ctx.step >= bad_step, jnp.nan, value), aux

    return dataclasses.replace(objective, players=(dataclasses.replace(player, loss=loss),))


def test_nan_loss_stops_with_step_and_player(tmp_path):
    c = get_config("tiny")
    c.train.update(dict(steps=8, log_every=4, checkpoint_every=2, sample_every=0, eval_every=0))
    c.eval.num_samples = 0
    trainer = Trainer(c, str(tmp_path), nan_from(registry.build_objective(c), bad_step=5))
    with pytest.raises(FloatingPointError, match=r"player 'model' became NaN/Inf at step 5"):
        trainer.train()
    assert trainer.checkpointer.steps() == [2, 4]  # nothing after the bad step was saved


def test_numeric_keeps_numbers_only():
    batch = numeric({"image": [[0.5]], "label": [3], "caption": ["a red circle"]})
    assert sorted(batch) == ["image", "label"]


def test_dict_samples_and_figures_are_written(tmp_path):
    c = get_config("tiny")
    c.train.update(dict(steps=2, log_every=1, checkpoint_every=2, sample_every=2, eval_every=0))
    c.train.num_samples = 4
    c.eval.num_samples = 0
    base = registry.build_objective(c)

    def sample(models, rng, n):
        return {"image": base.sample(models, rng, n), "label": jnp.arange(n)}

    def table(models, rng):  # 2 rows x 3 columns of constant tiles
        return jnp.linspace(-1.0, 1.0, 6).reshape(2, 3, 1, 1, 1) * jnp.ones((2, 3, 8, 8, 1))

    objective = dataclasses.replace(base, sample=sample, figures={"table": table})
    trainer = Trainer(c, str(tmp_path), objective)
    state = trainer.train()
    samples = trainer.samples(state, 4)
    assert samples["image"].shape == (4, 8, 8, 1) and list(samples["label"]) == [0, 1, 2, 3]
    grid = Image.open(tmp_path / "samples" / "table_step_0000002.png")
    # 3 columns and 2 rows of upscaled 8x8 tiles: wider than tall
    assert grid.width > grid.height
    assert (tmp_path / "samples" / "step_0000002.png").exists()


def tiny_config(steps, **train):
    c = get_config("tiny")
    c.data.batch_size = 8
    c.train.update(dict(steps=steps, log_every=1, sample_every=0, eval_every=0))
    c.train.update(train)
    c.eval.num_samples = 0
    return c


def checkpoint_dirs(workdir):
    return sorted(p.name for p in (workdir / "checkpoints").iterdir())


def test_an_eval_that_raises_keeps_that_steps_checkpoint(tmp_path, caplog):
    c = tiny_config(8, checkpoint_every=2, eval_every=4)
    base = registry.build_objective(c)

    def evaluate(models, batch, rng):
        raise RuntimeError("the eval broke")

    trainer = Trainer(c, str(tmp_path), dataclasses.replace(base, evaluate=evaluate))
    with pytest.raises(RuntimeError, match="the eval broke"):
        trainer.train()
    # the step-4 checkpoint was written before the eval ran, and finished, not left as *-tmp
    assert checkpoint_dirs(tmp_path) == ["2", "4"]
    assert "running the same command again resumes from step 4" in caplog.text


class FailingAtStep3(StepLoader):
    """A data.workers process's loader that meets an unreadable example at step 3."""

    def __call__(self, step):
        if step == 3:
            raise ValueError("cannot read image 'x.png'")
        return super().__call__(step)


# workers=1 (a spawned loader process): 13 s on 2 cores, in the slow tier.
@pytest.mark.parametrize("workers", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_a_bad_example_mid_run_leaves_the_last_checkpoint_whole(
    tmp_path, caplog, monkeypatch, workers
):
    c = tiny_config(8, checkpoint_every=2)
    c.data.workers = workers  # 1: the error comes from a worker process, and still surfaces
    trainer = Trainer(c, str(tmp_path), registry.build_objective(c))
    if workers:
        monkeypatch.setattr("zoo.data.pipeline.StepLoader", FailingAtStep3)
    else:  # the loop's own prefetch thread calls source.batch
        trainer.source.batch = FailingAtStep3(c.data, trainer.source)
    with pytest.raises(ValueError, match="x.png"):
        trainer.train()
    assert multiprocessing.active_children() == []
    assert checkpoint_dirs(tmp_path) == ["2"]
    assert "resumes from step 2" in caplog.text
    resumed = Trainer(c, str(tmp_path), registry.build_objective(c))
    assert resumed.restore_or_init()[1] == 2
    resumed.checkpointer.close()


@pytest.mark.slow  # two runs with a spawned loader process: 21 s on 2 cores
def test_workers_feed_the_steps_their_own_batches_across_a_preemption(tmp_path):
    """With data.workers processes the devices get host_batch(step) for every step, in a run
    stopped by SIGTERM and in its resumed continuation, and no worker outlives either run."""
    import numpy as np

    fed = {}  # run -> the batches put on the devices, in order

    def recording(trainer, run):
        put = trainer.runner.put_batch
        trainer.runner.put_batch = lambda b: (fed.setdefault(run, []).append(b), put(b))[1]
        return trainer

    c = tiny_config(4, checkpoint_every=4)
    c.data.workers = 2
    first = recording(Trainer(c, str(tmp_path), registry.build_objective(c)), "first")
    run_step = first.run_step

    def preempted_after_step_1(state, batch, *args):
        step = int(state.step)  # read before the step donates the state
        out = run_step(state, batch, *args)
        if step == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler does: save, then stop
        return out

    first.run_step = preempted_after_step_1
    first.train()
    assert checkpoint_dirs(tmp_path) == ["2"]
    assert multiprocessing.active_children() == []
    resumed = recording(Trainer(c, str(tmp_path), registry.build_objective(c)), "resumed")
    resumed.train()
    assert multiprocessing.active_children() == []
    # The first run may have put step 2's batch on the devices before it stopped.
    assert len(fed["first"]) in (2, 3) and len(fed["resumed"]) == 2
    steps = [*enumerate(fed["first"]), *enumerate(fed["resumed"], start=2)]
    for step, batch in steps:
        want = resumed.host_batch(step)
        assert sorted(batch) == sorted(want)
        for key in want:
            np.testing.assert_array_equal(batch[key], want[key], err_msg=f"{step} {key}")


def test_nan_samples_under_skip_still_write_the_final_checkpoint(tmp_path):
    """on_nonfinite=skip with a generator of NaNs: the metrics report it, the run ends saved."""
    c = tiny_config(4, checkpoint_every=4, eval_every=4, on_nonfinite="skip")
    c.eval.num_samples = 64
    base = registry.build_objective(c)
    objective = dataclasses.replace(
        base, sample=lambda models, rng, n: jnp.full((n, 8, 8, 1), jnp.nan)
    )
    from zoo.evals.sample_metrics import sample_metrics

    trainer = Trainer(c, str(tmp_path), objective, sample_evals=sample_metrics(c, str(tmp_path)))
    with pytest.warns(RuntimeWarning, match="non-finite"):
        trainer.train()
    assert checkpoint_dirs(tmp_path) == ["4"]


def test_every_runs_a_player_on_its_steps_through_the_loop(tmp_path):
    """A player with every=2 runs at steps 0, 2, 4 of a 5-step run, and only there."""
    import json

    import optax
    from flax import nnx

    from zoo.engine.objective import Objective, Player

    def loss(role):
        def fn(models, batch, ctx):
            value = jnp.mean((models(role)(batch["image"].reshape(-1, 64)) - 1.0) ** 2)
            return value, {"step_seen": ctx.step.astype(jnp.float32)}

        return fn

    objective = Objective(
        modules={
            "a": nnx.Linear(64, 1, rngs=nnx.Rngs(0)),
            "b": nnx.Linear(64, 1, rngs=nnx.Rngs(1)),
        },
        optimizers={"a": optax.adam(1e-2), "b": optax.adam(1e-2)},
        players=(Player("a", "a", loss("a")), Player("lazy", "b", loss("b"), every=2)),
    )
    trainer = Trainer(tiny_config(5, checkpoint_every=5), str(tmp_path), objective)
    state = trainer.train()
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    ran = [int(x["lazy/step_seen"]) for x in lines if "lazy/loss" in x]
    assert ran == [0, 2, 4]
    assert [int(x["a/step_seen"]) for x in lines if "a/loss" in x] == [0, 1, 2, 3, 4]
    assert int(state.opt["b"][0].count) == 3 and int(state.opt["a"][0].count) == 5


@pytest.mark.slow  # 8 s of deliberate waits plus a run (~18 s)
def test_steps_per_sec_counts_the_wait_for_the_device_and_not_the_samples(tmp_path):
    """Steps are dispatched asynchronously: the log's rate must include the time until their
    metrics reach the host (here a device busy for 0.3 s per step, simulated in
    metrics_to_host), and must leave out the time spent writing samples (2 s each). The old
    loop read the clock before waiting for the device and counted the samples in the next
    window."""
    import time

    c = tiny_config(6, log_every=2, sample_every=4)
    c.eval.num_samples = 4
    trainer = Trainer(c, str(tmp_path), registry.build_objective(c))
    fetch = trainer.runner.metrics_to_host
    trainer.runner.metrics_to_host = lambda m: (time.sleep(0.3), fetch(m))[1]
    trainer.write_samples = lambda state, step: time.sleep(2.0)
    trainer.train()
    rates = [r["steps_per_sec"] for r in read_metrics(str(tmp_path)) if "steps_per_sec" in r]
    assert len(rates) == 3
    # 2 steps per window, each with >= 0.3 s of "device" time: at most 1 / 0.3 steps/s (the
    # old loop gave window 2, compiled and without samples, tens of steps/s)
    assert max(rates) <= 1 / 0.3, rates
    # window 3 follows 2 s of samples (step 4); counting them, its rate would be below 1
    assert rates[2] > 1.2, rates
