"""Where a StyleGAN2 train step spends its time: forward and backward of G and D, and
the resampling layers alone, at config F widths.

    python experiments/bench/stylegan2_parts.py --size 64 --batch 64

Prints one JSON object of median milliseconds per part (after a warm-up call).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
from flax import nnx

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))  # configs/
from configs import stylegan2_ffhq  # noqa: E402
from zoo.gan.stylegan2 import build_networks  # noqa: E402
from zoo.nn.equalized import blur, downsample2x, upsample2x  # noqa: E402
from zoo.nn.modulated import modulated_conv  # noqa: E402


def timed(fn, *args, repeats=5):
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return round(1e3 * statistics.median(times), 2)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=64)
    args = p.parse_args()
    c = stylegan2_ffhq.get_config()
    c.data.image_size = args.size
    g, d = build_networks(c, rngs=nnx.Rngs(0))
    gdef, gstate = nnx.split(g)
    ddef, dstate = nnx.split(d)
    b = args.batch
    z = jax.random.normal(jax.random.key(0), (b, g.z_dim))
    x = jax.random.normal(jax.random.key(1), (b, args.size, args.size, 3))
    key = jax.random.key(2)

    def g_fwd(s, z):
        return nnx.merge(gdef, s)(z, noise_key=key)

    def d_fwd(s, x):
        return nnx.merge(ddef, s)(x)

    out = {"device": str(jax.devices()[0]), "size": args.size, "batch": b}
    out["G_forward"] = timed(jax.jit(g_fwd), gstate, z)
    out["D_forward"] = timed(jax.jit(d_fwd), dstate, x)
    out["G_forward_backward"] = timed(
        jax.jit(jax.grad(lambda s, z: jnp.mean(g_fwd(s, z)), allow_int=True)), gstate, z
    )
    out["D_forward_backward"] = timed(
        jax.jit(jax.grad(lambda s, x: jnp.mean(d_fwd(s, x)), allow_int=True)), dstate, x
    )
    # One 3x3 modulated conv at 32 -> 64 with 256 channels, with and without upsampling.
    h = jax.random.normal(jax.random.key(3), (b, args.size // 2, args.size // 2, 256))
    w = jax.random.normal(jax.random.key(4), (3, 3, 256, 256))
    s = jnp.ones((b, 256))
    out["modconv_up_fwd"] = timed(jax.jit(lambda h: modulated_conv(h, w, s, up=True)), h)
    out["modconv_fwd"] = timed(jax.jit(lambda h: modulated_conv(h, w, s)), h)
    grad_up = jax.jit(jax.grad(lambda h, w: jnp.mean(modulated_conv(h, w, s, up=True)), (0, 1)))
    out["modconv_up_fwd_bwd"] = timed(grad_up, h, w)
    grad = jax.jit(jax.grad(lambda h, w: jnp.mean(modulated_conv(h, w, s)), (0, 1)))
    out["modconv_fwd_bwd"] = timed(grad, h, w)
    out["blur"] = timed(jax.jit(blur), h)
    out["upsample2x"] = timed(jax.jit(upsample2x), h)
    out["downsample2x"] = timed(jax.jit(downsample2x), h)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
