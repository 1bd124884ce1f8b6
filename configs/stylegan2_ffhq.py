"""StyleGAN2 config F at 256x256 (Karras et al. 2020), e.g. on FFHQ, from an image folder.

    python -m zoo.main --config=configs/stylegan2_ffhq.py --config.data.path=PATH/ffhq256 \
        --workdir=runs/stylegan2_ffhq

Config F: z and w 512, 8-layer mapping network with lr x 0.01, channels
min(16384 / res, 512), skip generator, residual discriminator with minibatch
stddev, non-saturating logistic loss, R1 gamma 10 every 16 steps, path length
weight 2 every 4 steps on half the batch, style mixing 0.9, batch 32, Adam
2e-3 with betas (0, 0.99), G EMA with a half-life of 10k images, x-flips.
``:tiny`` shrinks every width (tests point data.path at a small folder).
"""

from zoo.gan.config import gan_base_config

# get_config's arguments (`python -m zoo.main --list` prints them); None: the default.
VARIANTS = {
    "tiny": "8x8, widths 8, 1 step (tests point data.path at a small folder)",
}


def get_config(arg: str | None = None):
    c = gan_base_config("stylegan2")
    c.data.update(dict(name="image_folder", path="", image_size=256, channels=3, batch_size=32))
    c.data.random_flip = True
    c.gan.update(dict(r1_gamma=10.0, r1_every=16, pl_weight=2.0, pl_every=4, style_mixing=0.9))
    c.optim.update(dict(lr=2e-3, b1=0.0, b2=0.99, eps=1e-8))
    c.ema_decay = 0.5 ** (32 / 10_000)
    c.train.update(
        dict(steps=781_250, log_every=100, sample_every=5000, eval_every=0, checkpoint_every=5000)
    )  # 25M images at batch 32
    if arg == "tiny":
        c.net.update(dict(z_dim=8, w_dim=8, mapping_layers=2, channel_base=64, channel_max=8))
        c.data.update(dict(image_size=8, batch_size=4))
        c.gan.update(dict(r1_every=1, pl_every=1))
        c.train.update(dict(steps=1, log_every=1, sample_every=1, checkpoint_every=1))
        c.train.num_samples = 4
    elif arg:
        raise ValueError(f"unknown variant {arg!r} of stylegan2_ffhq; known: {', '.join(VARIANTS)}")
    return c
