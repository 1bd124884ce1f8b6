"""A small CLIP on the bundled `shapes` captions, and GLIDE's noise-aware CLIP for guidance.

    python -m zoo.main --config=configs/clip_shapes.py --workdir=runs/clip_shapes
    python -m zoo.main --config=configs/clip_shapes.py:noisy --workdir=runs/clip_shapes_noisy

A conv image tower and a 2-layer caption transformer trained with CLIP's symmetric
contrastive loss (multi-positive targets: a batch can hold a caption twice). The eval reports
`eval/image_to_caption`, the top-1 accuracy of retrieving each held-out image's caption among
all 162 captions (chance 0.6 %), `eval/caption_to_image`, and `eval/image_to_caption_t{t}` on
noised images x_t. `:noisy` trains on x_t given t (GLIDE sec. 2.4) with the diffusion schedule
of configs/glide_shapes.py, which its gradient guides (zoo.diffusion.clip_guidance). `:tiny`
and `:noisy_tiny` run in seconds (tests).

Measured with the linear schedule and one channel per GroupNorm group, both since changed
(1,000 steps on 2 CPU cores shared with another training run; 1,000 held-out images):
the default took 8.3 min and retrieves every caption (image_to_caption 1.0, caption_to_image
1.0; the loss reaches its duplicate-caption floor by step 300), but on x_t it falls to 0.54 at
t=100, 0.05 at t=300 and chance (0.006) by t=700. `:noisy` took 10.8 min: 0.66 at t=0, 0.61
at t=100, 0.25 at t=300, 0.05 at t=500; its loss (3.4) is far from the floor, so it is
undertrained at this length: raise train.steps for guidance.

With the cosine schedule and groups of 4 channels (today's `:noisy`), 3,000 steps
(`--config.train.steps=3000`, 12.1 min shared): 0.69 at t=0, 0.69 at t=100, 0.63 at t=300,
0.47 at t=500, 0.22 at t=700 (loss 1.97, flat from step 2,000). Guiding glide_shapes' run with
its caption dropped, it lifts caption match from 0.008 to 0.70 at scale 100 (README).
"""

import ml_collections

from zoo.engine.config import base_config

# get_config's arguments (`python -m zoo.main --list` prints them); None: the default.
VARIANTS = {
    "noisy": "noise-aware: trained on x_t given t, cosine schedule T=1000 (glide_shapes')",
    "tiny": "width 8, a 1-layer caption encoder, 4 steps: seconds (tests)",
    "noisy_tiny": "tiny and noise-aware, cosine schedule T=50 (glide_shapes:tiny's)",
}


def get_config(arg: str | None = None):
    if arg is not None and arg not in VARIANTS:
        raise ValueError(f"unknown variant {arg!r} of clip_shapes; known: {', '.join(VARIANTS)}")
    c = base_config()
    c.model = "clip"
    c.data.update(dict(name="shapes", image_size=16, channels=3, batch_size=128, random_flip=False))
    c.clip = ml_collections.ConfigDict(
        dict(
            embed_dim=64,
            ch=32,
            ch_mult=(1, 2, 2),
            num_res_blocks=1,
            text_dim=64,
            text_depth=2,
            text_heads=4,
            noise_aware=arg in ("noisy", "noisy_tiny"),
            min_group_size=4,  # >= 4 channels per GroupNorm group, so t survives (noisy)
            eval_timesteps=(100, 300, 500, 700, 900),
        )
    )
    # The forward process q(x_t | x_0) of the diffusion model the noise-aware CLIP guides
    # (the ddpm config's fields and defaults); the plain model uses it only for its evals.
    c.diffusion = ml_collections.ConfigDict(
        dict(schedule="cosine", timesteps=1000, beta_start=1e-4, beta_end=0.02)
    )
    c.optim.update(dict(name="adam", lr=1e-3, warmup_steps=100, schedule="cosine", grad_clip=1.0))
    c.optim.end_lr_factor = 0.1
    c.train.update(
        dict(steps=1000, log_every=100, sample_every=0, eval_every=500, checkpoint_every=500)
    )
    c.train.num_samples = 0
    c.eval.update(dict(batch_size=200, num_examples=1000, num_samples=0))
    if arg in ("tiny", "noisy_tiny"):
        c.clip.update(dict(embed_dim=16, ch=8, ch_mult=(1, 2), text_dim=16, text_depth=1))
        c.clip.text_heads = 2
        c.data.update(dict(batch_size=8, num_train=64, num_eval=16))
        c.optim.warmup_steps = 1
        c.train.update(dict(steps=4, log_every=2, eval_every=4, checkpoint_every=2))
        c.eval.update(dict(batch_size=8, num_examples=16))
    if arg == "noisy_tiny":
        c.diffusion.update(dict(schedule="cosine", timesteps=50))
        c.clip.eval_timesteps = (10, 40)
    return c
