"""Memory that rematerialisation saves: compiled train steps with ``remat`` off and on.

    python experiments/bench/remat_memory.py [--models unet,stylegan2,transformer]
        [--batch 32] [--size 64] [--json results/cpu2_remat.json]

For each model the step is compiled twice and XLA's ``memory_analysis`` reports its temporary
bytes (activations kept for the backward pass, and scratch), next to the arguments' bytes:

- ``unet``: the engine's DDPM train step of ``configs/ddpm_cifar10.py`` (35.7 M parameters,
  ``unet.remat``) on ``--size``-pixel images;
- ``stylegan2``: the engine's StyleGAN2 step of ``configs/stylegan2_ffhq.py`` (config F,
  ``net.remat``: synthesis layers and discriminator blocks) at ``--size``, every player
  active (discriminator with R1, generator with path length);
- ``transformer``: loss and gradient of a ``TokenDecoder`` sized like
  ``configs/transformer_digits.py``'s default scaled by ``--width`` and ``--depth`` over
  ``--tokens`` image tokens (the prior alone: its frozen tokenizer adds no activations).

Nothing is run, only compiled: the numbers are the compiler's plan for the device it runs on
(XLA:CPU keeps activations it could drop, so a GPU is where the saving shows).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from zoo import registry
from zoo.engine.state import init_state, split_modules
from zoo.engine.step import build_train_step
from zoo.nn.transformer import TokenDecoder


def _engine_step_bytes(config, batch: dict) -> dict:
    objective = registry.build_objective(config)
    graphs, params, rest = split_modules(objective.modules)
    state = jax.eval_shape(lambda p, r: init_state(objective, p, r), params, rest)
    step = build_train_step(objective, graphs, seed=0)
    active = tuple(True for _ in objective.players)
    compiled = jax.jit(lambda s, b: step(s, b, active)).lower(state, batch).compile()
    return _memory(compiled)


def _memory(compiled) -> dict:
    m = compiled.memory_analysis()
    return {
        "temp_bytes": int(m.temp_size_in_bytes),
        "argument_bytes": int(m.argument_size_in_bytes),
    }


def _images(batch: int, size: int, substeps: int = 1) -> dict:
    rng = np.random.default_rng(0)
    image = rng.uniform(-1, 1, (substeps, 1, batch, size, size, 3)).astype(np.float32)
    ids = np.arange(substeps * batch, dtype=np.int32).reshape(substeps, 1, batch)
    return {"image": image, "example_id": ids}


def unet(args, remat: bool) -> dict:
    config = __import__("configs.ddpm_cifar10", fromlist=["x"]).get_config()
    config.unet.remat = remat
    config.data.update(dict(image_size=args.size, batch_size=args.batch))
    config.diffusion.bpd_eval = "none"
    return _engine_step_bytes(config, _images(args.batch, args.size))


def stylegan2(args, remat: bool) -> dict:
    config = __import__("configs.stylegan2_ffhq", fromlist=["x"]).get_config()
    config.net.remat = remat
    config.data.update(dict(image_size=args.size, batch_size=args.batch))
    substeps = int(config.gan.get("d_steps", 1))
    return _engine_step_bytes(config, _images(args.batch, args.size, substeps))


def transformer(args, remat: bool) -> dict:
    model = TokenDecoder(
        512, args.tokens, prefix_vocab_size=11, prefix_len=1, dim=args.width,
        depth=args.depth, num_heads=max(args.width // 64, 1), remat=remat, rngs=nnx.Rngs(0),
    )  # fmt: skip
    graph, params = nnx.split(model)
    prefix = jnp.zeros((args.batch, 1), jnp.int32)
    image = jnp.zeros((args.batch, args.tokens - 1), jnp.int32)

    def loss(p):
        logits, _ = nnx.merge(graph, p)(prefix, image)
        return jnp.mean(jax.nn.logsumexp(logits, axis=-1))

    compiled = jax.jit(jax.value_and_grad(loss)).lower(params).compile()
    return _memory(compiled)


MODELS = {"unet": unet, "stylegan2": stylegan2, "transformer": transformer}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=64, help="image side for unet and stylegan2")
    p.add_argument("--tokens", type=int, default=256, help="transformer image tokens")
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--depth", type=int, default=12)
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    out = {"device": str(jax.devices()[0].device_kind), "args": vars(args), "models": {}}
    for name in args.models.split(","):
        row = {}
        for remat in (False, True):
            t0 = time.perf_counter()
            row["remat" if remat else "plain"] = MODELS[name](args, remat)
            print(
                f"{name} remat={remat}: {row} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr
            )
        plain, saved = row["plain"]["temp_bytes"], row["remat"]["temp_bytes"]
        row["temp_saved_fraction"] = 1 - saved / plain if plain else None
        out["models"][name] = row
        print(f"{name}: temp {plain / 2**20:.1f} MiB -> {saved / 2**20:.1f} MiB with remat")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
