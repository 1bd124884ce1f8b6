"""NeRF's positional encoding gamma (Mildenhall et al. 2020, sec. 5.1, eq. 4).

gamma(p) = (sin(2^0 pi p), cos(2^0 pi p), ..., sin(2^(L-1) pi p), cos(2^(L-1) pi p)),
applied to each coordinate separately. Without it the MLP is biased towards low
frequencies and renders blurry scenes (the paper's ablation, table 2). The
diffusion timestep embedding in :mod:`zoo.nn.embeddings` is a different function
(geometric frequencies below 1, a max period), hence this module.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def encoded_size(dim: int, num_freqs: int, include_input: bool = True) -> int:
    """Width of :func:`positional_encoding`'s output: ``dim * (2 L + include_input)``."""
    return dim * (2 * num_freqs + int(include_input))


def positional_encoding(x: jax.Array, num_freqs: int, include_input: bool = True) -> jax.Array:
    """gamma(x) of the NeRF paper, eq. 4, per coordinate.

    Args:
      x: ``[..., D]`` float coordinates (positions, or unit view directions).
      num_freqs: L; frequencies ``2^k pi`` for ``k = 0 .. L-1`` (paper: 10 for
        positions, 4 for directions).
      include_input: prepend ``x`` itself (as the reference code does; it keeps
        the encoding injective beyond the lowest frequency's period).

    Returns:
      ``[..., D * (2 L + include_input)]`` float32, laid out as
      ``[x, sin(2^0 pi x), cos(2^0 pi x), sin(2^1 pi x), ...]`` where each entry
      is a block of D coordinates.
    """
    if num_freqs < 0:
        raise ValueError(f"num_freqs must be >= 0, got {num_freqs}")
    x = jnp.asarray(x, jnp.float32)
    # Exact powers of two times pi, so frequency k is the paper's 2^k pi to float32 precision.
    freqs = jnp.pi * 2.0 ** jnp.arange(num_freqs, dtype=jnp.float32)  # [L]
    angles = x[..., None, :] * freqs[:, None]  # [..., L, D]
    feats = jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-2)  # [..., L, 2, D]
    feats = feats.reshape(*x.shape[:-1], 2 * num_freqs * x.shape[-1])
    return jnp.concatenate([x, feats], axis=-1) if include_input else feats
