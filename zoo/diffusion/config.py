"""Default DDPM config: the CIFAR-10 model of Ho et al. (2020), overridden per experiment."""

from __future__ import annotations

import ml_collections

from zoo.engine.config import base_config
from zoo.engine.stages import stage_entry


def ddpm_config() -> ml_collections.ConfigDict:
    """U-Net ch 128, mults (1,2,2,2), 2 res blocks, attention at 16x16, dropout 0.1;
    T=1000 linear betas 1e-4..0.02; Adam 2e-4, warm-up 5000, grad clip 1, EMA 0.9999."""
    c = base_config()
    c.model = "ddpm"
    c.init.model = stage_entry("model")  # --config.init.model.workdir=RUN fine-tunes RUN
    # A noise-aware CLIP run (configs/clip_shapes.py:noisy) for CLIP guidance; unused while
    # its workdir is empty.
    c.stages.clip = stage_entry("model")
    c.ema_decay = 0.9999
    c.data.update(dict(name="cifar10", image_size=32, channels=3, batch_size=128, random_flip=True))
    c.unet = ml_collections.ConfigDict(
        dict(
            ch=128,
            ch_mult=(1, 2, 2, 2),
            num_res_blocks=2,
            attn_resolutions=(16,),
            mid_attention=True,
            dropout=0.1,
            num_heads=1,
            attention="full",
            attention_chunk=64,
            # >= 4 channels per GroupNorm group: with one channel per group (DDPM's 32
            # groups at width <= 32) the norm erases the timestep embedding (zoo.nn.blocks)
            min_group_size=4,
            # True: recompute each residual and attention block's activations in the
            # backward pass instead of storing them (less memory, about a third more compute)
            remat=False,
        )
    )
    c.diffusion = ml_collections.ConfigDict(
        dict(
            schedule="linear",
            timesteps=1000,
            beta_start=1e-4,
            beta_end=0.02,
            prediction="eps",
            variance="fixed_large",
            sampler="ddim",  # "ancestral" | "ddim" | "dpm_solver_pp" (2M)
            sample_steps=100,
            ddim_eta=0.0,
            clip_denoised=True,
            dynamic_threshold=0.0,  # Imagen: 0.995 (the percentile; replaces the clip)
            condition="none",  # "class" | "text": classifier-free guidance needs one
            condition_dropout=0.0,  # GLIDE: 0.2 (captions replaced by the empty one)
            guidance_scale=1.0,  # 1: the conditional model; 0: the unconditional one
            clip_guidance_scale=0.0,  # GLIDE's CLIP guidance: > 0 with stages.clip, ancestral
            bpd_eval="mc",
        )
    )
    # condition="text" only: the caption transformer trained with the U-Net (GLIDE).
    c.text_encoder = ml_collections.ConfigDict(dict(dim=64, depth=2, num_heads=4, dropout=0.0))
    c.optim.update(dict(name="adam", lr=2e-4, warmup_steps=5000, grad_clip=1.0))
    c.train.update(
        dict(
            steps=800_000,
            log_every=100,
            sample_every=10_000,
            eval_every=10_000,
            checkpoint_every=10_000,
        )
    )
    c.eval.update(dict(batch_size=256, num_examples=1024))
    return c


# The diffusion settings of the 16x16 (and 32x32) ``shapes`` configs: the cosine schedule and
# v-prediction (Salimans & Ho 2022), DDIM with 50 steps. At these sizes DDPM's linear betas
# leave little signal for most of the chain: glide_shapes' caption match of 500 samples was
# 0.56 at step 2,000 with these, 0.006 at step 2,500 with linear betas and eps-prediction.
SHAPES_DIFFUSION = dict(schedule="cosine", prediction="v", sample_steps=50)


def make_tiny(c: ml_collections.ConfigDict) -> None:
    """Turns a ``shapes`` diffusion config into its ``:tiny`` variant, in place: a width-16
    U-Net and a 1-layer, 16-wide caption encoder, 50 cosine steps sampled in 5, batches of 8
    of 64 images, 4 train steps that log, sample, evaluate and checkpoint: seconds (tests).
    The configs then set what differs (attention resolutions, their own sections)."""
    c.ema_decay = 0.9
    c.unet.ch = 16
    if "text_encoder" in c:  # the caption models' (unCLIP's decoder reads no caption)
        c.text_encoder.update(dict(dim=16, depth=1, num_heads=2))
    c.diffusion.update(dict(schedule="cosine", timesteps=50, sample_steps=5))
    c.data.update(dict(batch_size=8, num_train=64, num_eval=16))
    c.optim.warmup_steps = 1
    c.train.update(dict(steps=4, log_every=2, sample_every=4, eval_every=4, checkpoint_every=2))
    c.train.num_samples = 4
    c.eval.update(dict(batch_size=16, num_examples=16, num_samples=16))


def ldm_config() -> ml_collections.ConfigDict:
    """Latent diffusion (``model = "ldm"``): the DDPM config on the latents of the KL
    autoencoder run in ``config.stages.autoencoder``; ``latent.scale_factor`` 0 measures it
    on the first batch (SD 1.x fixes 0.18215). Latents are unbounded and have no pixel
    likelihood, so no clipping and no bits/dim."""
    c = ddpm_config()
    c.model = "ldm"
    c.stages.autoencoder = stage_entry("tokenizer")  # the klvae run trains role "tokenizer"
    c.latent = ml_collections.ConfigDict(dict(scale_factor=0.0))
    c.diffusion.update(dict(clip_denoised=False, bpd_eval="none"))
    return c


def cascade_config() -> ml_collections.ConfigDict:
    """Imagen's super-resolution stage (``model = "imagen_sr"``) over the base run in
    ``config.stages.base``: ``cascade.low_res`` (the base's image size), the largest training
    augmentation level ``max_aug_t`` and the level ``sample_aug_t`` used at sampling (steps of
    this run's schedule); dynamic thresholding at 0.995 (Saharia et al. 2022)."""
    c = ddpm_config()
    c.model = "imagen_sr"
    c.stages.base = stage_entry("model")
    c.cascade = ml_collections.ConfigDict(dict(low_res=64, max_aug_t=500, sample_aug_t=100))
    c.diffusion.update(dict(dynamic_threshold=0.995, bpd_eval="none"))
    return c
