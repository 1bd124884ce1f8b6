"""Defaults of the autoregressive family's configs: tokenizers (stage 1) and priors (stage 2).

Stage 1, ``model`` in ``"vqvae" | "vqgan" | "dvae" | "klvae"``
(:mod:`zoo.autoregressive.tokenizer_objective`):
  vq: the encoder/decoder widths and the codebook (``klvae``: the widths only).
  vq_loss: reconstruction, perceptual (LPIPS), adversarial terms.
  dvae: Gumbel temperature and KL-weight schedules (``dvae`` only).
  autoencoder: latent channels and KL weight (``klvae`` only: latent diffusion's stage 1,
    :mod:`zoo.nn.kl_autoencoder`).
  optim_d: what the discriminator's optimizer changes from ``optim``.

Stage 2, ``model`` in ``"transformer" | "dalle" | "parti"``
(:mod:`zoo.autoregressive.prior_objective`):
  stages.tokenizer: the stage-1 run (its role ``tokenizer``).
  prior: the transformer, its conditioning and how it samples.
"""

from __future__ import annotations

import ml_collections

from zoo.engine.config import base_config
from zoo.engine.stages import stage_entry

# Stage-1 models with codes (what a stage-2 prior can model), and all stage-1 models.
DISCRETE_TOKENIZERS = ("vqvae", "vqgan", "dvae")
TOKENIZERS = (*DISCRETE_TOKENIZERS, "klvae")
# The vq fields of the quantized tokenizers that a klvae config does not have.
CODEBOOK_FIELDS = ("z_channels", "embed_dim", "num_codes", "beta", "ema_decay", "restart_threshold")
PRIORS = ("transformer", "dalle", "parti")


def tokenizer_config(model: str) -> ml_collections.ConfigDict:
    """A tokenizer run: the paper-scale VQGAN of Esser et al. (2021) for ImageNet at 256x256
    (f = 16: ch 128, ch_mult (1, 1, 2, 2, 4), 2 residual blocks, attention at 16x16;
    codebook 1024 x 256; L1 + LPIPS + hinge PatchGAN with the adaptive weight times 0.8,
    switched on at step 250,001 in their ImageNet config; Adam 4.5e-6 x batch 12, betas (0.5, 0.9)).
    ``vqvae`` turns off the perceptual and adversarial terms and uses an L2 reconstruction
    (van den Oord et al. 2017); ``dvae`` is DALL-E's discrete VAE (8192 codes, f = 8);
    ``klvae`` is latent diffusion's KL-f8 autoencoder (Rombach et al. 2022: z = 4 latent
    channels, ch_mult (1, 2, 4, 4), no attention but the middle's, KL weight 1e-6, the
    PatchGAN from step 50,001 with the adaptive weight times 0.5)."""
    if model not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer model {model!r}; choose one of {TOKENIZERS}")
    c = base_config()
    c.model = model
    c.init.tokenizer = stage_entry("tokenizer")  # --config.init.tokenizer.workdir=RUN fine-tunes
    c.data.update(dict(name="imagenet2012", image_size=256, channels=3, batch_size=12))
    c.vq = ml_collections.ConfigDict(
        dict(
            ch=128,
            ch_mult=(1, 1, 2, 2, 4),
            num_res_blocks=2,
            attn_resolutions=(16,),
            z_channels=256,
            embed_dim=256,
            num_codes=1024,
            beta=0.25,
            ema_decay=0.0,  # > 0: EMA codebook updates instead of the codebook loss
            restart_threshold=0.0,  # > 0: restart dead codes (EMA codebooks only)
        )
    )
    c.vq_loss = ml_collections.ConfigDict(
        dict(
            reconstruction="l1",  # or "l2"
            perceptual_weight=1.0,  # LPIPS weight; needs lpips_weights
            lpips_weights="",  # an .npz from `python -m zoo.evals.lpips convert`
            disc_weight=0.8,  # 0: no discriminator
            disc_start=250_001,
            disc_loss="hinge",
            adaptive_weight=True,
            disc_channels=64,
            disc_layers=3,
            disc_norm="batch",
        )
    )
    c.optim.update(dict(name="adam", lr=4.5e-6 * 12, b1=0.5, b2=0.9, grad_clip=0.0))
    c.optim_d = ml_collections.ConfigDict()
    if model == "vqvae":
        c.vq_loss.update(dict(reconstruction="l2", perceptual_weight=0.0, disc_weight=0.0))
    if model == "dvae":
        c.vq.update(dict(ch_mult=(1, 2, 4, 4), num_codes=8192, embed_dim=256))
        c.vq_loss.update(dict(reconstruction="l2", perceptual_weight=0.0, disc_weight=0.0))
        # DALL-E: tau 1 -> 1/16 and KL weight 0 -> 6.6 (Ramesh et al. 2021, appendix A.2).
        c.dvae = ml_collections.ConfigDict(
            dict(tau_start=1.0, tau_end=1.0 / 16, tau_anneal_steps=150_000, kl_weight=6.6,
                 kl_ramp_steps=5000, hard=False, diversity_weight=0.0)
        )  # fmt: skip
        # hard: straight-through one-hot samples. diversity_weight: weight of
        # zoo.autoregressive.gumbel.diversity_gap (not in DALL-E; wav2vec 2.0's usage term).
    if model == "klvae":
        for field in CODEBOOK_FIELDS:  # the latent channels are autoencoder.z_channels
            del c.vq[field]
        c.vq.update(dict(ch_mult=(1, 2, 4, 4), attn_resolutions=()))
        c.vq_loss.update(dict(disc_weight=0.5, disc_start=50_001))
        c.autoencoder = ml_collections.ConfigDict(dict(z_channels=4, kl_weight=1e-6))
    c.train.update(dict(steps=500_000, sample_every=10_000, eval_every=10_000))
    c.train.num_samples = 16
    c.eval.update(dict(batch_size=64, num_examples=1024))
    return c


def prior_config(model: str) -> ml_collections.ConfigDict:
    """A stage-2 transformer over a tokenizer's codes (``config.stages.tokenizer``).

    ``transformer``: the taming GPT prior, unconditional or class-conditional;
    ``dalle``: caption tokens then image tokens in one decoder (Ramesh et al. 2021);
    ``parti``: a caption encoder and a decoder that cross-attends to it (Yu et al. 2022).
    """
    if model not in PRIORS:
        raise ValueError(f"unknown prior model {model!r}; choose one of {PRIORS}")
    c = base_config()
    c.model = model
    c.stages.tokenizer = stage_entry("tokenizer")
    c.init.prior = stage_entry("prior")
    c.data.update(dict(name="imagenet2012", image_size=256, channels=3, batch_size=16))
    c.prior = ml_collections.ConfigDict(
        dict(
            dim=1024,
            depth=24,
            num_heads=16,
            dropout=0.0,
            condition="class" if model == "transformer" else "text",  # or "none"
            condition_dropout=0.0,  # classifier-free guidance: drop the condition in training
            guidance_scale=1.0,  # 1: no guidance
            temperature=1.0,
            top_k=0,  # 0: all tokens
            top_p=1.0,
            text_loss_weight=0.125 if model == "dalle" else 0.0,  # DALL-E: 1/8 text, 7/8 image
            text_dim=256,  # parti's caption encoder
            text_depth=2,
            text_heads=4,
            window_grid=(0, 0),  # tokens of the sliding-window figure; (0, 0): (h, 2w)
            remat=False,  # recompute each block's activations in the backward pass
        )
    )
    c.optim.update(dict(name="adamw", lr=4.5e-6 * 16, b1=0.9, b2=0.95, weight_decay=0.01))
    c.train.update(dict(steps=500_000, sample_every=10_000, eval_every=10_000))
    c.train.num_samples = 16
    c.eval.update(dict(batch_size=64, num_examples=1024))
    return c
