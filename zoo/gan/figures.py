"""Pictures a GAN run writes next to its sample grids (``Objective.figures``).

Each function returns an ``[R, C, H, W, ch]`` table in [-1, 1] that the loop
tiles as R rows and C columns: latent interpolations (DCGAN sec. 6.1),
StyleGAN's style-mixing table and truncation sweep, and a density picture of
2-D samples. ``sample_conditions(rng, n) -> (cond, fields)`` gives the
caption or label of each row, so conditional models show one condition per row.

The generators' noise inputs are on, as in training and in the samples, but held
fixed where a figure varies something else, so that each picture shows that one
change: one noise per row of the interpolations and the truncation sweep (a row is
one sample seen along a path), one noise for the whole style-mixing table (as the
official style-mixing script, whose noise_mode='const' is one fixed noise for all).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def last(images):
    """The full-resolution output of a (possibly multi-scale) generator."""
    return images[-1] if isinstance(images, list | tuple) else images


def grid_cond(sample_conditions, rng, rows, cols):
    """One condition per row, repeated along the row: cond for rows * cols images."""
    cond, _ = sample_conditions(rng, rows)
    return jax.tree.map(lambda c: jnp.repeat(c, cols, axis=0), cond)


def row_noise(rng, rows, cols):
    """``[rows * cols]`` noise keys: one per row, repeated along it."""
    return jnp.repeat(jax.random.split(rng, rows), cols, axis=0)


def interpolation(models, rng, z_dim, sample_conditions, rows=4, cols=8):
    """Each row walks linearly from one latent to another (DCGAN sec. 6.1), its noise fixed."""
    gen = models("generator", train=False)
    k_a, k_b, k_c, k_n = jax.random.split(rng, 4)
    a, b = jax.random.normal(k_a, (rows, 1, z_dim)), jax.random.normal(k_b, (rows, 1, z_dim))
    t = jnp.linspace(0.0, 1.0, cols)[None, :, None]
    z = ((1 - t) * a + t * b).reshape(rows * cols, z_dim)
    cond = grid_cond(sample_conditions, k_c, rows, cols)
    images = last(gen(z, cond, noise_key=row_noise(k_n, rows, cols)))
    return jnp.clip(images, -1, 1).reshape(rows, cols, *images.shape[1:])


def truncation_sweep(models, rng, z_dim, sample_conditions, psis, rows=4):
    """Row i: one latent (and noise) at each truncation psi (columns); psi = 0 gives the mean w."""
    gen = models("generator", train=False)
    k_z, k_c, k_n = jax.random.split(rng, 3)
    cols = len(psis)
    z = jnp.repeat(jax.random.normal(k_z, (rows, z_dim)), cols, axis=0)
    cond = grid_cond(sample_conditions, k_c, rows, cols)
    w = gen.mapping(z, cond)
    psi = jnp.tile(jnp.asarray(psis, jnp.float32), rows)[:, None]
    w = gen.w_avg[...] + psi * (w - gen.w_avg[...])
    ws = jnp.broadcast_to(w[:, None], (w.shape[0], gen.num_ws, w.shape[-1]))
    images = jnp.clip(last(gen.synthesis(ws, cond, noise_key=row_noise(k_n, rows, cols))), -1, 1)
    return images.reshape(rows, cols, *images.shape[1:])


def style_mixing(models, rng, z_dim, sample_conditions, n=4):
    """StyleGAN's mixing table: row 0 = sources A, column 0 = sources B, and cell (i, j)
    takes the coarse styles (the first half of the layers) from A_j and the rest from B_i;
    one noise for every image of the table."""
    gen = models("generator", train=False)
    k_a, k_b, k_c, k_n = jax.random.split(rng, 4)
    cond, _ = sample_conditions(k_c, 1)  # one caption/label for the whole table
    w_a = gen.mapping(jax.random.normal(k_a, (n, z_dim)), repeat_cond(cond, n))
    w_b = gen.mapping(jax.random.normal(k_b, (n, z_dim)), repeat_cond(cond, n))
    cut = gen.num_ws // 2
    layer = jnp.arange(gen.num_ws)[None, None, :, None]
    mixed = jnp.where(layer < cut, w_a[None, :, None, :], w_b[:, None, None, :])  # [n, n, L, D]
    ws = jnp.concatenate(
        [
            jnp.broadcast_to(w_a[:, None], (n, gen.num_ws, w_a.shape[-1])),
            jnp.broadcast_to(w_b[:, None], (n, gen.num_ws, w_b.shape[-1])),
            mixed.reshape(n * n, gen.num_ws, -1),
        ]
    )
    noise = jnp.repeat(k_n[None], ws.shape[0])
    images = jnp.clip(
        last(gen.synthesis(ws, repeat_cond(cond, ws.shape[0]), noise_key=noise)), -1, 1
    )
    top, left, cells = (
        images[:n],
        images[n : 2 * n],
        images[2 * n :].reshape(n, n, *images.shape[1:]),
    )
    corner = -jnp.ones((1, *images.shape[1:]), images.dtype)
    first_row = jnp.concatenate([corner, top])[None]
    body = jnp.concatenate([left[:, None], cells], axis=1)
    return jnp.concatenate([first_row, body])  # [n + 1, n + 1, H, W, C]


def repeat_cond(cond, n):
    """Each condition repeated n times along the batch (None stays None)."""
    return jax.tree.map(lambda c: jnp.repeat(c, n, axis=0), cond)


def scatter(points, radius: float, size: int = 128):
    """2-D samples as a 1 x 1 figure: a log-density image of the square
    ``[-1.5 r, 1.5 r]^2`` (r the ring's radius; y up), ``[1, 1, S, S, 1]``. Samples
    outside the square are left out, not piled on its border."""
    extent = 1.5 * radius
    ij = jnp.floor((points + extent) / (2 * extent) * size).astype(jnp.int32)
    inside = jnp.all((ij >= 0) & (ij < size), axis=-1)
    ij = jnp.clip(ij, 0, size - 1)
    counts = jnp.zeros((size, size)).at[size - 1 - ij[:, 1], ij[:, 0]].add(inside.astype(float))
    image = jnp.log1p(counts) / jnp.maximum(jnp.log1p(counts.max()), 1e-6)
    return (2 * image - 1)[None, None, :, :, None]
