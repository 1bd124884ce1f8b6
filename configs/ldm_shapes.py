"""Latent diffusion on the bundled `shapes` captions, on the `autoencoder_shapes` latents.

    python -m zoo.main --config=configs/autoencoder_shapes.py --workdir=runs/autoencoder_shapes
    python -m zoo.main --config=configs/ldm_shapes.py --workdir=runs/ldm_shapes \
        --config.stages.autoencoder.workdir=runs/autoencoder_shapes

Stable Diffusion's recipe at toy scale (Rombach et al. 2022): the frozen KL autoencoder
encodes each 16x16 image to 8x8x4 latents, scaled to unit variance by a factor measured on
the first batch; a caption-conditioned U-Net (the `glide_shapes` text transformer and
attention to the caption tokens) denoises them, with the caption dropped for 20 % of the
examples for classifier-free guidance, on the cosine schedule with v-prediction as
`glide_shapes`; DDIM samples are decoded by the autoencoder. Reports
eval/caption_match as `glide_shapes`, which is the same model in pixel space. `:tiny` runs
in seconds.
"""

from zoo.diffusion.config import SHAPES_DIFFUSION, ldm_config, make_tiny

# The config files of the runs this one loads, by role (config.stages.<role>.workdir).
STAGES = {"autoencoder": "autoencoder_shapes"}

# get_config's arguments (`python -m zoo.main --list` prints them); None: the default.
VARIANTS = {
    "tiny": "a width-16 U-Net and a 1-layer caption encoder, 4 steps: seconds (tests)",
}


def get_config(arg: str | None = None):
    c = ldm_config()
    c.ema_decay = 0.999
    c.ema_warmup = True  # a 4,000-step EMA must forget the initial weights (zoo.engine.step)
    c.data.update(dict(name="shapes", image_size=16, channels=3, batch_size=64, random_flip=False))
    c.unet.update(
        dict(ch=64, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8, 4), dropout=0.0)
    )
    c.text_encoder.update(dict(dim=64, depth=2, num_heads=4))
    c.diffusion.update(
        dict(SHAPES_DIFFUSION, condition="text", condition_dropout=0.2, guidance_scale=1.0)
    )
    c.optim.update(dict(lr=1e-3, warmup_steps=200, schedule="cosine", end_lr_factor=0.1))
    c.train.update(
        dict(steps=4000, log_every=100, sample_every=1000, eval_every=2000, checkpoint_every=1000)
    )
    c.train.num_samples = 64
    c.eval.update(dict(batch_size=100, num_examples=0, num_samples=500))
    if arg == "tiny":
        make_tiny(c)
        c.unet.attn_resolutions = (4,)
    elif arg:
        raise ValueError(f"unknown variant {arg!r} of ldm_shapes; known: {', '.join(VARIANTS)}")
    return c
