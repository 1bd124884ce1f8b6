"""Sinusoidal embeddings of scalar positions (diffusion timesteps, noise levels).

NeRF's positional encoding is a different function (frequencies 2^k pi of
coordinates, no max period) and lives with NeRF.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def timestep_embedding(t: jax.Array, dim: int, *, max_period: float = 10_000.0) -> jax.Array:
    """Sinusoidal embedding of timesteps (Vaswani et al. 2017, sec. 3.5; DDPM's U-Net).

    Frequency i of ``half = dim // 2`` is ``max_period ** (-i / (half - 1))``, so
    they span 1 to 1/max_period; the output is ``[sin(t f), cos(t f)]``
    concatenated (as DDPM's ``get_timestep_embedding``), zero-padded to ``dim``
    when ``dim`` is odd.

    Args:
      t: ``[B]`` int or float timesteps (a continuous-time model may pass
        fractional or rescaled values).
      dim: embedding width.
      max_period: the longest wavelength, in units of t.

    Returns:
      ``[B, dim]`` float32.
    """
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / max(half - 1, 1))
    args = jnp.asarray(t, jnp.float32)[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
    return jnp.pad(emb, ((0, 0), (0, dim - 2 * half)))
