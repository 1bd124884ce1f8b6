"""Checks of the config keys every run needs, before anything is built or compiled."""

from __future__ import annotations

REQUIRED = {
    "": ("model", "seed", "parallel", "data", "train", "optim"),
    "data": ("name", "batch_size"),
    "train": ("steps", "log_every", "checkpoint_every"),
    "optim": ("name", "lr"),
}


def check_config(config) -> None:
    """Raise ValueError naming every missing key (e.g. ``train.steps``)."""
    missing = []
    for section, keys in REQUIRED.items():
        node = config if not section else config.get(section)
        if node is None:
            continue  # reported as a missing top-level key
        missing += [f"{section}.{k}" if section else k for k in keys if k not in node]
    if missing:
        raise ValueError(f"config is missing required keys: {', '.join(missing)}")
    if int(config.train.steps) < 1:
        raise ValueError(f"train.steps must be >= 1, got {config.train.steps}")
    if int(config.data.batch_size) < 1:
        raise ValueError(f"data.batch_size must be >= 1, got {config.data.batch_size}")


def base_config():
    """Defaults of the sections every run has: train, eval, optim, data."""
    import ml_collections

    c = ml_collections.ConfigDict()
    c.model = ""
    c.seed = 0
    c.parallel = "jit"  # or "pmap": the same step under jax.pmap
    c.ema_decay = 0.0
    c.data = ml_collections.ConfigDict(
        dict(
            name="",
            batch_size=64,
            image_size=32,
            random_flip=False,
            path="",
            train_split="train",
            eval_split="test",
            num_classes=0,
        )
    )
    c.train = ml_collections.ConfigDict(
        dict(
            steps=1000,
            on_nonfinite="stop",  # or "skip"
            log_every=50,
            sample_every=0,  # 0: only at the end
            eval_every=0,
            checkpoint_every=1000,
            keep_checkpoints=3,
            async_checkpoint=True,
            num_samples=64,
        )
    )
    c.eval = ml_collections.ConfigDict(dict(batch_size=256, num_examples=0, num_samples=0))
    c.optim = ml_collections.ConfigDict(
        dict(
            name="adam",
            lr=2e-4,
            b1=0.9,
            b2=0.999,
            eps=1e-8,
            weight_decay=0.0,
            warmup_steps=0,
            schedule="constant",
            decay_steps=0,
            end_lr_factor=0.0,
            grad_clip=1.0,
            microbatches=1,
        )
    )
    return c
