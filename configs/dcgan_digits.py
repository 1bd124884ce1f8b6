"""DCGAN (Radford et al. 2016) on the bundled handwritten digits at 16x16, on CPU.

    python -m zoo.main --config=configs/dcgan_digits.py --workdir=runs/dcgan_digits

The paper's all-convolutional G and D (BatchNorm except G's output and D's
input layers, ReLU/tanh in G, LeakyReLU 0.2 in D, N(0, 0.02) init, Adam 2e-4
with beta1 = 0.5), narrowed for 2 CPU cores: z 64, widths 32/64. Reports the
digits Fréchet distance (eval/fd) and writes sample grids and latent
interpolations to ``samples/``. ``:tiny`` runs in seconds.
"""

from zoo.gan.config import gan_base_config

# get_config's arguments (`python -m zoo.main --list` prints them); None: the default.
VARIANTS = {
    "tiny": "widths 8, batch 8, 2 steps: seconds (tests)",
}


def get_config(arg: str | None = None):
    c = gan_base_config("dcgan")
    c.ema_decay = 0.999
    c.data.update(dict(name="digits", image_size=16, channels=1, batch_size=64, num_classes=10))
    c.net.update(dict(z_dim=64, g_base=32, d_base=32, kernel_size=5))
    c.train.update(
        dict(steps=6000, log_every=200, sample_every=1000, eval_every=3000, checkpoint_every=1000)
    )
    c.train.num_samples = 100
    c.eval.update(dict(batch_size=297, num_samples=500))
    if arg == "tiny":
        c.net.update(dict(z_dim=8, g_base=8, d_base=8, kernel_size=3))
        c.data.batch_size = 8
        c.train.update(dict(steps=2, log_every=1, sample_every=2, eval_every=2, checkpoint_every=2))
        c.train.num_samples = 16
        c.eval.num_samples = 64
    elif arg:
        raise ValueError(f"unknown variant {arg!r} of dcgan_digits; known: {', '.join(VARIANTS)}")
    return c
