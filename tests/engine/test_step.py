"""The train step on toy objectives: substeps, every, accumulation, NaN handling."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from zoo.engine.objective import Objective, Player
from zoo.engine.rng import per_example
from zoo.engine.state import init_state, split_modules
from zoo.engine.step import build_train_step, ema_decay_at


class Net(nnx.Module):
    def __init__(self, rngs, batch_norm=False):
        self.dense = nnx.Linear(3, 1, rngs=rngs)
        self.norm = nnx.BatchNorm(3, rngs=rngs) if batch_norm else None

    def __call__(self, x):
        return self.dense(self.norm(x) if self.norm is not None else x)


def regression_loss(models, batch, ctx, role="model"):
    noise = per_example(ctx, jax.random.normal, (1,))
    pred = models(role)(batch["x"])
    loss = jnp.mean((pred + 0.01 * noise - batch["y"]) ** 2)
    return loss, {"mse": loss}


def make_batch(s=1, a=1, b=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(s, a, b, 3)).astype(np.float32)
    y = x @ np.array([[1.0], [-2.0], [0.5]], np.float32)
    ids = np.arange(s * a * b, dtype=np.int32).reshape(s, a, b)
    return {"x": jnp.asarray(x), "y": jnp.asarray(y), "example_id": jnp.asarray(ids)}


def run(objective, batch, steps=3, active=None, **kw):
    graphs, params, rest = split_modules(objective.modules)
    state = init_state(objective, params, rest)
    step = jax.jit(build_train_step(objective, graphs, seed=0, **kw), static_argnums=2)
    active = active or (lambda i: tuple(True for _ in objective.players))
    history = []
    for i in range(steps):
        state, metrics = step(state, batch, active(i))
        history.append(jax.device_get(metrics))
    return state, history


def one_player(loss=regression_loss, ema=None, batch_norm=False, lr=0.1):
    return Objective(
        modules={"model": Net(nnx.Rngs(0), batch_norm)},
        optimizers={"model": optax.sgd(lr)},
        players=(Player("model", "model", loss),),
        ema=ema or {},
    )


def test_loss_decreases_and_step_counts():
    state, history = run(one_player(), make_batch(), steps=20)
    assert int(state.step) == 20
    assert history[-1]["model/loss"] < 0.2 * history[0]["model/loss"]


def test_microbatch_accumulation_equals_full_batch():
    full = make_batch(a=1, b=8)
    split = {k: v.reshape(1, 2, 4, *v.shape[3:]) for k, v in full.items()}
    s1, h1 = run(one_player(), full)
    s2, h2 = run(one_player(), split)
    np.testing.assert_allclose(h1[-1]["model/loss"], h2[-1]["model/loss"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s2.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_k_substeps_update_k_times_and_every():
    calls = {"d": 0, "g": 0}

    def counting(name):
        def loss(models, batch, ctx):
            calls[name] += 1  # counts traces, not runs
            value, aux = regression_loss(models, batch, ctx, role=name)
            return value, {**aux, "substep": ctx.substep.astype(jnp.float32)}

        return loss

    objective = Objective(
        modules={"d": Net(nnx.Rngs(0)), "g": Net(nnx.Rngs(1))},
        optimizers={"d": optax.sgd(0.1), "g": optax.sgd(0.1)},
        players=(
            Player("d", "d", counting("d"), steps=3),
            Player("g", "g", counting("g"), every=2),
        ),
    )
    state, history = run(objective, make_batch(s=3), steps=4, active=lambda i: (True, i % 2 == 0))
    assert "g/loss" in history[0] and "g/loss" not in history[1]
    assert history[0]["d/substep"] == pytest.approx(1.0)  # mean of substeps 0, 1, 2
    counted = Objective(
        modules={"d": Net(nnx.Rngs(0))},
        optimizers={"d": optax.chain(optax.sgd(0.1), optax.scale_by_schedule(lambda c: 1.0))},
        players=(Player("d", "d", lambda m, b, c: regression_loss(m, b, c, "d"), steps=3),),
    )
    state, _ = run(counted, make_batch(s=3), steps=2)
    assert int(state.opt["d"][1].count) == 6  # k=3 updates per step, 2 steps


def test_substeps_read_distinct_slices():
    seen = []

    def loss(models, batch, ctx):
        value, aux = regression_loss(models, batch, ctx)
        return value, {**aux, "first_x": batch["x"][0, 0]}

    objective = one_player(loss)
    objective = Objective(
        objective.modules, objective.optimizers, (Player("model", "model", loss, steps=2),)
    )
    batch = make_batch(s=2)
    _, history = run(objective, batch, steps=1)
    seen = history[0]["model/first_x"]
    assert seen == pytest.approx(float(jnp.mean(batch["x"][:, 0, 0, 0])))


def test_batchnorm_statistics_are_written_back():
    """The running mean/var after one step are the batch's, blended with momentum 0.99."""
    batch = make_batch()
    state, _ = run(one_player(batch_norm=True), batch, steps=1)
    x = np.asarray(batch["x"]).reshape(-1, 3)
    norm = state.rest["model"]["norm"]
    np.testing.assert_allclose(norm["mean"], 0.01 * x.mean(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(norm["var"], 0.99 + 0.01 * x.var(0), rtol=1e-5)


def test_ema_follows_params_by_its_formula():
    """ema_t = d * ema_{t-1} + (1 - d) * params_t, from ema_0 = params_0 (d = 0.9)."""
    decay = 0.9
    objective = one_player(ema={"model": decay})
    graphs, params, rest = split_modules(objective.modules)
    state = init_state(objective, params, rest)
    step = jax.jit(build_train_step(objective, graphs, seed=0), static_argnums=2)
    expected = np.asarray(params["model"]["dense"]["kernel"])
    for _ in range(4):
        state, _ = step(state, make_batch(), (True,))
        new = np.asarray(state.params["model"]["dense"]["kernel"])
        expected = decay * expected + (1 - decay) * new
    np.testing.assert_allclose(state.ema["model"]["dense"]["kernel"], expected, rtol=1e-6)
    assert not np.allclose(expected, new, rtol=1e-3)  # the EMA lags the parameters


def test_ema_warmup_uses_the_smaller_decay_early():
    """With warm-up, step n uses min(d, (1 + n) / (10 + n)): 0.1, 2/11, 3/12, then d = 0.25."""
    decay = 0.25
    objective = one_player(ema={"model": decay})
    graphs, params, rest = split_modules(objective.modules)
    state = init_state(objective, params, rest)
    step = jax.jit(build_train_step(objective, graphs, seed=0, ema_warmup=True), static_argnums=2)
    expected = np.asarray(params["model"]["dense"]["kernel"])
    for n, d in enumerate((1 / 10, 2 / 11, decay, decay)):
        np.testing.assert_allclose(ema_decay_at(decay, jnp.int32(n)), d, rtol=1e-6)
        state, _ = step(state, make_batch(), (True,))
        new = np.asarray(state.params["model"]["dense"]["kernel"])
        expected = d * expected + (1 - d) * new
    np.testing.assert_allclose(state.ema["model"]["dense"]["kernel"], expected, rtol=1e-6)
    np.testing.assert_allclose(ema_decay_at(0.999, jnp.int32(2000)), 2001 / 2010, rtol=1e-6)


class Deep(nnx.Module):
    """16 layers of 512 x 512: a 16 MB model whose largest leaf is 1 MB."""

    def __init__(self, rngs):
        self.layers = nnx.List([nnx.Linear(512, 512, rngs=rngs) for _ in range(16)])

    def __call__(self, x):
        for layer in self.layers:
            x = jnp.tanh(layer(x))
        return x


def test_microbatch_accumulation_memory_does_not_grow():
    """8 microbatches use at most 1.2x the temporary memory of 1 (stacked gradients: 4.4x)."""

    def loss(models, batch, ctx):
        value = jnp.mean(models("model")(batch["x"]) ** 2)
        return value, {"mse": value}

    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
    players = (Player("m", "model", loss),)
    objective = Objective({"model": Deep(nnx.Rngs(0))}, {"model": tx}, players)
    graphs, params, rest = split_modules(objective.modules)
    state = jax.eval_shape(lambda p, r: init_state(objective, p, r), params, rest)
    step = build_train_step(objective, graphs, seed=0)
    temp = {}
    for a in (1, 8):
        batch = {
            "x": jax.ShapeDtypeStruct((1, a, 8, 512), jnp.float32),
            "example_id": jax.ShapeDtypeStruct((1, a, 8), jnp.int32),
        }
        compiled = jax.jit(step, static_argnums=2, donate_argnums=0).lower(state, batch, (True,))
        temp[a] = compiled.compile().memory_analysis().temp_size_in_bytes
    assert temp[8] <= 1.2 * temp[1], temp


def nan_after(step_bad):
    def loss(models, batch, ctx):
        value, aux = regression_loss(models, batch, ctx)
        return jnp.where(ctx.step == step_bad, jnp.nan, value), aux

    return loss


def test_nonfinite_stop_freezes_state_and_names_step():
    clean, _ = run(one_player(), make_batch(), steps=2)
    state, _ = run(one_player(nan_after(2)), make_batch(), steps=5, on_nonfinite="stop")
    assert int(state.nonfinite[0]) == 2
    for a, b in zip(jax.tree.leaves(clean.params), jax.tree.leaves(state.params), strict=True):
        np.testing.assert_array_equal(a, b)


def test_nonfinite_skip_drops_only_that_update():
    state, history = run(one_player(nan_after(2)), make_batch(), steps=5, on_nonfinite="skip")
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.params))
    assert history[2]["model/nonfinite"] == 1.0 and history[3]["model/nonfinite"] == 0.0
    assert int(state.nonfinite[0]) == 2


def test_objective_check_names_the_problem():
    bad = Objective(
        modules={"model": Net(nnx.Rngs(0))},
        optimizers={},
        players=(Player("model", "model", regression_loss),),
    )
    with pytest.raises(ValueError, match="no optimizer"):
        bad.check()
