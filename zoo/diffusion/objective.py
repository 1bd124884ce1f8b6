"""The DDPM objective for the engine: one player (Algorithm 4.1), a sampler and bits/dim.

Config fields read (``config.model`` in ``"ddpm" | "ldm" | "imagen_sr" | "inpaint"``):
  data: image_size, channels, num_classes
  unet: the U-Net fields (see :func:`zoo.diffusion.unet.unet_from_config`)
  diffusion: schedule ('linear' | 'cosine'), timesteps, beta_start, beta_end
    (linear only), prediction ('eps' | 'x0' | 'v'), variance ('fixed_small' |
    'fixed_large'), sampler ('ddim' | 'ancestral' | 'dpm_solver_pp'), sample_steps, ddim_eta,
    clip_denoised, dynamic_threshold (Imagen's percentile; 0 = off), condition ('none' |
    'class' | 'text'), condition_dropout, guidance_scale, bpd_eval ('mc' | 'exact' |
    'none'), bpd_chunk (optional, default 1), clip_guidance_scale (0 = off; > 0 needs
    the ancestral sampler and a CLIP run in stages.clip, :mod:`zoo.diffusion.clip_guidance`)
  text_encoder (condition 'text'): dim, depth, num_heads, dropout
  ldm: stages.autoencoder (a klvae run), latent.scale_factor (:mod:`zoo.diffusion.latent`)
  imagen_sr: stages.base (the base run), cascade.low_res, max_aug_t, sample_aug_t
    (:mod:`zoo.diffusion.cascade`)
  inpaint: condition 'text' on shapes, bpd_eval 'none' (:mod:`zoo.diffusion.inpaint`)
  optim, train.steps, ema_decay, seed

Conditioning: ``'class'`` reads ``batch["label"]`` (the null condition is the label
``num_classes``); ``'text'`` reads the caption ids ``batch["tokens"]`` of ``shapes`` into a
:class:`~zoo.diffusion.text_unet.TextUNet` (the null condition is the empty caption, all
padding), as GLIDE does. Classifier-free guidance (Ho & Salimans 2022; GLIDE eq. 4):
training replaces the condition by the null one with probability ``condition_dropout``;
sampling uses ``f(x, null) + s (f(x, c) - f(x, null))`` with ``s = guidance_scale``: 1 is
the plain conditional model, 0 the unconditional one. The mix is applied to the raw model
output, which is the same as mixing eps because eps is affine in the output for fixed
(x_t, t) whatever the ``prediction``. Text-conditioned samples carry the attributes of their
captions, so a ``shapes`` run reports caption match (:mod:`zoo.evals.sample_metrics`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.diffusion import inpaint as inpainting
from zoo.diffusion.cascade import SuperResolution, base_config_of, degrade, upsample
from zoo.diffusion.ddpm import (
    PREDICTIONS,
    VARIANCES,
    diffusion_loss,
    prediction_target,
    q_sample,
)
from zoo.diffusion.latent import LatentDenoiser, autoencoder_of
from zoo.diffusion.likelihood import exact_bpd, mc_bpd
from zoo.diffusion.sampling import SAMPLERS, check_sample_steps, guided_denoiser
from zoo.diffusion.sampling import sample as run_sampler
from zoo.diffusion.schedules import Schedule, make_schedule
from zoo.diffusion.thresholding import check_dynamic_threshold
from zoo.engine.objective import Objective, one_player
from zoo.engine.rng import example_keys, per_example

# ldm: the same objective on a frozen autoencoder's latents; imagen_sr: a cascade's
# super-resolution stage (zoo.diffusion.cascade); inpaint: GLIDE's text-driven inpainting
# (zoo.diffusion.inpaint)
MODELS = ("ddpm", "ldm", "imagen_sr", "inpaint")
CONDITIONS = ("none", "class", "text")
BPD_EVALS = ("mc", "exact", "none")


def schedule_from_config(d) -> Schedule:
    """The :class:`Schedule` named by ``config.diffusion``."""
    kwargs = {}
    if d.schedule in ("linear", "scaled_linear"):
        kwargs = dict(beta_start=d.beta_start, beta_end=d.beta_end)
    return make_schedule(d.schedule, d.timesteps, **kwargs)


def denoising_loss(sched: Schedule, prediction: str, x0: jax.Array, ctx, apply):
    """Algorithm 4.1's loss on clean ``x0 [B, ...]``: per example t ~ U{1..T}, eps ~ N(0, I)
    and u ~ U[0, 1) (condition dropout keeps the condition where ``u >= p``);
    ``apply(x_t, t, u) -> output`` runs the network on x_t (eq. 4.3); the mean squared error
    to the ``prediction`` target (a scalar) and u ``[B]``."""

    def draw(key):
        k_t, k_eps, k_drop = jax.random.split(key, 3)
        return (
            jax.random.randint(k_t, (), 0, sched.num_timesteps),  # t ~ U{1..T} (0-based)
            jax.random.normal(k_eps, x0.shape[1:], jnp.float32),
            jax.random.uniform(k_drop),
        )

    t, eps, u = per_example(ctx, draw)
    out = apply(q_sample(sched, x0, t, eps), t, u)
    return diffusion_loss(out, prediction_target(sched, x0, eps, t, prediction)), u


def check_choices(d, **choices) -> None:
    """ValueErrors naming the bad field of ``config.diffusion`` ``d``: ``choices`` maps each
    field to its allowed values; also the fields every diffusion model reads (a
    ``condition_dropout`` in [0, 1), a valid ``dynamic_threshold``, ``sample_steps`` the
    sampler can take), before anything compiles."""
    for field, allowed in choices.items():
        if d[field] not in allowed:
            raise ValueError(f"diffusion.{field}={d[field]!r}; choose one of {tuple(allowed)}")
    check_dynamic_threshold(float(d.get("dynamic_threshold", 0.0)))
    if not 0.0 <= float(d.condition_dropout) < 1.0:
        raise ValueError(
            f"diffusion.condition_dropout must lie in [0, 1), got {d.condition_dropout}"
        )
    check_sample_steps(d.sampler, int(d.get("sample_steps", d.timesteps)), int(d.timesteps))


def _check_config(config) -> None:
    d = config.diffusion
    check_choices(
        d,
        prediction=PREDICTIONS,
        variance=VARIANCES,
        sampler=SAMPLERS,
        bpd_eval=BPD_EVALS,
        condition=CONDITIONS,
    )
    if config.unet.get("learn_sigma", False):
        raise ValueError("the ddpm objective has fixed variances: set unet.learn_sigma=False")
    if d.condition == "class" and config.data.num_classes <= 0:
        raise ValueError("diffusion.condition='class' needs data.num_classes > 0")
    if d.condition == "text" and config.data.name != "shapes":
        raise ValueError(
            "diffusion.condition='text' reads captions: only data.name='shapes' has them"
        )
    if config.model == "ldm" and (
        d.clip_denoised or float(d.get("dynamic_threshold", 0.0)) or d.bpd_eval != "none"
    ):
        raise ValueError(
            "latent diffusion (model 'ldm') diffuses unbounded latents and has no pixel "
            "likelihood: set diffusion.clip_denoised=False, dynamic_threshold=0, bpd_eval='none'"
        )
    if config.model == "imagen_sr":
        _check_cascade(config)
    if config.model == "inpaint":
        inpainting.check_config(config)
    if d.condition == "none" and float(d.guidance_scale) != 1.0:
        raise ValueError("diffusion.guidance_scale != 1 needs a condition ('class' or 'text')")
    _check_clip_guidance(config)


def _check_clip_guidance(config) -> None:
    d = config.diffusion
    scale = float(d.get("clip_guidance_scale", 0.0))
    named = bool(config.get("stages", {}).get("clip", {}).get("workdir", ""))
    if scale < 0:
        raise ValueError(f"diffusion.clip_guidance_scale must be >= 0, got {scale}")
    if named and scale == 0:
        raise ValueError(
            "config.stages.clip names a CLIP run but diffusion.clip_guidance_scale is 0: "
            "set it > 0 to guide with that CLIP, or leave config.stages.clip.workdir empty"
        )
    if scale == 0:
        return
    if config.model != "ddpm" or d.condition != "text":
        raise ValueError(
            "CLIP guidance (diffusion.clip_guidance_scale > 0) steers a pixel-space caption "
            "model: model 'ddpm' with diffusion.condition='text'"
        )
    if d.sampler != "ancestral":
        raise ValueError(
            "CLIP guidance shifts the mean of each ancestral step by its variance: set "
            f"diffusion.sampler='ancestral' (got {d.sampler!r})"
        )


def _check_cascade(config) -> None:
    c, T, size = config.cascade, int(config.diffusion.timesteps), int(config.data.image_size)
    if not 1 <= int(c.low_res) < size:
        raise ValueError(f"cascade.low_res={c.low_res} must lie in [1, data.image_size={size})")
    for field in ("max_aug_t", "sample_aug_t"):
        if not 0 <= int(c[field]) < T:
            raise ValueError(f"cascade.{field}={c[field]} must be a step in [0, T={T})")
    if config.diffusion.bpd_eval != "none":
        raise ValueError("a super-resolution stage has no bits/dim eval: diffusion.bpd_eval='none'")


def denoiser_from_config(config, *, size: int, channels: int, in_channels: int | None = None):
    """The network ``config`` conditions as it says: a U-Net (class labels or none) or a
    caption U-Net, for ``[B, size, size, in_channels]`` inputs (default ``channels``) and
    ``channels`` outputs."""
    # Imported here so that the math modules load without the network.
    from zoo.diffusion.unet import unet_from_config

    rngs = nnx.Rngs(config.seed)
    sizes = dict(image_size=size, channels=channels, in_channels=in_channels or channels)
    if config.diffusion.condition == "text":
        from zoo.data import shapes
        from zoo.diffusion.text_unet import text_unet_from_config

        return text_unet_from_config(
            config,
            vocab_size=shapes.SHAPES_TOKENIZER.vocab_size,
            max_len=shapes.SHAPES_MAX_LEN,
            rngs=rngs,
            **sizes,
        )
    classes = int(config.data.num_classes) if config.diffusion.condition == "class" else 0
    return unet_from_config(config.unet, num_classes=classes, rngs=rngs, **sizes)


def build_objective(config) -> Objective:
    """The DDPM :class:`~zoo.engine.objective.Objective` described by ``config``."""
    if config.model not in MODELS:
        raise ValueError(f"diffusion objective builds {MODELS}, not {config.model!r}")
    _check_config(config)
    d, data = config.diffusion, config.data
    sched = schedule_from_config(d)
    condition = str(d.condition)
    drop_p = float(d.condition_dropout)
    guidance = float(d.guidance_scale)
    latent = config.model == "ldm"
    frozen = {}
    if latent:  # the U-Net works on the frozen autoencoder's latents
        autoencoder, _ = autoencoder_of(config)
        frozen["autoencoder"] = autoencoder
        size, channels = data.image_size // autoencoder.factor, autoencoder.z_channels
    else:
        size, channels = data.image_size, data.channels
    shape = (size, size, channels)
    if condition == "text":
        from zoo.data import shapes

        table_tokens, table_attributes = (jnp.asarray(a) for a in shapes.caption_table())
        num_captions = int(table_tokens.shape[0])
    sr = config.model == "imagen_sr"
    in_channels = 2 * channels if sr else channels  # SR: the low-res image on the channels
    edit = config.model == "inpaint"
    if edit:  # GLIDE: the known image and the mask on the channels
        in_channels = 2 * channels + 1
    net = denoiser_from_config(config, size=size, channels=channels, in_channels=in_channels)
    if edit:
        net = inpainting.Inpainter(net)
        bank = jnp.asarray(inpainting.source_bank(size, channels))
        edits = inpainting.edit_sampler(d, sched, guidance, bank, table_tokens)
    if latent:
        net = LatentDenoiser(net, float(config.latent.scale_factor))
    if sr:
        net = SuperResolution(
            net,
            ch=int(config.unet.ch),
            temb_dim=4 * int(config.unet.ch),
            rngs=nnx.Rngs(config.seed),
        )
        cascade = config.cascade
        low_res, sample_aug_t = int(cascade.low_res), int(cascade.sample_aug_t)
        base_config = base_config_of(config)
        frozen["base"] = denoiser_from_config(base_config, size=low_res, channels=data.channels)
        base_sched = schedule_from_config(base_config.diffusion)
    clip_scale = float(d.get("clip_guidance_scale", 0.0))
    if clip_scale > 0:  # GLIDE's CLIP guidance (zoo.diffusion.clip_guidance)
        from zoo.diffusion.clip_guidance import clip_mean_shift, clip_of

        frozen["clip"] = clip_of(config)
    prediction, clip = d.prediction, bool(d.clip_denoised)
    bpd_eval, bpd_chunk = d.bpd_eval, int(d.get("bpd_chunk", 1))
    bound_kwargs = dict(prediction=prediction, variance=d.variance, clip_denoised=clip)

    def condition_of(batch):
        """The batch's condition ``[B, ...]`` int32, or None when unconditional."""
        if condition == "class":
            return batch["label"].astype(jnp.int32)
        if condition == "text":
            return batch["tokens"].astype(jnp.int32)
        return None

    def null_of(cond):
        """The null condition of guidance, shaped like ``cond``: the label ``num_classes``,
        or the empty caption (all padding)."""
        if condition == "class":
            return jnp.full_like(cond, int(data.num_classes))
        return jnp.zeros_like(cond)

    def loss(models, batch, ctx):
        """Algorithm 4.1 on ``batch["image"] [B, H, W, C]`` in [-1, 1]; t, eps per example."""
        model = models("model")
        x0 = batch["image"].astype(jnp.float32)
        if latent:  # a posterior sample per image, scaled to unit variance (measured once)
            z = models("autoencoder").encode_latents(x0, key=example_keys(ctx, "posterior"))
            x0 = z * model.measure(z, ctx)

        cond = condition_of(batch)

        def augmentation(key):  # the SR stage's augmentation level and noise
            k_t, k_eps = jax.random.split(key)
            level = jax.random.randint(k_t, (), 0, int(config.cascade.max_aug_t) + 1)
            return level, jax.random.normal(k_eps, x0.shape[1:], jnp.float32)

        extra = {"dropout_key": example_keys(ctx, "dropout")}
        if sr:  # the shrunk image, noise-augmented at a random level the network is told
            aug_t, aug_eps = jax.vmap(augmentation)(example_keys(ctx, "augment"))
            extra.update(lowres=q_sample(sched, degrade(x0, low_res), aug_t, aug_eps), aug_t=aug_t)
        if edit:  # GLIDE: random regions erased (the net zeroes them); the loss on all pixels
            mask = jax.vmap(lambda k: inpainting.random_mask(k, size))(example_keys(ctx, "mask"))
            extra.update(known=x0, mask=mask)

        def apply(xt, t, u):
            if cond is None:
                return model(xt, t, **extra)
            keep = (u >= drop_p).reshape((-1,) + (1,) * (cond.ndim - 1))
            return model(xt, t, jnp.where(keep, cond, null_of(cond)), **extra)

        value, _ = denoising_loss(sched, prediction, x0, ctx, apply)
        aux = {"loss": value}
        if latent:
            aux["latent_scale"] = model.scale[...]
        return value, aux

    def conditions(rng, n):
        """(the condition of ``n`` samples or None, the fields returned with the samples)."""
        if condition == "class":
            labels = jnp.arange(n, dtype=jnp.int32) % int(data.num_classes)
            return labels, {"label": labels}
        if condition == "text":
            labels = jax.random.randint(rng, (n,), 0, num_captions)
            a = table_attributes[labels]
            fields = {"label": labels, "shape": a[:, 0], "color": a[:, 1], "position": a[:, 2]}
            return table_tokens[labels], fields
        return None, {}

    @functools.partial(jax.jit, static_argnums=(0, 4), static_argnames=("clip_graph",))
    def _sample(graphdef, state, rng, cond, n, extra=None, clip_graph=None, clip_state=None):
        null = None if cond is None else null_of(cond)
        denoise = guided_denoiser(nnx.merge(graphdef, state), cond, null, guidance, extra)
        shift = None
        if clip_graph is not None:
            shift = clip_mean_shift(nnx.merge(clip_graph, clip_state), cond, clip_scale)
        return run_sampler(d, denoise, sched, rng, (n, *shape), shift)

    @functools.partial(jax.jit, static_argnums=(0, 4))
    def _base_sample(graphdef, state, rng, cond, n):
        """The base stage's samples ``[n, low, low, C]``, with the base run's own settings."""
        b = base_config.diffusion
        null = None if cond is None else null_of(cond)
        denoise = guided_denoiser(nnx.merge(graphdef, state), cond, null, b.guidance_scale)
        low = run_sampler(b, denoise, base_sched, rng, (n, low_res, low_res, data.channels))
        return jnp.clip(low, -1.0, 1.0)

    def low_resolution(models, rng, n):
        """The SR stage's inputs for ``n`` samples of the cascade: ({the base stage's samples
        upsampled and noise-augmented ``[n, H, W, C]``, their level ``[n]``}, the condition,
        the fields returned)."""
        k_cond, k_base, k_aug = jax.random.split(rng, 3)
        cond, fields = conditions(k_cond, n)
        low = upsample(_base_sample(*nnx.split(models("base")), k_base, cond, n), size)
        aug_t = jnp.full((n,), sample_aug_t, jnp.int32)
        low = q_sample(sched, low, aug_t, jax.random.normal(k_aug, low.shape))
        return {"lowres": low, "aug_t": aug_t}, cond, fields

    def sample(models, rng, n: int):
        """``n`` images ``[n, H, W, C]`` in [-1, 1]; class labels ``arange(n) % num_classes``;
        text: ``{"image", "label", "shape", "color", "position"}`` of random captions."""
        model = models("model", train=False)
        if edit:  # edits of shapes images, scored on their target captions
            return edits(model, rng, n)
        graphdef, state = nnx.split(model)
        k_cond, k_sample = jax.random.split(rng)
        extra = None
        if sr:
            extra, cond, fields = low_resolution(models, k_cond, int(n))
        else:
            cond, fields = conditions(k_cond, int(n))
        clip = {}
        if clip_scale > 0:
            clip = dict(zip(("clip_graph", "clip_state"), nnx.split(models("clip")), strict=True))
        images = _sample(graphdef, state, k_sample, cond, int(n), extra, **clip)
        if latent:
            ae_graph, ae_state = nnx.split(models("autoencoder"))
            images = _decode(ae_graph, ae_state, images / model.scale[...])
        images = jnp.clip(images, -1.0, 1.0)
        return {"image": images, **fields} if condition == "text" else images

    @functools.partial(jax.jit, static_argnums=(0,))
    def _decode(graphdef, state, z):
        return nnx.merge(graphdef, state).decode(z)

    @functools.partial(jax.jit, static_argnums=(0,))
    def _bpd(graphdef, state, x0, cond, rng):
        denoise = guided_denoiser(nnx.merge(graphdef, state), cond, None, 1.0)
        if bpd_eval == "exact":
            return exact_bpd(denoise, sched, rng, x0, chunk=bpd_chunk, **bound_kwargs)
        return mc_bpd(denoise, sched, rng, x0, **bound_kwargs)

    def evaluate(models, batch, rng):
        """Bits/dim of the variational bound on a held-out ``batch``: ``{"bpd": scalar}``."""
        graphdef, state = nnx.split(models("model", train=False))
        x0 = batch["image"].astype(jnp.float32)
        return {"bpd": jnp.mean(_bpd(graphdef, state, x0, condition_of(batch), rng))}

    return one_player(
        config,
        "model",
        net,
        loss,
        sample=sample,
        frozen=frozen,
        evaluate=None if bpd_eval == "none" else evaluate,
        figures={"edits": lambda m, r: inpainting.edit_figure(sample(m, r, 8))} if edit else {},
    )
