"""The GAN objective for the engine: Algorithm 2.1 with the regularisers of StyleGAN2.

Players, in order, inside one train step:

1. ``discriminator``: ``gan.d_steps`` = k updates, each on a fresh minibatch
   (substep j reads slice j of the step's batch) and fresh z (Algorithm 2.1).
   GigaGAN's matching-aware term (``gan.matching_aware`` > 0) adds real images
   paired with another example's caption as fakes.
2. ``r1`` (``gan.r1_gamma`` > 0): gamma/2 * E||grad_x D(x)||^2 on reals, run
   every ``gan.r1_every`` steps with its weight multiplied by that interval
   (lazy regularisation, StyleGAN2 sec. B).
3. ``generator``: one update with the ``gan.g_loss`` loss; style-based
   generators draw a second latent for style mixing with probability
   ``gan.style_mixing`` and track the running mean of w (truncation's centre).
4. ``path_length`` (``gan.pl_weight`` > 0, style-based only): StyleGAN2 eq. 4,
   every ``gan.pl_every`` steps, on ``batch / gan.pl_batch_shrink`` examples;
   its running mean ``a`` lives in the generator as a non-parameter variable
   that the engine checkpoints with the rest.

Every random input (z, the second latent and crossover of style mixing, the
generators' noise inputs, the path-length probe y, the mismatched captions) is drawn
per example from ``ctx.example_ids``, each from its own stream, so no draw depends on
how the step's batch is split over devices (jit or pmap) or microbatches.

Lazy regularisation also rescales each regularised role's Adam (lr * c,
beta ** c with c = N / (N + 1)) as StyleGAN2 does, so the combined updates
match the per-step schedule.

Config fields (``config.model`` in :data:`NETWORKS`):
  net: the model's architecture fields (``zoo.gan.<model>.net_config()``)
  gan: loss ('minimax' | 'hinge'), g_loss ('saturating' | 'non_saturating' |
    'hinge'), d_steps, condition ('none' | 'label' | 'text'), r1_gamma,
    r1_every, pl_weight, pl_every, pl_decay, pl_batch_shrink, style_mixing,
    w_avg_decay, matching_aware, sample_truncation, truncation_psis
  optim (generator), optim_d (discriminator; missing fields from optim)
  ema_decay: the generator's EMA (0: none)
"""

from __future__ import annotations

import importlib

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from zoo.engine.objective import Objective, Player
from zoo.engine.optim import make_optimizer
from zoo.engine.rng import example_keys, per_example, shared_key
from zoo.gan.figures import interpolation, last, scatter, style_mixing, truncation_sweep
from zoo.gan.regularizers import path_length_penalty, r1_penalty
from zoo.nn import adversarial as losses

# model name -> (network module, the batch field the discriminator reads)
NETWORKS = {
    "gan": ("zoo.gan.mlp", "point"),
    "dcgan": ("zoo.gan.dcgan", "image"),
    "stylegan2": ("zoo.gan.stylegan2", "image"),
    "gigagan": ("zoo.gan.gigagan", "image"),
    "styleswin": ("zoo.gan.styleswin", "image"),
}
STYLE_BASED = ("stylegan2", "gigagan", "styleswin")  # a mapping network z -> w
CONDITIONS = ("none", "label", "text")


def gan_config() -> ml_collections.ConfigDict:
    """Defaults of ``config.gan``: the original GAN with k = 1 and no regularisers."""
    return ml_collections.ConfigDict(
        dict(
            loss="minimax",
            g_loss="non_saturating",
            d_steps=1,
            condition="none",
            r1_gamma=0.0,
            r1_every=16,
            pl_weight=0.0,
            pl_every=4,
            pl_decay=0.01,
            pl_batch_shrink=2,
            style_mixing=0.0,
            w_avg_decay=0.995,
            matching_aware=0.0,
            sample_truncation=1.0,
            truncation_psis=(1.0, 0.75, 0.5, 0.25, 0.0),
        )
    )


def _check_config(config, style_based: bool) -> None:
    g = config.gan
    if g.loss not in losses.DISCRIMINATOR_LOSSES:
        raise ValueError(f"gan.loss={g.loss!r}; choose one of {losses.DISCRIMINATOR_LOSSES}")
    if g.g_loss not in losses.GENERATOR_LOSSES:
        raise ValueError(f"gan.g_loss={g.g_loss!r}; choose one of {losses.GENERATOR_LOSSES}")
    if g.condition not in CONDITIONS:
        raise ValueError(f"gan.condition={g.condition!r}; choose one of {CONDITIONS}")
    for field in ("d_steps", "r1_every", "pl_every", "pl_batch_shrink"):
        if int(g[field]) < 1:
            raise ValueError(f"gan.{field} must be >= 1, got {g[field]}")
    if g.condition == "label" and int(config.data.num_classes) <= 0:
        raise ValueError("gan.condition='label' needs data.num_classes > 0")
    if g.condition == "text" and config.data.name != "shapes":
        raise ValueError("gan.condition='text' reads captions: only data.name='shapes' has them")
    if not style_based and (g.pl_weight > 0 or g.style_mixing > 0):
        raise ValueError(
            f"model {config.model!r} has no mapping network: set gan.pl_weight=0 and "
            "gan.style_mixing=0"
        )
    if g.pl_weight > 0 and int(config.data.batch_size) % int(g.pl_batch_shrink):
        raise ValueError("data.batch_size must be divisible by gan.pl_batch_shrink")
    if g.matching_aware > 0 and g.condition == "none":
        raise ValueError("gan.matching_aware pairs images with other conditions: needs a condition")


def _lazy(optim_cfg, every: int):
    """StyleGAN2's optimizer correction for a role regularised every ``every`` steps."""
    if every <= 1 or optim_cfg.name not in ("adam", "adamw"):
        return optim_cfg
    c = every / (every + 1)
    cfg = ml_collections.ConfigDict(optim_cfg.to_dict())
    cfg.lr, cfg.b1, cfg.b2 = cfg.lr * c, cfg.b1**c, cfg.b2**c
    return cfg


def _optim_d(config):
    base = config.optim.to_dict()
    base.update(config.get("optim_d", ml_collections.ConfigDict()).to_dict())
    return ml_collections.ConfigDict(base)


class ShapesConditions:
    """Captions of the 162 shapes attribute triples, as arrays indexed by label."""

    def __init__(self):
        from zoo.data import shapes

        tokens, attributes = shapes.caption_table()
        self.tokens = jnp.asarray(tokens)
        self.attributes = jnp.asarray(attributes)  # [162, 3]: shape, colour, position
        self.num_classes = shapes.NUM_CLASSES


def build_objective(config) -> Objective:
    """The GAN :class:`~zoo.engine.objective.Objective` described by ``config``."""
    if config.model not in NETWORKS:
        raise ValueError(f"GAN objective builds {sorted(NETWORKS)}, not {config.model!r}")
    module_name, data_key = NETWORKS[config.model]
    style_based = config.model in STYLE_BASED
    _check_config(config, style_based)  # before any parameter is drawn
    module = importlib.import_module(module_name)
    generator, discriminator = module.build_networks(config, rngs=nnx.Rngs(config.seed))
    g = config.gan
    z_dim = int(generator.z_dim)
    k = int(g.d_steps)
    condition = g.condition
    shapes = ShapesConditions() if condition == "text" else None
    num_classes = int(config.data.num_classes)
    if style_based:
        # The running mean of path lengths, a of eq. 4: state, not a parameter.
        generator.pl_mean = nnx.BatchStat(jnp.zeros((), jnp.float32))

    def cond_of(batch):
        if condition == "label":
            return {"label": batch["label"].astype(jnp.int32)}
        if condition == "text":
            return {"tokens": batch["tokens"].astype(jnp.int32)}
        return None

    def reals_of(batch):
        # A multi-scale discriminator (GigaGAN) builds the pyramid of a real image itself.
        return batch[data_key].astype(jnp.float32)

    def latents(ctx):
        return per_example(ctx, jax.random.normal, (z_dim,))

    def keys_of(ctx, name):
        """``[B]`` per-example keys for one purpose, unlike the latents' keys and each other's."""
        return example_keys(ctx._replace(rng=shared_key(ctx, name)))

    def mismatched(batch, ctx):
        """Per example, a condition other than its own, uniform over the rest (GigaGAN sec.
        3.3's mismatched pairs). Drawn per example, so the pairs do not depend on how the
        batch is split over devices (a roll of the batch would pair within each device)."""
        k = shapes.num_classes if condition == "text" else num_classes
        draw_ctx = ctx._replace(rng=shared_key(ctx, "mismatch"))
        shift = per_example(draw_ctx, jax.random.randint, (), 1, k)  # never 0: not its own
        other = (batch["label"].astype(jnp.int32) + shift) % k
        return {"tokens": shapes.tokens[other]} if condition == "text" else {"label": other}

    def d_loss(models, batch, ctx):
        gen = models("generator", keep_state=False)
        disc = models("discriminator")
        cond = cond_of(batch)
        fake = jax.lax.stop_gradient(gen(latents(ctx), cond, noise_key=keys_of(ctx, "noise")))
        real_logits = disc(reals_of(batch), cond)
        fake_logits = disc(fake, cond)
        value = losses.discriminator_loss(real_logits, fake_logits, g.loss)
        aux = {"real_score": jnp.mean(real_logits), "fake_score": jnp.mean(fake_logits)}
        if g.matching_aware > 0:
            # Real image, another caption: a fake pair (GigaGAN sec. 3.3).
            mismatch = disc(reals_of(batch), mismatched(batch, ctx))
            # The fake half of the D loss on these pairs: -log(1 - D) or hinge.
            if g.loss == "hinge":
                term = jnp.mean(jax.nn.relu(1.0 + mismatch))
            else:
                term = jnp.mean(jax.nn.softplus(mismatch))
            value = value + g.matching_aware * term
            aux["mismatch_score"] = jnp.mean(mismatch)
        return value, {"d_loss": value, **aux}

    def r1_loss(models, batch, ctx):
        disc = models("discriminator", keep_state=False)
        cond = cond_of(batch)
        penalty = jnp.mean(r1_penalty(lambda x: disc(x, cond), reals_of(batch)))
        return 0.5 * g.r1_gamma * g.r1_every * penalty, {"r1": penalty}

    def mixed_ws(gen, ctx, cond):
        """Per-example ws ``[B, num_ws, w_dim]`` with style mixing, and the unmixed w."""
        z1 = latents(ctx)
        w1 = gen.mapping(z1, cond)
        ws = jnp.broadcast_to(w1[:, None], (w1.shape[0], gen.num_ws, w1.shape[-1]))
        if g.style_mixing > 0:
            from zoo.gan.stylegan2 import mix_styles

            def draw(key):
                k_z, k_mix, k_cut = jax.random.split(key, 3)
                mix = jax.random.uniform(k_mix) < g.style_mixing
                cut = jax.random.randint(k_cut, (), 1, gen.num_ws)
                return jax.random.normal(k_z, (z_dim,)), jnp.where(mix, cut, gen.num_ws)

            z2, crossover = per_example(ctx._replace(rng=shared_key(ctx, "mixing")), draw)
            ws = mix_styles(w1, gen.mapping(z2, cond), crossover, gen.num_ws)
        return ws, w1

    def g_loss(models, batch, ctx):
        gen = models("generator")
        disc = models("discriminator", keep_state=False)
        cond = cond_of(batch)
        noise = keys_of(ctx, "noise")
        aux = {}
        if style_based:
            ws, w = mixed_ws(gen, ctx, cond)
            fake = gen.synthesis(ws, cond, noise_key=noise)
            mean_w = jax.lax.stop_gradient(jnp.mean(w, axis=0))
            gen.w_avg[...] = mean_w + g.w_avg_decay * (gen.w_avg[...] - mean_w)
        else:
            fake = gen(latents(ctx), cond, noise_key=noise)
        fake_logits = disc(fake, cond)
        value = losses.generator_loss(fake_logits, g.g_loss)
        return value, {"g_loss": value, **aux}

    def pl_loss(models, batch, ctx):
        gen = models("generator")
        ctx, cond, weights = pl_examples(ctx, cond_of(batch))
        ws, _ = mixed_ws(gen, ctx, cond)
        noise = keys_of(ctx, "noise")
        penalty, new_mean, lengths = path_length_penalty(
            lambda w: last(gen.synthesis(w, cond, noise_key=noise)),
            ws,
            keys_of(ctx, "path_length"),
            gen.pl_mean[...],
            decay=g.pl_decay,
            weights=weights,
        )
        gen.pl_mean[...] = jax.lax.stop_gradient(new_mean)
        mean_penalty = jnp.mean(weights * penalty)
        value = g.pl_weight * g.pl_every * mean_penalty
        return value, {"path_length": jnp.mean(weights * lengths), "pl_penalty": mean_penalty}

    def pl_examples(ctx, cond):
        """The path-length subset: the examples whose id is a multiple of s = pl_batch_shrink.

        Chosen by example id, so it is the same subset (and the same per-example draws) on
        one device, under jit or pmap, with or without microbatches; the official code takes
        the first B/s of each GPU's batch, which depends on the split. When this (micro)batch
        of b examples is a multiple of s, it starts at a multiple of s (the engine's layout:
        contiguous ids, equal chunks), so the subset is every s-th example: ``(ctx, cond,
        weights)`` of those b/s examples, weights 1. Otherwise (e.g. one example per device)
        all b examples run with weight s on the subset and 0 elsewhere: the same mean,
        sum over the subset / (b / s), at s times the cost.
        """
        s = int(g.pl_batch_shrink)
        b = ctx.example_ids.shape[0]
        if b % s == 0:
            ctx = ctx._replace(example_ids=ctx.example_ids[::s])
            return ctx, jax.tree.map(lambda c: c[::s], cond), jnp.ones((b // s,), jnp.float32)
        return ctx, cond, s * (ctx.example_ids % s == 0).astype(jnp.float32)

    players = [Player("discriminator", "discriminator", d_loss, steps=k)]
    if g.r1_gamma > 0:
        players.append(Player("r1", "discriminator", r1_loss, every=int(g.r1_every)))
    players.append(Player("generator", "generator", g_loss))
    if style_based and g.pl_weight > 0:
        players.append(Player("path_length", "generator", pl_loss, every=int(g.pl_every)))

    def sample_conditions(rng, n):
        """cond for n samples and the fields that describe it (returned with the samples)."""
        if condition == "label":
            labels = jnp.arange(n, dtype=jnp.int32) % num_classes
            return {"label": labels}, {"label": labels}
        if condition == "text":
            labels = jax.random.randint(rng, (n,), 0, shapes.num_classes)
            a = shapes.attributes[labels]
            fields = {"label": labels, "shape": a[:, 0], "color": a[:, 1], "position": a[:, 2]}
            return {"tokens": shapes.tokens[labels]}, fields
        return None, {}

    def generate(models, rng, n, truncation=None):
        """``n`` samples with the noise inputs on, as trained (one noise key per sample: the
        official FID code samples with noise_mode='random'); the generators without noise
        inputs ignore the keys."""
        gen = models("generator", train=False)
        k_z, k_c, k_noise = jax.random.split(rng, 3)
        cond, fields = sample_conditions(k_c, n)
        z = jax.random.normal(k_z, (n, z_dim))
        psi = g.sample_truncation if truncation is None else truncation
        kwargs = {"truncation": psi} if style_based else {}
        noise = jax.random.split(k_noise, n)
        return last(gen(z, cond, noise_key=noise, **kwargs)), fields

    def sample(models, rng, n: int):
        """``n`` samples from the (EMA) generator, with what each was conditioned on."""
        out, fields = generate(models, rng, n)
        if data_key == "point":
            return {"point": out, **fields}
        return {"image": jnp.clip(out, -1.0, 1.0), **fields}

    figures = {}
    if data_key == "point":
        figures["scatter"] = lambda models, rng: scatter(
            generate(models, rng, 4096)[0], float(config.data.get("ring_radius", 2.0))
        )
    else:
        figures["interpolation"] = lambda models, rng: interpolation(
            models, rng, z_dim, sample_conditions
        )
    if style_based:
        figures["style_mixing"] = lambda models, rng: style_mixing(
            models, rng, z_dim, sample_conditions
        )
        figures["truncation"] = lambda models, rng: truncation_sweep(
            models, rng, z_dim, sample_conditions, tuple(g.truncation_psis)
        )

    regularised_every = {
        "discriminator": int(g.r1_every) if g.r1_gamma > 0 else 1,
        "generator": int(g.pl_every) if style_based and g.pl_weight > 0 else 1,
    }
    steps = int(config.train.steps)
    optimizers = {
        "generator": make_optimizer(_lazy(config.optim, regularised_every["generator"]), steps),
        "discriminator": make_optimizer(
            _lazy(_optim_d(config), regularised_every["discriminator"]), steps
        ),
    }
    decay = float(config.get("ema_decay", 0.0))
    return Objective(
        modules={"generator": generator, "discriminator": discriminator},
        optimizers=optimizers,
        players=tuple(players),
        ema={"generator": decay} if decay > 0 else {},
        sample=sample,
        figures=figures,
    )
