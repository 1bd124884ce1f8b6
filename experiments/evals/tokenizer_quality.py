"""Reconstruction quality of a tokenizer run's latest checkpoint on the whole held-out split.

    python experiments/evals/tokenizer_quality.py runs/vqvae_digits
    python experiments/evals/tokenizer_quality.py runs/vqgan_shapes --lpips lpips_vgg16.npz

Reads the run's own config.json, encodes every held-out image to its codes and decodes
them (the hard codes a prior sees; EMA parameters where the run keeps them). Prints JSON:
PSNR (dB, images in [0, 1], the mean of per-image PSNRs), L1, LPIPS with ``--lpips``, and
the codebook usage and perplexity of the codes over the whole split (the training logs and
``eval/usage`` count codes per batch). On ``shapes`` it also reports the caption match of the
reconstructions as judged by the reference classifier: the ceiling of a prior over these codes.
"""

import argparse
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from zoo import data, registry
from zoo.engine.loop import Trainer
from zoo.engine.step import Models
from zoo.evals.image_metrics import psnr
from zoo.nn.quantizer import codebook_stats


def reconstruction_caption_match(config, workdir, reconstruct, variables) -> dict:
    """Caption match of the held-out images' reconstructions (and of the images themselves)."""
    from zoo.evals.shapes_classifier import ShapesClassifier, caption_match

    classifier = ShapesClassifier.train(
        image_size=int(config.data.image_size),
        cache_path=os.path.join(workdir, "shapes_classifier.npz"),
    )
    batch = next(data.make_eval_source(config.data).batches(1000))
    _, image = reconstruct(variables, jnp.asarray(batch["image"], jnp.float32))
    attributes = batch["shape"], batch["color"], batch["position"]
    return caption_match(np.asarray(image), *attributes, classifier)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("workdir")
    p.add_argument("--lpips", default="", help="LPIPS weights (.npz from zoo.evals.lpips)")
    p.add_argument("--batch_size", type=int, default=100)
    args = p.parse_args()
    with open(os.path.join(args.workdir, "config.json")) as f:
        config = ml_collections.ConfigDict(json.load(f))
    trainer = Trainer(config, args.workdir, registry.build_objective(config))
    state, step = trainer.restore_or_init()
    trainer.checkpointer.close()
    lpips = None
    if args.lpips:
        from zoo.evals.lpips import load_lpips

        lpips = load_lpips(args.lpips)

    @jax.jit
    def reconstruct(variables, x):
        tok = Models(trainer.graphs, *variables)("tokenizer", train=False)
        codes = tok.encode_indices(x)
        return codes, jnp.clip(tok.decode_indices(codes), -1.0, 1.0)

    variables = trainer.eval_params(state)
    scores, codes = {"psnr": [], "l1": [], "lpips": []}, []
    for batch in data.make_eval_source(config.data).batches(args.batch_size):
        x = jnp.asarray(batch["image"], jnp.float32)
        c, image = reconstruct(variables, x)
        codes.append(np.asarray(c).ravel())
        scores["psnr"] += list(np.asarray(psnr((x + 1) / 2, (image + 1) / 2, axis=(1, 2, 3))))
        scores["l1"] += list(np.asarray(jnp.mean(jnp.abs(x - image), axis=(1, 2, 3))))
        if lpips is not None:
            scores["lpips"] += list(np.asarray(lpips(x, image)))
    if config.data.name == "shapes":
        out_match = reconstruction_caption_match(config, args.workdir, reconstruct, variables)
    stats = codebook_stats(jnp.asarray(np.concatenate(codes)), int(config.vq.num_codes))
    out = {k: float(np.mean(v)) for k, v in scores.items() if v}
    out.update({k: float(v) for k, v in stats.items()})
    if config.data.name == "shapes":
        out.update({f"reconstruction_{k}": v for k, v in out_match.items()})
    out.update(step=int(step), images=len(scores["psnr"]), num_codes=int(config.vq.num_codes))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
