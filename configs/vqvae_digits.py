"""VQ-VAE on the bundled handwritten digits (8x8): the tokenizer under `transformer_digits`.

    python -m zoo.main --config=configs/vqvae_digits.py --workdir=runs/vqvae_digits

Stage 1 of the digits prior: 8x8 images -> 4x4 codes of a 128-entry codebook (f = 2),
EMA codebook updates and dead-code restarts, L2 reconstruction (van den Oord et al. 2017).
Logs codebook usage and perplexity; evaluates held-out PSNR and writes reconstructions to
`runs/vqvae_digits/samples/reconstructions_*.png`. `:tiny` runs in seconds.
"""

from zoo.autoregressive.config import tokenizer_config

# get_config's arguments (`python -m zoo.main --list` prints them); None: the default.
VARIANTS = {
    "tiny": "width 8, 16 codes, 4 steps: seconds (tests, notebooks)",
}


def get_config(arg: str | None = None):
    c = tokenizer_config("vqvae")
    c.data.update(dict(name="digits", image_size=8, channels=1, batch_size=64, num_classes=10))
    c.vq.update(
        dict(
            ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), z_channels=32,
            embed_dim=16, num_codes=128, ema_decay=0.99, restart_threshold=0.03,
        )
    )  # fmt: skip
    c.optim.update(dict(lr=1e-3, b1=0.9, b2=0.999, warmup_steps=100, schedule="cosine"))
    c.train.update(
        dict(steps=3000, log_every=100, sample_every=1000, eval_every=1000, checkpoint_every=1000)
    )
    c.eval.update(dict(batch_size=297, num_examples=0))
    if arg == "tiny":
        c.vq.update(dict(ch=8, z_channels=8, embed_dim=4, num_codes=16))
        c.data.batch_size = 16
        c.optim.warmup_steps = 1
        c.train.update(dict(steps=4, log_every=2, sample_every=4, eval_every=4, checkpoint_every=2))
        c.eval.update(dict(batch_size=64, num_examples=64))
    elif arg:
        raise ValueError(f"unknown variant {arg!r} of vqvae_digits; known: {', '.join(VARIANTS)}")
    return c
