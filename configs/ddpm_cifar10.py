"""DDPM on CIFAR-10 (Ho et al. 2020): the paper's 35.7 M-parameter U-Net, read from tfds.

    python -m zoo.main --config=configs/ddpm_cifar10.py --workdir=runs/ddpm_cifar10
    python -m zoo.main --config=configs/ddpm_cifar10.py:tiny --workdir=/tmp/tiny   # seconds

Needs tfds `cifar10` prepared as array_record in `--config.data.path` (the tfds
data_dir); nothing is downloaded at run time. `tiny` runs on tfds mock data in
the tests.
"""

from zoo.diffusion.config import ddpm_config

# get_config's arguments (`python -m zoo.main --list` prints them); None: the default.
VARIANTS = {
    "tiny": "a width-16 two-level U-Net, 4 steps (tests, on tfds mock data)",
}


def get_config(arg: str | None = None):
    c = ddpm_config()
    if arg == "tiny":
        c.data.batch_size = 8
        c.unet.update(dict(ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(16,)))
        c.diffusion.update(dict(schedule="cosine", timesteps=50, sample_steps=5))
        c.optim.warmup_steps = 2
        c.train.update(
            dict(
                steps=4,
                log_every=2,
                sample_every=4,
                eval_every=4,
                checkpoint_every=2,
                num_samples=4,
            )
        )
        c.eval.update(dict(batch_size=8, num_examples=16))
    elif arg:
        raise ValueError(f"unknown variant {arg!r} of ddpm_cifar10; known: {', '.join(VARIANTS)}")
    return c
