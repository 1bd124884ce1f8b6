"""GAN regularisers: the R1 gradient penalty and StyleGAN2's path length penalty.

R1 (Mescheder et al. 2018, eq. 9): ``(gamma / 2) E_real ||grad_x D(x)||^2``; here the
per-example squared norm, the caller applies ``gamma / 2`` (and the lazy-regularisation
factor of StyleGAN2 sec. 3.1).

Path length (StyleGAN2 sec. 3.2, eq. 4): ``E_{w, y} (||J_w^T y||_2 - a)^2`` with
``y ~ N(0, I)`` image-shaped, drawn per example, and ``a`` the running mean of the
lengths. As in the official code, y is scaled by ``1 / sqrt(H W)`` so the length does not
grow with the resolution, and with per-layer ws ``[B, num_ws, w_dim]`` the squared norm
is summed over w_dim and averaged over the num_ws layers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from zoo.gan.noise import per_sample_keys


def r1_penalty(
    d_fn: Callable[[jax.Array | Sequence[jax.Array]], jax.Array],
    real_images: jax.Array | Sequence[jax.Array],
) -> jax.Array:
    """``||grad_x D(x)||^2`` per example: ``[B]`` float32.

    ``d_fn`` maps ``real_images`` (one ``[B, H, W, C]`` array or a list of them, e.g. a
    multi-scale pyramid) to logits ``[B]``. Examples are independent in D (minibatch
    stddev aside, as in the official code), so the gradient of ``sum_b D(x)_b`` gives each
    example's gradient; squares are summed over every pixel of every array.
    """
    is_list = isinstance(real_images, list | tuple)
    images = list(real_images) if is_list else real_images

    def total(x):
        logits = d_fn(x)
        return jnp.sum(logits.astype(jnp.float32)), logits

    grads, logits = jax.grad(total, has_aux=True)(images)
    if logits.ndim != 1:
        raise ValueError(f"d_fn must return logits [B], got shape {logits.shape}")
    leaves = jax.tree.leaves(grads)
    return sum(
        jnp.sum(jnp.square(g.astype(jnp.float32)).reshape(g.shape[0], -1), axis=1) for g in leaves
    )


def path_length_penalty(
    synthesis_fn: Callable[[jax.Array], jax.Array],
    ws: jax.Array,
    keys: jax.Array,
    pl_mean: jax.Array | float,
    decay: float = 0.01,
    weights: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """StyleGAN2 eq. 4. Returns ``(penalty [B], new_pl_mean [], lengths [B])``.

    Args:
      synthesis_fn: ``ws [B, num_ws, w_dim] -> images [B, H, W, C]``.
      ws: per-layer latents ``[B, num_ws, w_dim]``.
      keys: ``[B]`` PRNG keys, one per example: example b's ``y`` is drawn from ``keys[b]``
        alone, so it does not depend on how the batch is split; one key is split into B.
      pl_mean: the running mean ``a`` of the lengths (a scalar; 0 at the start).
      decay: ``a <- a + decay * (mean(weights * lengths) - a)``.
      weights: ``[B]`` weights of the batch mean (default all 1): the objective's way to
        average over a subset of the examples with a fixed normaliser.

    ``lengths = sqrt(mean_l sum_d (J^T y)_{b,l,d}^2)`` with ``J^T y`` from one
    ``jax.vjp`` and ``y ~ N(0, I) / sqrt(H W)``; ``penalty = (lengths - a)^2`` with ``a``
    the mean *before* this batch's update. The official code subtracts the updated
    mean, which is a function of the whole (per-GPU) batch; the mean before the update
    is the same on every device and microbatch, so each example's penalty is its own and
    a batch gives the same penalties however it is split. The two targets differ by
    ``decay * (mean(lengths) - a)``: 1% of the gap at the default decay.
    Gradients flow to the synthesis parameters through ``J^T y``; ``new_pl_mean`` is
    stopped (it is state, not a loss term).
    """
    if ws.ndim != 3:
        raise ValueError(f"ws must be [B, num_ws, w_dim], got {ws.shape}")
    images, vjp = jax.vjp(synthesis_fn, ws)
    if images.ndim != 4 or images.shape[0] != ws.shape[0]:
        raise ValueError(f"synthesis_fn must return [B, H, W, C], got {images.shape}")
    h, w = images.shape[1:3]
    keys = per_sample_keys(keys, ws.shape[0], "keys")
    y = jax.vmap(lambda k: jax.random.normal(k, images.shape[1:], images.dtype))(keys)
    (grad_ws,) = vjp(y / jnp.sqrt(float(h * w)))
    lengths = jnp.sqrt(jnp.mean(jnp.sum(jnp.square(grad_ws.astype(jnp.float32)), axis=2), axis=1))
    pl_mean = jax.lax.stop_gradient(jnp.asarray(pl_mean, jnp.float32))
    batch_mean = jnp.mean(lengths if weights is None else weights * lengths)
    new_mean = jax.lax.stop_gradient(pl_mean + decay * (batch_mean - pl_mean))
    return jnp.square(lengths - pl_mean), new_mean, lengths
