"""Volume rendering by quadrature: eq. 5.4 of the survey (paper eq. 3).

    C(r) ~ sum_i T_i (1 - exp(-sigma_i delta_i)) c_i,   T_i = exp(-sum_{j<i} sigma_j delta_j)

with ``delta_i = t_{i+1} - t_i``. Conventions:

- ``t`` is the ray parameter of ``r(t) = o + t d`` and ``d`` is NOT normalised
  (:func:`zoo.data.scenes.cameras.pixel_rays` gives ``d`` with camera-z component -1,
  so ``t`` is depth along the optical axis). The physical length of a step is
  ``delta_i |d|``, which is what the density integrates over.
- The last sample's ``delta`` is 1e10 (the reference code's choice): whatever
  the ray meets after its last sample counts as the last sample's matter, so
  an opaque last sample absorbs the remaining light. Rays leaving the scene
  through empty space (sigma = 0 there) are unaffected.
- ``T_i`` is ``exp`` of an exclusive cumulative sum of optical depths rather
  than a product of ``1 - alpha_j``: the same number, without underflowing
  products or ``log(0)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

LAST_DELTA = 1e10


def render_weights(sigma: jax.Array, t: jax.Array, directions: jax.Array) -> jax.Array:
    """Quadrature weights ``w_i = T_i (1 - exp(-sigma_i delta_i))`` of eq. 5.4.

    Args:
      sigma: ``[..., N]`` densities >= 0, in 1 / (world units).
      t: ``[..., N]`` increasing sample positions along the ray.
      directions: ``[..., 3]`` ray directions (not normalised; scales the steps).

    Returns:
      ``[..., N]`` float32 weights, each in [0, 1], summing to at most 1 over N
      (the sum is the ray's opacity, ``acc``).
    """
    sigma = jnp.asarray(sigma, jnp.float32)
    t = jnp.asarray(t, jnp.float32)
    delta = jnp.concatenate(
        [t[..., 1:] - t[..., :-1], jnp.full_like(t[..., :1], LAST_DELTA)], axis=-1
    )
    delta = delta * jnp.linalg.norm(directions, axis=-1, keepdims=True)
    tau = sigma * delta  # optical depth of each step
    alpha = 1.0 - jnp.exp(-tau)
    # T_i = exp(-sum_{j<i} tau_j): exclusive cumsum (T_1 = 1).
    excl = jnp.concatenate([jnp.zeros_like(tau[..., :1]), jnp.cumsum(tau[..., :-1], axis=-1)], -1)
    return alpha * jnp.exp(-excl)


def volume_render(
    sigma: jax.Array,
    rgb: jax.Array,
    t: jax.Array,
    directions: jax.Array,
    *,
    white_background: bool = False,
) -> dict[str, jax.Array]:
    """Composite samples along rays (eq. 5.4).

    Args:
      sigma: ``[..., N]`` densities >= 0.
      rgb: ``[..., N, 3]`` colours in [0, 1].
      t: ``[..., N]`` increasing sample positions.
      directions: ``[..., 3]`` unnormalised ray directions.
      white_background: add ``(1 - acc)`` white for the light that passes
        through (Blender scenes are RGBA composited on white).

    Returns:
      dict with ``rgb [..., 3]`` (the pixel colour), ``depth [...]`` (expected
      ``t``, ``sum_i w_i t_i``; 0 where the ray is empty), ``acc [...]`` (opacity
      ``sum_i w_i`` in [0, 1]) and ``weights [..., N]``.
    """
    weights = render_weights(sigma, t, directions)
    color = jnp.sum(weights[..., None] * rgb, axis=-2)
    acc = jnp.sum(weights, axis=-1)
    depth = jnp.sum(weights * t, axis=-1)
    if white_background:
        color = color + (1.0 - acc)[..., None]
    return {"rgb": color, "depth": depth, "acc": acc, "weights": weights}
