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
import numpy as np
from flax import nnx

from zoo.engine.objective import Objective, Player
from zoo.engine.optim import make_optimizer
from zoo.engine.rng import per_example, shared_key
from zoo.gan import losses
from zoo.gan.regularizers import path_length_penalty, r1_penalty

# model name -> (network module, the batch field the discriminator reads)
NETWORKS = {
    "gan": ("zoo.gan.mlp", "point"),
    "dcgan": ("zoo.gan.dcgan", "image"),
    "stylegan2": ("zoo.gan.stylegan2", "image"),
    "gigagan": ("zoo.gan.gigagan", "image"),
    "styleswin": ("zoo.gan.styleswin", "image"),
}
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
        from zoo.data.text import SHAPES_MAX_LEN, shapes_tokenizer

        labels = np.arange(shapes.NUM_CLASSES)
        attributes = np.array([shapes.attributes_of(int(i)) for i in labels], np.int32)
        captions = [shapes.caption(*map(int, a)) for a in attributes]
        self.tokens = jnp.asarray(shapes_tokenizer().encode(captions, SHAPES_MAX_LEN))
        self.attributes = jnp.asarray(attributes)  # [162, 3]: shape, colour, position
        self.num_classes = shapes.NUM_CLASSES


def _last(images):
    """The full-resolution output of a (possibly multi-scale) generator."""
    return images[-1] if isinstance(images, list | tuple) else images


def build_objective(config) -> Objective:
    """The GAN :class:`~zoo.engine.objective.Objective` described by ``config``."""
    if config.model not in NETWORKS:
        raise ValueError(f"GAN objective builds {sorted(NETWORKS)}, not {config.model!r}")
    module_name, data_key = NETWORKS[config.model]
    module = importlib.import_module(module_name)
    generator, discriminator = module.build_networks(config, rngs=nnx.Rngs(config.seed))
    style_based = hasattr(generator, "mapping")
    _check_config(config, style_based)
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

    def latents(ctx, n=None):
        z = per_example(ctx, jax.random.normal, (z_dim,))
        return z if n is None else z[:n]

    def d_loss(models, batch, ctx):
        gen = models("generator", keep_state=False)
        disc = models("discriminator")
        cond = cond_of(batch)
        fake = jax.lax.stop_gradient(gen(latents(ctx), cond, noise_key=shared_key(ctx, "noise")))
        real_logits = disc(reals_of(batch), cond)
        fake_logits = disc(fake, cond)
        value = losses.discriminator_loss(real_logits, fake_logits, g.loss)
        aux = {"real_score": jnp.mean(real_logits), "fake_score": jnp.mean(fake_logits)}
        if g.matching_aware > 0:
            # Real image, another example's caption: a fake pair (GigaGAN sec. 3.3).
            shuffled = jax.tree.map(lambda c: jnp.roll(c, 1, axis=0), cond)
            mismatch = disc(reals_of(batch), shuffled)
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

    def mixed_ws(gen, ctx, cond, n=None):
        """Per-example ws ``[B, num_ws, w_dim]`` with style mixing, and the unmixed w."""
        z1 = latents(ctx, n)
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
            if n is not None:
                z2, crossover = z2[:n], crossover[:n]
            ws = mix_styles(w1, gen.mapping(z2, cond), crossover, gen.num_ws)
        return ws, w1

    def g_loss(models, batch, ctx):
        gen = models("generator")
        disc = models("discriminator", keep_state=False)
        cond = cond_of(batch)
        noise = shared_key(ctx, "noise")
        aux = {}
        if style_based:
            ws, w = mixed_ws(gen, ctx, cond)
            fake = gen.synthesis(ws, cond, noise_key=noise)
            mean_w = jax.lax.stop_gradient(jnp.mean(w, axis=0))
            gen.w_avg.value = mean_w + g.w_avg_decay * (gen.w_avg.value - mean_w)
        else:
            fake = gen(latents(ctx), cond, noise_key=noise)
        fake_logits = disc(fake, cond)
        value = losses.generator_loss(fake_logits, g.g_loss)
        return value, {"g_loss": value, **aux}

    def pl_loss(models, batch, ctx):
        gen = models("generator")
        n = int(config.data.batch_size) // int(g.pl_batch_shrink)
        cond = jax.tree.map(lambda c: c[:n], cond_of(batch))
        ws, _ = mixed_ws(gen, ctx, cond, n)
        noise = shared_key(ctx, "noise")
        penalty, new_mean, lengths = path_length_penalty(
            lambda w: _last(gen.synthesis(w, cond, noise_key=noise)),
            ws,
            shared_key(ctx, "path_length"),
            gen.pl_mean.value,
            decay=g.pl_decay,
        )
        gen.pl_mean.value = jax.lax.stop_gradient(new_mean)
        value = g.pl_weight * g.pl_every * jnp.mean(penalty)
        return value, {"path_length": jnp.mean(lengths), "pl_penalty": jnp.mean(penalty)}

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
        gen = models("generator", train=False)
        k_z, k_c = jax.random.split(rng)
        cond, fields = sample_conditions(k_c, n)
        z = jax.random.normal(k_z, (n, z_dim))
        psi = g.sample_truncation if truncation is None else truncation
        kwargs = {"truncation": psi} if style_based else {}
        return _last(gen(z, cond, **kwargs)), fields

    def sample(models, rng, n: int):
        """``n`` samples from the (EMA) generator, with what each was conditioned on."""
        out, fields = generate(models, rng, n)
        if data_key == "point":
            return {"point": out, **fields}
        return {"image": jnp.clip(out, -1.0, 1.0), **fields}

    figures = {}
    if data_key == "point":
        figures["scatter"] = lambda models, rng: _scatter(
            generate(models, rng, 4096)[0], float(config.data.get("ring_radius", 2.0))
        )
    else:
        figures["interpolation"] = lambda models, rng: _interpolation(
            models, rng, z_dim, sample_conditions, style_based
        )
    if style_based:
        figures["style_mixing"] = lambda models, rng: _style_mixing(
            models, rng, z_dim, sample_conditions
        )
        figures["truncation"] = lambda models, rng: _truncation_sweep(
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


def _grid_cond(sample_conditions, rng, rows, cols):
    """One condition per row, repeated along the row: cond for rows * cols images."""
    cond, _ = sample_conditions(rng, rows)
    return jax.tree.map(lambda c: jnp.repeat(c, cols, axis=0), cond)


def _interpolation(models, rng, z_dim, sample_conditions, style_based, rows=4, cols=8):
    """Each row walks linearly from one latent to another (DCGAN sec. 6.1)."""
    gen = models("generator", train=False)
    k_a, k_b, k_c = jax.random.split(rng, 3)
    a, b = jax.random.normal(k_a, (rows, 1, z_dim)), jax.random.normal(k_b, (rows, 1, z_dim))
    t = jnp.linspace(0.0, 1.0, cols)[None, :, None]
    z = ((1 - t) * a + t * b).reshape(rows * cols, z_dim)
    images = _last(gen(z, _grid_cond(sample_conditions, k_c, rows, cols)))
    return jnp.clip(images, -1, 1).reshape(rows, cols, *images.shape[1:])


def _truncation_sweep(models, rng, z_dim, sample_conditions, psis, rows=4):
    """Row i: one latent at each truncation psi (columns); psi = 0 gives the mean w."""
    gen = models("generator", train=False)
    k_z, k_c = jax.random.split(rng)
    cols = len(psis)
    z = jnp.repeat(jax.random.normal(k_z, (rows, z_dim)), cols, axis=0)
    cond = _grid_cond(sample_conditions, k_c, rows, cols)
    w = gen.mapping(z, cond)
    psi = jnp.tile(jnp.asarray(psis, jnp.float32), rows)[:, None]
    w = gen.w_avg.value + psi * (w - gen.w_avg.value)
    ws = jnp.broadcast_to(w[:, None], (w.shape[0], gen.num_ws, w.shape[-1]))
    images = jnp.clip(_last(gen.synthesis(ws, cond)), -1, 1)
    return images.reshape(rows, cols, *images.shape[1:])


def _style_mixing(models, rng, z_dim, sample_conditions, n=4):
    """StyleGAN's mixing table: row 0 = sources A, column 0 = sources B, and cell (i, j)
    takes the coarse styles (the first half of the layers) from A_j and the rest from B_i."""
    gen = models("generator", train=False)
    k_a, k_b, k_c = jax.random.split(rng, 3)
    cond, _ = sample_conditions(k_c, 1)  # one caption/label for the whole table
    w_a = gen.mapping(jax.random.normal(k_a, (n, z_dim)), _repeat(cond, n))
    w_b = gen.mapping(jax.random.normal(k_b, (n, z_dim)), _repeat(cond, n))
    cut = gen.num_ws // 2
    layer = jnp.arange(gen.num_ws)[None, None, :, None]
    mixed = jnp.where(layer < cut, w_a[None, :, None, :], w_b[:, None, None, :])  # [n, n, L, D]
    ws = jnp.concatenate(
        [
            jnp.broadcast_to(w_a[:, None], (n, gen.num_ws, w_a.shape[-1])),
            jnp.broadcast_to(w_b[:, None], (n, gen.num_ws, w_b.shape[-1])),
            mixed.reshape(n * n, gen.num_ws, -1),
        ]
    )
    images = jnp.clip(_last(gen.synthesis(ws, _repeat(cond, ws.shape[0]))), -1, 1)
    top, left, cells = (
        images[:n],
        images[n : 2 * n],
        images[2 * n :].reshape(n, n, *images.shape[1:]),
    )
    corner = -jnp.ones((1, *images.shape[1:]), images.dtype)
    first_row = jnp.concatenate([corner, top])[None]
    body = jnp.concatenate([left[:, None], cells], axis=1)
    return jnp.concatenate([first_row, body])  # [n + 1, n + 1, H, W, C]


def _repeat(cond, n):
    return jax.tree.map(lambda c: jnp.repeat(c, n, axis=0), cond)


def _scatter(points, radius: float, size: int = 128):
    """2-D samples as a 1 x 1 figure: a log-density image of the plane, ``[1, 1, S, S, 1]``."""
    extent = 1.5 * radius
    ij = jnp.clip(((points + extent) / (2 * extent) * size).astype(jnp.int32), 0, size - 1)
    counts = jnp.zeros((size, size)).at[size - 1 - ij[:, 1], ij[:, 0]].add(1.0)
    image = jnp.log1p(counts) / jnp.maximum(jnp.log1p(counts.max()), 1e-6)
    return (2 * image - 1)[None, None, :, :, None]
