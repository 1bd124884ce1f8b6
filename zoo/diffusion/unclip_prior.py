"""unCLIP's diffusion prior (DALL-E 2, Ramesh et al. 2022, sec. 2.2): caption -> image embedding.

Config fields read (``config.model == "unclip_prior"``; see ``configs/unclip_prior_shapes.py``):
  stages.clip: a trained ``clip`` run (:mod:`zoo.diffusion.clip_objective`), loaded frozen
  data: name (must be 'shapes'), image_size, channels (the CLIP run's)
  prior: dim, depth, num_heads (the transformer)
  diffusion: schedule, timesteps, beta_start, beta_end (linear only), prediction ('x0' as in
    the paper; 'eps' and 'v' work too), sampler, sample_steps, ddim_eta, variance (ancestral),
    clip_denoised (must be False), condition_dropout, guidance_scale
  optim, train.steps, ema_decay, seed

The network is a transformer without a causal mask over the sequence
``[caption token features (L), CLIP text embedding, timestep embedding, noised image
embedding, learned query]``, with a learned position per slot; its output at the query slot
is the model output (DALL-E 2 predicts the clean embedding x0 and trains it with MSE). The
caption token features are the frozen CLIP text tower's per-token outputs. The blocks are
:class:`zoo.nn.text.TextBlock` (pre-LN attention + MLP).

The diffused vector is the unit-norm CLIP image embedding times ``sqrt(E)`` (DALLE2-pytorch's
``image_embed_scale``): unit variance per component, the scale the forward process assumes.
Samples are divided by it and L2-normalised back onto CLIP's sphere.

Classifier-free guidance: the condition is a keep flag ``[B]`` (1 = the caption, 0 = the
null condition) passed as ``cond`` to :func:`zoo.diffusion.sampling.guided_denoiser`; the
caption's features travel as shared ``extra`` inputs and a dropped caption is masked out of
attention (its token and text-embedding slots), so the null condition carries no caption.
Training drops it with probability ``diffusion.condition_dropout`` (DALL-E 2: 10 %).

Evaluation (held-out batch): ``cosine``, the cosine of an embedding sampled for each
example's caption to that image's true CLIP embedding; ``cosine_text``, the same for the
caption's CLIP text embedding (what a decoder would get without a prior); ``retrieval``, the
share of sampled embeddings whose nearest of the 162 caption embeddings is their caption;
``retrieval_true``, the same for the true image embeddings (the ceiling).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.diffusion.clip import CLIP, clip_from_config, l2_normalize
from zoo.diffusion.clip_objective import retrieval_accuracy
from zoo.diffusion.ddpm import PREDICTIONS
from zoo.diffusion.objective import check_choices, denoising_loss, schedule_from_config
from zoo.diffusion.sampling import SAMPLERS, guided_denoiser
from zoo.diffusion.sampling import sample as run_sampler
from zoo.diffusion.schedules import schedule_names
from zoo.engine import stages
from zoo.engine.objective import Objective, one_player
from zoo.nn.embeddings import timestep_embedding
from zoo.nn.text import TextBlock

_INIT = nnx.initializers.normal(0.02)  # GPT-2 scale for the query and position tables
EXTRA_SLOTS = 4  # text embedding, timestep, noised embedding, query


class UnclipPrior(nnx.Module):
    """``(x [B, E], t [B], keep [B], *, tokens [B, L, text_dim], token_mask [B, L],
    text_emb [B, E]) -> [B, E]`` float32: the model output for the noised embedding ``x``.

    Args:
      embed_dim: E, CLIP's joint width.
      text_dim: width of the CLIP text tower's token features.
      max_len: L, caption tokens per example.
      dim, depth, num_heads: the transformer.
    """

    def __init__(
        self, *, embed_dim: int, text_dim: int, max_len: int, dim: int, depth: int,
        num_heads: int, rngs: nnx.Rngs,
    ):  # fmt: skip
        for name, value in dict(dim=dim, depth=depth, num_heads=num_heads).items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"prior.{name} must be a positive integer, got {value!r}")
        if dim % num_heads:
            raise ValueError(f"prior.dim={dim} is not divisible by prior.num_heads={num_heads}")
        self.dim, self.max_len = dim, max_len
        self.token_proj = nnx.Linear(text_dim, dim, rngs=rngs)
        self.text_proj = nnx.Linear(embed_dim, dim, rngs=rngs)
        self.x_proj = nnx.Linear(embed_dim, dim, rngs=rngs)
        self.time0 = nnx.Linear(dim, dim, rngs=rngs)
        self.time1 = nnx.Linear(dim, dim, rngs=rngs)
        self.query = nnx.Param(_INIT(rngs.params(), (dim,)))
        self.position = nnx.Param(_INIT(rngs.params(), (max_len + EXTRA_SLOTS, dim)))
        self.blocks = nnx.List([TextBlock(dim, num_heads, rngs=rngs) for _ in range(depth)])
        self.norm = nnx.LayerNorm(dim, rngs=rngs)
        self.out = nnx.Linear(dim, embed_dim, rngs=rngs)
        self.dtype = jnp.float32  # compute dtype (zoo.engine.precision)

    def __call__(self, x, t, keep, *, tokens, token_mask, text_emb):
        b, length = tokens.shape[:2]
        if length != self.max_len:
            raise ValueError(f"the prior reads {self.max_len} caption tokens, got {length}")
        temb = self.time1(nnx.silu(self.time0(timestep_embedding(t, self.dim))))
        seq = jnp.concatenate(
            [
                self.token_proj(tokens),
                self.text_proj(text_emb)[:, None],
                temb[:, None],
                self.x_proj(x)[:, None],
                jnp.broadcast_to(self.query[...].astype(self.dtype), (b, 1, self.dim)),
            ],
            axis=1,
        )
        seq = seq.astype(self.dtype) + self.position[...].astype(self.dtype)
        kept = keep.astype(bool)[:, None]  # [B, 1]; a dropped caption is masked out
        mask = jnp.concatenate(
            [token_mask & kept, kept, jnp.ones((b, 3), bool)], axis=1
        )  # [B, L + 4]: the timestep, x_t and query slots are always there
        for block in self.blocks:
            seq = block(seq, mask[:, None, None, :])
        return self.out(self.norm(seq[:, -1])).astype(jnp.float32)


def embed_scale(embed_dim: int) -> float:
    """The factor from a unit-norm embedding to the diffused vector: ``sqrt(E)``."""
    return math.sqrt(embed_dim)


def clip_of(config) -> tuple[CLIP, object]:
    """The frozen CLIP module of ``config.stages.clip`` and its run's config; clear errors
    when that run is not a ``clip`` run or was trained on other images."""
    source = stages.source_config(config, "clip")
    if source.get("model") != "clip":
        raise ValueError(
            f"config.stages.clip names a {source.get('model')!r} run; unCLIP needs a 'clip' "
            "run (python -m zoo.main --config=configs/clip_shapes.py --workdir=runs/clip_shapes)"
        )
    stages.require_same_data(config, source, "clip")
    from zoo.data import shapes

    clip = clip_from_config(
        source,
        vocab_size=shapes.SHAPES_TOKENIZER.vocab_size,
        max_len=shapes.SHAPES_MAX_LEN,
        rngs=nnx.Rngs(0),  # replaced by the run's weights
    )
    return clip, source


def prior_from_config(config, clip_source, *, rngs: nnx.Rngs) -> UnclipPrior:
    """The :class:`UnclipPrior` of ``config.prior`` over the CLIP of ``clip_source``."""
    from zoo.data import shapes

    p, c = config.prior, clip_source.clip
    return UnclipPrior(
        embed_dim=int(c.embed_dim),
        text_dim=int(c.text_dim),
        max_len=shapes.SHAPES_MAX_LEN,
        dim=p.dim,
        depth=p.depth,
        num_heads=p.num_heads,
        rngs=rngs,
    )


def image_embedding(clip: CLIP, images: jax.Array) -> jax.Array:
    """``images [B, S, S, C]`` in [-1, 1] -> unit-norm ``[B, E]`` (a noise-aware CLIP at t=0)."""
    t = jnp.zeros(images.shape[:1], jnp.int32) if clip.noise_aware else None
    return clip.encode_image(images.astype(jnp.float32), t)


def caption_inputs(clip: CLIP, tokens: jax.Array) -> dict:
    """The prior's caption inputs for ``tokens [B, L]``: the CLIP text tower's token features
    ``[B, L, text_dim]``, their mask ``[B, L]`` and the text embedding ``[B, E]``."""
    tokens = tokens.astype(jnp.int32)
    local, _, mask = clip.text_encoder(tokens)
    return {"tokens": local, "token_mask": mask, "text_emb": clip.encode_text(tokens)}


def embedding_sampler(d, embed_dim: int):
    """``(prior, clip, tokens [n, L], rng) -> [n, E]`` unit-norm sampled image embeddings,
    with the sampler and guidance scale of ``d`` (a prior run's ``config.diffusion``)."""
    sched, scale = schedule_from_config(d), embed_scale(embed_dim)
    guidance = float(d.guidance_scale)

    def draw(prior, clip, tokens, rng):
        n = tokens.shape[0]
        keep = jnp.ones((n,), jnp.float32)
        denoise = guided_denoiser(
            prior, keep, jnp.zeros_like(keep), guidance, caption_inputs(clip, tokens)
        )
        return l2_normalize(run_sampler(d, denoise, sched, rng, (n, embed_dim)) / scale)

    return draw


def check_prior_config(config) -> None:
    """ValueErrors naming the bad field of ``config.diffusion`` (before anything compiles)."""
    if config.data.name != "shapes":
        raise ValueError(
            f"unCLIP reads captions: data.name must be 'shapes', got {config.data.name!r}"
        )
    d = config.diffusion
    check_choices(d, schedule=schedule_names(), prediction=PREDICTIONS, sampler=SAMPLERS)
    if d.clip_denoised or float(d.get("dynamic_threshold", 0.0)):
        raise ValueError(
            "the prior diffuses embeddings scaled by sqrt(E), not pixels in [-1, 1]: set "
            "diffusion.clip_denoised=False and dynamic_threshold=0"
        )


def build_objective(config) -> Objective:
    """The unCLIP prior :class:`~zoo.engine.objective.Objective` described by ``config``."""
    if config.model != "unclip_prior":
        raise ValueError(
            f"unclip_prior objective builds model 'unclip_prior', not {config.model!r}"
        )
    check_prior_config(config)
    from zoo.data import shapes

    clip, clip_source = clip_of(config)
    prior = prior_from_config(config, clip_source, rngs=nnx.Rngs(int(config.seed)))
    d = config.diffusion
    sched = schedule_from_config(d)  # a bad beta range fails here, not in jit
    E = int(clip_source.clip.embed_dim)
    scale, drop_p, prediction = embed_scale(E), float(d.condition_dropout), str(d.prediction)
    draw_embeddings = embedding_sampler(d, E)
    table_tokens = jnp.asarray(shapes.caption_table()[0])  # [NUM_CLASSES, L]

    def loss(models, batch, ctx):
        """MSE of the prior's output on ``batch["image"]``'s CLIP embedding, noised."""
        model, frozen_clip = models("model"), models("clip")
        z0 = scale * image_embedding(frozen_clip, batch["image"])  # [B, E]
        inputs = caption_inputs(frozen_clip, batch["tokens"])

        def apply(zt, t, u):
            return model(zt, t, (u >= drop_p).astype(jnp.float32), **inputs)

        value, u = denoising_loss(sched, prediction, z0, ctx, apply)
        keep = (u >= drop_p).astype(jnp.float32)
        return value, {"loss": value, "kept": jnp.mean(keep)}

    def sample(models, rng, n: int):
        """``{"embedding": [n, E] unit-norm, "label": [n]}`` for random captions."""
        k_cond, k_sample = jax.random.split(rng)
        labels = jax.random.randint(k_cond, (n,), 0, table_tokens.shape[0])
        prior, frozen_clip = models("model", train=False), models("clip")
        return {"embedding": draw_embeddings(prior, frozen_clip, table_tokens[labels], k_sample),
                "label": labels}  # fmt: skip

    def evaluate(models, batch, rng):
        """Sampled vs true embeddings of a held-out ``batch`` (see the module docstring)."""
        prior, frozen_clip = models("model", train=False), models("clip")
        labels = batch["label"]
        true = image_embedding(frozen_clip, batch["image"])
        text = frozen_clip.encode_text(batch["tokens"].astype(jnp.int32))
        sampled = draw_embeddings(prior, frozen_clip, batch["tokens"], rng)
        captions = frozen_clip.encode_text(table_tokens)
        return {
            "cosine": jnp.mean(jnp.sum(sampled * true, axis=-1)),
            "cosine_text": jnp.mean(jnp.sum(text * true, axis=-1)),
            "retrieval": retrieval_accuracy(sampled, captions, labels),
            "retrieval_true": retrieval_accuracy(true, captions, labels),
        }

    return one_player(
        config,
        "model",
        prior,
        loss,
        sample=sample,
        evaluate=evaluate,
        frozen={"clip": clip},
    )
