"""Stage 2 of the autoregressive family: a transformer prior over a trained tokenizer's codes.

Config fields read (``config.model`` in ``"transformer" | "dalle" | "parti"``; defaults in
:func:`zoo.autoregressive.config.prior_config`):
  stages.tokenizer: the stage-1 run (a ``vqvae``, ``vqgan`` or ``dvae`` run), loaded frozen
  data: name, image_size, channels (equal to the tokenizer's), num_classes
  prior: dim, depth, num_heads, dropout, condition ("none" | "class" | "text"),
    condition_dropout, guidance_scale, temperature, top_k, top_p, text_loss_weight,
    text_dim, text_depth, text_heads (parti), window_grid
  optim, train.steps, ema_decay

One player: the frozen tokenizer encodes the batch's images to codes ``[B, h, w]``; the
prior's cross-entropy on them in raster order (nats per token) is the loss. DALL-E adds its
text loss (caption tokens predicted from the earlier ones), weighted
``text_loss_weight`` : ``1 - text_loss_weight`` (1/8 : 7/8 in the paper). With
``condition_dropout`` p the condition is replaced by the null one with probability p per
example, which classifier-free guidance needs at sampling (``guidance_scale`` s != 1:
logits = uncond + s (cond - uncond)).

Samples: ancestral sampling with a KV cache (temperature, top-k, top-p) decoded by the
tokenizer; class-conditional runs sample ``arange(n) % num_classes``, text runs random
``shapes`` captions (returned with their attributes for the caption-match metric). The
figure ``sliding_window`` samples a token grid ``prior.window_grid`` larger than the
training grid with a window of the training size (taming transformers).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from zoo.autoregressive.config import DISCRETE_TOKENIZERS, PRIORS
from zoo.autoregressive.prior import Prior
from zoo.autoregressive.sampling import sample_grid, sample_tokens
from zoo.autoregressive.tokenizer_objective import tokenizer_from_config
from zoo.engine import stages
from zoo.engine.objective import Objective, one_player
from zoo.engine.rng import example_keys, per_example

NUM_WINDOW_SAMPLES = 4


def tokenizer_of(config):
    """The frozen tokenizer module and its run's config, from ``config.stages.tokenizer``."""
    source = stages.source_config(config, "tokenizer")
    if source.get("model") not in DISCRETE_TOKENIZERS:
        raise ValueError(
            f"config.stages.tokenizer names a {source.get('model')!r} run; a prior needs a "
            f"tokenizer run with codes ({', '.join(DISCRETE_TOKENIZERS)})"
        )
    stages.require_same_data(config, source, "tokenizer")
    return tokenizer_from_config(source), source


def _check_config(config) -> None:
    if config.model not in PRIORS:
        raise ValueError(f"prior objective builds {PRIORS}, not {config.model!r}")
    p = config.prior
    if p.condition == "text" and config.data.name != "shapes":
        raise ValueError("prior.condition='text' reads captions: only data.name='shapes' has them")
    if config.model in ("dalle", "parti") and p.condition != "text":
        raise ValueError(f"{config.model} is text-to-image: prior.condition must be 'text'")
    if not 0.0 <= float(p.condition_dropout) < 1.0:
        raise ValueError(f"prior.condition_dropout must lie in [0, 1), got {p.condition_dropout}")
    if not 0.0 <= float(p.text_loss_weight) < 1.0:
        raise ValueError(f"prior.text_loss_weight must lie in [0, 1), got {p.text_loss_weight}")
    if p.condition == "none" and float(p.guidance_scale) != 1.0:
        raise ValueError("prior.guidance_scale != 1 needs a condition (class or text)")


def build_objective(config) -> Objective:
    """The prior :class:`~zoo.engine.objective.Objective` described by ``config``."""
    _check_config(config)
    tokenizer, source = tokenizer_of(config)
    p, data = config.prior, config.data
    grid = (int(data.image_size) // tokenizer.factor,) * 2
    condition = str(p.condition)
    text = condition == "text"
    if text:
        from zoo.data import shapes

        table_tokens, table_attributes = (jnp.asarray(a) for a in shapes.caption_table())
        num_labels, text_vocab = shapes.NUM_CLASSES, shapes.SHAPES_TOKENIZER.vocab_size
    prior = Prior(
        num_codes=tokenizer.num_codes,
        grid=grid,
        condition=condition,
        text_mode="cross_attention" if config.model == "parti" else "prefix",
        num_classes=int(data.get("num_classes", 0)),
        text_vocab=text_vocab if text else 0,
        text_len=int(table_tokens.shape[1]) if text else 0,
        dim=int(p.dim),
        depth=int(p.depth),
        num_heads=int(p.num_heads),
        dropout=float(p.dropout),
        text_dim=int(p.text_dim),
        text_depth=int(p.text_depth),
        text_heads=int(p.text_heads),
        prefix_head=float(p.text_loss_weight) > 0,
        remat=bool(p.get("remat", False)),
        rngs=nnx.Rngs(int(config.seed)),
    )
    drop_p, text_w = float(p.condition_dropout), float(p.text_loss_weight)
    sampling = dict(temperature=float(p.temperature), top_k=int(p.top_k), top_p=float(p.top_p))
    guidance = float(p.guidance_scale)

    def condition_of(batch):
        if condition == "class":
            return batch["label"].astype(jnp.int32)
        if text:
            return batch["tokens"].astype(jnp.int32)
        return None

    def codes(models, image):
        """The frozen tokenizer's codes of ``image: [B, H, W, C]``, raster order ``[B, N]``."""
        indices = models("tokenizer").encode_indices(image.astype(jnp.float32))
        return indices.reshape(indices.shape[0], -1)

    def nll(logits, targets):
        return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

    def loss(models, batch, ctx):
        net = models("prior")
        tokens = codes(models, batch["image"])
        cond = condition_of(batch)
        if cond is not None and drop_p > 0:
            u = per_example(ctx, jax.random.uniform)
            null = net.null_condition(cond)
            keep = (u >= drop_p).reshape((-1,) + (1,) * (cond.ndim - 1))
            cond = jnp.where(keep, cond, null)
        image_logits, prefix_logits = net(cond, tokens, dropout_key=example_keys(ctx, "dropout"))
        image_nll = nll(image_logits, tokens)
        aux = {"nll": image_nll}
        value = image_nll
        if prefix_logits is not None and text_w > 0:
            text_nll = nll(prefix_logits, cond[:, 1:])
            value = text_w * text_nll + (1.0 - text_w) * image_nll
            aux["text_nll"] = text_nll
        aux["loss"] = value
        return value, aux

    def evaluate(models, batch, rng):
        """Held-out negative log-likelihood of the image codes, nats per token."""
        net = models("prior", train=False)
        tokens = codes(models, batch["image"])
        cond = condition_of(batch)
        image_logits, _ = net(cond, tokens)
        return {"nll": nll(image_logits, tokens)}

    def conditions(rng, n):
        """(cond for n samples or None, the fields returned with the samples)."""
        if condition == "class":
            labels = jnp.arange(n, dtype=jnp.int32) % prior.num_classes
            return labels, {"label": labels}
        if text:
            labels = jax.random.randint(rng, (n,), 0, num_labels)
            a = table_attributes[labels]
            fields = {"label": labels, "shape": a[:, 0], "color": a[:, 1], "position": a[:, 2]}
            return table_tokens[labels], fields
        return None, {}

    def decoder_inputs(net, cond, n):
        """Keyword arguments of the samplers: prefix, context and their null versions."""
        prefix, context, mask = net.inputs(cond, n)
        kwargs = dict(context=context, context_mask=mask, guidance_scale=guidance, **sampling)
        if guidance != 1.0:
            null_prefix, null_context, null_mask = net.inputs(net.null_condition(cond), n)
            kwargs.update(
                null_prefix=null_prefix, null_context=null_context, null_context_mask=null_mask
            )
        return prefix, kwargs

    def sample(models, rng, n: int):
        """``n`` images from the prior (EMA where kept), decoded by the tokenizer."""
        net = models("prior", train=False)
        k_cond, k_tokens = jax.random.split(rng)
        cond, fields = conditions(k_cond, n)
        prefix, kwargs = decoder_inputs(net, cond, n)
        tokens = sample_tokens(net.decoder, prefix, k_tokens, **kwargs)
        image = models("tokenizer").decode_indices(tokens.reshape(n, *grid))
        return {"image": jnp.clip(image, -1.0, 1.0), **fields}

    big = tuple(int(s) for s in p.window_grid)
    big = big if all(big) else (grid[0], 2 * grid[1])

    def sliding_window(models, rng):
        """``[1, n, H', W', C]``: samples of ``window_grid`` tokens, each token from a window
        of the training grid around it."""
        net = models("prior", train=False)
        k_cond, k_tokens = jax.random.split(rng)
        cond, _ = conditions(k_cond, NUM_WINDOW_SAMPLES)
        prefix, kwargs = decoder_inputs(net, cond, NUM_WINDOW_SAMPLES)
        tokens = sample_grid(net.decoder, prefix, k_tokens, grid=big, window=grid, **kwargs)
        image = models("tokenizer").decode_indices(tokens)
        return jnp.clip(image, -1.0, 1.0)[None]

    return one_player(
        config,
        "prior",
        prior,
        loss,
        sample=sample,
        evaluate=evaluate,
        frozen={"tokenizer": tokenizer},
        figures={"sliding_window": sliding_window},
    )
