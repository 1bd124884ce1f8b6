"""Runs a tiny config through the engine in a fresh process; prints a params digest.

    python tests/engine/run_tiny.py WORKDIR [--config ddpm_digits|dcgan_digits] [--devices N]
        [--parallel jit|pmap] [--steps S] [--microbatches A] [--dropout P] [--batch_size B]
        [--set FIELD=VALUE ...]

Used by the tests that need their own process: fake device counts (XLA_FLAGS
is read once per process), SIGKILL/SIGTERM and resume.
"""

import argparse
import json
import os
import sys


def main():
    p = argparse.ArgumentParser()
    p.add_argument("workdir")
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--parallel", default="jit")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--checkpoint_every", type=int, default=0)
    p.add_argument("--microbatches", type=int, default=1)
    p.add_argument("--config", default="ddpm_digits")
    p.add_argument("--dropout", type=float, default=0.0, help="the DDPM U-Net's dropout")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--set", action="append", default=[], help="FIELD=VALUE config overrides")
    args = p.parse_args()
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"

    import jax
    import numpy as np

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
    from zoo.engine.config import set_fields
    from zoo.main import run

    c = __import__(f"configs.{args.config}", fromlist=["get_config"]).get_config("tiny")
    c.data.batch_size = args.batch_size
    if args.dropout:
        c.unet.dropout = args.dropout
    c.train.update(
        dict(
            steps=args.steps,
            log_every=1,
            sample_every=0,
            eval_every=0,
            checkpoint_every=args.checkpoint_every or args.steps,
        )
    )
    c.optim.microbatches = args.microbatches
    c.parallel = args.parallel
    set_fields(c, args.set)  # e.g. optim.name='sgd' (optim_d inherits optim's fields)
    c.eval.num_samples = 0
    state = run(c, args.workdir)
    first = jax.devices()[0]
    # What the first device holds of the params, optimizer state and EMA (bytes).
    device_bytes = sum(
        shard.data.nbytes
        for x in jax.tree.leaves((state.params, state.opt, state.ema))
        for shard in x.addressable_shards
        if shard.device == first
    )
    if args.parallel == "pmap":
        state = jax.tree.map(lambda x: x[0], state)
    leaves = [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state.params))]
    digest = __import__("hashlib").sha256(b"".join(x.tobytes() for x in leaves)).hexdigest()
    print(
        json.dumps(
            {
                "devices": jax.device_count(),
                "digest": digest,
                "param_sum": float(sum(x.sum() for x in leaves)),
                "device_bytes": int(device_bytes),
                "total_bytes": int(
                    sum(x.nbytes for x in jax.tree.leaves((state.params, state.opt, state.ema)))
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
