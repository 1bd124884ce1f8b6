"""Stable Diffusion 1.x (Rombach et al. 2022): its 860 M U-Net, its VAE, to load diffusers weights.

    python -m zoo.diffusion.diffusers_weights stable-diffusion-v1-5   # checks a download
    python -m zoo.main --config=configs/sd_v1.py:tiny --workdir=/tmp/sd_tiny   # 2-5 min on CPU

The default variant holds SD 1.x's architecture and numbers, as in diffusers'
UNet2DConditionModel / AutoencoderKL configs: the U-Net (ch 320, ch_mult (1, 2, 4, 4),
2 res blocks, spatial transformers with 8 heads at the 64, 32, 16 latent levels and the
middle, cross-attention to 768-wide CLIP ViT-L/14 tokens, GroupNorm eps 1e-5, timestep
embedding cos-first with freq_shift 0: 859,520,964 parameters), the KL-f8 VAE (83,653,863
parameters, encoder padding (0, 1)), the scaled-linear schedule (betas 0.00085..0.012,
T = 1000) and the latent scale factor 0.18215. `zoo.diffusion.diffusers_weights` builds the
U-Net and VAE from it and fills them with a diffusers model folder's weights
(`load_stable_diffusion`); the CLIP text features are the caller's.

Training the default would need what the zoo does not have yet: the latent objective ("ldm")
taking its autoencoder from `autoencoder` here (or from diffusers weights) rather than from a
klvae run, a frozen CLIP text encoder for `text_encoder`, and a captioned image dataset
(`python -m zoo.main --config=configs/sd_v1.py` stops with the reason). Until then `model` is
"ddpm" and `:tiny` is the same U-Net structure at width 32 (so GroupNorm has SD's 32 groups),
trained by the pixel-space DDPM objective on the bundled `shapes` captions, with the GLIDE
caption transformer (16 wide) in place of CLIP, so the structure is exercised end to end;
its `autoencoder` (SD's VAE at width 32) is what the converter's tests load.
"""

import ml_collections

from zoo.diffusion.config import ddpm_config

# get_config's arguments (`python -m zoo.main --list` prints them); None: the default.
VARIANTS = {
    "tiny": "SD's U-Net and VAE structure at width 32 on 16x16 shapes, 4 steps: minutes (compile)",
}


def get_config(arg: str | None = None):
    c = ddpm_config()
    c.model = "ddpm"  # "ldm" once the latent objective can read the fields below (docstring)
    c.ema_decay = 0.9999
    # SD 1.x trained on LAION-2B(en) subsets at 512x512; no such source in the zoo.
    c.data.update(
        dict(
            name="laion_aesthetics", image_size=512, channels=3, batch_size=2048, random_flip=False
        )
    )
    c.unet.update(
        dict(
            ch=320,
            ch_mult=(1, 2, 4, 4),
            num_res_blocks=2,
            attn_resolutions=(64, 32, 16),  # latent sides: no attention at 8x8
            mid_attention=True,
            dropout=0.0,
            num_heads=8,  # diffusers' attention_head_dim=8 is the head count
            attention="dot_product",  # 4096 tokens at 64x64: cuDNN flash on GPU in bf16
            attention_block="spatial_transformer",
            transformer_depth=1,
            linear_projection=False,  # SD 2.x: True
            pooled_context=False,
            norm_eps=1e-5,
            min_group_size=1,  # diffusers' norm_num_groups=32 at every width (:tiny's 32 too)
            flip_sin_to_cos=True,
            freq_shift=0.0,
        )
    )
    # The context: CLIP ViT-L/14's text transformer, its last hidden states [B, 77, 768].
    c.text_encoder.update(dict(name="clip_vit_l14", dim=768, depth=12, num_heads=12, max_len=77))
    c.autoencoder = ml_collections.ConfigDict(
        dict(
            channels=3,
            image_size=512,
            ch=128,
            ch_mult=(1, 2, 4, 4),
            num_res_blocks=2,
            attn_resolutions=(),  # attention only in the middle
            z_channels=4,
            downsample_pad=(0, 1),
        )
    )
    c.latent = ml_collections.ConfigDict(dict(scale_factor=0.18215))
    c.diffusion.update(
        dict(
            schedule="scaled_linear",
            timesteps=1000,
            beta_start=0.00085,
            beta_end=0.012,
            prediction="eps",
            sampler="ddim",
            sample_steps=50,
            clip_denoised=False,  # latents are unbounded
            condition="text",
            condition_dropout=0.1,
            guidance_scale=7.5,
            bpd_eval="none",
        )
    )
    c.optim.update(dict(name="adamw", lr=1e-4, warmup_steps=10_000, weight_decay=1e-2))
    if arg == "tiny":
        c.ema_decay = 0.9
        c.data.update(
            dict(name="shapes", image_size=16, channels=3, batch_size=8, num_train=64, num_eval=16)
        )
        # 16x16 inputs, as SD's 64x64 latents at 1/4 scale: attention at 16, 8, 4, not 2.
        c.unet.update(dict(ch=32, attn_resolutions=(16, 8, 4), attention="full"))
        c.text_encoder.update(dict(name="glide", dim=16, depth=1, num_heads=2, max_len=0))
        # 128x128 images -> 16x16x4 latents, the tiny U-Net's input size.
        c.autoencoder.update(dict(ch=32, image_size=128))
        c.diffusion.update(dict(sample_steps=5, guidance_scale=3.0))
        c.optim.warmup_steps = 1
        c.train.update(
            dict(
                steps=4,
                log_every=2,
                sample_every=4,
                eval_every=0,
                checkpoint_every=2,
                num_samples=4,
            )
        )
        c.eval.update(dict(batch_size=16, num_examples=0, num_samples=0))
    elif arg:
        raise ValueError(f"unknown variant {arg!r} of sd_v1; known: {', '.join(VARIANTS)}")
    return c
