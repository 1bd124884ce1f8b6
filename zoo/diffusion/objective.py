"""The DDPM objective for the engine: one player (Algorithm 4.1), a sampler and bits/dim.

Config fields read (``config.model == "ddpm"``):
  data: image_size, channels, num_classes
  unet: the U-Net fields (see :func:`zoo.diffusion.unet.unet_from_config`)
  diffusion: schedule ('linear' | 'cosine'), timesteps, beta_start, beta_end
    (linear only), prediction ('eps' | 'x0' | 'v'), variance ('fixed_small' |
    'fixed_large'), sampler ('ddim' | 'ancestral'), sample_steps, ddim_eta,
    clip_denoised, class_conditional, label_dropout, guidance_scale,
    bpd_eval ('mc' | 'exact' | 'none'), bpd_chunk (optional, default 1)
  optim, train.steps, ema_decay, seed

Class conditioning uses ``batch["label"]`` and the null label ``num_classes``
for classifier-free guidance (Ho & Salimans 2022): training replaces a label
by the null label with probability ``label_dropout``; sampling with
``guidance_scale`` w > 0 uses (1 + w) f(x, y) - w f(x, null). That mix is
applied to the raw model output, which is the same as mixing eps because eps
is affine in the output for fixed (x_t, t) whatever the ``prediction``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.diffusion.ddim import ddim_sample
from zoo.diffusion.ddpm import (
    PREDICTIONS,
    VARIANCES,
    ancestral_sample,
    diffusion_loss,
    prediction_target,
    q_sample,
)
from zoo.diffusion.likelihood import exact_bpd, mc_bpd
from zoo.diffusion.schedules import Schedule, make_schedule
from zoo.engine.objective import Objective, Player
from zoo.engine.optim import make_optimizer
from zoo.engine.rng import example_keys, per_example

SAMPLERS = ("ancestral", "ddim")
BPD_EVALS = ("mc", "exact", "none")


def schedule_from_config(d) -> Schedule:
    """The :class:`Schedule` named by ``config.diffusion``."""
    kwargs = {}
    if d.schedule == "linear":
        kwargs = dict(beta_start=d.beta_start, beta_end=d.beta_end)
    return make_schedule(d.schedule, d.timesteps, **kwargs)


def _check_config(config) -> None:
    d = config.diffusion
    for field, value, choices in (
        ("prediction", d.prediction, PREDICTIONS),
        ("variance", d.variance, VARIANCES),
        ("sampler", d.sampler, SAMPLERS),
        ("bpd_eval", d.bpd_eval, BPD_EVALS),
    ):
        if value not in choices:
            raise ValueError(f"diffusion.{field}={value!r}; choose one of {choices}")
    if config.unet.get("learn_sigma", False):
        raise ValueError("the ddpm objective has fixed variances: set unet.learn_sigma=False")
    if d.class_conditional and config.data.num_classes <= 0:
        raise ValueError("diffusion.class_conditional needs data.num_classes > 0")


def _denoiser(net, labels, null_label: int, guidance_scale: float):
    """``(x [N, ...], t [N]) -> model output``, conditioned on ``labels [B]`` (tiled to N)."""
    if labels is None:
        return lambda x, t: net(x, t)

    def denoise(x, t):
        y = jnp.tile(labels, x.shape[0] // labels.shape[0])
        if guidance_scale == 0:
            return net(x, t, y)
        # One call on [conditional; unconditional] halves, then eq. 6 of Ho & Salimans.
        out = net(
            jnp.concatenate([x, x]),
            jnp.concatenate([t, t]),
            jnp.concatenate([y, jnp.full_like(y, null_label)]),
        )
        cond, uncond = jnp.split(out, 2)
        return (1.0 + guidance_scale) * cond - guidance_scale * uncond

    return denoise


def build_objective(config) -> Objective:
    """The DDPM :class:`~zoo.engine.objective.Objective` described by ``config``."""
    if config.model != "ddpm":
        raise ValueError(f"diffusion objective builds model 'ddpm', not {config.model!r}")
    _check_config(config)
    # Imported here so that the math modules load without the network.
    from zoo.diffusion.unet import unet_from_config

    d, data = config.diffusion, config.data
    sched = schedule_from_config(d)
    T = sched.num_timesteps
    conditional = bool(d.class_conditional)
    null_label = int(data.num_classes)
    label_dropout = float(d.get("label_dropout", 0.0))
    guidance = float(d.get("guidance_scale", 0.0)) if conditional else 0.0
    shape = (data.image_size, data.image_size, data.channels)
    net = unet_from_config(
        config.unet,
        image_size=data.image_size,
        channels=data.channels,
        num_classes=null_label if conditional else 0,
        rngs=nnx.Rngs(config.seed),
    )
    prediction, clip = d.prediction, bool(d.clip_denoised)
    sampler, sample_steps, eta = d.sampler, int(d.get("sample_steps", T)), float(d.ddim_eta)
    bpd_eval, bpd_chunk = d.bpd_eval, int(d.get("bpd_chunk", 1))
    bound_kwargs = dict(prediction=prediction, variance=d.variance, clip_denoised=clip)

    def loss(models, batch, ctx):
        """Algorithm 4.1 on ``batch["image"] [B, H, W, C]`` in [-1, 1]; t, eps per example."""
        model = models("model")
        x0 = batch["image"].astype(jnp.float32)

        def draw(key):
            k_t, k_eps, k_drop = jax.random.split(key, 3)
            return (
                jax.random.randint(k_t, (), 0, T),  # t ~ U{1..T} (0-based)
                jax.random.normal(k_eps, x0.shape[1:], jnp.float32),
                jax.random.uniform(k_drop),
            )

        t, eps, u = per_example(ctx, draw)
        y = None
        if conditional:
            y = jnp.where(u < label_dropout, null_label, batch["label"].astype(jnp.int32))
        xt = q_sample(sched, x0, t, eps)  # eq. 4.3
        out = model(xt, t, y, dropout_key=example_keys(ctx, "dropout"))
        value = diffusion_loss(out, prediction_target(sched, x0, eps, t, prediction))
        return value, {"loss": value}

    @functools.partial(jax.jit, static_argnums=(0, 3))
    def _sample(graphdef, state, rng, n):
        model = nnx.merge(graphdef, state)
        labels = jnp.arange(n, dtype=jnp.int32) % null_label if conditional else None
        denoise = _denoiser(model, labels, null_label, guidance)
        if sampler == "ddim":
            return ddim_sample(
                denoise,
                sched,
                rng,
                (n, *shape),
                steps=sample_steps,
                eta=eta,
                prediction=prediction,
                clip_denoised=clip,
            )
        return ancestral_sample(denoise, sched, rng, (n, *shape), **bound_kwargs)

    def sample(models, rng, n: int):
        """``n`` images ``[n, H, W, C]`` in [-1, 1]; labels ``arange(n) % num_classes``."""
        graphdef, state = nnx.split(models("model", train=False))
        return jnp.clip(_sample(graphdef, state, rng, int(n)), -1.0, 1.0)

    @functools.partial(jax.jit, static_argnums=(0,))
    def _bpd(graphdef, state, x0, labels, rng):
        denoise = _denoiser(nnx.merge(graphdef, state), labels, null_label, 0.0)
        if bpd_eval == "exact":
            return exact_bpd(denoise, sched, rng, x0, chunk=bpd_chunk, **bound_kwargs)
        return mc_bpd(denoise, sched, rng, x0, **bound_kwargs)

    def evaluate(models, batch, rng):
        """Bits/dim of the variational bound on a held-out ``batch``: ``{"bpd": scalar}``."""
        graphdef, state = nnx.split(models("model", train=False))
        x0 = batch["image"].astype(jnp.float32)
        labels = batch["label"].astype(jnp.int32) if conditional else None
        return {"bpd": jnp.mean(_bpd(graphdef, state, x0, labels, rng))}

    decay = float(config.get("ema_decay", 0.0))
    return Objective(
        modules={"model": net},
        optimizers={"model": make_optimizer(config.optim, config.train.steps)},
        players=(Player("model", "model", loss),),
        ema={"model": decay} if decay > 0 else {},
        sample=sample,
        evaluate=None if bpd_eval == "none" else evaluate,
    )
