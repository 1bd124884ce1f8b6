"""The Gumbel-softmax relaxation and the schedules of DALL-E's discrete VAE.

Gumbel-softmax (Jang et al. 2017; Maddison et al. 2017, "Concrete"): with ``g_k`` i.i.d.
Gumbel(0, 1), ``argmax_k (l_k + g_k)`` is a sample of ``softmax(l)``, and
``softmax((l + g) / tau)`` a differentiable relaxation of its one-hot vector that becomes the
one-hot as ``tau -> 0``.

DALL-E's dVAE (Ramesh et al. 2021, appendix A.2) trains through this relaxation, annealing
``tau`` from 1 to 1/16 with a cosine schedule (:func:`temperature`), and weights the KL
between the encoder's code distribution and the uniform prior (:func:`kl_to_uniform`) by a
``beta`` raised from 0 to 6.6 over the first 5000 updates (:func:`kl_weight`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def gumbel_softmax(
    logits: jax.Array, key: jax.Array, temperature: float | jax.Array, hard: bool = False
) -> jax.Array:
    """A relaxed one-hot sample of ``softmax(logits)``: ``[..., K]`` float32.

    Args:
      logits: ``[..., K]`` unnormalised log-probabilities over the K codes (last axis).
      key: PRNG key for the Gumbel noise (one draw per entry).
      temperature: ``tau > 0``, a float or a traced scalar.
      hard: False: the soft sample ``softmax((logits + g) / tau)`` (positive, sums to 1).
        True: the exact one-hot of ``argmax(logits + g)`` in the forward pass, with the soft
        sample's gradient (straight-through, Jang et al. 2017 sec. 2.2).
    """
    noisy = logits.astype(jnp.float32) + jax.random.gumbel(key, logits.shape, jnp.float32)
    soft = jax.nn.softmax(noisy / temperature, axis=-1)
    if not hard:
        return soft
    # argmax of the noisy logits, not of soft: at small tau the softmax can underflow to ties.
    one_hot = jax.nn.one_hot(jnp.argmax(noisy, axis=-1), logits.shape[-1], dtype=jnp.float32)
    # one_hot + (soft - soft): exactly one-hot forward (x - x == 0), d/d logits of soft.
    return one_hot + (soft - jax.lax.stop_gradient(soft))


def temperature(
    step: int | jax.Array, *, start: float = 1.0, end: float = 1 / 16, anneal_steps: int
) -> jax.Array:
    """Cosine anneal of the relaxation temperature from ``start`` to ``end``: float32 scalar.

    ``end + (start - end) (1 + cos(pi t / T)) / 2`` for step ``t < T = anneal_steps``, ``end``
    after (DALL-E: 1 -> 1/16 over the first 150k updates). ``step`` may be a traced int.
    """
    if anneal_steps <= 0:
        return jnp.float32(end)
    frac = jnp.clip(jnp.asarray(step, jnp.float32) / anneal_steps, 0.0, 1.0)
    return (end + (start - end) * 0.5 * (1.0 + jnp.cos(math.pi * frac))).astype(jnp.float32)


def kl_weight(step: int | jax.Array, *, final: float, ramp_steps: int) -> jax.Array:
    """KL weight raised linearly from 0 to ``final`` over ``ramp_steps``, then constant.

    DALL-E: 0 -> 6.6 over the first 5000 updates. float32 scalar; ``step`` may be traced.
    """
    if ramp_steps <= 0:
        return jnp.float32(final)
    frac = jnp.clip(jnp.asarray(step, jnp.float32) / ramp_steps, 0.0, 1.0)
    return (final * frac).astype(jnp.float32)


def kl_to_uniform(logits: jax.Array) -> jax.Array:
    """``KL(q || U(K)) = sum_k q_k log q_k + log K`` in nats, ``q = softmax(logits)``: ``[...]``.

    ``logits: [..., K]``; computed in float32 from ``log_softmax`` (no log of a zero ``q``).
    """
    log_q = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.sum(jnp.exp(log_q) * log_q, axis=-1) + math.log(logits.shape[-1])


def diversity_gap(code_probs: jax.Array) -> jax.Array:
    """``log K - H(p)`` in nats for the batch-averaged code distribution ``p: [K]``: float32.

    0 when the batch's tokens spread evenly over the K codes, ``log K`` when they all put
    their mass on one. wav2vec 2.0's codebook diversity loss (Baevski et al. 2020) penalises
    this gap: unlike the per-token KL to the uniform prior, it leaves each token's own
    distribution free to be confident, and only asks the batch to use many codes.
    """
    p = code_probs.astype(jnp.float32)
    entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
    return jnp.float32(math.log(p.shape[-1])) - entropy
