"""unCLIP's decoder (DALL-E 2, Ramesh et al. 2022, sec. 2.1): CLIP image embedding -> image.

Config fields read (``config.model == "unclip_decoder"``; see ``configs/unclip_decoder_shapes.py``):
  stages.clip: the ``clip`` run whose image embeddings condition the decoder (frozen)
  stages.prior: an ``unclip_prior`` run over the same CLIP (frozen; sampling only)
  data: name (must be 'shapes'), image_size, channels (the CLIP run's)
  unet: the U-Net fields (:func:`zoo.diffusion.unet.unet_from_config`; no pooled context)
  decoder: num_tokens (K context tokens projected from the embedding), token_dim (their width)
  diffusion: the ddpm fields (schedule, timesteps, beta_start, beta_end, prediction,
    variance, sampler, sample_steps, ddim_eta, clip_denoised, dynamic_threshold),
    condition_dropout, guidance_scale
  optim, train.steps, ema_decay, seed

The network (:class:`EmbeddingUNet`) is a U-Net that reads the CLIP image embedding twice,
as the paper's decoder does: projected and added to the timestep embedding, and projected
into K extra tokens that every attention block attends to. Training conditions on the frozen
CLIP's embedding of the clean training image, set to zero with probability
``diffusion.condition_dropout`` (DALL-E 2: 10 %; zero is also guidance's null condition).
Unlike the paper, no caption reaches the decoder (its GLIDE text tokens, 50 % dropped).

Samples, and so the engine's caption match, are the whole unCLIP chain: random captions of
``shapes`` -> their CLIP text tower inputs -> an image embedding drawn from the prior run
(its own parameters, EMA copy and sampler settings) -> this decoder with guidance.

Evaluation (held-out batch): the decoder alone, on true embeddings: each image's CLIP
embedding is decoded, and ``reconstruction_cosine`` is the cosine of the decoded image's CLIP
embedding to it, ``reconstruction_retrieval`` the share of decoded images whose nearest
caption embedding is the original's caption (``retrieval_true``: the originals' own share).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from zoo.diffusion.clip_objective import retrieval_accuracy
from zoo.diffusion.ddpm import PREDICTIONS, VARIANCES
from zoo.diffusion.objective import check_choices, denoising_loss, schedule_from_config
from zoo.diffusion.sampling import SAMPLERS, guided_denoiser
from zoo.diffusion.sampling import sample as run_sampler
from zoo.diffusion.schedules import schedule_names
from zoo.diffusion.unclip_prior import (
    clip_of,
    embedding_sampler,
    image_embedding,
    prior_from_config,
)
from zoo.diffusion.unet import UNet, unet_from_config
from zoo.engine import stages
from zoo.engine.objective import Objective, one_player
from zoo.engine.rng import example_keys
from zoo.engine.stage_store import StageStore


class EmbeddingUNet(nnx.Module):
    """``(x [B, H, W, C], t [B], emb [B, E]) -> [B, H, W, C]`` float32.

    ``unet`` is built with ``context_dim = token_dim`` and no pooled context; ``emb`` (a CLIP
    image embedding, zeros for guidance's null condition) becomes ``extra_emb [B, 4 ch]``
    added to the timestep embedding and ``num_tokens`` context tokens ``[B, K, token_dim]``.
    """

    def __init__(self, unet: UNet, *, embed_dim: int, num_tokens: int, rngs: nnx.Rngs):
        if isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or num_tokens < 1:
            raise ValueError(f"decoder.num_tokens must be a positive integer, got {num_tokens!r}")
        self.unet, self.num_tokens, self.token_dim = unet, num_tokens, unet.context_dim
        self.to_temb = nnx.Linear(embed_dim, 4 * unet.ch, rngs=rngs)
        self.to_tokens = nnx.Linear(embed_dim, num_tokens * unet.context_dim, rngs=rngs)

    def __call__(self, x, t, emb, *, dropout_key=None):
        tokens = self.to_tokens(emb).reshape(emb.shape[0], self.num_tokens, self.token_dim)
        return self.unet(x, t, context=tokens, extra_emb=self.to_temb(emb), dropout_key=dropout_key)


def decoder_from_config(config, *, embed_dim: int, rngs: nnx.Rngs) -> EmbeddingUNet:
    """The :class:`EmbeddingUNet` of ``config.unet`` and ``config.decoder``."""
    unet_cfg = ml_collections.ConfigDict(config.unet.to_dict())
    unet_cfg.pooled_context = False  # the embedding reaches temb through extra_emb
    unet = unet_from_config(
        unet_cfg,
        image_size=int(config.data.image_size),
        channels=int(config.data.channels),
        context_dim=int(config.decoder.token_dim),
        rngs=rngs,
    )
    return EmbeddingUNet(
        unet, embed_dim=embed_dim, num_tokens=int(config.decoder.num_tokens), rngs=rngs
    )


def prior_of(config):
    """The prior run's config from ``config.stages.prior``; clear errors when it is not an
    ``unclip_prior`` run or was trained over another CLIP than ``config.stages.clip`` names."""
    source = stages.source_config(config, "prior")
    if source.get("model") != "unclip_prior":
        raise ValueError(
            f"config.stages.prior names a {source.get('model')!r} run; the decoder samples "
            "through an 'unclip_prior' run (configs/unclip_prior_shapes.py)"
        )
    specs = stages.stage_specs(config, "stages")
    # The prior's record of the CLIP it loaded (zoo.engine.stage_store): the decoder must
    # read the same embedding space.
    recorded = StageStore(specs["prior"].workdir).records()["stages"].get("clip")
    mine = specs["clip"].source()
    if recorded is not None and {k: recorded.get(k) for k in mine} != mine:
        raise ValueError(
            f"the prior in config.stages.prior was trained over the CLIP {recorded['workdir']!r} "
            f"(role {recorded['role']!r}, ema={recorded['ema']}), but config.stages.clip names "
            f"{mine}: the decoder must read the prior's embedding space; set "
            f"--config.stages.clip.workdir={recorded['workdir']}"
        )
    return source


def _check_config(config) -> None:
    if config.model != "unclip_decoder":
        raise ValueError(
            f"unclip_decoder objective builds model 'unclip_decoder', not {config.model!r}"
        )
    if config.data.name != "shapes":
        raise ValueError(
            f"unCLIP samples captions: data.name must be 'shapes', got {config.data.name!r}"
        )
    check_choices(
        config.diffusion,
        schedule=schedule_names(),
        prediction=PREDICTIONS,
        variance=VARIANCES,
        sampler=SAMPLERS,
    )
    if config.unet.get("learn_sigma", False):
        raise ValueError("the decoder has fixed variances: set unet.learn_sigma=False")


def build_objective(config) -> Objective:
    """The unCLIP decoder :class:`~zoo.engine.objective.Objective` described by ``config``."""
    _check_config(config)
    from zoo.data import shapes

    clip, clip_source = clip_of(config)
    prior_source = prior_of(config)
    E = int(clip_source.clip.embed_dim)
    prior = prior_from_config(prior_source, clip_source, rngs=nnx.Rngs(0))  # run's weights
    net = decoder_from_config(config, embed_dim=E, rngs=nnx.Rngs(int(config.seed)))
    d, data = config.diffusion, config.data
    sched = schedule_from_config(d)
    drop_p, prediction = float(d.condition_dropout), str(d.prediction)
    guidance = float(d.guidance_scale)
    shape = (int(data.image_size), int(data.image_size), int(data.channels))
    draw_embeddings = embedding_sampler(prior_source.diffusion, E)  # the prior run's sampler
    table_tokens, table_attributes = (jnp.asarray(a) for a in shapes.caption_table())

    def loss(models, batch, ctx):
        """Algorithm 4.1 on ``batch["image"] [B, H, W, C]`` given its CLIP image embedding."""
        model = models("model")
        x0 = batch["image"].astype(jnp.float32)
        emb = image_embedding(models("clip"), x0)  # [B, E] unit norm

        def apply(xt, t, u):
            keep = (u >= drop_p)[:, None]
            return model(xt, t, jnp.where(keep, emb, 0.0), dropout_key=example_keys(ctx, "dropout"))

        value, u = denoising_loss(sched, prediction, x0, ctx, apply)
        return value, {"loss": value, "kept": jnp.mean((u >= drop_p).astype(jnp.float32))}

    def decode(model, emb, rng):
        """``emb [n, E]`` -> images ``[n, H, W, C]`` in [-1, 1], with guidance."""
        denoise = guided_denoiser(model, emb, jnp.zeros_like(emb), guidance)
        return jnp.clip(run_sampler(d, denoise, sched, rng, (emb.shape[0], *shape)), -1.0, 1.0)

    def sample(models, rng, n: int):
        """``{"image", "label", "shape", "color", "position"}`` of ``n`` random captions,
        through the prior run and this decoder."""
        k_cond, k_prior, k_decode = jax.random.split(rng, 3)
        labels = jax.random.randint(k_cond, (n,), 0, table_tokens.shape[0])
        emb = draw_embeddings(models("prior"), models("clip"), table_tokens[labels], k_prior)
        images = decode(models("model", train=False), emb, k_decode)
        a = table_attributes[labels]
        return {"image": images, "label": labels, "shape": a[:, 0], "color": a[:, 1],
                "position": a[:, 2]}  # fmt: skip

    def evaluate(models, batch, rng):
        """The decoder on true embeddings of a held-out ``batch`` (module docstring)."""
        frozen_clip = models("clip")
        true = image_embedding(frozen_clip, batch["image"])
        decoded = image_embedding(frozen_clip, decode(models("model", train=False), true, rng))
        captions = frozen_clip.encode_text(table_tokens)
        labels = batch["label"]
        return {
            "reconstruction_cosine": jnp.mean(jnp.sum(decoded * true, axis=-1)),
            "reconstruction_retrieval": retrieval_accuracy(decoded, captions, labels),
            "retrieval_true": retrieval_accuracy(true, captions, labels),
        }

    return one_player(
        config,
        "model",
        net,
        loss,
        sample=sample,
        evaluate=evaluate,
        frozen={"clip": clip, "prior": prior},
    )
