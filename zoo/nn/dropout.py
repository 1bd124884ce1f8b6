"""Dropout whose mask is drawn per example, so it does not depend on how a batch is split.

A mask drawn from one key for a whole ``[B, ...]`` batch differs when the same examples
run as one batch, as microbatches, or spread over devices under ``pmap``. Drawing each
example's mask from its own key (the engine derives them from the example's global
position, ``zoo.engine.rng.example_keys``) makes all those layouts compute the same
numbers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def is_key_batch(keys: jax.Array) -> bool:
    """Whether ``keys`` is ``[B]`` typed keys (one per example) rather than one key."""
    return jnp.ndim(keys) == 1


def fold_in(keys: jax.Array, data: int) -> jax.Array:
    """``jax.random.fold_in`` of one key, or of each key of a ``[B]`` batch of keys."""
    if is_key_batch(keys):
        return jax.vmap(lambda k: jax.random.fold_in(k, data))(keys)
    return jax.random.fold_in(keys, data)


def dropout(x: jax.Array, rate: float, keys: jax.Array) -> jax.Array:
    """Inverted dropout: zero each entry with probability ``rate``, scale the rest by 1/(1-rate).

    Args:
      x: ``[B, ...]`` activations.
      rate: drop probability in [0, 1).
      keys: ``[B]`` typed PRNG keys, one per example (mask ``[...]`` drawn from key b for
        example b); or a single key, which draws one ``[B, ...]`` mask (layout-dependent).

    Returns:
      ``[B, ...]``, the same dtype as ``x``.
    """
    if rate == 0.0:
        return x
    keep = 1.0 - rate
    if is_key_batch(keys):
        if keys.shape[0] != x.shape[0]:
            raise ValueError(f"{keys.shape[0]} dropout keys for a batch of {x.shape[0]}")
        mask = jax.vmap(lambda k: jax.random.bernoulli(k, keep, x.shape[1:]))(keys)
    else:
        mask = jax.random.bernoulli(keys, keep, x.shape)
    return jnp.where(mask, x / keep, jnp.zeros_like(x)).astype(x.dtype)
