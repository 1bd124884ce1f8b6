"""DDPM on the bundled handwritten digits (8x8, scikit-learn): the zoo's main CPU job.

    python -m zoo.main --config=configs/ddpm_digits.py --workdir=runs/ddpm_digits

Trains in about ten minutes on 2 CPU cores, writes EMA sample grids to
`runs/ddpm_digits/samples/` and reports the digits Fréchet distance (eval/fd)
and bits/dim (eval/bpd). `:tiny` runs in seconds (tests, notebooks).
"""

from zoo.diffusion.config import ddpm_config

# get_config's arguments (`python -m zoo.main --list` prints them); None: the default.
VARIANTS = {
    "tiny": "a width-16 U-Net, 6 steps: seconds (tests, notebooks)",
}


def get_config(arg: str | None = None):
    c = ddpm_config()
    c.ema_decay = 0.999
    c.data.update(
        dict(
            name="digits",
            image_size=8,
            channels=1,
            batch_size=64,
            random_flip=False,
            num_classes=10,
        )
    )
    c.unet.update(dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), dropout=0.0))
    c.diffusion.update(dict(sample_steps=50))
    c.optim.update(dict(lr=1e-3, warmup_steps=200, schedule="cosine", end_lr_factor=0.1))
    c.train.update(
        dict(
            steps=5000,
            log_every=100,
            sample_every=1000,
            eval_every=2500,
            checkpoint_every=1000,
            num_samples=100,
        )
    )
    c.eval.update(dict(batch_size=297, num_examples=0, num_samples=500))
    if arg == "tiny":
        c.ema_decay = 0.9
        c.unet.update(dict(ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,)))
        c.diffusion.update(dict(schedule="cosine", timesteps=50, sample_steps=5))
        c.optim.warmup_steps = 2
        c.train.update(
            dict(
                steps=6,
                log_every=2,
                sample_every=3,
                eval_every=6,
                checkpoint_every=3,
                num_samples=16,
            )
        )
        c.eval.update(dict(batch_size=64, num_examples=64, num_samples=64))
    elif arg:
        raise ValueError(f"unknown variant {arg!r} of ddpm_digits; known: {', '.join(VARIANTS)}")
    return c
