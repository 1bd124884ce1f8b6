"""Train throughput of one config by device count: the real ``python -m zoo.main`` run.

    python experiments/bench/device_count.py                          # 1, 2, 4, 8 CPU devices
    python experiments/bench/device_count.py --fsdp                   # the same with mesh.fsdp = n
    python experiments/bench/device_count.py --platform gpu --devices 1,2,4,8

Each point is a fresh process (``XLA_FLAGS=--xla_force_host_platform_device_count=n`` on
CPU, ``CUDA_VISIBLE_DEVICES=0..n-1`` on GPUs) training ``--steps`` steps of the config at its
own global batch, with no samples, evals or checkpoints but the last. Throughput is the
median of the engine's logged ``steps_per_sec`` (which leaves out hooks), the first log
(compilation) dropped. On one CPU the "devices" share the same cores: the numbers show
the engine's overhead per device, not a speed-up. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def one_point(args, n: int) -> dict:
    env = dict(os.environ)
    if args.platform == "cpu":
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n}"
        env["JAX_PLATFORMS"] = "cpu"
    else:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, range(n)))
    with tempfile.TemporaryDirectory() as workdir:
        cmd = [
            sys.executable, "-m", "zoo.main", f"--config={args.config}", f"--workdir={workdir}",
            f"--config.train.steps={args.steps}", f"--config.train.log_every={args.log_every}",
            "--config.train.sample_every=0", "--config.train.eval_every=0",
            "--config.train.checkpoint_every=0", "--config.eval.num_samples=0",
        ]  # fmt: skip
        if args.fsdp:
            cmd.append(f"--config.mesh.fsdp={n}")
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode:
            return {"error": proc.stderr[-1500:]}
        config = json.loads((Path(workdir) / "config.json").read_text())
        logs = [json.loads(line) for line in open(Path(workdir) / "metrics.jsonl")]
    rates = [x["steps_per_sec"] for x in logs if "steps_per_sec" in x][1:]
    steps_per_sec = statistics.median(rates)
    return {
        "steps_per_sec": steps_per_sec,
        "images_per_sec": steps_per_sec * int(config["data"]["batch_size"]),
        "batch": int(config["data"]["batch_size"]),
        "logs_used": len(rates),
        "wall_s": wall,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/ddpm_digits.py")
    p.add_argument("--devices", default="1,2,4,8")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--log_every", type=int, default=100)
    p.add_argument("--platform", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--fsdp", action="store_true", help="shard the state: mesh.fsdp = devices")
    args = p.parse_args(argv)
    result = {"bench": "device_count", **vars(args), "points": {}}
    for n in map(int, args.devices.split(",")):
        result["points"][n] = point = one_point(args, n)
        print(f"{n} devices: {point}", file=sys.stderr, flush=True)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
