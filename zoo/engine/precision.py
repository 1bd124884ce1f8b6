"""One mixed-precision policy for every family: ``config.precision``.

- ``"float32"``: everything in float32 (the default).
- ``"bfloat16"``: parameters, optimizer state and EMA stay float32; every layer computes in
  bfloat16 (its inputs and weights cast on the way in); losses are float32.
- ``"float16"``: as bfloat16 with float16 compute, plus dynamic loss scaling
  (:func:`with_loss_scale`): float16's 5 exponent bits underflow small gradients.

The policy is applied once, to the modules a family builds (:func:`apply_policy`, called by
:func:`zoo.registry.build_objective`): every module that owns parameters has a ``dtype``
attribute, its compute dtype, and the policy sets it. Flax's layers read theirs at call time;
the zoo's own layers (:mod:`zoo.nn.equalized`, ...) follow the same convention. A module that
must read its parameters in float32 whatever the policy (a vector quantizer's codebook
distances) says so with ``KEEPS_FLOAT32 = True``; :func:`unhonoured` lists any module that
does neither, and a test holds every config to that.

Normalisation statistics (mean, variance) are float32 inside Flax's norms whatever the compute
dtype, and the zoo's attention takes its softmax in float32.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

POLICIES = ("float32", "bfloat16", "float16")

# Dynamic loss scaling (float16): start high, halve on an overflow, double after this many
# clean steps (the schedule of NVIDIA's apex and of jmp).
INITIAL_LOSS_SCALE = 2.0**15
LOSS_SCALE_PERIOD = 2000


def policy(config) -> str:
    """``config.precision`` (default float32); ValueError for anything else."""
    name = config.get("precision", "float32")
    if name not in POLICIES:
        raise ValueError(f"precision={name!r}; choose one of {POLICIES}")
    return name


def compute_dtype(name: str) -> jnp.dtype:
    """The dtype layers compute in under policy ``name``."""
    return jnp.dtype(name)


def _owns_params(node) -> bool:
    return any(
        isinstance(v, nnx.Param) and jnp.issubdtype(v.dtype, jnp.floating)
        for v in vars(node).values()
    )


def unhonoured(module: nnx.Module) -> list[str]:
    """Paths of the modules in ``module`` that own float parameters but have no ``dtype``
    attribute (nor ``KEEPS_FLOAT32``): they would compute in float32 under any policy."""
    bad = []
    for path, node in nnx.iter_graph(module):
        if not isinstance(node, nnx.Module) or getattr(node, "KEEPS_FLOAT32", False):
            continue
        if _owns_params(node) and not hasattr(node, "dtype"):
            name = "/".join(str(p) for p in path) or "<root>"
            bad.append(f"{name} ({type(node).__name__})")
    return bad


def with_compute_dtype(module: nnx.Module, dtype) -> nnx.Module:
    """``module`` with every submodule's ``dtype`` (compute dtype) set to ``dtype``, in place.

    Only compute dtypes change: parameters keep their dtype (float32), so the optimizer, the
    EMA and the checkpoints are the same under every policy.
    """
    dtype = jnp.dtype(dtype)
    for _, node in nnx.iter_graph(module):
        if isinstance(node, nnx.Module) and hasattr(node, "dtype"):
            if not getattr(node, "KEEPS_FLOAT32", False):
                node.dtype = dtype
    return module


class LossScaleState(NamedTuple):
    """Optimizer state of :func:`with_loss_scale`.

    scale: float32 scalar, the factor the loss is multiplied by before differentiation.
    clean_steps: int32 scalar, consecutive steps with finite gradients since the last change.
    inner: the wrapped optimizer's state.
    """

    scale: jax.Array
    clean_steps: jax.Array
    inner: Any


def with_loss_scale(
    tx: optax.GradientTransformation,
    initial: float = INITIAL_LOSS_SCALE,
    period: int = LOSS_SCALE_PERIOD,
) -> optax.GradientTransformation:
    """``tx`` behind a dynamic loss scale (float16 training).

    The train step multiplies the loss by ``state.scale`` (:func:`loss_scale_of`) and divides
    the gradients by it before they reach here. Gradients with an Inf or NaN (the scaled
    backward pass overflowed) are not applied: the update is zero, the inner state is kept and
    the scale halves. After ``period`` finite steps in a row the scale doubles.
    """

    def init(params):
        return LossScaleState(
            jnp.asarray(initial, jnp.float32), jnp.zeros((), jnp.int32), tx.init(params)
        )

    def update(grads, state, params=None):
        finite = jnp.all(
            jnp.asarray([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)] or [True])
        )
        safe = jax.tree.map(lambda g: jnp.where(finite, g, 0.0), grads)
        updates, inner = tx.update(safe, state.inner, params)
        updates = jax.tree.map(lambda u: jnp.where(finite, u, 0.0), updates)
        inner = jax.tree.map(lambda n, o: jnp.where(finite, n, o), inner, state.inner)
        grow = finite & (state.clean_steps + 1 >= period)
        scale = jnp.where(
            finite, jnp.where(grow, state.scale * 2.0, state.scale), jnp.maximum(state.scale / 2, 1)
        )
        clean = jnp.where(finite & ~grow, state.clean_steps + 1, 0)
        return updates, LossScaleState(scale, clean.astype(jnp.int32), inner)

    return optax.GradientTransformation(init, update)


def loss_scale_of(opt_state) -> jax.Array | None:
    """The loss scale in a role's optimizer state, or None when it has none."""
    return opt_state.scale if isinstance(opt_state, LossScaleState) else None


def apply_policy(objective, config):
    """``objective`` under ``config.precision``: its trained and frozen modules compute in the
    policy's dtype, and under float16 every optimizer keeps a dynamic loss scale.

    Raises ValueError if a module would not honour the policy (see :func:`unhonoured`).
    """
    name = policy(config)
    if name == "float32":
        return objective
    dtype = compute_dtype(name)
    for role, module in {**objective.modules, **objective.frozen}.items():
        bad = unhonoured(module)
        if bad:
            raise ValueError(
                f"precision={name!r}: role {role!r} has modules with parameters but no compute "
                f"dtype: {', '.join(bad)}"
            )
        with_compute_dtype(module, dtype)
    if name != "float16":
        return objective
    optimizers = {role: with_loss_scale(tx) for role, tx in objective.optimizers.items()}
    return dataclasses.replace(objective, optimizers=optimizers)
