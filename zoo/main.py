"""Train any zoo model from a config file.

    python -m zoo.main --config=configs/ddpm_digits.py --workdir=runs/ddpm_digits
    python -m zoo.main --config=configs/ddpm_cifar10.py:tiny --config.optim.lr=1e-4 --workdir=...

Running the same command again resumes from the workdir's latest checkpoint.
"""

from __future__ import annotations

import logging

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (path[:variant]).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, logs and samples go.")


def run(config, workdir: str):
    """Validate, build the objective, train; returns the final train state."""
    from zoo import data, registry
    from zoo.engine.config import check_config
    from zoo.engine.loop import Trainer
    from zoo.evals.sample_metrics import sample_metrics

    check_config(config)
    data.check_data_config(config.data)
    objective = registry.build_objective(config)
    trainer = Trainer(config, workdir, objective, sample_evals=sample_metrics(config, workdir))
    return trainer.train()


def main(argv):
    del argv
    from zoo.engine.parallel import enable_compilation_cache, maybe_initialize_distributed

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("absl", "orbax", "jax"):  # Orbax logs every save step at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
    maybe_initialize_distributed()
    enable_compilation_cache()
    run(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)
