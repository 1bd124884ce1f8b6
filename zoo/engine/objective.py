"""The contract between a model family and the engine.

A family builds an :class:`Objective` from its config: the NNX modules it
trains (named by role), an optimizer per trained role, the roles that keep an
EMA copy, and the players that run, in order, inside one train step. The
engine owns everything else (jit/pmap, sharding, RNG, EMA, accumulation,
checkpoints), so no family writes a training loop.

A player's loss has the signature ``loss(models, batch, ctx) -> (scalar, aux)``:

- ``models(role, train=True)`` returns a fresh NNX module for ``role`` merged
  from the current state. The parameters of the role being updated are the
  ones differentiated; everything else is a constant. Non-parameter state
  (BatchNorm statistics, ...) that a train-mode module mutates is written back
  by the engine unless the call passes ``keep_state=False`` (a discriminator
  pass inside the generator's loss, an inner gradient penalty).
- ``batch`` is this substep's (micro)batch: a dict of arrays ``[B, ...]``;
  ``batch["example_id"]`` holds each example's global position in the step,
  which :func:`zoo.engine.rng.example_keys` uses so that random draws do not
  depend on how the batch is split across devices or microbatches.
- ``ctx`` is a :class:`Context` (rng, step, substep, example ids).
- ``aux`` is a dict of scalar metrics (averaged over substeps/microbatches and
  devices, written to the logs).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import optax
from flax import nnx

from zoo.engine.optim import make_optimizer


class Context(NamedTuple):
    """What a loss knows about where it runs.

    rng: a PRNG key for this step, player and substep; identical on every
        device and every microbatch (use :func:`zoo.engine.rng.example_keys`
        for per-example draws, which differ across microbatches).
    step: int32 scalar, the train step (0-based) being computed.
    substep: int32 scalar, the index j of this player's k updates.
    example_ids: int32 ``[B]``, global positions of this batch's examples.
    axis_name: the ``pmap`` axis over which the batch is split, None under ``jit``. A loss
        that uses a batch statistic outside of its value (VQGAN's adaptive weight: a ratio of
        gradient norms) reduces over it (:func:`batch_mean`) so pmap computes what jit does.
    """

    rng: jax.Array
    step: jax.Array
    substep: jax.Array
    example_ids: jax.Array
    axis_name: str | None = None


def batch_mean(tree, ctx: Context):
    """``tree`` (per-device means, e.g. gradients of a per-device loss) averaged over the
    devices under ``pmap``: the whole (micro)batch's value, as under ``jit``; as is otherwise."""
    return tree if ctx.axis_name is None else jax.lax.pmean(tree, ctx.axis_name)


Loss = Callable[[Any, dict, Context], tuple[jax.Array, dict]]


@dataclasses.dataclass(frozen=True)
class Player:
    """One gradient step on one role's parameters.

    name: shown in logs and in error messages ("model", "discriminator").
    updates: the role whose parameters this player differentiates and updates.
    loss: ``(models, batch, ctx) -> (scalar, aux)``.
    steps: updates per train step (k of Algorithm 2.1); substep j reads slice
        j of the step's batch, so a player with k steps sees k fresh batches.
    every: run only on train steps where ``step % every == 0`` (lazy
        regularisation).
    """

    name: str
    updates: str
    loss: Loss
    steps: int = 1
    every: int = 1


@dataclasses.dataclass(frozen=True)
class Objective:
    """Everything the engine needs from a model family.

    modules: NNX modules built from the config, named by role.
    optimizers: one optax transformation per trained role (shared by every
        player that updates that role, so that e.g. a regulariser's gradient
        scale is meaningful under Adam).
    ema: role -> EMA decay for the roles that keep an EMA copy of parameters.
    players: run in this order inside one train step.
    sample: ``(models, rng, n) -> [n, H, W, C] in [-1, 1]``, called with the
        EMA parameters where a role has them; None if the family has no images.
        It may instead return a dict of ``[n, ...]`` arrays: ``"image"`` (if
        any) is what the grids show, and the other fields (the labels or
        attributes each sample was conditioned on, 2-D points, ...) reach the
        sample-quality evals next to it.
    figures: name -> ``(models, rng) -> [R, C, H, W, ch] in [-1, 1]``: extra
        pictures written next to the sample grids as an R x C grid (a
        style-mixing table, a truncation sweep, a render beside its ground
        truth), with the same parameters as ``sample``.
    evaluate: ``(models, batch, rng) -> dict of scalar metrics`` on held-out
        data, or None.
    frozen: role -> NNX module that is read but never trained: a stage-1
        tokenizer or autoencoder, a text encoder, a perceptual-loss network. Its
        weights come from another run's checkpoint when ``config.stages.<role>``
        names one (:mod:`zoo.engine.stages`), else they are the module's own (a
        family that loads a weights file itself). Losses, ``sample``,
        ``evaluate`` and ``figures`` get it through ``models(role)``: eval mode,
        no gradient, no optimizer state, never updated.
    """

    modules: dict[str, nnx.Module]
    optimizers: dict[str, optax.GradientTransformation]
    players: tuple[Player, ...]
    ema: dict[str, float] = dataclasses.field(default_factory=dict)
    sample: Callable | None = None
    evaluate: Callable | None = None
    frozen: dict[str, nnx.Module] = dataclasses.field(default_factory=dict)
    figures: dict[str, Callable] = dataclasses.field(default_factory=dict)

    @property
    def substeps(self) -> int:
        """Slices of batch each train step needs: the largest player ``steps``."""
        return max(p.steps for p in self.players)

    def check(self) -> None:
        """Raise ValueError on an inconsistent objective (before compiling)."""
        roles = set(self.modules)
        both = roles & set(self.frozen)
        if both:
            raise ValueError(f"roles {sorted(both)} are both trained (modules) and frozen")
        for p in self.players:
            if p.updates in self.frozen:
                raise ValueError(f"player {p.name!r} updates the frozen role {p.updates!r}")
            if p.updates not in roles:
                raise ValueError(
                    f"player {p.name!r} updates role {p.updates!r}, but the objective "
                    f"has modules {sorted(roles)}"
                )
            if p.updates not in self.optimizers:
                raise ValueError(f"role {p.updates!r} (player {p.name!r}) has no optimizer")
            if p.steps < 1 or p.every < 1:
                raise ValueError(f"player {p.name!r}: steps and every must be >= 1")
        for role in list(self.optimizers) + list(self.ema):
            if role not in roles:
                raise ValueError(f"optimizer/ema names unknown role {role!r}")


def one_player(config, role: str, module: nnx.Module, loss: Loss, **fields) -> Objective:
    """The :class:`Objective` of a family that trains one module with one loss.

    ``module`` is trained as ``role`` by ``loss`` (one update per step) with the optimizer of
    ``config.optim`` over ``config.train.steps``, and keeps an EMA copy when ``config.ema_decay``
    is above 0. ``fields`` are the rest of the Objective (sample, evaluate, frozen, figures).
    """
    decay = float(config.get("ema_decay", 0.0))
    return Objective(
        modules={role: module},
        optimizers={role: make_optimizer(config.optim, int(config.train.steps))},
        players=(Player(role, role, loss),),
        ema={role: decay} if decay > 0 else {},
        **fields,
    )
