"""The paper-scale VQGAN of Esser et al. (2021) on ImageNet 256x256 (tfds `imagenet2012`).

    python -m zoo.main --config=configs/vqgan_imagenet.py --workdir=runs/vqgan_imagenet \
        --config.vq_loss.lpips_weights=lpips_vgg16.npz

f = 16 (16x16 codes), codebook 1024 x 256, L1 + LPIPS + hinge PatchGAN with the adaptive
weight times 0.8 from step 250,001; needs the ImageNet tfds data on disk and LPIPS weights
(see `configs/vqgan_shapes.py`). `:tiny` keeps the shapes of the code path at 32x32 on
`shapes` for a quick check of the pipeline.
"""

from zoo.autoregressive.config import tokenizer_config

# get_config's arguments (`python -m zoo.main --list` prints them); None: the default.
VARIANTS = {
    "tiny": "the same model family shrunk to 32x32 shapes, f = 16, 2 steps",
}


def get_config(arg: str | None = None):
    c = tokenizer_config("vqgan")
    if arg == "tiny":
        c.data.update(dict(name="shapes", image_size=32, batch_size=4, num_train=32, num_eval=8))
        c.vq.update(dict(ch=8, z_channels=8, embed_dim=8, num_codes=32, attn_resolutions=(2,)))
        c.vq_loss.update(dict(perceptual_weight=0.0, disc_start=1, disc_channels=8))
        c.train.update(dict(steps=2, log_every=1, sample_every=2, eval_every=2, checkpoint_every=2))
        c.eval.update(dict(batch_size=8, num_examples=8))
    elif arg:
        raise ValueError(f"unknown variant {arg!r} of vqgan_imagenet; known: {', '.join(VARIANTS)}")
    return c
