"""Parti (Yu et al. 2022) on the bundled `shapes` captions, over the `vqgan_shapes` codes.

    python -m zoo.main --config=configs/vqgan_shapes.py --workdir=runs/vqgan_shapes
    python -m zoo.main --config=configs/parti_shapes.py --workdir=runs/parti_shapes \
        --config.stages.tokenizer.workdir=runs/vqgan_shapes

An encoder-decoder transformer: a caption encoder, and a decoder over the 64 image tokens
that cross-attends to it. The caption is dropped (replaced by the empty one) for 10% of the
examples, so sampling can use classifier-free guidance on the logits
(`--config.prior.guidance_scale=1.5`; 1 = none; the README's sweep measured caption match
0.97 at 1, 0.99 at 1.5, 0.87 at 3). Reports eval/caption_match as `dalle_shapes`.
`:tiny` runs in seconds.
"""

from zoo.autoregressive.config import prior_config

# The config files of the runs this one loads, by role (config.stages.<role>.workdir).
STAGES = {"tokenizer": "vqgan_shapes"}

# get_config's arguments (`python -m zoo.main --list` prints them); None: the default.
VARIANTS = {
    "tiny": "width 16, 1 layer, guidance 2, 4 steps: seconds (tests)",
}


def get_config(arg: str | None = None):
    c = prior_config("parti")
    c.data.update(dict(name="shapes", image_size=16, channels=3, batch_size=32))
    c.prior.update(
        dict(dim=128, depth=4, num_heads=4, dropout=0.1, condition_dropout=0.1, text_dim=64,
             text_depth=2, text_heads=4)
    )  # fmt: skip
    c.optim.update(dict(lr=1e-3, warmup_steps=200, schedule="cosine", end_lr_factor=0.1))
    c.train.update(
        dict(steps=4000, log_every=100, sample_every=1000, eval_every=2000, checkpoint_every=1000)
    )
    c.train.num_samples = 64
    c.eval.update(dict(batch_size=100, num_examples=500, num_samples=500))
    if arg == "tiny":
        c.prior.update(dict(dim=16, depth=1, num_heads=2, text_dim=8, text_depth=1, text_heads=2,
                            guidance_scale=2.0))  # fmt: skip
        c.data.update(dict(batch_size=8, image_size=16, num_train=64, num_eval=16))
        c.optim.warmup_steps = 1
        c.train.update(dict(steps=4, log_every=2, sample_every=4, eval_every=4, checkpoint_every=2))
        c.train.num_samples = 4
        c.eval.update(dict(batch_size=16, num_examples=16, num_samples=16))
    elif arg:
        raise ValueError(f"unknown variant {arg!r} of parti_shapes; known: {', '.join(VARIANTS)}")
    return c
