"""Per-sample random inputs of the style-based generators and their regularisers.

A generator's ``noise_key`` (StyleGAN2, GigaGAN) is one of:

* ``None``: no noise (a deterministic generator);
* ``[B]`` keys, one per sample: what the objective passes (from
  ``zoo.engine.rng.example_keys``) and what sampling passes (one per sample of the
  sampling rng);
* one key, split into ``B`` per-sample keys: for code that has no example ids (a
  benchmark, a notebook); sample b's noise then depends on ``B``.

Layer ``i`` of sample ``b`` draws its ``[H, W, 1]`` noise image from
``fold_in(keys[b], i)``: a sample's noise depends on its own key only, never on the
other samples of its batch, so a batch gives the same images on one device, under
``jit`` or ``pmap``, in one piece or in microbatches (DESIGN.md, Parallelism).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def per_sample_keys(key: jax.Array, n: int, what: str = "noise_key") -> jax.Array:
    """``[n]`` keys: ``key`` itself if it holds ``n`` keys, ``split(key, n)`` if it is one key.

    Typed keys (``jax.random.key``) and raw ``uint32[2]`` keys both work.
    """
    key = jnp.asarray(key)
    key_ndim = 0 if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else 1
    if key.ndim == key_ndim:
        return jax.random.split(key, n)
    if key.ndim == key_ndim + 1 and key.shape[0] == n:
        return key
    raise ValueError(f"{what} must be one key or {n} keys (one per sample), got shape {key.shape}")


def noise_images(keys: jax.Array, layer: int, shape: tuple[int, ...], dtype) -> jax.Array:
    """Layer ``layer``'s noise: ``[B, *shape]`` standard normal, sample b from ``keys[b]``."""
    return jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, layer), shape, dtype))(keys)
