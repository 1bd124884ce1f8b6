"""Randomness derived from (seed, step, player, substep, example).

Nothing RNG-related is checkpointed: every key is a pure function of the
seed and positions, so a resumed run draws exactly what an uninterrupted run
would have drawn. Per-example keys make draws independent of how a batch is
split over devices (jit or pmap) and microbatches.
"""

from __future__ import annotations

import zlib

import jax

from zoo.engine.objective import Context


def step_key(seed: int, step) -> jax.Array:
    """Key of train step ``step`` for a run seeded with ``seed``."""
    return jax.random.fold_in(jax.random.key(seed), step)


def example_keys(ctx: Context, name: str | None = None) -> jax.Array:
    """One key per example of the batch: ``[B]`` keys, from ``ctx.example_ids``.

    ``name`` (optional) gives a separate stream per purpose, e.g.
    ``example_keys(ctx, "dropout")`` for dropout masks and ``example_keys(ctx, "noise")``
    for a generator's noise inputs, so they never reuse the latents' keys.
    """
    rng = ctx.rng if name is None else shared_key(ctx, name)
    return jax.vmap(lambda i: jax.random.fold_in(rng, i))(ctx.example_ids)


def per_example(ctx: Context, draw, *args, **kwargs) -> jax.Array:
    """Apply ``draw(key, *args, **kwargs)`` per example; stacks to ``[B, ...]``.

    Example: ``eps = per_example(ctx, jax.random.normal, x.shape[1:])``.
    """
    return jax.vmap(lambda k: draw(k, *args, **kwargs))(example_keys(ctx))


def shared_key(ctx: Context, name: str) -> jax.Array:
    """A key shared by the whole batch, named by purpose.

    The same for every microbatch of a substep and, under pmap, every device:
    a batch-shaped draw from it (a dropout mask, a noise image) gives other
    numbers when the batch is split differently, so such draws belong in
    :func:`per_example` or :func:`example_keys` (``example_keys(ctx, name)``).
    """
    # crc32, not hash(): Python salts str hashes per process, which would make
    # a resumed run draw different masks.
    return jax.random.fold_in(ctx.rng, zlib.crc32(name.encode()) % (2**31))
