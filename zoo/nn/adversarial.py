"""Adversarial losses on discriminator logits, D(x) = sigmoid(logit), shared by the GANs and
the VQGAN/autoencoder discriminators.

The value function of Goodfellow et al. (2014), the survey's eq. (2.1):

    min_G max_D  E_x[log D(x)] + E_z[log(1 - D(G(z)))]

Written on logits l with log-sigmoid identities, so no probability is ever rounded to 0 or 1:

    -log D(x)      = -log sigmoid(l)     = softplus(-l)
    -log(1 - D(x)) = -log sigmoid(-l)    = softplus(l)

`jax.nn.softplus` is `logaddexp(l, 0)`: finite values and gradients at |l| = 100 and beyond.

Discriminator losses (minimised; D ascends eq. 2.1 = descends its negation, Algorithm 2.1 line 5):
  "minimax": softplus(-real) + softplus(fake); also StyleGAN2's "logistic" loss.
  "hinge":   relu(1 - real) + relu(1 + fake) (Lim & Ye 2017; used by SAGAN, BigGAN, GigaGAN).

Generator losses (minimised):
  "saturating":     log(1 - D(G(z))) = -softplus(fake), the minimax generator of Algorithm 2.1
                    line 8. Its gradient sigmoid(fake) vanishes when D confidently rejects the
                    fakes (fake << 0), which is the early-training regime.
  "non_saturating": -log D(G(z)) = softplus(-fake), Goodfellow et al.'s practical fix (sec. 3):
                    same fixed point, gradient ~1 where the saturating one vanishes.
  "hinge":          -fake (the generator side of the hinge loss).

Each term is a mean over its batch, so real and fake batches may differ in size. Logits are cast
to float32 first (a bfloat16 discriminator still gets a float32 loss).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

DISCRIMINATOR_LOSSES = ("minimax", "hinge")
GENERATOR_LOSSES = ("saturating", "non_saturating", "hinge")


def _logits(x) -> jax.Array:
    return jnp.asarray(x, jnp.float32)


def discriminator_loss(real_logits, fake_logits, kind: str = "minimax") -> jax.Array:
    """The discriminator's loss, a float32 scalar to minimise.

    Args:
      real_logits: `[B]` discriminator logits on data samples.
      fake_logits: `[B']` discriminator logits on generator samples.
      kind: one of `DISCRIMINATOR_LOSSES`.

    Returns:
      mean over real of the real term + mean over fake of the fake term (nats for "minimax").
    """
    real, fake = _logits(real_logits), _logits(fake_logits)
    if kind == "minimax":
        # -log D(x) - log(1 - D(G(z))): the negated eq. (2.1) integrand.
        return jnp.mean(jax.nn.softplus(-real)) + jnp.mean(jax.nn.softplus(fake))
    if kind == "hinge":
        return jnp.mean(jax.nn.relu(1.0 - real)) + jnp.mean(jax.nn.relu(1.0 + fake))
    raise ValueError(f"unknown discriminator loss {kind!r}; choose one of {DISCRIMINATOR_LOSSES}")


def generator_loss(fake_logits, kind: str = "non_saturating") -> jax.Array:
    """The generator's loss, a float32 scalar to minimise.

    Args:
      fake_logits: `[B]` discriminator logits on generator samples.
      kind: one of `GENERATOR_LOSSES`.

    Returns:
      the mean over the batch of the per-sample loss (nats for the log losses).
    """
    fake = _logits(fake_logits)
    if kind == "saturating":
        # log(1 - D(G(z))) = log sigmoid(-l) = -softplus(l): Algorithm 2.1, line 8.
        return jnp.mean(-jax.nn.softplus(fake))
    if kind == "non_saturating":
        return jnp.mean(jax.nn.softplus(-fake))
    if kind == "hinge":
        return jnp.mean(-fake)
    raise ValueError(f"unknown generator loss {kind!r}; choose one of {GENERATOR_LOSSES}")
