"""CLIP guidance (GLIDE, Nichol et al. 2022, sec. 2.4; the survey's eq. 4.7).

Classifier guidance (Dhariwal & Nichol 2021) shifts the mean of each reverse step
p(x_{t-1} | x_t) = N(mu, Sigma) by ``s * Sigma * grad_x log p(c | x_t)``. GLIDE replaces the
classifier by a CLIP: the shifted mean is

    mu_hat(x_t | c) = mu(x_t | c) + s * Sigma(x_t | c) * grad_{x_t} (f(x_t, t) . g(c)),

where f and g are the image and caption embeddings of a *noise-aware* CLIP (trained on x_t,
given t; :mod:`zoo.diffusion.clip_objective`), so the gradient is meaningful at every step.
Both functions are pure: a sampler computes ``mean`` and ``variance`` as it always does
(:func:`zoo.diffusion.ddpm.p_mean_variance`) and calls them in between.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from zoo.diffusion.clip import CLIP


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
