"""Trained stages: one run's trained model inside another run.

A two-stage model names the earlier run in its config, by the role it fills here:

    config.stages.tokenizer = dict(workdir="runs/vqgan", role="model", ema=True, step=0)
    config.init.generator = dict(workdir="runs/gan_pretrained", role="generator", ema=False)

- ``config.stages.<role>``: a *frozen* role of this objective (``Objective.frozen``):
  restored from the other run's checkpoint, served by ``models(role)`` in eval mode,
  never differentiated or updated, no optimizer state.
- ``config.init.<role>``: a *trained* role whose initial parameters (and BatchNorm
  statistics) come from another run: fine-tuning, or a GAN started from a pretrained
  generator. Only a fresh run reads it; a resumed run continues from its own checkpoint.

Fields: ``workdir`` (the other run's ``--workdir``), ``role`` (its role name there;
default: the same name), ``ema`` (True: its EMA copy where it keeps one for that role,
else its parameters; False: the raw parameters), ``step`` (0 or None: its newest
checkpoint).

Only that role's subtree is read from the other run's Orbax checkpoint (a partial
restore): its objective is never built. The shapes are checked against the module
this config builds before anything compiles. The run keeps a copy of the weights it
loaded in ``<workdir>/stages/<role>`` and records where they came from (path, step,
content hash) in ``<workdir>/stages.json``, so a resumed run uses the same weights
even after the other run has trained on or deleted that checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from zoo.engine.stage_store import SECTIONS, StageStore, content_hash, flat_paths
from zoo.engine.state import Frozen

log = logging.getLogger(__name__)

FIELDS = ("workdir", "role", "ema", "step")


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """One entry of ``config.stages`` or ``config.init``.

    section: "stages" (a frozen role) or "init" (a trained role's initial weights).
    name: the role in this run.
    workdir: the other run's workdir; role: its role name there.
    ema: prefer its EMA copy; step: its checkpoint step, None for the newest.
    """

    section: str
    name: str
    workdir: str
    role: str
    ema: bool = True
    step: int | None = None

    @property
    def field(self) -> str:
        """The config field a user edits to fix this entry: ``config.stages.tokenizer``."""
        return f"config.{self.section}.{self.name}"

    def source(self) -> dict:
        """What the entry asks for, as stored in the record."""
        return {"workdir": os.path.abspath(self.workdir), "role": self.role, "ema": self.ema}


def stage_entry(role: str = "", workdir: str = "", ema: bool = True, step: int = 0):
    """A ``config.stages.<role>`` / ``config.init.<role>`` entry for a config file.

    Declaring it in the file lets the command line set it
    (``--config.init.generator.workdir=runs/gan``); an entry whose workdir is "" is
    unused (a model that needs its role fails in :func:`source_config`, naming the field).
    """
    return ml_collections.ConfigDict(dict(workdir=workdir, role=role, ema=ema, step=step))


def stage_specs(config, section: str) -> dict[str, StageSpec]:
    """The validated entries of ``config.<section>`` (``stages`` or ``init``), by role."""
    entries = config.get(section, None) or {}
    specs = {}
    for name, entry in entries.items():
        field = f"config.{section}.{name}"
        if not hasattr(entry, "keys"):
            raise ValueError(f"{field} must be a dict with fields {FIELDS}, got {entry!r}")
        unknown = sorted(set(entry.keys()) - set(FIELDS))
        if unknown:
            raise ValueError(f"{field} has unknown fields {unknown}; its fields are {FIELDS}")
        workdir = entry.get("workdir", "")
        if workdir == "":
            # Declared in the config file, not used by this run; a model that needs the
            # role fails in source_config or frozen_variables with _unset(field).
            continue
        if not isinstance(workdir, str):
            raise _unset(field)
        role = entry.get("role", None) or name
        ema = entry.get("ema", True)
        if not isinstance(ema, bool):
            raise ValueError(f"{field}.ema must be True or False, got {ema!r}")
        step = entry.get("step", None)
        if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 0):
            raise ValueError(f"{field}.step must be a checkpoint step >= 0 (0: newest)")
        specs[name] = StageSpec(section, name, workdir, str(role), ema, step or None)
    return specs


def _unset(field: str) -> ValueError:
    return ValueError(
        f"{field}.workdir must name a trained run's --workdir, e.g. "
        f"--{field}.workdir=runs/<that run>"
    )


# -- reading another run ------------------------------------------------------


def _manager(spec: StageSpec) -> ocp.CheckpointManager:
    if not os.path.isdir(spec.workdir):
        raise ValueError(f"{spec.field}.workdir={spec.workdir!r}: no such directory")
    directory = os.path.join(os.path.abspath(spec.workdir), "checkpoints")
    if not os.path.isdir(directory):
        raise ValueError(
            f"{spec.field}.workdir={spec.workdir!r} holds no checkpoints/ folder: "
            "is it a zoo run's --workdir?"
        )
    return ocp.CheckpointManager(
        directory,
        options=ocp.CheckpointManagerOptions(create=False),
        item_handlers={
            "state": ocp.PyTreeCheckpointHandler(),
            "config": ocp.JsonCheckpointHandler(),
            "data": ocp.JsonCheckpointHandler(),
        },
    )


def _step(spec: StageSpec, manager: ocp.CheckpointManager) -> int:
    steps = sorted(manager.all_steps())
    if not steps:
        raise ValueError(
            f"{spec.field}.workdir={spec.workdir!r} holds no checkpoint yet: train that run "
            "first, or fix the path"
        )
    if spec.step is None:
        return steps[-1]
    if spec.step not in steps:
        raise ValueError(f"{spec.field}.step={spec.step}: no such checkpoint; it has {steps}")
    return spec.step


def source_config(config, name: str, section: str = "stages") -> ml_collections.ConfigDict:
    """The config of the run that ``config.<section>.<name>`` names (from its checkpoint).

    A family builds the frozen module from it, so a stage-2 config need not repeat
    the stage-1 architecture.
    """
    specs = stage_specs(config, section)
    if name in (config.get(section, None) or {}) and name not in specs:
        raise _unset(f"config.{section}.{name}")  # declared, its workdir left empty
    if name not in specs:
        raise ValueError(
            f"config.{section}.{name} is not set: point it at a trained run, "
            f"e.g. --config.{section}.{name}.workdir=runs/<stage-1 run>"
        )
    spec = specs[name]
    manager = _manager(spec)
    try:
        step = _step(spec, manager)
        restored = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    finally:
        manager.close()
    return ml_collections.ConfigDict(restored.config)


def require_same_data(config, source, name: str, fields=("image_size", "channels")) -> None:
    """A clear error when the run in ``config.stages.<name>`` (its config ``source``) was
    trained on other ``data.<field>`` values than ``config`` sets, naming the fix."""
    for field in fields:
        mine, theirs = config.data.get(field), source.data.get(field)
        if mine != theirs:
            raise ValueError(
                f"data.{field}={mine} but the {name} in config.stages.{name} was trained "
                f"with data.{field}={theirs}: set --config.data.{field}={theirs}"
            )


def _shape_errors(saved, wanted) -> list[str]:
    """Lines naming each path whose shape differs, or that only one side has."""
    saved, wanted = flat_paths(saved), flat_paths(wanted)
    lines = [f"{p}: missing in the checkpoint" for p in sorted(set(wanted) - set(saved))]
    lines += [f"{p}: in the checkpoint only" for p in sorted(set(saved) - set(wanted))]
    for p in sorted(set(saved) & set(wanted)):
        have, want = tuple(saved[p].shape), tuple(np.shape(wanted[p]))
        if have != want:
            lines.append(f"{p}: checkpoint {have}, this config {want}")
    return lines


def load_role(spec: StageSpec, params_like, rest_like, sharding) -> tuple[Any, Any, dict]:
    """Restore ``spec``'s role from the other run: ``(params, rest, record)``.

    params_like, rest_like: pure dicts of the module this config builds (arrays or
        ShapeDtypeStructs); the restored arrays take their shapes, dtypes and ``sharding``.
    record: workdir, role, source ("ema" or "params"), step, model, hash.

    Raises ValueError naming ``spec.field`` for a missing run, checkpoint or role, and
    for shapes that differ from the module.
    """
    manager = _manager(spec)
    try:
        step = _step(spec, manager)
        tree = manager.item_metadata(step)["state"]
        tree = getattr(tree, "tree", tree)
        other = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
        model = other.config.get("model", "?")
        roles = sorted(tree.get("params", {}))
        if spec.role not in roles:
            raise ValueError(
                f"{spec.field}.role={spec.role!r}: the {model} run in {spec.workdir!r} has "
                f"no such role; its roles are {roles}"
            )
        source = "ema" if spec.ema and spec.role in tree.get("ema", {}) else "params"
        saved_rest = tree.get("rest", {}).get(spec.role, {}) or {}
        errors = _shape_errors(tree[source][spec.role], params_like)
        errors += _shape_errors(saved_rest, rest_like)
        if errors:
            shown = "; ".join(errors[:6]) + ("; ..." if len(errors) > 6 else "")
            raise ValueError(
                f"{spec.field}: role {spec.role!r} of the {model} run in {spec.workdir!r} "
                f"(step {step}) does not fit the module this config builds: {shown}. Make "
                "this config's architecture match that run's config.json, or point "
                f"{spec.field}.workdir at a matching run"
            )

        def target(tree):
            return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), tree)

        item = {source: {spec.role: target(params_like)}}
        if jax.tree.leaves(rest_like):
            item["rest"] = {spec.role: target(rest_like)}
        restore_args = jax.tree.map(lambda _: ocp.ArrayRestoreArgs(sharding=sharding), item)
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(
                    item=item, restore_args=restore_args, partial_restore=True
                )
            ),
        ).state
    finally:
        manager.close()
    params = restored[source][spec.role]
    rest = restored["rest"][spec.role] if "rest" in item else rest_like
    record = {
        **spec.source(),
        "source": source,
        "step": int(step),
        "model": model,
        "hash": content_hash(params, rest),
    }
    log.info(
        "%s: %s/%s of the %s run in %s, step %d (sha256 %s)",
        spec.field,
        source,
        spec.role,
        model,
        spec.workdir,
        step,
        record["hash"][:12],
    )
    return params, rest, record


# -- what the trainer calls -------------------------------------------------


def frozen_variables(config, workdir: str, frozen: Frozen, *, resuming: bool, sharding) -> Frozen:
    """The frozen roles' variables for this run: ``config.stages`` loaded, the rest as built.

    frozen: the variables of ``Objective.frozen`` as the family built them.
    resuming: this run has checkpoints of its own; then a role recorded in
        ``stages.json`` comes from this run's copy, whatever the other run did since.
    """
    specs = stage_specs(config, "stages")
    unknown = sorted(set(specs) - set(frozen.params))
    if unknown:
        raise ValueError(
            f"config.stages.{unknown[0]}: this model has no frozen role {unknown[0]!r}; "
            f"its frozen roles are {sorted(frozen.params)}"
        )
    declared = config.get("stages", None) or {}
    for name in frozen.params:
        if name in declared and name not in specs:
            raise _unset(f"config.stages.{name}")  # the model needs it; its workdir is ""
    store = StageStore(workdir)
    recorded = store.records()["stages"]
    params, rest = dict(frozen.params), dict(frozen.rest)
    for name, spec in specs.items():
        if resuming and name in recorded:
            record = recorded[name]
            if {k: record.get(k) for k in ("workdir", "role", "ema")} != spec.source():
                log.warning(
                    "%s now names %s, but this run was trained with %s step %d: keeping the "
                    "recorded weights (start a new --workdir to change a stage)",
                    spec.field,
                    spec.source(),
                    record["workdir"],
                    record["step"],
                )
            params[name], rest[name] = store.load(
                name, record, frozen.params[name], frozen.rest[name], sharding
            )
            log.info(
                "%s: this run's copy of %s step %d", spec.field, record["workdir"], record["step"]
            )
            continue
        params[name], rest[name], record = load_role(
            spec, frozen.params[name], frozen.rest[name], sharding
        )
        store.save(name, params[name], rest[name])
        store.write_record("stages", name, record)
    return Frozen(params, rest)


def initial_variables(config, workdir: str, params: dict, rest: dict, sharding):
    """``(params, rest)`` with the ``config.init`` roles loaded from other runs (fresh runs)."""
    specs = stage_specs(config, "init")
    unknown = sorted(set(specs) - set(params))
    if unknown:
        raise ValueError(
            f"config.init.{unknown[0]}: this model trains no role {unknown[0]!r}; "
            f"its trained roles are {sorted(params)}"
        )
    params, rest = dict(params), dict(rest)
    store = StageStore(workdir)
    for name, spec in specs.items():
        params[name], rest[name], record = load_role(spec, params[name], rest[name], sharding)
        store.write_record("init", name, record)
    return params, rest


def check_stages(config) -> None:
    """Cheap checks of ``config.stages`` and ``config.init`` (fields, runs, checkpoints).

    Listing only, no arrays read: called before anything expensive. Shapes are checked
    when the trainer loads the weights, still before compiling.
    """
    for section in SECTIONS:
        for spec in stage_specs(config, section).values():
            manager = _manager(spec)
            try:
                _step(spec, manager)
            finally:
                manager.close()
