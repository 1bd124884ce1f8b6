"""Mode coverage of the original GAN on the ring of 8 Gaussians, per generator loss and k.

    python experiments/evals/gan_ring_sweep.py --out runs/gan_ring_sweep [--steps 5000]

Trains ``configs/gan_ring.py`` once per (g_loss, k) pair, each in its own
workdir under ``--out``, and prints one JSON line per run: modes covered (of
8), the share of high-quality samples (within 3 std of a mode), the KL of the
mode histogram to uniform, and the wall time. ``summary.json`` collects them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from zoo.engine.writers import read_metrics
from zoo.main import run

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))  # the repo's configs/
from configs.gan_ring import get_config  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="runs/gan_ring_sweep")
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--losses", default="non_saturating,saturating")
    p.add_argument("--ks", default="1,2,5")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rows = []
    for g_loss in args.losses.split(","):
        for k in map(int, args.ks.split(",")):
            config = get_config()
            config.seed = args.seed
            config.gan.update(dict(g_loss=g_loss, d_steps=k))
            config.train.update(dict(steps=args.steps, eval_every=args.steps))
            workdir = os.path.join(args.out, f"{g_loss}_k{k}_seed{args.seed}")
            start = time.perf_counter()
            run(config, workdir)
            seconds = time.perf_counter() - start
            evals = [m for m in read_metrics(workdir) if "eval/modes_covered" in m]
            row = {"g_loss": g_loss, "k": k, "steps": args.steps, "wall_s": round(seconds, 1)}
            row.update({k.split("/")[1]: v for k, v in evals[-1].items() if k.startswith("eval/")})
            print(json.dumps(row), flush=True)
            rows.append(row)
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
