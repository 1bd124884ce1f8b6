"""StyleSwin at 256x256 (Zhang et al. 2022), e.g. on FFHQ, from an image folder.

    python -m zoo.main --config=configs/styleswin_ffhq.py --config.data.path=PATH/ffhq256 \
        --workdir=runs/styleswin_ffhq

Style-based generator of Swin transformer blocks with double attention (half
the heads on windows, half on shifted windows, window 8), AdaIN style
injection, sinusoidal position encoding at every scale, tRGB outputs summed
across scales; StyleGAN2's residual discriminator; non-saturating loss with
lazy R1 (gamma 10), batch 32, Adam 2e-4 for G and D with betas (0, 0.99),
G EMA. (The paper's wavelet discriminator for 1024 is not built.) ``:tiny``
shrinks every width (tests point data.path at a small folder).
"""

from zoo.gan.config import gan_base_config

# get_config's arguments (`python -m zoo.main --list` prints them); None: the default.
VARIANTS = {
    "tiny": "8x8, widths <= 16, 1 step (tests point data.path at a small folder)",
}


def get_config(arg: str | None = None):
    c = gan_base_config("styleswin")
    c.data.update(dict(name="image_folder", path="", image_size=256, channels=3, batch_size=32))
    c.data.random_flip = True
    c.gan.update(dict(r1_gamma=10.0, r1_every=16))
    c.optim.update(dict(lr=2e-4, b1=0.0, b2=0.99))
    c.ema_decay = 0.999
    c.train.update(
        dict(steps=1_000_000, log_every=100, sample_every=5000, eval_every=0, checkpoint_every=5000)
    )
    if arg == "tiny":
        c.net.update(
            dict(
                z_dim=8, w_dim=8, mapping_layers=2, channel_base=128, max_channels=16,
                head_dim=4, min_heads=2, depth=1, window=4, d_channel_base=64, d_max_channels=8,
            )
        )  # fmt: skip
        c.data.update(dict(image_size=8, batch_size=4))
        c.gan.r1_every = 1
        c.train.update(dict(steps=1, log_every=1, sample_every=1, checkpoint_every=1))
        c.train.num_samples = 4
    elif arg:
        raise ValueError(f"unknown variant {arg!r} of styleswin_ffhq; known: {', '.join(VARIANTS)}")
    return c
