"""GigaGAN (Kang et al. 2023), text-to-image on the bundled `shapes` captions at 32x32.

    python -m zoo.main --config=configs/gigagan_shapes.py --workdir=runs/gigagan_shapes
    python -m zoo.main --config=configs/gigagan_shapes.py:small --workdir=runs/gigagan_small

Generator: a learned text encoder whose local tokens feed cross-attention and
whose global vector joins z in the style mapping; sample-adaptive kernel
selection (a bank of 4 filters mixed per sample), self- and cross-attention
interleaved with the convolutions, an image at every scale (8, 16, 32).
Discriminator: multi-scale, text-conditioned (projection), with the
matching-aware loss (a real image with another example's caption is a fake).
Non-saturating loss, lazy R1, G EMA. Reports how often the reference shapes
classifier finds the captioned shape, colour and position in the generated
image (eval/caption_match) and writes samples and a truncation sweep (one
caption per row).

The default is sized for a GPU: on one H100 its 7,000 steps take ~161 s of
training and reach a caption match of 0.57 (colour and position ~0.97, shape
0.61; `experiments/evals/train_timed.py`); on 2 CPU cores a step takes ~2.8 s.
``:small`` (16x16, widths <= 64, G 0.8M / D 0.3M) is the 2-core config: 6,000 steps in
~27 min, caption match 0.60 (colour and position ~1.0, shape 0.60). ``:tiny`` runs in
seconds.
"""

from zoo.gan.config import gan_base_config

# get_config's arguments (`python -m zoo.main --list` prints them); None: the default.
VARIANTS = {
    "small": "16x16, widths <= 64, for 2 CPU cores: 6,000 steps in ~27 min",
    "tiny": "widths 8, 16x16, 2 steps: seconds (tests)",
}


def get_config(arg: str | None = None):
    c = gan_base_config("gigagan")
    c.data.update(dict(name="shapes", image_size=32, channels=3, batch_size=32))
    c.gan.update(
        dict(condition="text", r1_gamma=0.2, r1_every=16, matching_aware=1.0, style_mixing=0.0)
    )
    c.optim.update(dict(lr=1e-3, b1=0.0, b2=0.99, eps=1e-8))
    c.ema_decay = 0.5 ** (32 / 5000)
    c.train.update(
        dict(steps=7000, log_every=200, sample_every=1000, eval_every=1000, checkpoint_every=1000)
    )
    c.train.num_samples = 64
    c.eval.update(dict(num_samples=500))
    if arg == "small":  # 16x16 and narrower, for 2 CPU cores
        c.net.update(
            dict(
                z_dim=32, w_dim=64, channel_base=512, channel_max=64, attn_resolutions=(4, 8),
                text_dim=64,
            )
        )  # fmt: skip
        c.data.image_size = 16
        c.train.update(dict(steps=6000, sample_every=1500, eval_every=1500, checkpoint_every=1500))
    elif arg == "tiny":
        c.net.update(
            dict(
                z_dim=8, w_dim=8, mapping_layers=2, channel_base=64, channel_max=8,
                num_kernels=2, attn_resolutions=(4,), num_heads=2, text_dim=8, text_depth=1,
                text_heads=2,
            )
        )  # fmt: skip
        c.data.update(dict(image_size=16, batch_size=4, num_train=64, num_eval=16))
        c.gan.r1_every = 2
        c.train.update(dict(steps=2, log_every=1, sample_every=2, eval_every=2, checkpoint_every=2))
        c.train.num_samples = 4
        c.eval.num_samples = 16
    elif arg:
        raise ValueError(f"unknown variant {arg!r} of gigagan_shapes; known: {', '.join(VARIANTS)}")
    return c
