"""Latent diffusion's KL-f2 autoencoder on the bundled `shapes` (16x16): 8x8x4 latents.

    python -m zoo.main --config=configs/autoencoder_shapes.py --workdir=runs/autoencoder_shapes

Stage 1 of latent diffusion (Rombach et al. 2022, the KL-regularised variant): taming's
encoder/decoder (as `vqgan_shapes`) gives the mean and log-variance of a diagonal Gaussian over
8x8x4 latents (f = 2: 16x16 keeps a 2-core run short); training decodes a reparameterised
sample with an L1 reconstruction plus 1e-6 x the KL to N(0, I), the paper's weight. Held-out
PSNR, L1 and the KL are measured through the posterior mean; eval/latent_std is the latents'
standard deviation, 1 / the scale factor a latent-diffusion run would multiply them by
(`zoo.nn.kl_autoencoder.latent_scale_factor`). As `vqgan_shapes`, the default trains
without the adversarial term (on these 16x16 shapes the PatchGAN cost VQGAN PSNR and
outlines); `:gan` adds it as in the paper's KL autoencoders (hinge PatchGAN with VQGAN's
adaptive weight times 0.5), from step 1,000. The perceptual term needs LPIPS weights:

    python -m zoo.main --config=configs/autoencoder_shapes.py --workdir=runs/autoencoder_shapes \
        --config.vq_loss.lpips_weights=lpips_vgg16.npz --config.vq_loss.perceptual_weight=1.0

(`configs/vqgan_shapes.py` says how to convert the weights). `:tiny` runs in seconds.
"""

from zoo.autoregressive.config import tokenizer_config

# get_config's arguments (`python -m zoo.main --list` prints them); None: the default.
VARIANTS = {
    "gan": "the paper's hinge PatchGAN from step 1,000, adaptive weight x 0.5",
    "tiny": "width 8, the PatchGAN from step 2 (tests cover it), 4 steps: seconds",
}


def get_config(arg: str | None = None):
    c = tokenizer_config("klvae")
    c.data.update(dict(name="shapes", image_size=16, channels=3, batch_size=32))
    c.vq.update(dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,)))
    c.autoencoder.update(dict(z_channels=4, kl_weight=1e-6))
    c.vq_loss.update(dict(perceptual_weight=0.0, disc_weight=0.0))  # see the docstring
    gan = dict(disc_weight=0.5, disc_start=1000, disc_channels=32, disc_layers=2)
    c.optim.update(dict(lr=5e-4, b1=0.5, b2=0.9, warmup_steps=100))
    c.train.update(
        dict(steps=4000, log_every=100, sample_every=1000, eval_every=1000, checkpoint_every=1000)
    )
    c.eval.update(dict(batch_size=100, num_examples=500))
    if arg == "gan":
        c.vq_loss.update(gan)
    elif arg == "tiny":
        c.vq.update(dict(ch=8, attn_resolutions=()))
        c.vq_loss.update({**gan, "disc_start": 2, "disc_channels": 8})
        c.data.update(dict(batch_size=8, image_size=16, num_train=64, num_eval=16))
        c.optim.warmup_steps = 1
        c.train.update(dict(steps=4, log_every=2, sample_every=4, eval_every=4, checkpoint_every=2))
        c.eval.update(dict(batch_size=16, num_examples=16))
    elif arg:
        raise ValueError(
            f"unknown variant {arg!r} of autoencoder_shapes; known: {', '.join(VARIANTS)}"
        )
    return c
