"""GLIDE's text-driven inpainting on the bundled `shapes`: erase a region, fill it from a caption.

    python -m zoo.main --config=configs/glide_inpaint_shapes.py --workdir=runs/glide_inpaint_shapes

The `glide_shapes` model (16x16, a caption transformer trained with the U-Net, 20 % empty
captions for classifier-free guidance, DDIM with 50 steps) given two more inputs on its
channels: the image with a random region erased and the mask (GLIDE sec. 3.3). Half the
training masks are random boxes (sides 1/4 to 3/4 of the image), half the grid cell of a
random position, the region an edit of one object erases. The samples and the eval are edits:
a shape drawn for a random caption, its cell erased, and a caption at the same position with
another shape or colour asked for; `eval/caption_match` scores the edits against the target
captions (500 of them), and the pixels outside the cell are the source's, exactly. Edit your
own image (or one drawn from a caption) with a trained run:

    python experiments/edit_image.py runs/glide_inpaint_shapes \
        --source_caption "a red circle at the top left" --box 0,0,7,7 \
        --caption "a blue square at the top left" --out edited.png --num 4

`:tiny` runs in seconds.
"""

from zoo.diffusion.config import ddpm_config

# get_config's arguments (`python -m zoo.main --list` prints them); None: the default.
VARIANTS = {
    "tiny": "a width-16 U-Net and a 1-layer caption encoder, 4 steps: seconds (tests)",
}


def get_config(arg: str | None = None):
    c = ddpm_config()
    c.model = "inpaint"
    c.ema_decay = 0.999
    c.ema_warmup = True  # a 5,000-step EMA must forget the initial weights (zoo.engine.step)
    c.data.update(dict(name="shapes", image_size=16, channels=3, batch_size=64, random_flip=False))
    c.unet.update(dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), dropout=0.0))
    c.text_encoder.update(dict(dim=64, depth=2, num_heads=4))
    c.diffusion.update(
        dict(
            condition="text",
            condition_dropout=0.2,
            guidance_scale=1.0,
            sample_steps=50,
            bpd_eval="none",  # the bound of an inpainting model would need its masks
        )
    )
    c.optim.update(dict(lr=1e-3, warmup_steps=200, schedule="cosine", end_lr_factor=0.1))
    c.train.update(
        dict(steps=5000, log_every=100, sample_every=1000, eval_every=2500, checkpoint_every=1000)
    )
    c.train.num_samples = 64
    c.eval.update(dict(batch_size=100, num_examples=0, num_samples=500))
    if arg == "tiny":
        c.ema_decay = 0.9
        c.unet.update(dict(ch=16, attn_resolutions=(8,)))
        c.text_encoder.update(dict(dim=16, depth=1, num_heads=2))
        c.diffusion.update(dict(schedule="cosine", timesteps=50, sample_steps=5))
        c.data.update(dict(batch_size=8, num_train=64, num_eval=16))
        c.optim.warmup_steps = 1
        c.train.update(dict(steps=4, log_every=2, sample_every=4, eval_every=4, checkpoint_every=2))
        c.train.num_samples = 4
        c.eval.update(dict(batch_size=16, num_examples=16, num_samples=16))
    elif arg:
        raise ValueError(
            f"unknown variant {arg!r} of glide_inpaint_shapes; known: {', '.join(VARIANTS)}"
        )
    return c
