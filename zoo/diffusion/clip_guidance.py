"""CLIP guidance (GLIDE, Nichol et al. 2022, sec. 2.4; the survey's eq. 4.7).

Classifier guidance (Dhariwal & Nichol 2021) shifts the mean of each reverse step
p(x_{t-1} | x_t) = N(mu, Sigma) by ``s * Sigma * grad_x log p(c | x_t)``. GLIDE replaces the
classifier by a CLIP: the shifted mean is

    mu_hat(x_t | c) = mu(x_t | c) + s * Sigma(x_t | c) * grad_{x_t} (f(x_t, t) . g(c)),

where f and g are the image and caption embeddings of a *noise-aware* CLIP (trained on x_t,
given t; :mod:`zoo.diffusion.clip_objective`), so the gradient is meaningful at every step.
The functions are pure: the ancestral sampler computes ``mean`` and ``variance`` as it
always does (:func:`zoo.diffusion.ddpm.p_mean_variance`) and calls
:func:`clip_mean_shift`'s function in between. A diffusion run turns it on with
``diffusion.clip_guidance_scale > 0`` and a CLIP run in ``config.stages.clip``
(:func:`clip_of` builds that frozen role and checks it fits).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.diffusion.clip import CLIP, clip_from_config
from zoo.diffusion.ddpm import MeanShift
from zoo.diffusion.sampling import tile
from zoo.engine import stages

# The fields of config.diffusion that define q(x_t | x_0): a noise-aware CLIP's t means the
# same noise level as the guided model's only when they agree.
FORWARD_PROCESS = ("schedule", "timesteps", "beta_start", "beta_end")


def clip_similarity(clip_model: CLIP, x_t: jax.Array, t: jax.Array, tokens: jax.Array):
    """Cosine similarity f(x_t, t) . g(c) per example: ``[B]`` float32 in [-1, 1].

    Args:
      clip_model: a :class:`~zoo.diffusion.clip.CLIP` (eval mode). A noise-aware one reads
        ``t``; a plain one ignores it (GLIDE found such guidance much weaker).
      x_t: ``[B, S, S, C]`` float32, the noisy images of the reverse process.
      t: ``[B]`` int timestep indices (0-based: index t is the paper's step t + 1).
      tokens: ``[B, L]`` int caption ids of the target captions (0 = padding).
    """
    image = clip_model.encode_image(x_t, t if clip_model.noise_aware else None)
    text = clip_model.encode_text(tokens)
    return jnp.sum(image * text, axis=-1)


def clip_similarity_grad(clip_model: CLIP, x_t: jax.Array, t: jax.Array, tokens: jax.Array):
    """``grad_{x_t} (f(x_t, t) . g(c))``: ``[B, S, S, C]`` float32, example i's gradient of its
    own similarity (the image tower treats examples independently, so the gradient of the sum
    over the batch is the per-example gradient). Arguments as :func:`clip_similarity`; the
    caption embedding is a constant here (only x_t is differentiated)."""
    text = jax.lax.stop_gradient(clip_model.encode_text(tokens))
    t_in = t if clip_model.noise_aware else None

    def total_similarity(x):
        return jnp.sum(clip_model.encode_image(x, t_in) * text)

    return jax.grad(total_similarity)(x_t.astype(jnp.float32))


def clip_guided_mean(
    mean: jax.Array, variance: jax.Array, grad: jax.Array, scale: float
) -> jax.Array:
    """GLIDE's shifted reverse-step mean: ``mean + scale * variance * grad``.

    Args:
      mean: ``[B, S, S, C]``, mu(x_t) of the reverse step.
      variance: Sigma of the reverse step, broadcastable to ``mean``: ``[B, 1, 1, 1]``
        (a fixed or learned per-step variance), ``[B, S, S, C]`` or a scalar.
      grad: ``[B, S, S, C]`` from :func:`clip_similarity_grad`.
      scale: the guidance scale s >= 0 (0: no guidance).

    Returns:
      ``[B, S, S, C]`` float32.
    """
    return mean + scale * variance * grad


def clip_mean_shift(clip_model: CLIP, tokens: jax.Array, scale: float) -> MeanShift:
    """The ancestral sampler's ``mean_shift`` for CLIP guidance towards captions ``tokens``.

    tokens: ``[B, L]`` caption ids of the samples (tiled to the sampler's batch N, a
    multiple of B); scale: s of eq. 4.7. Returns ``(mean, variance, x_t, t) -> mean +
    s * variance * grad_{x_t} f(x_t, t) . g(c)``, each ``[N, S, S, C]``.
    """

    def shift(mean, variance, x, t):
        grad = clip_similarity_grad(clip_model, x, t, tile(tokens, x.shape[0]))
        return clip_guided_mean(mean, variance, grad, scale)

    return shift


def clip_of(config) -> CLIP:
    """The frozen CLIP of ``config.stages.clip`` (a ``clip`` run), built from that run's config.

    Clear errors, before anything compiles, when the run is not a CLIP, was trained on
    other image sizes, or (noise-aware) on another forward process than ``config.diffusion``.
    """
    from zoo.data import shapes

    source = stages.source_config(config, "clip")
    if source.get("model") != "clip":
        raise ValueError(
            f"config.stages.clip names a {source.get('model')!r} run; CLIP guidance needs a "
            "'clip' run (python -m zoo.main --config=configs/clip_shapes.py:noisy)"
        )
    stages.require_same_data(config, source, "clip")
    if source.clip.noise_aware:
        theirs = {k: source.diffusion.get(k) for k in FORWARD_PROCESS}
        mine = {k: config.diffusion.get(k) for k in FORWARD_PROCESS}
        if theirs != mine:
            fix = " ".join(f"--config.diffusion.{k}={v!r}" for k, v in mine.items())
            raise ValueError(
                f"the noise-aware CLIP in config.stages.clip was trained on x_t of the forward "
                f"process {theirs}, this run diffuses with {mine}: its t would name another "
                f"noise level. Train the CLIP with {fix}"
            )
    return clip_from_config(
        source,
        vocab_size=shapes.SHAPES_TOKENIZER.vocab_size,
        max_len=shapes.SHAPES_MAX_LEN,
        rngs=nnx.Rngs(int(source.seed)),
    )
