"""StyleGAN2 (Karras et al. 2020, config F) on the bundled digits at 16x16, on CPU.

    python -m zoo.main --config=configs/stylegan2_digits.py --workdir=runs/stylegan2_digits

Everything of config F at a small width: 8-layer mapping network (lr x 0.01),
learned constant, modulated/demodulated convolutions with noise inputs, skip
generator, residual discriminator with minibatch stddev, non-saturating
logistic loss, lazy R1 (every 16 steps) and path-length regularisation (every
4), style mixing 0.9, generator EMA, Adam 2e-3 with betas (0, 0.99). Reports
the digits Fréchet distance (eval/fd) and writes sample grids, a
style-mixing table and a truncation sweep (psi 1 -> 0) to ``samples/``.
On 2 CPU cores the 6,000 steps take ~34 min and end at a digits FD of ~29
(real-data floor 11.2). ``:tiny`` runs in seconds.
"""

from zoo.gan.config import gan_base_config

# get_config's arguments (`python -m zoo.main --list` prints them); None: the default.
VARIANTS = {
    "tiny": "widths 8, batch 4, 2 steps: seconds (tests)",
}


def get_config(arg: str | None = None):
    c = gan_base_config("stylegan2")
    c.data.update(dict(name="digits", image_size=16, channels=1, batch_size=32, num_classes=10))
    c.net.update(dict(z_dim=64, w_dim=64, channel_base=1024, channel_max=128))
    c.gan.update(
        dict(
            loss="minimax",
            g_loss="non_saturating",
            r1_gamma=0.1,
            r1_every=16,
            pl_weight=2.0,
            pl_every=4,
            style_mixing=0.9,
        )
    )
    c.optim.update(dict(lr=2e-3, b1=0.0, b2=0.99, eps=1e-8))
    c.ema_decay = 0.5 ** (32 / 5000)  # half-life of 5k images (the paper: 10k at 1024)
    c.train.update(
        dict(steps=6000, log_every=200, sample_every=1000, eval_every=1000, checkpoint_every=1000)
    )
    c.train.num_samples = 100
    c.eval.update(dict(batch_size=297, num_samples=500))
    if arg == "tiny":
        c.net.update(dict(z_dim=8, w_dim=8, mapping_layers=2, channel_base=64, channel_max=8))
        c.data.batch_size = 4
        c.gan.update(dict(r1_every=2, pl_every=2))
        c.train.update(dict(steps=2, log_every=1, sample_every=2, eval_every=2, checkpoint_every=2))
        c.train.num_samples = 4
        c.eval.num_samples = 16
    elif arg:
        raise ValueError(
            f"unknown variant {arg!r} of stylegan2_digits; known: {', '.join(VARIANTS)}"
        )
    return c
