"""GAN losses: hand-computed values, the saturation of the minimax generator, stability."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoo.nn.adversarial import (
    DISCRIMINATOR_LOSSES,
    GENERATOR_LOSSES,
    discriminator_loss,
    generator_loss,
)

REAL = np.array([0.0, 2.0, -1.0], np.float32)
FAKE = np.array([0.0, -3.0], np.float32)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def test_minimax_discriminator_matches_eq_2_1_on_probabilities():
    d_real, d_fake = _sigmoid(REAL), _sigmoid(FAKE)
    want = -np.mean(np.log(d_real)) - np.mean(np.log(1.0 - d_fake))
    got = discriminator_loss(REAL, FAKE, "minimax")
    assert got.shape == () and got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # At D(x) = 1/2 everywhere (the optimum of Algorithm 2.1's game): 2 log 2.
    np.testing.assert_allclose(discriminator_loss(np.zeros(4), np.zeros(4)), 2 * np.log(2), 1e-6)


def test_hinge_discriminator_by_hand():
    # real: relu(1-0)=1, relu(1-2)=0, relu(1+1)=2 -> mean 1; fake: relu(1+0)=1, relu(1-3)=0 -> 0.5
    np.testing.assert_allclose(discriminator_loss(REAL, FAKE, "hinge"), 1.5, rtol=1e-6)


@pytest.mark.parametrize(
    "kind, per_sample",
    [
        ("saturating", lambda f: np.log(1.0 - _sigmoid(f))),
        ("non_saturating", lambda f: -np.log(_sigmoid(f))),
        ("hinge", lambda f: -np.asarray(f, np.float64)),
    ],
)
def test_generator_losses_by_hand(kind, per_sample):
    got = generator_loss(FAKE, kind)
    assert got.shape == () and got.dtype == jnp.float32
    np.testing.assert_allclose(got, np.mean(per_sample(FAKE)), rtol=1e-6)


def test_hand_numbers():
    # log(1 - sigmoid(0)) = -log 2; -log sigmoid(-3) = log(1 + e^3) = 3.048587...
    np.testing.assert_allclose(generator_loss(np.zeros(2), "saturating"), -np.log(2), rtol=1e-6)
    np.testing.assert_allclose(generator_loss([-3.0], "non_saturating"), 3.0485873, rtol=1e-6)


def test_saturating_gradient_vanishes_where_non_saturating_does_not():
    """Goodfellow et al. 2014, sec. 3: early on D rejects fakes confidently (logit << 0)."""
    fake = jnp.full((4,), -10.0)  # D(G(z)) = 4.5e-5
    g_sat = jax.grad(lambda f: generator_loss(f, "saturating"))(fake)
    g_ns = jax.grad(lambda f: generator_loss(f, "non_saturating"))(fake)
    # Per-sample gradients (times B for the mean): -sigmoid(f) vs -sigmoid(-f).
    assert np.all(np.abs(g_sat * 4) < 1e-4)
    assert np.all(np.abs(g_ns * 4) > 0.99)
    # Both descend toward larger fake logits (fooling D).
    assert np.all(g_sat < 0) and np.all(g_ns < 0)


@pytest.mark.parametrize("kind", DISCRIMINATOR_LOSSES)
def test_discriminator_stable_at_large_logits(kind):
    for real, fake in [(100.0, -100.0), (-100.0, 100.0)]:
        value, grads = jax.value_and_grad(discriminator_loss, argnums=(0, 1))(
            jnp.full((2,), real), jnp.full((2,), fake), kind
        )
        assert np.isfinite(value) and all(np.all(np.isfinite(g)) for g in grads)
    # Confidently wrong: the minimax loss grows linearly (~200), not to inf.
    if kind == "minimax":
        np.testing.assert_allclose(discriminator_loss([-100.0], [100.0]), 200.0, rtol=1e-6)
        np.testing.assert_allclose(discriminator_loss([100.0], [-100.0]), 0.0, atol=1e-30)


@pytest.mark.parametrize("kind", GENERATOR_LOSSES)
def test_generator_stable_at_large_logits(kind):
    for fake in (100.0, -100.0):
        value, grad = jax.value_and_grad(generator_loss)(jnp.full((3,), fake), kind)
        assert np.isfinite(value) and np.all(np.isfinite(grad))


def test_unknown_kind_raises():
    with pytest.raises(ValueError, match="discriminator loss"):
        discriminator_loss(REAL, FAKE, "wasserstein")
    with pytest.raises(ValueError, match="generator loss"):
        generator_loss(FAKE, "minimax")
