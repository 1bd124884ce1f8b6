"""Where to evaluate the field along each ray: stratified and hierarchical samples.

Rays are ``r(t) = o + t d`` for ``t`` in ``[near, far]``; every function works on
``t`` values only and broadcasts over leading batch axes ``[...]``.

- :func:`stratified_samples`: eq. 5.3 of the survey (paper eq. 2), one uniform
  draw in each of N evenly spaced bins, so the MLP is queried at continuous
  positions over training.
- :func:`sample_pdf`: the paper's hierarchical sampling (sec. 5.2): treat the
  coarse weights as a piecewise-constant PDF along the ray and draw fine samples
  by inverse transform sampling.
- :func:`merge_samples`: the fine network sees the union of both sets, sorted.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Added to every weight before normalising (as the reference code's 1e-5): a ray
# with all-zero coarse weights then samples uniformly instead of dividing by 0.
WEIGHT_PADDING = 1e-5


def stratified_samples(
    near, far, num_samples: int, key: jax.Array | None = None, batch_shape: tuple = ()
) -> jax.Array:
    """Eq. 5.3: ``t_i ~ U[near + (i-1)/N (far - near), near + i/N (far - near)]``.

    Args:
      near, far: scalars or arrays broadcastable to ``batch_shape`` (ray bounds,
        in units of ``t``).
      num_samples: N, the number of bins (one sample per bin).
      key: PRNG key for the uniform jitter; ``None`` gives the bin midpoints
        (deterministic rendering at evaluation).
      batch_shape: leading shape of the result, e.g. ``(num_rays,)``.

    Returns:
      ``[*batch_shape, N]`` float32, strictly increasing along the last axis.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    near = jnp.broadcast_to(jnp.asarray(near, jnp.float32), batch_shape)[..., None]
    far = jnp.broadcast_to(jnp.asarray(far, jnp.float32), batch_shape)[..., None]
    shape = (*batch_shape, num_samples)
    if key is None:
        u = jnp.broadcast_to(jnp.float32(0.5), shape)
    else:
        u = jax.random.uniform(key, shape, jnp.float32)
    # Position within [0, 1] of the ray segment: bin i plus the jitter inside it.
    s = (jnp.arange(num_samples, dtype=jnp.float32) + u) / num_samples
    return near + (far - near) * s


def sample_pdf(
    bins: jax.Array, weights: jax.Array, num_samples: int, key: jax.Array | None = None
) -> jax.Array:
    """Inverse-CDF samples from the piecewise-constant density ``weights`` on ``bins``.

    Paper sec. 5.2: normalising the coarse weights ``w_i`` gives a PDF along the
    ray; sampling it puts the fine samples where the coarse pass found matter.

    Args:
      bins: ``[..., N+1]`` increasing bin edges (in ``t``).
      weights: ``[..., N]`` non-negative weight of each bin (need not sum to 1).
      num_samples: how many samples to draw per ray.
      key: PRNG key for ``u ~ U[0, 1)``; ``None`` uses evenly spaced
        ``u = linspace(0, 1, num_samples)`` (deterministic evaluation).

    Returns:
      ``[..., num_samples]`` float32 sorted samples in ``[bins[0], bins[-1]]``.
      Gradients are stopped: the samples are where to look, not a function of
      the parameters to differentiate (the paper trains the coarse net only
      through its own photometric loss).
    """
    bins = jax.lax.stop_gradient(jnp.asarray(bins, jnp.float32))
    weights = jax.lax.stop_gradient(jnp.asarray(weights, jnp.float32))
    if bins.shape[-1] != weights.shape[-1] + 1:
        raise ValueError(f"bins {bins.shape} must have one more edge than weights {weights.shape}")
    n = weights.shape[-1]
    batch = jnp.broadcast_shapes(bins.shape[:-1], weights.shape[:-1])
    bins = jnp.broadcast_to(bins, (*batch, n + 1))
    weights = jnp.maximum(jnp.broadcast_to(weights, (*batch, n)), 0.0) + WEIGHT_PADDING
    pdf = weights / jnp.sum(weights, axis=-1, keepdims=True)
    cdf = jnp.cumsum(pdf[..., :-1], axis=-1)
    # cdf[0] = 0, cdf[N] = 1 exactly, so every u in [0, 1] falls in some bin.
    cdf = jnp.concatenate(
        [jnp.zeros((*batch, 1)), jnp.minimum(cdf, 1.0), jnp.ones((*batch, 1))], -1
    )

    if key is None:
        u = jnp.broadcast_to(
            jnp.linspace(0.0, 1.0, num_samples, dtype=jnp.float32), (*batch, num_samples)
        )
    else:
        # Sorted u gives sorted samples: the inverse CDF is monotone.
        u = jnp.sort(jax.random.uniform(key, (*batch, num_samples), jnp.float32), axis=-1)

    # Bin of each u: the number of CDF knots <= u, minus one (a batched searchsorted;
    # N is tens, so the [..., S, N+1] comparison is cheap and vectorises).
    idx = jnp.sum(cdf[..., None, :] <= u[..., :, None], axis=-1)
    below = jnp.clip(idx - 1, 0, n)
    above = jnp.clip(idx, 0, n)
    cdf_lo = jnp.take_along_axis(cdf, below, axis=-1)
    cdf_hi = jnp.take_along_axis(cdf, above, axis=-1)
    bin_lo = jnp.take_along_axis(bins, below, axis=-1)
    bin_hi = jnp.take_along_axis(bins, above, axis=-1)
    denom = cdf_hi - cdf_lo
    # Linear inside the bin (constant density); a zero-width CDF step only
    # happens at u = 1, where below == above and either fraction gives bins[-1].
    frac = jnp.where(denom > 0, (u - cdf_lo) / jnp.where(denom > 0, denom, 1.0), 0.0)
    t = bin_lo + jnp.clip(frac, 0.0, 1.0) * (bin_hi - bin_lo)
    return jax.lax.stop_gradient(t)


def merge_samples(t_coarse: jax.Array, t_fine: jax.Array) -> jax.Array:
    """``[..., Nc]`` and ``[..., Nf]`` -> ``[..., Nc + Nf]`` sorted (paper sec. 5.2: the
    fine network is evaluated at the union of the coarse and fine samples)."""
    batch = jnp.broadcast_shapes(t_coarse.shape[:-1], t_fine.shape[:-1])
    t = jnp.concatenate(
        [
            jnp.broadcast_to(t_coarse, (*batch, t_coarse.shape[-1])),
            jnp.broadcast_to(t_fine, (*batch, t_fine.shape[-1])),
        ],
        axis=-1,
    )
    return jnp.sort(t, axis=-1)
