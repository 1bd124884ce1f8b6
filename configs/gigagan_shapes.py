"""GigaGAN (Kang et al. 2023), text-to-image on the bundled `shapes` captions at 32x32, on CPU.

    python -m zoo.main --config=configs/gigagan_shapes.py --workdir=runs/gigagan_shapes

Generator: a learned text encoder whose local tokens feed cross-attention and
whose global vector joins z in the style mapping; sample-adaptive kernel
selection (a bank of 4 filters mixed per sample), self- and cross-attention
interleaved with the convolutions, an image at every scale (8, 16, 32).
Discriminator: multi-scale, text-conditioned (projection), with the
matching-aware loss (a real image with another example's caption is a fake).
Non-saturating loss, lazy R1, G EMA. Reports how often the reference shapes
classifier finds the captioned shape, colour and position in the generated
image (eval/caption_match) and writes samples and a truncation sweep (one
caption per row). ``:tiny`` runs in seconds.
"""

from zoo.gan.config import gan_base_config


def get_config(arg: str | None = None):
    c = gan_base_config("gigagan")
    c.data.update(dict(name="shapes", image_size=32, channels=3, batch_size=32))
    c.gan.update(
        dict(condition="text", r1_gamma=0.2, r1_every=16, matching_aware=1.0, style_mixing=0.0)
    )
    c.optim.update(dict(lr=1e-3, b1=0.0, b2=0.99, eps=1e-8))
    c.ema_decay = 0.5 ** (32 / 5000)
    c.train.update(
        dict(steps=2000, log_every=200, sample_every=1000, eval_every=1000, checkpoint_every=1000)
    )
    c.train.num_samples = 64
    c.eval.update(dict(num_samples=500))
    if arg == "tiny":
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
        raise ValueError(f"unknown variant {arg!r} of gigagan_shapes; known: tiny")
    return c
