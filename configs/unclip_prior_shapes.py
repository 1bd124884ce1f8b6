"""unCLIP's diffusion prior (DALL-E 2) on the bundled `shapes`: caption -> CLIP image embedding.

    python -m zoo.main --config=configs/clip_shapes.py --workdir=runs/clip_shapes
    python -m zoo.main --config=configs/unclip_prior_shapes.py --workdir=runs/unclip_prior_shapes \
        --config.stages.clip.workdir=runs/clip_shapes

A 4-layer transformer (no causal mask) reads [the frozen CLIP text tower's caption token
features, the caption's CLIP text embedding, the timestep, the noised image embedding, a
learned query] and predicts the clean CLIP image embedding (x0, MSE) at the query; the
caption is dropped for 10 % of the examples (classifier-free guidance), a cosine schedule of
100 steps, DDIM with 50. The eval samples one embedding per held-out caption and reports
`eval/cosine` to the true image embedding (`eval/cosine_text`: the caption's text embedding
instead), and `eval/retrieval`, the share of sampled embeddings whose nearest of the 162
caption embeddings is their caption (`eval/retrieval_true`: the true embeddings').
`configs/unclip_decoder_shapes.py` decodes its samples. `:tiny` runs in seconds (tests).
"""

import ml_collections

from zoo.engine.config import base_config
from zoo.engine.stages import stage_entry

# The config files of the runs this one loads, by role (config.stages.<role>.workdir).
STAGES = {"clip": "clip_shapes"}

# get_config's arguments (`python -m zoo.main --list` prints them); None: the default.
VARIANTS = {
    "tiny": "width 16, 1 layer, 4 steps: seconds (tests)",
}


def get_config(arg: str | None = None):
    if arg is not None and arg not in VARIANTS:
        raise ValueError(
            f"unknown variant {arg!r} of unclip_prior_shapes; known: {', '.join(VARIANTS)}"
        )
    c = base_config()
    c.model = "unclip_prior"
    c.stages.clip = stage_entry("model")  # the clip run trains role "model"
    c.ema_decay = 0.999
    c.ema_warmup = True  # a short run's EMA must forget the initial weights (zoo.engine.step)
    c.data.update(dict(name="shapes", image_size=16, channels=3, batch_size=128, random_flip=False))
    c.prior = ml_collections.ConfigDict(dict(dim=128, depth=4, num_heads=4))
    c.diffusion = ml_collections.ConfigDict(
        dict(
            schedule="cosine",
            timesteps=100,
            prediction="x0",  # DALL-E 2: the prior predicts the clean embedding
            sampler="ddim",
            sample_steps=50,
            ddim_eta=0.0,
            variance="fixed_small",  # the ancestral sampler's
            clip_denoised=False,  # embeddings times sqrt(E), not pixels in [-1, 1]
            dynamic_threshold=0.0,
            condition_dropout=0.1,  # DALL-E 2: the caption dropped 10 % of the time
            guidance_scale=1.0,
        )
    )
    c.optim.update(dict(name="adam", lr=1e-3, warmup_steps=200, schedule="cosine", grad_clip=1.0))
    c.optim.end_lr_factor = 0.1
    c.train.update(
        dict(steps=3000, log_every=100, sample_every=0, eval_every=1000, checkpoint_every=1000)
    )
    c.train.num_samples = 0
    c.eval.update(dict(batch_size=200, num_examples=1000, num_samples=0))
    if arg == "tiny":
        c.ema_decay = 0.9
        c.prior.update(dict(dim=16, depth=1, num_heads=2))
        c.diffusion.update(dict(timesteps=20, sample_steps=5))
        c.data.update(dict(batch_size=8, num_train=64, num_eval=16))
        c.optim.warmup_steps = 1
        c.train.update(dict(steps=4, log_every=2, eval_every=4, checkpoint_every=2))
        c.eval.update(dict(batch_size=8, num_examples=16))
    return c
