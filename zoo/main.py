"""Train any zoo model from a config file.

    python -m zoo.main --config=configs/ddpm_digits.py --workdir=runs/ddpm_digits
    python -m zoo.main --config=configs/ddpm_cifar10.py:tiny --config.optim.lr=1e-4 --workdir=...
    python -m zoo.main --list    # every config in configs/ and its variants, one line each

Running the same command again resumes from the workdir's latest checkpoint.

Errors print one or two lines on stderr, no traceback: exit status 2 for a bad
command line or config (a missing config file, an unknown variant or override
key, a bad value, any check that fails before training: unknown model or
dataset, a missing data folder, a workdir holding another model's run), 1 for
an error during training (a NaN/Inf stop, a checkpoint error). ``--traceback``
prints the full traceback instead (``zoo.command_line``).
"""

from __future__ import annotations

import json
import logging
import os

from absl import app, flags
from ml_collections import config_flags

from zoo.command_line import (
    RUN_ERROR,
    TRACEBACK_HINT,
    USAGE_ERROR,
    ConfigError,
    fail,
    parse_flags,
)

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (path[:variant]).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, logs and samples go.")
_LIST = flags.DEFINE_bool("list", False, "Print the configs in configs/ and their variants.")
_TRACEBACK = flags.DEFINE_bool("traceback", False, "On an error, print the full traceback.")


def check_workdir(config, workdir: str) -> None:
    """ValueError when ``workdir`` already holds a run (its config.json) of another model."""
    path = os.path.join(workdir, "config.json")
    try:
        with open(path) as f:
            saved = json.load(f).get("model")
    except FileNotFoundError:
        return
    except (OSError, ValueError, AttributeError) as e:
        logging.getLogger(__name__).warning("%s is unreadable (%s); not checked", path, e)
        return
    if saved != config.model:
        raise ValueError(
            f"this workdir holds a {saved} run ({path}), and the config trains {config.model}; "
            "use another --workdir or that run's config"
        )


def prepare(config, workdir: str):
    """Validate, then build the Trainer (nothing trained); ValueErrors become ConfigError."""
    from zoo import data, registry
    from zoo.engine import stages
    from zoo.engine.config import check_config
    from zoo.engine.loop import Trainer
    from zoo.evals.sample_metrics import sample_metrics

    try:
        check_config(config)
        check_workdir(config, workdir)
        stages.check_stages(config)  # the runs it loads exist and have checkpoints
        data.check_data_config(config.data)
        objective = registry.build_objective(config)
        evals = sample_metrics(config, workdir)  # may train a reference classifier
        return Trainer(config, workdir, objective, sample_evals=evals)
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(str(e)) from e


def run(config, workdir: str):
    """Validate, build the objective, train; returns the final train state."""
    return prepare(config, workdir).train()


def main(argv):
    del argv
    if _LIST.value:
        from zoo.config_files import config_files, listing

        print(listing(config_files()))
        return
    if _CONFIG.value is None or not _WORKDIR.value:
        err = app.UsageError("--config and --workdir are required")
        fail(str(err), err, USAGE_ERROR, show_traceback=False, hint="(--list shows the configs)")
    from zoo.engine.distributed import maybe_initialize_distributed
    from zoo.engine.parallel import enable_compilation_cache

    # force: importing Orbax (absl logging) may already have set the root logger up
    # at WARNING, which would hide "resumed from step N".
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True
    )
    for noisy in ("absl", "orbax", "jax"):  # Orbax logs every save step at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        maybe_initialize_distributed()
        enable_compilation_cache()
        run(_CONFIG.value, _WORKDIR.value)
    except Exception as err:  # noqa: BLE001 - the message is the report; --traceback for more
        status = USAGE_ERROR if isinstance(err, ConfigError) else RUN_ERROR
        name = "" if isinstance(err, ValueError) else f"{type(err).__name__}: "
        fail(f"{name}{err}", err, status, show_traceback=_TRACEBACK.value, hint=TRACEBACK_HINT)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
