"""DALL-E (Ramesh et al. 2021) on the bundled `shapes` captions, over the `dvae_shapes` codes.

    python -m zoo.main --config=configs/dvae_shapes.py --workdir=runs/dvae_shapes
    python -m zoo.main --config=configs/dalle_shapes.py --workdir=runs/dalle_shapes \
        --config.stages.tokenizer.workdir=runs/dvae_shapes

One decoder-only transformer over [7 caption tokens, 64 image tokens]; the loss weights the
text and image cross-entropies 1/8 and 7/8 as in the paper. Samples are drawn for random
captions and judged by the shapes reference classifier (eval/caption_match: the share whose
shape, colour and position all match the caption). `:tiny` runs in seconds.
"""

from zoo.autoregressive.config import prior_config

# The config files of the runs this one loads, by role (config.stages.<role>.workdir).
STAGES = {"tokenizer": "dvae_shapes"}

# get_config's arguments (`python -m zoo.main --list` prints them); None: the default.
VARIANTS = {
    "tiny": "width 16, 1 layer, 4 steps: seconds (tests)",
}


def get_config(arg: str | None = None):
    c = prior_config("dalle")
    c.data.update(dict(name="shapes", image_size=16, channels=3, batch_size=32))
    c.prior.update(dict(dim=128, depth=4, num_heads=4, dropout=0.1))
    c.optim.update(dict(lr=1e-3, warmup_steps=200, schedule="cosine", end_lr_factor=0.1))
    c.train.update(
        dict(steps=4000, log_every=100, sample_every=1000, eval_every=2000, checkpoint_every=1000)
    )
    c.train.num_samples = 64
    c.eval.update(dict(batch_size=100, num_examples=500, num_samples=500))
    if arg == "tiny":
        c.prior.update(dict(dim=16, depth=1, num_heads=2))
        c.data.update(dict(batch_size=8, image_size=16, num_train=64, num_eval=16))
        c.optim.warmup_steps = 1
        c.train.update(dict(steps=4, log_every=2, sample_every=4, eval_every=4, checkpoint_every=2))
        c.train.num_samples = 4
        c.eval.update(dict(batch_size=16, num_examples=16, num_samples=16))
    elif arg:
        raise ValueError(f"unknown variant {arg!r} of dalle_shapes; known: {', '.join(VARIANTS)}")
    return c
