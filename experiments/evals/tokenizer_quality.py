"""Reconstruction quality of a tokenizer run's checkpoint on the whole held-out split.

    python experiments/evals/tokenizer_quality.py runs/vqvae_digits
    python experiments/evals/tokenizer_quality.py runs/vqgan_shapes --lpips lpips_vgg16.npz
    python experiments/evals/tokenizer_quality.py runs/vqgan_shapes --step 2000

Reads the run's own config.json and the tokenizer of its newest checkpoint (``--step``: that
one), loaded as a stage-2 run loads it (``config.stages.tokenizer``; EMA parameters where the
run keeps them, unless ``--no-ema``). Encodes every held-out image to its codes and decodes
them (the hard codes a prior sees). Prints JSON:
PSNR (dB, images in [0, 1], the mean of per-image PSNRs), L1, LPIPS with ``--lpips``, and
the codebook usage and perplexity of the codes over the whole split (the training logs and
``eval/usage`` count codes per batch). On ``shapes`` it also reports the caption match of the
split's reconstructions as judged by the reference classifier (the ceiling of a prior over
these codes) and which shapes the classifier reads off them (``shape_confusion``).
"""

import argparse
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from zoo import data
from zoo.autoregressive.tokenizer_objective import tokenizer_from_config
from zoo.engine.config import load_run_config
from zoo.engine.stages import StageSpec, load_role
from zoo.engine.state import split_modules
from zoo.engine.step import Models
from zoo.evals.image_metrics import psnr
from zoo.nn.quantizer import codebook_stats


def reconstruction_caption_match(config, workdir, images, batches) -> dict:
    """Caption match of the held-out reconstructions ``images`` (``batches``: their sources)."""
    from zoo.data.shapes import SHAPES
    from zoo.evals.shapes_classifier import ShapesClassifier, confusion, match_predictions

    classifier = ShapesClassifier.train(
        image_size=int(config.data.image_size),
        cache_path=os.path.join(workdir, "shapes_classifier.npz"),
    )
    attributes = [np.concatenate([b[k] for b in batches]) for k in ("shape", "color", "position")]
    predicted = classifier.predict(np.concatenate(images))
    out = match_predictions(predicted, *attributes)
    # Which shapes turn into which: {true shape: {shape read off the reconstruction: count}}.
    out["shape_confusion"] = confusion(attributes[0], predicted["shape"], SHAPES)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("workdir")
    p.add_argument("--lpips", default="", help="LPIPS weights (.npz from zoo.evals.lpips)")
    p.add_argument("--batch_size", type=int, default=100)
    p.add_argument("--step", type=int, default=0, help="checkpoint step (0: the newest)")
    p.add_argument("--no-ema", dest="ema", action="store_false", help="raw, not EMA, weights")
    args = p.parse_args()
    try:
        config = load_run_config(args.workdir)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(str(err)) from None
    graphs, params, rest = split_modules({"tokenizer": tokenizer_from_config(config)})
    spec = StageSpec("stages", "tokenizer", args.workdir, "tokenizer", args.ema, args.step or None)
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    p_tok, r_tok, record = load_role(spec, params["tokenizer"], rest["tokenizer"], sharding)
    variables = ({"tokenizer": p_tok}, {"tokenizer": r_tok})
    lpips = None
    if args.lpips:
        from zoo.evals.lpips import load_lpips

        lpips = load_lpips(args.lpips)

    @jax.jit
    def reconstruct(variables, x):
        tok = Models(graphs, *variables)("tokenizer", train=False)
        codes = tok.encode_indices(x)
        return codes, jnp.clip(tok.decode_indices(codes), -1.0, 1.0)

    shapes = config.data.name == "shapes"
    scores, codes, images, batches = {"psnr": [], "l1": [], "lpips": []}, [], [], []
    for batch in data.make_eval_source(config.data).batches(args.batch_size):
        x = jnp.asarray(batch["image"], jnp.float32)
        c, image = reconstruct(variables, x)
        codes.append(np.asarray(c).ravel())
        if shapes:  # kept for the caption match below
            images.append(np.asarray(image))
            batches.append(batch)
        scores["psnr"] += list(np.asarray(psnr((x + 1) / 2, (image + 1) / 2, axis=(1, 2, 3))))
        scores["l1"] += list(np.asarray(jnp.mean(jnp.abs(x - image), axis=(1, 2, 3))))
        if lpips is not None:
            scores["lpips"] += list(np.asarray(lpips(x, image)))
    stats = codebook_stats(jnp.asarray(np.concatenate(codes)), int(config.vq.num_codes))
    out = {k: float(np.mean(v)) for k, v in scores.items() if v}
    out.update({k: float(v) for k, v in stats.items()})
    if shapes:
        match = reconstruction_caption_match(config, args.workdir, images, batches)
        out.update({f"reconstruction_{k}": v for k, v in match.items()})
    out.update(
        step=record["step"],
        weights=record["source"],
        images=len(scores["psnr"]),
        num_codes=int(config.vq.num_codes),
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
