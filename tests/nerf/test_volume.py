"""Eq. 5.4 quadrature vs a float64 numpy loop, and its physical properties."""

import jax
import jax.numpy as jnp
import numpy as np

from zoo.nerf.volume import render_weights, volume_render


def _reference(sigma, rgb, t, d, white):
    """Float64 loop over samples with T_i = prod_{j<i} (1 - alpha_j) (paper eq. 3)."""
    sigma, rgb, t, d = (np.asarray(a, np.float64) for a in (sigma, rgb, t, d))
    out_rgb = np.zeros(sigma.shape[:-1] + (3,))
    acc = np.zeros(sigma.shape[:-1])
    depth = np.zeros(sigma.shape[:-1])
    for r in np.ndindex(sigma.shape[:-1]):
        trans = 1.0
        norm = np.linalg.norm(d[r])
        for i in range(sigma.shape[-1]):
            delta = (t[r][i + 1] - t[r][i]) if i + 1 < sigma.shape[-1] else 1e10
            alpha = 1 - np.exp(-sigma[r][i] * delta * norm)
            w = trans * alpha
            out_rgb[r] += w * rgb[r][i]
            acc[r] += w
            depth[r] += w * t[r][i]
            trans *= 1 - alpha
        if white:
            out_rgb[r] += 1 - acc[r]
    return out_rgb, acc, depth


def _random_rays(seed, shape=(2, 3), n=12):
    rng = np.random.default_rng(seed)
    sigma = rng.exponential(1.0, (*shape, n)) * (rng.uniform(size=(*shape, n)) < 0.7)
    rgb = rng.uniform(size=(*shape, n, 3))
    t = np.sort(rng.uniform(2.0, 6.0, (*shape, n)), axis=-1)
    d = rng.normal(size=(*shape, 3))
    return [a.astype(np.float32) for a in (sigma, rgb, t, d)]


def test_matches_float64_reference():
    for white in (False, True):
        sigma, rgb, t, d = _random_rays(0)
        out = volume_render(sigma, rgb, t, d, white_background=white)
        want_rgb, want_acc, want_depth = _reference(sigma, rgb, t, d, white)
        np.testing.assert_allclose(out["rgb"], want_rgb, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out["acc"], want_acc, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out["depth"], want_depth, rtol=1e-5, atol=1e-5)
        assert out["weights"].shape == sigma.shape and out["rgb"].shape == (2, 3, 3)


def test_constant_density_slab_opacity_is_beer_lambert():
    # sigma constant on [0, L) sampled at N points, then a last sample at t = L
    # with sigma = 0, so the 1e10 last delta adds nothing: acc must equal
    # 1 - exp(-sigma * L * |d|) exactly (the quadrature telescopes for
    # piecewise-constant density). |d| = 2 doubles the physical length.
    L, s, N = 1.5, 0.8, 32
    t = jnp.linspace(0.0, L, N + 1)
    sigma = jnp.concatenate([jnp.full((N,), s), jnp.zeros((1,))])
    for dnorm in (1.0, 2.0):
        d = jnp.array([0.0, 0.0, -dnorm])
        acc = float(volume_render(sigma, jnp.ones((N + 1, 3)), t, d)["acc"])
        np.testing.assert_allclose(acc, 1 - np.exp(-s * L * dnorm), rtol=1e-5)


def test_weights_in_unit_interval_and_sum_at_most_one():
    sigma, _, t, d = _random_rays(1, shape=(50,), n=32)
    sigma = sigma * 100  # dense, near-opaque rays too
    w = np.asarray(render_weights(sigma, t, d))
    assert np.all(w >= 0) and np.all(w <= 1)
    assert np.all(w.sum(-1) <= 1 + 1e-6)
    # An opaque first sample takes all the weight.
    w0 = np.asarray(
        render_weights(
            jnp.array([1e4, 1.0, 1.0]), jnp.array([1.0, 2.0, 3.0]), jnp.array([0.0, 0.0, 1.0])
        )
    )
    np.testing.assert_allclose(w0, [1, 0, 0], atol=1e-6)


def test_empty_ray_white_background_is_white_and_black_otherwise():
    t = jnp.broadcast_to(jnp.linspace(2.0, 6.0, 8), (4, 8))
    rgb = jnp.full((4, 8, 3), 0.3)
    d = jnp.ones((4, 3))
    white = volume_render(jnp.zeros((4, 8)), rgb, t, d, white_background=True)
    np.testing.assert_allclose(white["rgb"], 1.0)
    black = volume_render(jnp.zeros((4, 8)), rgb, t, d)
    np.testing.assert_allclose(black["rgb"], 0.0)
    np.testing.assert_allclose(black["acc"], 0.0)


def test_gradients_finite():
    sigma, rgb, t, d = _random_rays(2, shape=(8,), n=16)
    sigma[0] = 0.0  # empty ray
    sigma[1, 3] = 1e6  # very dense sample

    def f(sigma, rgb):
        out = volume_render(sigma, rgb, t, d, white_background=True)
        return jnp.sum(out["rgb"] ** 2) + jnp.sum(out["depth"])

    gs, gc = jax.grad(f, argnums=(0, 1))(jnp.asarray(sigma), jnp.asarray(rgb))
    assert np.all(np.isfinite(gs)) and np.all(np.isfinite(gc))
    assert np.abs(np.asarray(gc)).sum() > 0
