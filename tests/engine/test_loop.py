"""The train loop in-process: a NaN stops the run naming step and player, keeping checkpoints."""

import dataclasses

import jax.numpy as jnp
import pytest

from configs.ddpm_digits import get_config
from zoo import registry
from zoo.engine.loop import Trainer, numeric


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
