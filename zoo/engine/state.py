"""The train state: one pytree of plain nested dicts of arrays.

NNX modules are split once into a static graph (one graphdef per mode) and
their variables; from then on the engine only sees pure dicts, which are also
the checkpoint layout (``params/<role>/<path>``), independent of NNX internals.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.engine.objective import Objective

# Attribute names of train/eval switches in flax.nnx layers; view() sets
# the ones a module has and ignores the rest (raise_if_not_found=False).
_EVAL_FLAGS = dict(deterministic=True, use_running_average=True)
_TRAIN_FLAGS = dict(deterministic=False, use_running_average=False)


class TrainState(NamedTuple):
    """step: int32 scalar, train steps done.
    params: role -> pure dict of nnx.Param values (what optimizers update).
    rest: role -> pure dict of every other variable (BatchNorm statistics...).
    opt: role -> optax state.
    ema: role -> EMA copy of params, for roles with an EMA.
    nonfinite: int32 [players], the first step where each player's loss or
        gradient was NaN/Inf, or -1. Such updates are never applied.
    """

    step: jax.Array
    params: dict[str, Any]
    rest: dict[str, Any]
    opt: dict[str, Any]
    ema: dict[str, Any]
    nonfinite: jax.Array


class Frozen(NamedTuple):
    """Variables of the frozen roles (trained stages): read by losses, never updated.

    params: role -> pure dict of nnx.Param values.
    rest: role -> pure dict of every other variable (BatchNorm statistics...).
    """

    params: dict[str, Any]
    rest: dict[str, Any]


class Graphs(NamedTuple):
    """Static halves of the split modules: role -> graphdef, per mode.

    Frozen roles appear in ``eval`` only.
    """

    train: dict[str, nnx.GraphDef]
    eval: dict[str, nnx.GraphDef]


def _with_batch_axis(module: nnx.Module, axis_name: str) -> nnx.Module:
    """A copy whose batch-statistics layers see the whole batch through ``axis_name``.

    Under ``pmap`` each device sees a slice of the batch; with the axis name
    BatchNorm uses the statistics of the whole (micro)batch, as it does under
    ``jit``. Only BatchNorm and modules that declare ``BATCH_STATISTICS = True``
    (a vector quantizer's dead-code restarts): Layer/Group/RMS norms have an
    ``axis_name`` too, but their statistics are per example and must not be
    averaged over devices.
    """
    module = nnx.clone(module)
    for _, node in nnx.iter_graph(module):
        if isinstance(node, nnx.BatchNorm) or getattr(node, "BATCH_STATISTICS", False):
            node.axis_name = axis_name
    return module


def split_modules(
    modules: dict[str, nnx.Module], *, batch_axis: str | None = None
) -> tuple[Graphs, dict, dict]:
    """Split NNX modules into (graphs, params, rest), params/rest as pure dicts.

    batch_axis: the ``pmap`` axis name, for BatchNorm statistics over the global
        batch (see :func:`_with_batch_axis`); None under ``jit``.
    """
    train, evals, params, rest = {}, {}, {}, {}
    for role, module in modules.items():
        viewed = nnx.view(module, **_TRAIN_FLAGS, raise_if_not_found=False)
        if batch_axis is not None:
            viewed = _with_batch_axis(viewed, batch_axis)
        graph, p, r = nnx.split(viewed, nnx.Param, ...)
        train[role], params[role], rest[role] = graph, nnx.to_pure_dict(p), nnx.to_pure_dict(r)
        evals[role] = nnx.split(
            nnx.view(module, **_EVAL_FLAGS, raise_if_not_found=False), nnx.Param, ...
        )[0]
    return Graphs(train, evals), params, rest


def split_frozen(modules: dict[str, nnx.Module], graphs: Graphs) -> tuple[Graphs, Frozen]:
    """Add the frozen roles' eval-mode graphs to ``graphs``; their variables as :class:`Frozen`."""
    evals, frozen = dict(graphs.eval), Frozen({}, {})
    for role, module in modules.items():
        graph, p, r = nnx.split(
            nnx.view(module, **_EVAL_FLAGS, raise_if_not_found=False), nnx.Param, ...
        )
        evals[role] = graph
        frozen.params[role], frozen.rest[role] = nnx.to_pure_dict(p), nnx.to_pure_dict(r)
    return Graphs(graphs.train, evals), frozen


def init_state(objective: Objective, params: dict, rest: dict) -> TrainState:
    """A fresh train state (pure; jit it with out_shardings to place it)."""
    opt = {role: tx.init(params[role]) for role, tx in objective.optimizers.items()}
    # A copy, not an alias: the state is donated, and aliased buffers crash.
    ema = {role: jax.tree.map(jnp.copy, params[role]) for role in objective.ema}
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        rest=rest,
        opt=opt,
        ema=ema,
        nonfinite=jnp.full((len(objective.players),), -1, jnp.int32),
    )


def count_params(params: dict) -> int:
    """Number of scalars in a params pytree."""
    return sum(int(x.size) for x in jax.tree.leaves(params))
