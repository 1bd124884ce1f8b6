"""Sinusoidal embeddings of scalar positions (diffusion timesteps, noise levels).

NeRF's positional encoding is a different function (frequencies 2^k pi of
coordinates, no max period) and lives with NeRF.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def timestep_embedding(
    t: jax.Array,
    dim: int,
    *,
    max_period: float = 10_000.0,
    flip_sin_to_cos: bool = False,
    freq_shift: float = 1.0,
) -> jax.Array:
    """Sinusoidal embedding of timesteps (Vaswani et al. 2017, sec. 3.5; DDPM's U-Net).

    Frequency i of ``half = dim // 2`` is ``max_period ** (-i / (half - freq_shift))``;
    with the default ``freq_shift=1`` they span 1 to 1/max_period exactly. The output is
    ``[sin(t f), cos(t f)]`` concatenated (as DDPM's ``get_timestep_embedding``), or
    ``[cos(t f), sin(t f)]`` with ``flip_sin_to_cos``, zero-padded to ``dim`` when ``dim``
    is odd. Stable Diffusion's U-Net (LDM's ``timestep_embedding``) uses
    ``flip_sin_to_cos=True, freq_shift=0``: weights trained with one convention are wrong
    under the other.

    Args:
      t: ``[B]`` int or float timesteps (a continuous-time model may pass
        fractional or rescaled values).
      dim: embedding width.
      max_period: the longest wavelength, in units of t.
      flip_sin_to_cos: put the cosines first.
      freq_shift: the frequency exponent's denominator is ``half - freq_shift``.

    Returns:
      ``[B, dim]`` float32.
    """
    half = dim // 2
    denominator = half - freq_shift
    denominator = denominator if denominator > 0 else 1  # dim 2 with the default shift
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / denominator)
    args = jnp.asarray(t, jnp.float32)[:, None] * freqs[None, :]
    parts = [jnp.cos(args), jnp.sin(args)] if flip_sin_to_cos else [jnp.sin(args), jnp.cos(args)]
    emb = jnp.concatenate(parts, axis=-1)
    return jnp.pad(emb, ((0, 0), (0, dim - 2 * half)))
