"""The config sections every run has: defaults, checks before anything is built, and diffs.

- :func:`base_config`: defaults of ``model``, ``seed``, ``parallel``, ``data``,
  ``train``, ``eval`` and ``optim`` (a family adds its own sections).
- :func:`check_config`: a ValueError naming the bad field and what it accepts,
  before the reference classifiers train or anything compiles. A family's
  objective checks its own sections (``unet``, ``gan``, ``nerf``, ...).
- :func:`config_changes`: what differs between a run's saved config and the
  current one, for a resumed run to print.
- :func:`set_fields`: ``field=value`` overrides of an existing config, for the
  scripts that re-open a run's config.json (``experiments/evals``) and the tests.
- :func:`load_run_config`: a run directory's saved config.json, with an error that
  says what is wrong when the directory holds no run.
"""

from __future__ import annotations

import ast
import json
import numbers
import os
from typing import Any

REQUIRED = {
    "": ("model", "seed", "parallel", "data", "train", "optim"),
    "data": ("name", "batch_size"),
    "train": ("steps", "log_every", "checkpoint_every"),
    "optim": ("name", "lr"),
}
# Hook periods in train steps; 0 turns the hook off (the last step still logs and saves).
EVERY = ("log_every", "sample_every", "eval_every", "checkpoint_every")


def check_config(config) -> None:
    """Raise ValueError naming the first bad field of the engine's sections.

    Missing keys first (all of them), then each field's type and range; the
    choices come from the modules that use them (``parallel.PARALLEL_MODES``,
    ``step.NONFINITE_MODES``, ``optim.OPTIMIZERS`` / ``SCHEDULES``). Last, the
    batch layout against this host's devices.
    """
    from zoo.engine import optim, parallel, precision, step

    missing = []
    for section, keys in REQUIRED.items():
        node = config if not section else config.get(section)
        if node is None:
            continue  # reported as a missing top-level key
        missing += [f"{section}.{k}" if section else k for k in keys if k not in node]
    if missing:
        raise ValueError(f"config is missing required keys: {', '.join(missing)}")

    _choice(config, "parallel", parallel.PARALLEL_MODES)
    precision.policy(config)
    _integer(config, "seed")
    batch_size = _integer(config, "data.batch_size", minimum=1)
    _integer(config, "train.steps", minimum=1)
    for name in EVERY:
        _integer(config, f"train.{name}", minimum=0, note="0: never", default=0)
    _integer(config, "train.keep_checkpoints", minimum=1, default=3)
    _choice(config, "train.on_nonfinite", step.NONFINITE_MODES, default="stop")
    _boolean(config, "train.async_checkpoint", default=True)
    minimum = 1 if _get(config, "train.sample_every", 0) else 0
    _integer(config, "train.num_samples", minimum=minimum, default=minimum)
    _integer(config, "eval.batch_size", minimum=1, default=1)
    _integer(config, "eval.num_examples", minimum=0, note="0: all", default=0)
    _integer(config, "eval.num_samples", minimum=0, note="0: no sample metrics", default=0)
    _number(config, "ema_decay", 0.0, 1.0, default=0.0, high_open=True)
    _boolean(config, "ema_warmup", default=False)

    _check_optim(config, "optim", optim)
    if config.get("optim_d") is not None:  # GANs: the discriminator's changes to optim
        _check_optim(config, "optim_d", optim, base=config.optim)
    microbatches = _integer(config, "optim.microbatches", minimum=1, default=1)
    if batch_size % microbatches:
        raise ValueError(
            f"optim.microbatches={microbatches} must divide data.batch_size={batch_size}"
        )
    parallel.check_batch_layout(batch_size, microbatches, config.parallel)
    parallel.mesh_shape(**mesh_sizes(config), mode=config.parallel)
    _integer(config, "mesh.fsdp_min_size", minimum=0, default=parallel.FSDP_MIN_SIZE)


def mesh_sizes(config) -> dict[str, int]:
    """``{"data": ..., "fsdp": ...}`` from ``config.mesh`` (-1: the rest of the devices)."""
    return {
        name: _integer(config, f"mesh.{name}", minimum=-1, note="-1: the rest", default=default)
        for name, default in (("data", -1), ("fsdp", 1))
    }


def _check_optim(config, section: str, optim, base=None) -> None:
    """``optim`` (or ``optim_d``, whose missing fields come from ``base``)."""
    merged = {**(base.to_dict() if base is not None else {}), **config[section].to_dict()}
    node = {section: merged}
    _choice(node, f"{section}.name", optim.OPTIMIZERS)
    _choice(node, f"{section}.schedule", optim.SCHEDULES, default="constant")
    _number(node, f"{section}.lr", 0.0, None, low_open=True)
    for name in ("b1", "b2"):
        _number(node, f"{section}.{name}", 0.0, 1.0, default=0.9, high_open=True)
    _number(node, f"{section}.eps", 0.0, None, default=1e-8, low_open=True)
    for name in ("weight_decay", "grad_clip", "end_lr_factor"):
        _number(node, f"{section}.{name}", 0.0, None, default=0.0)
    _integer(node, f"{section}.warmup_steps", minimum=0, default=0)
    _integer(node, f"{section}.decay_steps", minimum=0, note="0: the run's steps", default=0)
    if merged.get("schedule") == "exponential" and not merged.get("end_lr_factor", 0.0) > 0:
        raise ValueError(
            f"{section}.schedule='exponential' needs {section}.end_lr_factor > 0 "
            f"(the rate at the end, as a fraction of lr), got {merged.get('end_lr_factor')}"
        )


_MISSING = object()


def _get(config, path: str, default: Any = _MISSING) -> Any:
    node = config
    for key in path.split("."):
        if not hasattr(node, "get") or key not in node:
            if default is _MISSING:
                raise ValueError(f"config is missing required key {path}")
            return default
        node = node[key]
    return node


def _choice(config, path, choices, default=_MISSING):
    value = _get(config, path, default)
    if value not in choices:
        raise ValueError(f"{path}={value!r}; choose one of {', '.join(map(repr, choices))}")
    return value


def _integer(config, path, minimum=None, note="", default=_MISSING) -> int:
    """An int (an integral float is accepted: 1e5) of at least ``minimum``."""
    value = _get(config, path, default)
    ok = isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not ok or (minimum is not None and value < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        note = f" ({note})" if note else ""
        raise ValueError(f"{path} must be an integer{bound}{note}, got {value!r}")
    return int(value)


def _number(config, path, low, high, default=_MISSING, low_open=False, high_open=False):
    value = _get(config, path, default)
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if (
        not real
        or value != value  # NaN
        or (low is not None and (value <= low if low_open else value < low))
        or (high is not None and (value >= high if high_open else value > high))
    ):
        lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
        hi = "" if high is None else f"{'<' if high_open else '<='} {high}"
        bounds = " and ".join(filter(None, (lo, hi)))
        raise ValueError(f"{path} must be a number {bounds}, got {value!r}")
    return float(value)


def _boolean(config, path, default=_MISSING) -> bool:
    value = _get(config, path, default)
    if not isinstance(value, bool):
        raise ValueError(f"{path} must be True or False, got {value!r}")
    return value


# -- what changed between a saved run and this config --------------------------------------

# Fields that change only what a run records and when, never the parameters it computes.
BOOKKEEPING = tuple(f"train.{k}" for k in EVERY) + (
    "train.keep_checkpoints",
    "train.async_checkpoint",
    "train.num_samples",
    "eval.",
    "data.workers",  # input processes: the same batches with any number (zoo.data.stream)
)


def set_fields(config, items: list[str]) -> None:
    """Set ``config``'s fields in place from ``"section.key=value"`` strings.

    The value is a Python literal (``ast.literal_eval``: ``3``, ``'sgd'``, ``(1, 2)``).
    Raises ValueError naming an item whose field the config does not have.
    """
    for item in items:
        field, _, value = item.partition("=")
        section, _, key = field.rpartition(".")
        node = config
        for name in section.split(".") if section else ():
            node = node.get(name, None) if hasattr(node, "get") else None
        if node is None or not hasattr(node, "keys") or key not in node:
            raise ValueError(f"{item}: the config has no field {field!r}")
        node[key] = ast.literal_eval(value)


def load_run_config(workdir: str):
    """The ``ml_collections.ConfigDict`` a run saved in ``<workdir>/config.json``.

    FileNotFoundError when there is none (not a run directory, or a run that never
    started), ValueError when it is not a JSON object; both name the path.
    """
    import ml_collections

    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        what = "no such directory" if not os.path.isdir(workdir) else "no config.json in it"
        raise FileNotFoundError(
            f"{workdir!r} is not a run directory ({what}): pass the --workdir of a "
            "python -m zoo.main run"
        )
    try:
        with open(path) as f:
            saved = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not readable JSON ({err})") from None
    if not isinstance(saved, dict):
        raise ValueError(f"{path} holds a {type(saved).__name__}, not a config")
    return ml_collections.ConfigDict(saved)


def config_changes(saved: dict, current: dict) -> list[str]:
    """What differs between a run's ``saved`` config and the ``current`` one, one line each.

    Both are nested dicts (``ConfigDict.to_dict()``, or the JSON a checkpoint
    holds: tuples and lists compare equal). Lines, sorted by key:
    ``"train.steps: 6 -> 8"``, ``"optim.foo: added (0.1)"``,
    ``"data.bar: removed (was 3)"``. When any change alters the numbers the
    resumed run computes, a last line names those fields:
    ``"changes the run's numbers: train.steps (the learning rate's cosine decay
    spans train.steps), optim.lr"``. Everything but the :data:`BOOKKEEPING`
    fields does, except ``train.steps`` under a schedule that does not depend
    on it (``constant``, or a fixed ``optim.decay_steps``): more steps then
    only run longer. [] when nothing differs.
    """
    old, new = _flatten(_plain(saved)), _flatten(_plain(current))
    lines, numeric = [], []
    for key in sorted(old.keys() | new.keys()):
        if key not in new:
            lines.append(f"{key}: removed (was {old[key]!r})")
        elif key not in old:
            lines.append(f"{key}: added ({new[key]!r})")
        elif old[key] != new[key]:
            lines.append(f"{key}: {old[key]!r} -> {new[key]!r}")
        else:
            continue
        why = _changes_numbers(key, new)
        if why is not None:
            numeric.append(f"{key}{f' ({why})' if why else ''}")
    if numeric:
        lines.append(f"changes the run's numbers: {', '.join(numeric)}")
    return lines


def _changes_numbers(key: str, current: dict) -> str | None:
    """None when changing ``key`` cannot change the computed numbers; else why (or "")."""
    if any(key == b or (b.endswith(".") and key.startswith(b)) for b in BOOKKEEPING):
        return None
    if key != "train.steps":
        return ""
    sections = [s for s in ("optim", "optim_d") if any(k.startswith(f"{s}.") for k in current)]
    decaying = []
    for section in sections:  # optim_d's missing fields are optim's
        schedule = current.get(f"{section}.schedule", current.get("optim.schedule", "constant"))
        fixed = current.get(f"{section}.decay_steps", current.get("optim.decay_steps", 0))
        if schedule != "constant" and not fixed:
            decaying.append(f"{section}.schedule={schedule!r}")
    if not decaying:
        return None
    return f"the learning rate's decay ({', '.join(decaying)}) spans train.steps"


def _plain(tree: Any) -> Any:
    """JSON-shaped copy: tuples as lists, anything else JSON cannot hold as its str."""
    return json.loads(json.dumps(tree, default=str))


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def base_config():
    """Defaults of the sections every run has: train, eval, optim, data."""
    import ml_collections

    c = ml_collections.ConfigDict()
    c.model = ""
    c.seed = 0
    c.parallel = "jit"  # or "pmap": the same step under jax.pmap
    # Compute dtype of every layer: "float32", "bfloat16" or "float16" (with dynamic loss
    # scaling); parameters, optimizer state and losses stay float32 (zoo.engine.precision).
    c.precision = "float32"
    # jit's device mesh: the batch is split over all of it; with fsdp > 1 each large state
    # tensor is split over the fsdp axis (zoo.engine.parallel.fsdp_spec). -1: the rest.
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, fsdp_min_size=2**14))
    c.ema_decay = 0.0
    # True: decay min(ema_decay, (1 + n) / (10 + n)) after step n, so that a short run's EMA
    # forgets the initial weights (zoo.engine.step.ema_decay_at).
    c.ema_warmup = False
    # Trained runs this one loads (zoo.engine.stages): role -> stage_entry(...).
    c.stages = ml_collections.ConfigDict()  # frozen roles
    c.init = ml_collections.ConfigDict()  # trained roles' initial weights
    c.data = ml_collections.ConfigDict(
        dict(
            name="",
            batch_size=64,
            image_size=32,
            random_flip=False,
            path="",
            train_split="train",
            eval_split="test",
            num_classes=0,
            # Worker processes loading train steps ahead (zoo.data.stream); 0: the loop's one
            # prefetch thread loads each step. More pays when decoding is the bottleneck
            # (image files, tfds) and cores are free: experiments/bench/input_pipeline.py.
            workers=0,
        )
    )
    c.train = ml_collections.ConfigDict(
        dict(
            steps=1000,
            on_nonfinite="stop",  # or "skip"
            log_every=50,  # 0 in any *_every: never (the last step still logs and saves)
            sample_every=0,
            eval_every=0,
            checkpoint_every=1000,
            keep_checkpoints=3,
            async_checkpoint=True,
            num_samples=64,
        )
    )
    c.eval = ml_collections.ConfigDict(dict(batch_size=256, num_examples=0, num_samples=0))
    c.optim = ml_collections.ConfigDict(
        dict(
            name="adam",
            lr=2e-4,
            b1=0.9,
            b2=0.999,
            eps=1e-8,
            weight_decay=0.0,
            warmup_steps=0,
            schedule="constant",
            decay_steps=0,
            end_lr_factor=0.0,
            grad_clip=1.0,
            microbatches=1,
        )
    )
    return c
