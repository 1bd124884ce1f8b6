"""GLIDE on the bundled `shapes`: a caption-conditioned DDPM with classifier-free guidance.

    python -m zoo.main --config=configs/glide_shapes.py --workdir=runs/glide_shapes

16x16 images from their captions ("a red circle at the top left"): a small caption
transformer trained with the U-Net (its pooled feature joins the timestep embedding, its
tokens are appended to the keys of every attention block), the caption replaced by the
empty one for 20 % of the examples (GLIDE), the cosine schedule with v-prediction, DDIM
with 50 steps. The eval reports
`eval/caption_match` of 500 samples, judged by the shapes reference classifier; sweep the
guidance scale on a trained run with

    python experiments/evals/checkpoint_quality.py runs/glide_shapes \
        --set diffusion.guidance_scale=3.0

(1 is the plain conditional model, 0 the unconditional one), or guide it with a noise-aware
CLIP run (configs/clip_shapes.py:noisy) with `--clip_run runs/clip_shapes_noisy
--clip_guidance 100`. `:tiny` runs in seconds.
"""

from zoo.diffusion.config import SHAPES_DIFFUSION, ddpm_config, make_tiny

# get_config's arguments (`python -m zoo.main --list` prints them); None: the default.
VARIANTS = {
    "tiny": "a width-16 U-Net and a 1-layer caption encoder, 4 steps: seconds (tests)",
}


def get_config(arg: str | None = None):
    c = ddpm_config()
    c.ema_decay = 0.999
    c.ema_warmup = True  # a 5,000-step EMA must forget the initial weights (zoo.engine.step)
    c.data.update(dict(name="shapes", image_size=16, channels=3, batch_size=64, random_flip=False))
    c.unet.update(dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), dropout=0.0))
    c.text_encoder.update(dict(dim=64, depth=2, num_heads=4))
    c.diffusion.update(
        dict(SHAPES_DIFFUSION, condition="text", condition_dropout=0.2, guidance_scale=1.0)
    )
    c.optim.update(dict(lr=1e-3, warmup_steps=200, schedule="cosine", end_lr_factor=0.1))
    c.train.update(
        dict(steps=6000, log_every=100, sample_every=1000, eval_every=2000, checkpoint_every=1000)
    )
    c.train.num_samples = 64
    c.eval.update(dict(batch_size=100, num_examples=0, num_samples=500))
    if arg == "tiny":
        make_tiny(c)
    elif arg:
        raise ValueError(f"unknown variant {arg!r} of glide_shapes; known: {', '.join(VARIANTS)}")
    return c
