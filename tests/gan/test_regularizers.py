"""R1 and path length penalties against finite differences and a linear map's analytic value."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoo.gan.regularizers import path_length_penalty, r1_penalty


def tiny_d(x):
    """A smooth 'discriminator' [B, H, W, C] -> [B]: a fixed-weight tanh layer, summed."""
    w = jnp.linspace(-1.0, 1.0, x[0].size).reshape(x.shape[1:])
    return jnp.sum(jnp.tanh(x * w + 0.3) * (1.0 + w), axis=(1, 2, 3))


def test_r1_matches_finite_differences():
    x = jax.random.normal(jax.random.key(0), (2, 3, 3, 2))
    penalty = r1_penalty(tiny_d, x)
    assert penalty.shape == (2,) and penalty.dtype == jnp.float32
    xn = np.asarray(x, np.float64)
    eps = 1e-3
    for b in range(2):
        grad = np.zeros(xn.shape[1:])
        for idx in np.ndindex(*xn.shape[1:]):
            plus, minus = xn.copy(), xn.copy()
            plus[(b, *idx)] += eps
            minus[(b, *idx)] -= eps
            diff = tiny_d(jnp.asarray(plus, jnp.float32)) - tiny_d(jnp.asarray(minus, jnp.float32))
            grad[idx] = float(diff[b]) / (2 * eps)
        np.testing.assert_allclose(float(penalty[b]), np.sum(grad**2), rtol=2e-2)


def test_r1_is_per_example_and_sums_over_a_list_of_scales():
    x1 = jax.random.normal(jax.random.key(1), (3, 4, 4, 1))
    x2 = jax.random.normal(jax.random.key(2), (3, 2, 2, 1))
    both = r1_penalty(lambda xs: tiny_d(xs[0]) + 2.0 * tiny_d(xs[1]), [x1, x2])
    expected = r1_penalty(tiny_d, x1) + 4.0 * r1_penalty(tiny_d, x2)  # (2 * grad)^2
    np.testing.assert_allclose(both, expected, rtol=1e-5)
    # Changing another example leaves an example's penalty unchanged.
    np.testing.assert_allclose(r1_penalty(tiny_d, x1.at[1:].set(0.0))[0], r1_penalty(tiny_d, x1)[0])
    with pytest.raises(ValueError, match="logits"):
        r1_penalty(lambda x: jnp.sum(x, axis=(1, 2)), x1)


def linear_synthesis(num_ws=3, w_dim=4, hw=(4, 2), c=2):
    a = jax.random.normal(jax.random.key(3), (num_ws, w_dim, *hw, c))
    return a, lambda ws: jnp.einsum("bld,ldhwc->bhwc", ws, a)


def test_path_length_of_a_linear_map_is_analytic():
    a, synth = linear_synthesis()
    ws = jax.random.normal(jax.random.key(4), (5, 3, 4))
    keys = jax.random.split(jax.random.key(5), 5)
    penalty, new_mean, lengths = path_length_penalty(synth, ws, keys, pl_mean=0.5, decay=0.1)
    # J^T y for layer l is A_l y: lengths = sqrt(mean_l ||A_l y_b||^2), y ~ N(0, I) / sqrt(HW),
    # y_b drawn from example b's own key.
    y = np.stack([np.asarray(jax.random.normal(k, (4, 2, 2)), np.float64) for k in keys])
    jty = np.einsum("ldhwc,bhwc->bld", np.asarray(a, np.float64), y / np.sqrt(8.0))
    expected = np.sqrt(np.mean(np.sum(jty**2, axis=2), axis=1))
    np.testing.assert_allclose(lengths, expected, rtol=1e-5)
    mean = 0.5 + 0.1 * (expected.mean() - 0.5)
    np.testing.assert_allclose(new_mean, mean, rtol=1e-5)
    # The target is the running mean before this batch's update (per example, split-invariant).
    np.testing.assert_allclose(penalty, (expected - 0.5) ** 2, rtol=1e-4, atol=1e-7)
    # Linear: the lengths do not depend on ws.
    _, _, again = path_length_penalty(synth, 3.0 * ws + 1.0, keys, pl_mean=0.5)
    np.testing.assert_allclose(again, lengths, rtol=1e-5)
    # Weights enter the running mean only: mean(weights * lengths).
    weights = jnp.array([2.0, 0.0, 2.0, 0.0, 1.0])
    weighted, mean_w, _ = path_length_penalty(synth, ws, keys, 0.5, decay=0.1, weights=weights)
    np.testing.assert_allclose(weighted, penalty, rtol=1e-6)
    expected_w = 0.5 + 0.1 * (np.mean(np.asarray(weights) * expected) - 0.5)
    np.testing.assert_allclose(mean_w, expected_w, rtol=1e-5)


def test_path_length_is_per_example():
    """A batch and its two halves, with the same per-example keys, give the same penalties:
    y of example b comes from keys[b] alone, and the target is the shared running mean."""
    _, linear = linear_synthesis()

    def synth(ws):  # nonlinear in ws, so the lengths depend on each example's ws
        return jnp.tanh(linear(ws)) * (1.0 + 0.1 * jnp.sum(ws, axis=(1, 2)))[:, None, None, None]

    ws = jax.random.normal(jax.random.key(8), (4, 3, 4))
    keys = jax.random.split(jax.random.key(9), 4)
    whole, mean, lengths = path_length_penalty(synth, ws, keys, pl_mean=0.7, decay=0.1)
    halves = [path_length_penalty(synth, ws[i : i + 2], keys[i : i + 2], 0.7, 0.1) for i in (0, 2)]
    np.testing.assert_allclose(whole, jnp.concatenate([h[0] for h in halves]), rtol=1e-6)
    np.testing.assert_allclose(lengths, jnp.concatenate([h[2] for h in halves]), rtol=1e-6)
    np.testing.assert_allclose(mean, np.mean([h[1] for h in halves]), rtol=1e-6)
    # One key instead of B keys still works (split per example): for code without example ids.
    single, _, _ = path_length_penalty(synth, ws, jax.random.key(9), pl_mean=0.7)
    np.testing.assert_allclose(single, whole, rtol=1e-6)
    with pytest.raises(ValueError, match="keys"):
        path_length_penalty(synth, ws, keys[:3], pl_mean=0.7)


def test_path_length_expectation_and_gradient():
    a, synth = linear_synthesis()
    ws = jnp.zeros((4096, 3, 4))
    _, _, lengths = path_length_penalty(synth, ws, jax.random.key(6), pl_mean=0.0)
    # E ||A_l y||^2 = ||A_l||_F^2 / (H W) for y ~ N(0, I / (H W)).
    analytic = float(jnp.mean(jnp.sum(a**2, axis=(1, 2, 3, 4)))) / 8.0
    assert abs(float(jnp.mean(lengths**2)) / analytic - 1.0) < 0.05

    # The penalty is differentiable w.r.t. the synthesis parameters (through J^T y).
    def loss(scale):
        pen, _, _ = path_length_penalty(lambda w: scale * synth(w), ws[:8], jax.random.key(7), 0.0)
        return jnp.mean(pen)

    g = jax.grad(loss)(2.0)
    assert np.isfinite(float(g)) and abs(float(g)) > 0
