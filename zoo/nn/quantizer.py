"""Vector quantizer of VQ-VAE (van den Oord et al. 2017), with an EMA codebook and code restarts.

Each ``D``-vector of the encoder output is replaced by its nearest of ``K`` code vectors; the
gradient passes straight through to the encoder. The codebook learns in one of two ways:

- gradient codebook (``ema_decay == 0``): the codes are an ``nnx.Param`` and the loss holds
  the codebook term ``||sg(z) - e||^2`` (VQ-VAE eq. 3) next to the commitment
  ``beta ||z - sg(e)||^2``;
- EMA codebook (``ema_decay = d > 0``, VQ-VAE appendix A.1; Razavi et al. 2019): each code is
  the running mean of the vectors assigned to it, ``e_k = m_k / N_k`` with
  ``N_k <- d N_k + (1 - d) n_k`` and ``m_k <- d m_k + (1 - d) sum_{i -> k} z_i``; the loss is
  the commitment only, and no optimizer touches the codes.

Batch-size-free statistics. ``n_k`` and ``sum z`` are divided by the number of vectors ``N``
in the batch (``e = m / N`` does not change). The stored statistics are then means, linear in
the batch: averaging the states updated on equal shards (the engine pmeans float non-parameter
state under ``pmap``) gives the state updated on the whole batch under ``jit``. The codebook is
*derived* from them (:func:`smoothed_codebook`) rather than stored, because ``m / N`` is not
linear and the mean of per-device codebooks would not be the codebook of the mean statistics.

Dead-code restart (Dhariwal et al. 2020, Jukebox): a code whose running share of assignments
``N_k`` (an EMA of ``n_k / N``, summing to about 1) falls below ``restart_threshold / K``,
i.e. below that fraction of the uniform share ``1 / K``, is replaced by an encoder output
drawn at random from the batch, and its count reset to ``1 / K`` so that it has time to win
vectors before it is judged again.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

sg = jax.lax.stop_gradient


class QuantizerOutput(NamedTuple):
    """quantized: ``[B, ..., D]`` like ``z`` (same dtype), straight-through ``z + sg(e - z)``.
    indices: ``[B, ...]`` int32 code of each vector.
    loss: float32 scalar, the codebook + commitment loss (commitment only for EMA codebooks).
    stats: float32 scalars: ``usage`` and ``perplexity`` of this batch's codes, and ``dead``,
        the fraction of codes below the restart threshold (0 without restarts).
    """

    quantized: jax.Array
    indices: jax.Array
    loss: jax.Array
    stats: dict


class CodebookState(nnx.Variable):
    """Codebook statistics the quantizer updates itself in train mode; not an ``nnx.Param``,
    so optimizers leave them alone and the engine writes back what a train call assigns."""


# -- pure functions ----------------------------------------------------------------------
def nearest_codes(z: jax.Array, codebook: jax.Array) -> jax.Array:
    """``z: [N, D]``, ``codebook: [K, D]`` -> ``[N]`` int32 index of the nearest code (squared L2).

    ``||z||^2 - 2 z.e + ||e||^2`` in float32 at full matmul precision: a bfloat16 or TF32
    product can reorder nearly equidistant codes.
    """
    z, codebook = z.astype(jnp.float32), codebook.astype(jnp.float32)
    cross = jnp.matmul(z, codebook.T, precision=jax.lax.Precision.HIGHEST)
    dist = jnp.sum(z**2, -1, keepdims=True) - 2.0 * cross + jnp.sum(codebook**2, -1)
    return jnp.argmin(dist, axis=-1).astype(jnp.int32)


def code_shares(indices: jax.Array, num_codes: int, axis_name: str | None = None) -> jax.Array:
    """``[K]`` float32 fraction of the vectors of ``indices`` (any shape) assigned to each code.

    With ``axis_name`` the fractions of the whole batch across that axis (equal shards).
    """
    flat = indices.reshape(-1)
    share = jnp.zeros((num_codes,), jnp.float32).at[flat].add(1.0) / flat.shape[0]
    return share if axis_name is None else jax.lax.pmean(share, axis_name)


def share_stats(share: jax.Array) -> dict:
    """``share: [K]`` code histogram summing to 1 -> float32 ``usage`` and ``perplexity``.

    usage: fraction of the K codes used at least once; perplexity: ``exp`` of the entropy
    (nats) of the histogram, between 1 (one code) and K (uniform use).
    """
    used = share > 0
    # where() twice: log(0) would put NaN into the (unused) gradient of the masked branch.
    plogp = jnp.where(used, share * jnp.log(jnp.where(used, share, 1.0)), 0.0)
    return {"usage": jnp.mean(used.astype(jnp.float32)), "perplexity": jnp.exp(-jnp.sum(plogp))}


def codebook_stats(indices: jax.Array, num_codes: int) -> dict:
    """Usage and perplexity (:func:`share_stats`) of the codes ``indices`` (int, any shape)."""
    return share_stats(code_shares(indices, num_codes))


def assignment_stats(
    z: jax.Array, indices: jax.Array, num_codes: int, axis_name: str | None = None
) -> tuple[jax.Array, jax.Array]:
    """Per-code statistics normalised by the number of vectors ``N``.

    Args:
      z: ``[N, D]`` vectors; indices: ``[N]`` their codes.
      axis_name: average over this axis (shards of equal size: the whole batch's statistics).

    Returns:
      share ``[K]`` = ``n_k / N`` and mean_sum ``[K, D]`` = ``sum_{i -> k} z_i / N``, float32.
    """
    z = z.astype(jnp.float32)
    share = code_shares(indices, num_codes)
    mean_sum = jax.ops.segment_sum(z, indices, num_segments=num_codes) / z.shape[0]
    if axis_name is not None:
        share, mean_sum = jax.lax.pmean((share, mean_sum), axis_name)
    return share, mean_sum


def ema_update(
    count: jax.Array, sums: jax.Array, share: jax.Array, mean_sum: jax.Array, decay: float
) -> tuple[jax.Array, jax.Array]:
    """One EMA step: ``N_k <- d N_k + (1 - d) n_k / N``, ``m_k <- d m_k + (1 - d) sum z / N``.

    ``count: [K]``, ``sums: [K, D]``; ``share``, ``mean_sum`` from :func:`assignment_stats`.
    """
    return decay * count + (1 - decay) * share, decay * sums + (1 - decay) * mean_sum


def laplace_smoothed(count: jax.Array, epsilon: float) -> jax.Array:
    """``(N_k + eps) / (sum N + K eps) * sum N``: no zero count, same total (as in Sonnet)."""
    total = jnp.sum(count)
    return (count + epsilon) / (total + count.shape[0] * epsilon) * total


def smoothed_codebook(count: jax.Array, sums: jax.Array, epsilon: float) -> jax.Array:
    """``[K, D]`` codes ``e_k = m_k / N_k``, ``N`` Laplace-smoothed (:func:`laplace_smoothed`)."""
    return sums / laplace_smoothed(count, epsilon)[:, None]


def restart_candidates(pool: jax.Array, key: jax.Array, num_codes: int) -> jax.Array:
    """``[K, D]``: one vector of ``pool: [N, D]`` per code, drawn at random (distinct if N >= K)."""
    rows = jax.random.choice(key, pool.shape[0], (num_codes,), replace=pool.shape[0] < num_codes)
    return pool[rows]


def restart_codes(
    count: jax.Array, sums: jax.Array, dead: jax.Array, candidates: jax.Array, epsilon: float
) -> tuple[jax.Array, jax.Array]:
    """EMA state where each ``dead [K]`` code is ``candidates [K, D]``'s row, with count ``1/K``.

    The sums are set through the smoothed count so that :func:`smoothed_codebook` returns the
    candidate exactly (up to rounding); live codes keep their statistics.
    """
    count = jnp.where(dead, 1.0 / count.shape[0], count)
    smoothed = laplace_smoothed(count, epsilon)
    return count, jnp.where(dead[:, None], smoothed[:, None] * candidates, sums)


# -- module -------------------------------------------------------------------------------
class VectorQuantizer(nnx.Module):
    """Nearest-code quantization of ``z: [B, ..., D]`` with a codebook of ``K`` vectors.

    Args:
      num_codes: K; dim: D.
      beta: commitment weight (VQ-VAE: 0.25).
      ema_decay: 0 for a gradient codebook (``nnx.Param``); ``d`` in (0, 1) for the EMA
        codebook (VQ-VAE-2: 0.99), kept in :class:`CodebookState` variables.
      restart_threshold: restart codes whose running share is below this fraction of the
        uniform share ``1 / K`` (0 = never). EMA codebooks only.
      epsilon: Laplace smoothing of the EMA counts (Sonnet: 1e-5).

    Attributes:
      deterministic: True (eval) leaves the state alone; False (train) updates the EMA
        statistics and restarts codes. ``nnx.view(m, deterministic=...)`` sets it.
      axis_name: the ``pmap`` axis the engine sets: statistics and restart candidates are then
        taken over the whole batch, so every device computes the ``jit`` run's state.

    Codes are initialised uniform in ``(-1/K, 1/K)`` (VQ-VAE, taming-transformers); the EMA
    state starts as count ``1/K`` each and sums giving exactly those codes.
    """

    # Marks modules whose train-mode state depends on the whole batch (engine: set axis_name).
    BATCH_STATISTICS = True
    # The codebook distances run in float32 at full precision under any compute dtype (see
    # squared_distances); the quantized output takes the input's dtype.
    KEEPS_FLOAT32 = True

    def __init__(
        self,
        num_codes: int,
        dim: int,
        *,
        beta: float = 0.25,
        ema_decay: float = 0.0,
        restart_threshold: float = 0.0,
        epsilon: float = 1e-5,
        rngs: nnx.Rngs,
    ):
        if num_codes < 1 or dim < 1:
            raise ValueError(f"num_codes={num_codes} and dim={dim} must be positive")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay={ema_decay} must be in [0, 1) (0: gradient codebook)")
        if restart_threshold < 0:
            raise ValueError(f"restart_threshold={restart_threshold} must be >= 0")
        if restart_threshold > 0 and ema_decay == 0:
            raise ValueError(
                f"restart_threshold={restart_threshold} needs the EMA codebook (ema_decay > 0): "
                "a gradient codebook lives in the parameters, which only the optimizer updates, "
                "so the quantizer cannot replace its codes."
            )
        self.num_codes, self.dim = num_codes, dim
        self.beta, self.ema_decay = beta, ema_decay
        self.restart_threshold, self.epsilon = restart_threshold, epsilon
        self.deterministic = False
        self.axis_name: str | None = None
        bound = 1.0 / num_codes
        init = jax.random.uniform(rngs.params(), (num_codes, dim), jnp.float32, -bound, bound)
        if ema_decay > 0:
            count = jnp.full((num_codes,), 1.0 / num_codes, jnp.float32)
            self.ema_count = CodebookState(count)
            self.ema_sum = CodebookState(laplace_smoothed(count, epsilon)[:, None] * init)
        else:
            self.codes = nnx.Param(init)

    def set_view(self, deterministic: bool | None = None):
        """Used by ``nnx.view``: ``deterministic=True`` for evaluation."""
        if deterministic is not None:
            self.deterministic = deterministic

    @property
    def uses_ema(self) -> bool:
        return self.ema_decay > 0

    @property
    def codebook(self) -> jax.Array:
        """``[K, D]`` float32 current code vectors."""
        if self.uses_ema:
            return smoothed_codebook(self.ema_count[...], self.ema_sum[...], self.epsilon)
        return self.codes[...]

    def lookup(self, indices: jax.Array) -> jax.Array:
        """``indices: [B, ...]`` int -> ``[B, ..., D]`` float32 code vectors."""
        return jnp.take(self.codebook, indices, axis=0)

    def __call__(self, z: jax.Array, *, key: jax.Array | None = None) -> QuantizerOutput:
        """Quantize ``z: [B, ..., D]``; ``key`` draws restart candidates (train mode, restarts)."""
        if z.shape[-1] != self.dim:
            raise ValueError(f"z has {z.shape[-1]} channels, the quantizer dim={self.dim}")
        restarts = self.restart_threshold > 0
        train = not self.deterministic
        if train and restarts and key is None:
            raise ValueError(
                "VectorQuantizer restarts dead codes in train mode: pass key=..., or use "
                "nnx.view(model, deterministic=True) for evaluation."
            )
        flat = z.reshape(-1, self.dim)
        z32 = flat.astype(jnp.float32)
        codebook = self.codebook
        indices = nearest_codes(z32, codebook)
        e = codebook[indices]
        # Straight-through (VQ-VAE eq. 3): forward e, backward identity to the encoder.
        quantized = (flat + sg(e.astype(z.dtype) - flat)).reshape(z.shape)
        loss = self.beta * jnp.mean((z32 - sg(e)) ** 2)
        if not self.uses_ema:
            loss = loss + jnp.mean((sg(z32) - e) ** 2)

        if train and self.uses_ema:
            share, mean_sum = assignment_stats(sg(z32), indices, self.num_codes, self.axis_name)
            count, sums = ema_update(
                self.ema_count[...], self.ema_sum[...], share, mean_sum, self.ema_decay
            )
        else:
            share = code_shares(indices, self.num_codes, self.axis_name)
            count = self.ema_count[...] if self.uses_ema else None
        dead = (
            count < self.restart_threshold / self.num_codes
            if restarts
            else jnp.zeros((self.num_codes,), bool)
        )
        if train and self.uses_ema:
            if restarts:
                pool = sg(z32)
                if self.axis_name is not None:
                    # Every device draws from the whole batch with the same key: the same
                    # candidates as jit on the whole batch, so the states stay identical.
                    pool = jax.lax.all_gather(pool, self.axis_name, tiled=True)
                candidates = restart_candidates(pool, key, self.num_codes)
                count, sums = restart_codes(count, sums, dead, candidates, self.epsilon)
            self.ema_count[...] = count
            self.ema_sum[...] = sums
        stats = {**share_stats(share), "dead": jnp.mean(dead.astype(jnp.float32))}
        return QuantizerOutput(quantized, indices.reshape(z.shape[:-1]), loss, stats)
