"""Optimizers from a config: optax transformations with clipping and schedules.

``config.optim`` fields: name ('adam' | 'adamw' | 'sgd'), lr, b1, b2, eps,
weight_decay, warmup_steps, schedule ('constant' | 'cosine' | 'linear' |
'exponential'), decay_steps (0: the run's total steps), end_lr_factor (the
rate at the end of the decay, as a fraction of lr), grad_clip (global norm;
0 disables).
"""

from __future__ import annotations

import optax

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "linear", "exponential")


def learning_rate(cfg, total_steps: int) -> optax.Schedule:
    """Warm-up (linear from 0) then constant, cosine, linear or exponential decay."""
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"optim.schedule={cfg.schedule!r}; choose one of {SCHEDULES}")
    warmup = int(cfg.get("warmup_steps", 0))
    decay_steps = int(cfg.get("decay_steps", 0)) or max(total_steps - warmup, 1)
    end = cfg.lr * float(cfg.get("end_lr_factor", 0.0))
    if cfg.schedule == "constant":
        after = optax.constant_schedule(cfg.lr)
    elif cfg.schedule == "cosine":
        after = optax.cosine_decay_schedule(cfg.lr, decay_steps, alpha=end / cfg.lr)
    elif cfg.schedule == "linear":
        after = optax.linear_schedule(cfg.lr, end, decay_steps)
    else:  # lr * end_lr_factor ** (t / decay_steps), e.g. NeRF's 5e-4 -> 5e-5
        if end <= 0:
            raise ValueError("optim.schedule='exponential' needs optim.end_lr_factor > 0")
        after = optax.exponential_decay(cfg.lr, decay_steps, end / cfg.lr)
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, warmup), after], [warmup])


def make_optimizer(cfg, total_steps: int) -> optax.GradientTransformation:
    """The optax transformation described by ``cfg`` (a ``config.optim``)."""
    if cfg.name not in OPTIMIZERS:
        raise ValueError(f"optim.name={cfg.name!r}; choose one of {OPTIMIZERS}")
    lr = learning_rate(cfg, total_steps)
    b1, b2, eps = cfg.get("b1", 0.9), cfg.get("b2", 0.999), cfg.get("eps", 1e-8)
    if cfg.name == "adam":
        opt = optax.adam(lr, b1=b1, b2=b2, eps=eps)
    elif cfg.name == "adamw":
        opt = optax.adamw(lr, b1=b1, b2=b2, eps=eps, weight_decay=cfg.get("weight_decay", 1e-4))
    else:
        opt = optax.sgd(lr, momentum=cfg.get("momentum", None) or None)
    clip = float(cfg.get("grad_clip", 0.0))
    return optax.chain(optax.clip_by_global_norm(clip), opt) if clip > 0 else opt
