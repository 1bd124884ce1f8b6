"""Imagen's cascade on the bundled `shapes` captions: 16x16 `glide_shapes` samples -> 32x32.

    python -m zoo.main --config=configs/glide_shapes.py --workdir=runs/glide_shapes
    python -m zoo.main --config=configs/imagen_sr_shapes.py --workdir=runs/imagen_sr_shapes \
        --config.stages.base.workdir=runs/glide_shapes

The super-resolution stage (Saharia et al. 2022; the cosine schedule and v-prediction, as
the base) denoises a 32x32 image given the caption and the 16x16 image upsampled and
concatenated on the channels. Training shrinks the real image and corrupts it with the
forward process at a random level up to step 500 of 1000 (noise-conditioning augmentation;
the level is an input); sampling draws the base run's samples for random captions (its own
parameters, EMA and settings), augments them at `cascade.sample_aug_t` (sweep it with
`experiments/evals/checkpoint_quality.py RUN --set cascade.sample_aug_t=...`) and
super-resolves them with dynamic thresholding. The eval's caption match is the whole
cascade's, at 32x32. `:tiny` runs in seconds.
"""

from zoo.diffusion.config import SHAPES_DIFFUSION, cascade_config, make_tiny

# The config files of the runs this one loads, by role (config.stages.<role>.workdir).
STAGES = {"base": "glide_shapes"}

# get_config's arguments (`python -m zoo.main --list` prints them); None: the default.
VARIANTS = {
    "tiny": "a width-16 U-Net and a 1-layer caption encoder, 4 steps: seconds (tests)",
}


def get_config(arg: str | None = None):
    c = cascade_config()
    c.ema_decay = 0.999
    c.ema_warmup = True  # a 5,000-step EMA must forget the initial weights (zoo.engine.step)
    c.data.update(dict(name="shapes", image_size=32, channels=3, batch_size=32, random_flip=False))
    c.cascade.update(dict(low_res=16, max_aug_t=500, sample_aug_t=100))
    c.unet.update(
        dict(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,), dropout=0.0)
    )
    c.text_encoder.update(dict(dim=64, depth=2, num_heads=4))
    c.diffusion.update(
        dict(SHAPES_DIFFUSION, condition="text", condition_dropout=0.2, guidance_scale=1.0)
    )
    c.optim.update(dict(lr=1e-3, warmup_steps=200, schedule="cosine", end_lr_factor=0.1))
    c.train.update(
        dict(steps=3000, log_every=100, sample_every=1000, eval_every=1500, checkpoint_every=1000)
    )
    c.train.num_samples = 64
    c.eval.update(dict(batch_size=100, num_examples=0, num_samples=500))
    if arg == "tiny":
        make_tiny(c)
        c.cascade.update(dict(max_aug_t=25, sample_aug_t=5))
        c.unet.update(dict(ch_mult=(1, 2), attn_resolutions=(16,)))
    elif arg:
        raise ValueError(
            f"unknown variant {arg!r} of imagen_sr_shapes; known: {', '.join(VARIANTS)}"
        )
    return c
