"""A class-conditional transformer prior over the `vqvae_digits` codes (taming transformers).

    python -m zoo.main --config=configs/vqvae_digits.py --workdir=runs/vqvae_digits
    python -m zoo.main --config=configs/transformer_digits.py --workdir=runs/transformer_digits \
        --config.stages.tokenizer.workdir=runs/vqvae_digits

Stage 2: the frozen VQ-VAE encodes each batch to 4x4 codes; a GPT over [class, 16 codes]
learns them (cross-entropy, nats per token). Reports held-out NLL (eval/nll) and the digits
Fréchet distance of decoded samples (eval/fd); writes samples and a sliding-window figure
(4x8 tokens sampled with the 4x4 training window: 8x16 pixels). `:tiny` runs in seconds.
"""

from zoo.autoregressive.config import prior_config

# The config files of the runs this one loads, by role (config.stages.<role>.workdir).
STAGES = {"tokenizer": "vqvae_digits"}

# get_config's arguments (`python -m zoo.main --list` prints them); None: the default.
VARIANTS = {
    "tiny": "width 16, 1 layer, 4 steps: seconds (tests, notebooks)",
}


def get_config(arg: str | None = None):
    c = prior_config("transformer")
    c.data.update(dict(name="digits", image_size=8, channels=1, batch_size=64, num_classes=10))
    # ~1,500 training digits of 16 tokens each: a small, strongly regularised GPT (a width-128,
    # 4-layer one with dropout 0.1 reached train NLL 0.39 and held-out 7.8 nats/token).
    c.prior.update(dict(dim=64, depth=3, num_heads=4, dropout=0.3, condition="class"))
    c.optim.update(
        dict(lr=1e-3, warmup_steps=200, schedule="cosine", end_lr_factor=0.1, weight_decay=0.1)
    )
    c.train.update(
        dict(steps=3000, log_every=100, sample_every=1000, eval_every=500, checkpoint_every=1000)
    )
    c.train.num_samples = 100
    c.eval.update(dict(batch_size=297, num_examples=0, num_samples=500))
    if arg == "tiny":
        c.prior.update(dict(dim=16, depth=1, num_heads=2))
        c.data.batch_size = 16
        c.optim.warmup_steps = 1
        c.train.update(dict(steps=4, log_every=2, sample_every=4, eval_every=4, checkpoint_every=2))
        c.train.num_samples = 16
        c.eval.update(dict(batch_size=64, num_examples=64, num_samples=64))
    elif arg:
        raise ValueError(
            f"unknown variant {arg!r} of transformer_digits; known: {', '.join(VARIANTS)}"
        )
    return c
