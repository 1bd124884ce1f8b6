"""DCGAN at the paper's scale: LSUN bedrooms at 64x64 (Radford et al. 2016, sec. 4.1).

    python -m zoo.main --config=configs/dcgan_lsun.py --workdir=runs/dcgan_lsun

Reads tensorflow-datasets ``lsun/bedroom`` (prepare it first with ``tfds build
lsun/bedroom``; nothing downloads at run time). G 4x4x1024 -> 64x64x3 with
5x5 fractionally-strided convolutions, D mirrored (ndf 128), z 100, batch
128, Adam 2e-4 with beta1 = 0.5, BatchNorm as in the paper. ``:tiny`` shrinks
the widths and image size (for tests on tfds mock data).
"""

from zoo.gan.config import gan_base_config

# get_config's arguments (`python -m zoo.main --list` prints them); None: the default.
VARIANTS = {
    "tiny": "16x16, widths 8, 1 step (tests, on tfds mock data)",
}


def get_config(arg: str | None = None):
    c = gan_base_config("dcgan")
    c.data.update(
        dict(name="lsun/bedroom", image_size=64, channels=3, batch_size=128, eval_split="train")
    )
    c.train.update(
        dict(steps=100_000, log_every=100, sample_every=2000, eval_every=0, checkpoint_every=5000)
    )
    if arg == "tiny":
        c.net.update(dict(z_dim=8, g_base=8, d_base=8, max_channels=32, kernel_size=3))
        c.data.update(dict(image_size=16, batch_size=4))
        c.train.update(dict(steps=1, log_every=1, sample_every=1, checkpoint_every=1))
        c.train.num_samples = 4
    elif arg:
        raise ValueError(f"unknown variant {arg!r} of dcgan_lsun; known: {', '.join(VARIANTS)}")
    return c
