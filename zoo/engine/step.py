"""The one train step, built from an objective: ``(state, batch) -> (state, metrics)``.

Pure and parallelism-agnostic: under ``jax.jit`` the batch is a global array
sharded over devices; under ``jax.pmap`` (``axis_name`` given) gradients,
metrics and non-parameter state are averaged with ``lax.pmean``.

Batch layout: every leaf is ``[S, A, B, ...]`` with S the largest player
``steps`` (k of Algorithm 2.1: substep j reads slice j), A microbatches whose
gradients are averaged before one update, and B examples per microbatch.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from zoo.engine.objective import Context, Objective, Player
from zoo.engine.precision import loss_scale_of
from zoo.engine.rng import step_key
from zoo.engine.state import Frozen, Graphs, TrainState

NONFINITE_MODES = ("stop", "skip")
NO_STAGES = Frozen({}, {})


class Models:
    """What a loss calls to get modules, merged from the current variables.

    ``models(role)`` is a train-mode module whose non-parameter updates
    (BatchNorm statistics...) the engine writes back; calling it again for the
    same role returns the same module, so statistics accumulate across calls.
    ``keep_state=False`` gives a throwaway copy (a discriminator pass inside
    the generator's loss, an inner gradient penalty); ``train=False`` an
    eval-mode copy. A frozen role (a trained stage, see
    :mod:`zoo.engine.stages`) is always in eval mode, and its parameters are
    behind ``stop_gradient``: no loss can train it.
    """

    def __init__(self, graphs: Graphs, params: dict, rest: dict, frozen: Frozen | None = None):
        self._graphs, self._params, self._rest = graphs, params, rest
        self._frozen = NO_STAGES if frozen is None else frozen
        self._kept: dict[str, nnx.Module] = {}

    def __call__(self, role: str, train: bool = True, keep_state: bool = True) -> nnx.Module:
        if role in self._frozen.params:
            params = jax.lax.stop_gradient(self._frozen.params[role])
            return nnx.merge(self._graphs.eval[role], params, self._frozen.rest[role], copy=True)
        if role not in self._params:
            roles = sorted(self._params) + sorted(self._frozen.params)
            raise KeyError(f"no module with role {role!r}; roles: {roles}")
        if train and keep_state and role in self._kept:
            return self._kept[role]
        graph = (self._graphs.train if train else self._graphs.eval)[role]
        # copy=True: a train-mode merge must not mutate the caller's variables
        # (inside value_and_grad that raises a TraceContextError).
        module = nnx.merge(graph, self._params[role], self._rest[role], copy=True)
        if train and keep_state:
            self._kept[role] = module
        return module

    def updated_rest(self) -> dict:
        """Non-parameter variables, with the kept modules' updates."""
        rest = dict(self._rest)
        for role, module in self._kept.items():
            rest[role] = nnx.to_pure_dict(nnx.state(module, nnx.Not(nnx.Param)))
        return rest


def _mean(tree, axis_name):
    return tree if axis_name is None else jax.lax.pmean(tree, axis_name)


def _mean_floats(tree, axis_name):
    """pmean over devices of the floating leaves (integer counters stay)."""
    if axis_name is None:
        return tree
    return jax.tree.map(
        lambda x: jax.lax.pmean(x, axis_name) if jnp.issubdtype(x.dtype, jnp.floating) else x,
        tree,
    )


def _select(pred, new, old):
    return jax.tree.map(lambda n, o: jnp.where(pred, n, o), new, old)


def ema_decay_at(decay: float, step: jax.Array) -> jax.Array:
    """The EMA decay after (0-based) step ``step`` with warm-up: ``min(decay, (1 + n) / (10 + n))``
    (TensorFlow's ``ExponentialMovingAverage`` with ``num_updates``).

    Without it, the EMA keeps ``decay ** n`` of the initial weights after n steps: 13 % at
    step 2,000 with 0.999. A short run's EMA is then a blend of a trained network and its
    initialisation, which for a U-Net is no network at all (glide_shapes at step 3,000:
    caption match 0.01 with the EMA, 0.35 with the raw weights).
    """
    n = jnp.asarray(step, jnp.float32)
    return jnp.minimum(jnp.float32(decay), (1.0 + n) / (10.0 + n))


def build_train_step(
    objective: Objective,
    graphs: Graphs,
    *,
    seed: int,
    on_nonfinite: str = "stop",
    axis_name: str | None = None,
    ema_warmup: bool = False,
) -> Callable[..., tuple[TrainState, dict]]:
    """Return ``step(state, batch, active, frozen=NO_STAGES) -> (state, metrics)``.

    active: one static bool per player, whether it runs this step (its
        ``every``); the loop picks it on the host, so ``every`` never needs a
        device sync and compiles one executable per distinct pattern.
    on_nonfinite: "stop" freezes the state at the first NaN/Inf loss or
        gradient (the loop then stops, naming step and player); "skip" drops
        that update and goes on. Either way a non-finite update is never applied.
    frozen: the trained stages' variables (:class:`~zoo.engine.state.Frozen`), an
        argument of the compiled step rather than constants baked into it (a 1 GB
        autoencoder must not be embedded in the executable); read, never updated.
    ema_warmup: the EMA decay after step n is ``min(decay, (1 + n) / (10 + n))``
        (:func:`ema_decay_at`) instead of ``decay``.
    """
    if on_nonfinite not in NONFINITE_MODES:
        raise ValueError(f"train.on_nonfinite={on_nonfinite!r}; choose one of {NONFINITE_MODES}")

    def grads_of(player: Player, params, rest, frozen, batch, ctx, scale=None):
        """Mean loss, gradient, aux and new rest over the A microbatches.

        ``scale``: the float16 policy's loss scale (:mod:`zoo.engine.precision`), or None. The
        loss is multiplied by it before differentiation and the gradients divided after, so
        small gradients survive float16's backward pass; the loss returned is unscaled.

        The microbatch gradients are summed in the scan's carry, so temporary
        memory does not grow with A. Stacked as scan outputs, they held A copies:
        the compiled step of a 16 MB, 16-layer MLP with clipped Adam needed 33,
        49 and 145 MiB of temporaries for A = 1, 2, 8; summed, 33, 34 and 34 MiB
        (tests/engine/test_step.py checks A = 8 <= 1.2x A = 1).
        """
        role = player.updates

        def loss_fn(role_params, rest, micro, ctx):
            models = Models(graphs, {**params, role: role_params}, rest, frozen)
            loss, aux = player.loss(models, micro, ctx)
            loss = loss.astype(jnp.float32)  # a float32 loss under every precision policy
            scaled = loss if scale is None else loss * scale
            return scaled, (loss, aux, models.updated_rest())

        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

        def one(rest, micro):
            micro_ctx = ctx._replace(example_ids=micro["example_id"])
            (_, (loss, aux, rest)), grads = grad_fn(params[role], rest, micro, micro_ctx)
            if scale is not None:
                grads = jax.tree.map(lambda g: g / scale.astype(g.dtype), grads)
            return rest, (loss, aux, grads)

        num_micro = jax.tree.leaves(batch)[0].shape[0]
        if num_micro == 1:
            rest, out = one(rest, jax.tree.map(lambda x: x[0], batch))
        else:
            first = jax.tree.map(lambda x: x[0], batch)
            out_shape = jax.eval_shape(one, rest, first)[1]
            zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), out_shape)

            def accumulate(carry, micro):
                rest, total = carry
                rest, out = one(rest, micro)
                return (rest, jax.tree.map(jnp.add, total, out)), None

            (rest, total), _ = jax.lax.scan(accumulate, (rest, zeros), batch)
            out = jax.tree.map(lambda x: x / num_micro, total)
        loss, aux, grads = out
        return _mean(loss, axis_name), _mean(aux, axis_name), _mean(grads, axis_name), rest

    def run_player(index: int, player: Player, state: TrainState, frozen, batch, key):
        role = player.updates
        tx = objective.optimizers[role]

        def substep(carry, inputs):
            params, opt, rest, nonfinite = carry
            j, sub_batch = inputs
            ctx = Context(
                rng=jax.random.fold_in(jax.random.fold_in(key, index), j),
                step=state.step,
                substep=j,
                example_ids=sub_batch["example_id"][0],
                axis_name=axis_name,
            )
            scale = loss_scale_of(opt[role])
            loss, aux, grads, new_rest = grads_of(
                player, params, rest, frozen, sub_batch, ctx, scale
            )
            new_rest = _mean_floats(new_rest, axis_name)
            grad_norm = optax.tree.norm(grads)
            finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
            if scale is not None:
                # Overflowing gradients are the loss scale's business (it halves and the
                # update is skipped, zoo.engine.precision.with_loss_scale), not a failure.
                finite = jnp.isfinite(loss)
                aux = {**aux, "loss_scale": scale}
            updates, new_opt = tx.update(grads, opt[role], params[role])
            new_role_params = optax.apply_updates(params[role], updates)
            clean = jnp.all(nonfinite < 0)
            apply = finite & (clean if on_nonfinite == "stop" else True)
            params = {**params, role: _select(apply, new_role_params, params[role])}
            opt = {**opt, role: _select(apply, new_opt, opt[role])}
            rest = _select(apply, new_rest, rest)
            first_bad = jnp.where((nonfinite[index] < 0) & ~finite, state.step, nonfinite[index])
            nonfinite = nonfinite.at[index].set(first_bad)
            metrics = {**aux, "loss": loss, "grad_norm": grad_norm, "nonfinite": 1.0 - finite}
            return (params, opt, rest, nonfinite), metrics

        carry = (state.params, state.opt, state.rest, state.nonfinite)
        sub_batches = jax.tree.map(lambda x: x[: player.steps], batch)
        if player.steps == 1:
            carry, metrics = substep(carry, (jnp.int32(0), jax.tree.map(lambda x: x[0], batch)))
        else:
            carry, metrics = jax.lax.scan(
                substep, carry, (jnp.arange(player.steps, dtype=jnp.int32), sub_batches)
            )
            metrics = jax.tree.map(lambda x: jnp.mean(x, axis=0), metrics)
        params, opt, rest, nonfinite = carry
        state = state._replace(params=params, opt=opt, rest=rest, nonfinite=nonfinite)
        return state, {f"{player.name}/{k}": v for k, v in metrics.items()}

    def step(state: TrainState, batch: dict, active: tuple[bool, ...], frozen: Frozen = NO_STAGES):
        key = step_key(seed, state.step)
        metrics = {}
        for index, (player, on) in enumerate(zip(objective.players, active, strict=True)):
            if on:
                state, player_metrics = run_player(index, player, state, frozen, batch, key)
                metrics.update(player_metrics)
        # EMA after all players; frozen with the rest after a non-finite stop.
        keep = jnp.all(state.nonfinite < 0) if on_nonfinite == "stop" else True
        decays = {
            role: ema_decay_at(decay, state.step) if ema_warmup else decay
            for role, decay in objective.ema.items()
        }
        ema = {
            role: _select(
                keep,
                jax.tree.map(
                    lambda e, p, d=decay: d * e + (1.0 - d) * p, state.ema[role], state.params[role]
                ),
                state.ema[role],
            )
            for role, decay in decays.items()
        }
        return state._replace(step=state.step + 1, ema=ema), metrics

    return step
