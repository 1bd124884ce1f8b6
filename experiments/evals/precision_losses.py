"""float32 against bfloat16 (or float16) training: each player's loss at the end of a short run.

    python experiments/evals/precision_losses.py ddpm_digits stylegan2_digits [--steps 40]
        [--policy bfloat16]

Trains each named config's ``:tiny`` variant twice from the same initialisation and batches,
under ``precision=float32`` and under ``--policy``, in temporary workdirs, and prints per
player the loss of step 1 and the mean loss of the last 10 steps (JSON, one line per config).
tests/engine/test_precision.py holds six configs to within 5 % of float32 the same way.
"""

import argparse
import json
import tempfile
import time

import numpy as np

from zoo.engine.writers import read_metrics
from zoo.main import run


def losses(name: str, policy: str, steps: int) -> dict:
    config = __import__(f"configs.{name}", fromlist=["get_config"]).get_config("tiny")
    config.precision = policy
    config.train.update(
        dict(steps=steps, log_every=1, sample_every=0, eval_every=0, checkpoint_every=steps)
    )
    config.eval.num_samples = 0
    with tempfile.TemporaryDirectory() as workdir:
        start = time.perf_counter()
        run(config, workdir)
        seconds = time.perf_counter() - start
        records = read_metrics(workdir)
    players = sorted({k for r in records for k in r if k.endswith("/loss")})
    out = {"seconds": round(seconds, 1)}
    for p in players:
        values = [r[p] for r in records if p in r]
        out[p] = {"first": values[0], "last10": float(np.mean(values[-10:]))}
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("configs", nargs="+", help="config file names, e.g. ddpm_digits")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--policy", default="bfloat16", choices=("bfloat16", "float16"))
    args = p.parse_args()
    for name in args.configs:
        result = {policy: losses(name, policy, args.steps) for policy in ("float32", args.policy)}
        print(json.dumps({"config": name, **result}), flush=True)


if __name__ == "__main__":
    main()
