"""unCLIP's decoder (DALL-E 2) on the bundled `shapes`: a CLIP image embedding -> 16x16 image.

    python -m zoo.main --config=configs/clip_shapes.py --workdir=runs/clip_shapes
    python -m zoo.main --config=configs/unclip_prior_shapes.py --workdir=runs/unclip_prior_shapes \
        --config.stages.clip.workdir=runs/clip_shapes
    python -m zoo.main --config=configs/unclip_decoder_shapes.py \
        --workdir=runs/unclip_decoder_shapes --config.stages.clip.workdir=runs/clip_shapes \
        --config.stages.prior.workdir=runs/unclip_prior_shapes

A pixel DDPM (the `glide_shapes` U-Net, cosine schedule and v-prediction) conditioned on the
frozen CLIP's embedding of the training image: projected into the timestep embedding and
into 4 tokens every attention block attends to; the embedding is zeroed for 10 % of the
examples (classifier-free guidance). Samples are the whole unCLIP chain: a random caption ->
an image embedding from the prior run (its own sampler settings) -> this decoder, DDIM with
50 steps; the eval's `eval/caption_match` judges them with the shapes reference classifier,
and `eval/reconstruction_cosine` / `eval/reconstruction_retrieval` judge the decoder alone
on held-out images' true embeddings. Sweep the guidance scale on a trained run with
`python experiments/evals/checkpoint_quality.py RUN --set diffusion.guidance_scale=3.0`.
`:tiny` runs in seconds (tests).
"""

import ml_collections

from zoo.diffusion.config import SHAPES_DIFFUSION, ddpm_config, make_tiny
from zoo.engine.stages import stage_entry

# The config files of the runs this one loads, by role (config.stages.<role>.workdir).
STAGES = {"clip": "clip_shapes", "prior": "unclip_prior_shapes"}

# get_config's arguments (`python -m zoo.main --list` prints them); None: the default.
VARIANTS = {
    "tiny": "a width-16 U-Net, 4 steps: seconds (tests)",
}


def get_config(arg: str | None = None):
    if arg is not None and arg not in VARIANTS:
        raise ValueError(
            f"unknown variant {arg!r} of unclip_decoder_shapes; known: {', '.join(VARIANTS)}"
        )
    c = ddpm_config()
    c.model = "unclip_decoder"
    c.stages.clip = stage_entry("model")  # the clip run trains role "model"
    c.stages.prior = stage_entry("model")  # and so does the prior run
    del c.text_encoder  # no caption reaches the decoder
    for field in ("condition", "bpd_eval", "clip_guidance_scale"):
        if field in c.diffusion:
            del c.diffusion[field]
    c.ema_decay = 0.999
    c.ema_warmup = True  # a 5,000-step EMA must forget the initial weights (zoo.engine.step)
    c.data.update(dict(name="shapes", image_size=16, channels=3, batch_size=64, random_flip=False))
    c.unet.update(dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), dropout=0.0))
    c.decoder = ml_collections.ConfigDict(dict(num_tokens=4, token_dim=64))
    c.diffusion.update(dict(SHAPES_DIFFUSION, condition_dropout=0.1, guidance_scale=1.0))
    c.optim.update(dict(lr=1e-3, warmup_steps=200, schedule="cosine", end_lr_factor=0.1))
    c.train.update(
        dict(steps=5000, log_every=100, sample_every=1000, eval_every=2500, checkpoint_every=1000)
    )
    c.train.num_samples = 64
    c.eval.update(dict(batch_size=100, num_examples=200, num_samples=500))
    if arg == "tiny":
        make_tiny(c)
        c.decoder.token_dim = 16
    return c
