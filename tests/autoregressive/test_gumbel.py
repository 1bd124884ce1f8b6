"""Gumbel-softmax and DALL-E's schedules, against numpy and math by hand."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from zoo.autoregressive.gumbel import (
    diversity_gap,
    gumbel_softmax,
    kl_to_uniform,
    kl_weight,
    temperature,
)


def test_soft_samples_are_distributions_with_the_gumbel_formula():
    logits = jax.random.normal(jax.random.key(0), (3, 5, 7))
    key = jax.random.key(1)
    y = np.asarray(gumbel_softmax(logits, key, 0.7))
    assert y.dtype == np.float32 and y.shape == (3, 5, 7)
    assert np.all(y > 0)
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-6)
    # the same noise by hand: softmax((l + g) / tau)
    a = (np.asarray(logits, np.float64) + np.asarray(jax.random.gumbel(key, (3, 5, 7)))) / 0.7
    expected = np.exp(a - a.max(-1, keepdims=True))
    np.testing.assert_allclose(y, expected / expected.sum(-1, keepdims=True), rtol=1e-5)


def test_hard_samples_are_one_hot_with_the_soft_gradient():
    logits = jax.random.normal(jax.random.key(0), (4, 6)) * 3
    key, tau = jax.random.key(2), 0.5
    hard = np.asarray(gumbel_softmax(logits, key, tau, hard=True))
    assert set(np.unique(hard)) == {0.0, 1.0}
    np.testing.assert_array_equal(hard.sum(-1), 1.0)
    soft = gumbel_softmax(logits, key, tau)
    np.testing.assert_array_equal(hard.argmax(-1), np.asarray(soft).argmax(-1))

    w = jax.random.normal(jax.random.key(3), (4, 6))
    grad_hard = jax.grad(lambda x: jnp.sum(gumbel_softmax(x, key, tau, hard=True) * w))(logits)
    grad_soft = jax.grad(lambda x: jnp.sum(gumbel_softmax(x, key, tau) * w))(logits)
    np.testing.assert_allclose(grad_hard, grad_soft, rtol=1e-6)
    # the softmax Jacobian by hand: d/dl sum(y w) = y (w - sum(y w)) / tau
    y, w = np.asarray(soft), np.asarray(w)
    expected = y * (w - (y * w).sum(-1, keepdims=True)) / tau
    np.testing.assert_allclose(grad_soft, expected, rtol=1e-4, atol=1e-6)


def test_low_temperature_is_nearly_one_hot():
    logits = jax.random.normal(jax.random.key(0), (50, 5))
    cold = np.asarray(gumbel_softmax(logits, jax.random.key(1), 0.01)).max(-1)
    warm = np.asarray(gumbel_softmax(logits, jax.random.key(1), 1.0)).max(-1)
    # a sample is far from one-hot only when its two best noisy logits are within ~tau
    assert cold.mean() > 0.99 and np.mean(cold > 0.99) >= 0.9
    assert warm.mean() < 0.8


def test_argmax_frequencies_match_softmax():
    logits = jnp.array([1.0, 0.0, -1.0, 2.0])
    n = 20000
    y = gumbel_softmax(jnp.broadcast_to(logits, (n, 4)), jax.random.key(0), 1.0, hard=True)
    freq = np.asarray(y).mean(0)
    p = np.exp(logits) / np.exp(logits).sum()
    # binomial standard error <= 0.0036 at n = 20000: 0.015 is about 4 of them
    np.testing.assert_allclose(freq, p, atol=0.015)


def test_temperature_schedule():
    start, end, steps = 1.0, 1 / 16, 1000

    def by_hand(t):
        return end + (start - end) * 0.5 * (1 + math.cos(math.pi * min(t, steps) / steps))

    for t in (0, 250, 500, 999, 1000, 5000):
        np.testing.assert_allclose(temperature(t, anneal_steps=steps), by_hand(t), rtol=1e-6)
    np.testing.assert_allclose(temperature(0, anneal_steps=steps), 1.0)
    np.testing.assert_allclose(temperature(500, anneal_steps=steps), (1 + 1 / 16) / 2, rtol=1e-6)
    np.testing.assert_allclose(temperature(10**6, anneal_steps=steps), 1 / 16, rtol=1e-6)
    # traceable: a traced int32 step under jit
    traced = jax.jit(lambda s: temperature(s, start=2.0, end=0.5, anneal_steps=10))
    np.testing.assert_allclose(traced(jnp.int32(5)), 1.25, rtol=1e-6)


def test_kl_weight_ramps_linearly_then_stays():
    w = jax.jit(lambda s: kl_weight(s, final=6.6, ramp_steps=5000))
    for t, expected in ((0, 0.0), (1250, 1.65), (2500, 3.3), (5000, 6.6), (80000, 6.6)):
        np.testing.assert_allclose(w(jnp.int32(t)), expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(kl_weight(3, final=2.0, ramp_steps=0), 2.0)


def test_kl_to_uniform():
    np.testing.assert_allclose(kl_to_uniform(jnp.full((2, 3, 8), 0.7)), 0.0, atol=1e-6)
    logits = np.random.default_rng(0).normal(size=(4, 5)) * 2
    q = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    expected = (q * np.log(q / (1 / 5))).sum(-1)
    got = kl_to_uniform(jnp.asarray(logits, jnp.float32))
    assert got.shape == (4,)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # a one-hot-like distribution approaches log K
    np.testing.assert_allclose(kl_to_uniform(jnp.array([100.0, 0, 0, 0])), math.log(4), rtol=1e-5)


def test_diversity_gap_is_log_k_minus_the_batch_entropy():
    np.testing.assert_allclose(diversity_gap(jnp.full((8,), 1 / 8)), 0.0, atol=1e-6)
    # all mass on one code (zeros elsewhere must not give nan)
    np.testing.assert_allclose(diversity_gap(jnp.eye(8)[3]), math.log(8), rtol=1e-6)
    p = np.array([0.5, 0.25, 0.125, 0.125])
    expected = math.log(4) + (p * np.log(p)).sum()
    np.testing.assert_allclose(diversity_gap(jnp.asarray(p, jnp.float32)), expected, rtol=1e-5)
    grad = jax.grad(diversity_gap)(jnp.asarray([0.7, 0.3, 0.0, 0.0]))
    assert bool(jnp.all(jnp.isfinite(grad)))
