"""CLIP on ``shapes`` for the engine: the symmetric contrastive loss and retrieval accuracy.

Config fields read (``config.model == "clip"``; see ``configs/clip_shapes.py``):
  data: name (must be 'shapes'), image_size, channels
  clip: embed_dim, ch, ch_mult, num_res_blocks, text_dim, text_depth, text_heads,
    noise_aware (bool), eval_timesteps (timestep indices in [0, T) for the noisy evals)
  diffusion: schedule, timesteps, beta_start, beta_end (as the ddpm config's; the noise-aware
    model must be trained with the schedule of the diffusion model it will guide)
  optim, train.steps, ema_decay, seed

Loss (CLIP, Radford et al. 2021, Fig. 3): logits ``s * <f(x_i), g(c_j)>`` over the batch,
cross-entropy image->text over rows plus text->image over columns, halved. ``shapes`` has
only NUM_CLASSES = 162 distinct captions, so a batch of 128 usually holds a caption twice;
a one-hot target would then call one copy of the caption a positive and the identical other
copy a negative. We use **multi-positive targets**: every pair (i, j) with the same label is
a positive, and row i's target distribution is uniform over its positives,
``P_ij = [y_i = y_j] / #{k : y_k = y_i}`` (symmetric, so the same for columns). With no
duplicates this is CLIP's loss exactly. Its floor is the targets' entropy, the mean of
log(#copies) over the rows (logged as ``loss_floor``; about 0.46 nats at batch 128), not 0.
Note: this text tower has no dropout, so copies of a caption embed identically; their columns
then tie, and the one-hot loss has the same value and gradient (a tied copy is never pushed
away as a negative). The targets say so explicitly, and stay right if the copies ever differ
(text dropout, caption paraphrases); masking the copies instead would lower the floor to 0.

Noise-aware (GLIDE, Nichol et al. 2022, sec. 2.4): each image is replaced by
``x_t = q_sample(x_0, t, eps)`` (survey eq. 4.3) with ``t ~ U{0..T-1}`` and ``eps`` drawn per
example, and ``t`` is fed to the image tower; the text tower is unchanged.

Negatives are the examples of the batch one loss call sees: the whole batch under ``jit``,
each device's share under ``pmap``, each microbatch with ``optim.microbatches > 1``.

Evaluation (held-out split; the engine averages over eval batches, weighted by size):
  image_to_caption: top-1 accuracy of retrieving an image's caption among all 162 captions of
    :func:`zoo.data.shapes.caption_table` (chance 1/162). The noise-aware model sees x_0 at
    t = 0 (alpha-bar_1 ~ 1, almost clean).
  caption_to_image: top-1 accuracy of retrieving, for each example's caption, an image with
    that caption among the eval batch's images (``eval.batch_size`` candidates).
  image_to_caption_t{t}: image_to_caption on x_t, one per ``clip.eval_timesteps`` entry
    (for the plain model too: it shows what a noise-unaware CLIP makes of noisy images).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from zoo.diffusion.clip import clip_from_config
from zoo.diffusion.ddpm import q_sample
from zoo.diffusion.objective import schedule_from_config
from zoo.diffusion.schedules import schedule_names
from zoo.engine.objective import Objective, one_player
from zoo.engine.rng import per_example


def contrastive_loss(
    image_emb: jax.Array, text_emb: jax.Array, scale: jax.Array, labels: jax.Array
) -> jax.Array:
    """Symmetric InfoNCE with multi-positive targets (see the module docstring).

    Args:
      image_emb: ``[B, E]`` unit-norm image embeddings.
      text_emb: ``[B, E]`` unit-norm embeddings of the same examples' captions.
      scale: scalar logit scale (CLIP's ``exp(t)``).
      labels: ``[B]`` int caption ids; equal ids are the same caption.

    Returns:
      scalar float32, in nats: (mean image->text CE + mean text->image CE) / 2.
    """
    logits = scale * image_emb @ text_emb.T  # [B, B], rows images, columns captions
    same = (labels[:, None] == labels[None, :]).astype(logits.dtype)
    targets = same / same.sum(axis=1, keepdims=True)  # symmetric: same for rows and columns
    image_to_text = optax.softmax_cross_entropy(logits, targets).mean()
    text_to_image = optax.softmax_cross_entropy(logits.T, targets).mean()
    return 0.5 * (image_to_text + text_to_image)


def retrieval_accuracy(image_emb: jax.Array, caption_emb: jax.Array, labels: jax.Array):
    """Top-1 image->caption accuracy: ``image_emb [B, E]`` against ``caption_emb [K, E]``
    (row k the caption of label k); ``labels [B]``. Returns a float32 scalar in [0, 1]."""
    predicted = jnp.argmax(image_emb @ caption_emb.T, axis=1)
    return jnp.mean((predicted == labels).astype(jnp.float32))


def _check_config(config) -> None:
    if config.model != "clip":
        raise ValueError(f"clip objective builds model 'clip', not {config.model!r}")
    if config.data.name != "shapes":
        raise ValueError(
            f"model 'clip' trains on captions: data.name must be 'shapes', got {config.data.name!r}"
        )
    c, d = config.clip, config.diffusion

    def positive(section, name, value):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{section}.{name} must be a positive integer, got {value!r}")

    for name in ("embed_dim", "ch", "num_res_blocks", "text_dim", "text_depth", "text_heads"):
        positive("clip", name, c[name])
    if not tuple(c.ch_mult):
        raise ValueError("clip.ch_mult must name at least one level, e.g. (1, 2, 2)")
    for m in c.ch_mult:
        positive("clip", "ch_mult entries", m)
    if c.text_dim % c.text_heads:
        raise ValueError(
            f"clip.text_dim={c.text_dim} is not divisible by text_heads={c.text_heads}"
        )
    factor = 2 ** (len(c.ch_mult) - 1)
    if config.data.image_size % factor:
        raise ValueError(
            f"data.image_size={config.data.image_size} is not divisible by {factor}: "
            f"clip.ch_mult={tuple(c.ch_mult)} halves it {len(c.ch_mult) - 1} times"
        )
    if not isinstance(c.noise_aware, bool):
        raise ValueError(f"clip.noise_aware must be True or False, got {c.noise_aware!r}")
    if d.schedule not in schedule_names():
        raise ValueError(f"diffusion.schedule={d.schedule!r}; choose one of {schedule_names()}")
    positive("diffusion", "timesteps", d.timesteps)
    if d.timesteps < 2:
        raise ValueError(f"diffusion.timesteps must be >= 2, got {d.timesteps}")
    for t in c.eval_timesteps:
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < d.timesteps:
            raise ValueError(
                f"clip.eval_timesteps entries are timestep indices in [0, "
                f"diffusion.timesteps={d.timesteps}), got {t!r}"
            )


def build_objective(config) -> Objective:
    """The CLIP :class:`~zoo.engine.objective.Objective` described by ``config``."""
    _check_config(config)
    from zoo.data import shapes

    table_tokens = jnp.asarray(shapes.caption_table()[0])  # [NUM_CLASSES, L]
    model = clip_from_config(
        config,
        vocab_size=shapes.SHAPES_TOKENIZER.vocab_size,
        max_len=int(table_tokens.shape[1]),
        rngs=nnx.Rngs(int(config.seed)),
    )
    sched = schedule_from_config(config.diffusion)  # a bad beta range fails here, not in jit
    T = sched.num_timesteps
    noise_aware = bool(config.clip.noise_aware)
    eval_timesteps = tuple(int(t) for t in config.clip.eval_timesteps)

    def loss(models, batch, ctx):
        """Contrastive loss of ``batch["image"] [B, S, S, C]`` and ``batch["tokens"] [B, L]``."""
        clip = models("model")
        x = batch["image"].astype(jnp.float32)
        t = None
        if noise_aware:

            def draw(key):
                k_t, k_eps = jax.random.split(key)
                return jax.random.randint(k_t, (), 0, T), jax.random.normal(k_eps, x.shape[1:])

            t, eps = per_example(ctx, draw)
            x = q_sample(sched, x, t, eps)
        image_emb, text_emb, scale = clip(x, batch["tokens"].astype(jnp.int32), t)
        value = contrastive_loss(image_emb, text_emb, scale, batch["label"])
        # The loss's floor on this batch, log(#copies of the caption) averaged over rows:
        # loss - floor is what the model still has to learn.
        same = batch["label"][:, None] == batch["label"][None, :]
        floor = jnp.mean(jnp.log(same.sum(axis=1).astype(jnp.float32)))
        return value, {"loss": value, "loss_floor": floor, "logit_scale": scale}

    def evaluate(models, batch, rng):
        """Retrieval accuracies on a held-out ``batch`` (see the module docstring)."""
        clip = models("model", train=False)
        x0, labels = batch["image"].astype(jnp.float32), batch["label"]
        n = x0.shape[0]

        def image_emb(t):  # t: python int or None (clean images for the plain model)
            if t is None:
                return clip.encode_image(x0, jnp.zeros((n,), jnp.int32) if noise_aware else None)
            tt = jnp.full((n,), t, jnp.int32)
            eps = jax.random.normal(jax.random.fold_in(rng, t), x0.shape)
            return clip.encode_image(q_sample(sched, x0, tt, eps), tt if noise_aware else None)

        captions = clip.encode_text(table_tokens)  # [NUM_CLASSES, E]
        clean = image_emb(None)
        # caption -> image: each example's caption against the batch's images; any image with
        # the same label is a correct retrieval (a caption can occur twice in the batch).
        best = jnp.argmax(captions[labels] @ clean.T, axis=1)
        metrics = {
            "image_to_caption": retrieval_accuracy(clean, captions, labels),
            "caption_to_image": jnp.mean((labels[best] == labels).astype(jnp.float32)),
        }
        for t in eval_timesteps:
            metrics[f"image_to_caption_t{t}"] = retrieval_accuracy(image_emb(t), captions, labels)
        return metrics

    return one_player(
        config,
        "model",
        model,
        loss,
        evaluate=evaluate,
    )
