"""The original GAN (Goodfellow et al. 2014) as fully connected networks, for 2-D toy data.

Both players are multilayer perceptrons, as in the paper. The generator maps noise
`z ~ N(0, I)` through `depth` ReLU layers to a point in R^out_dim with a linear output (toy data
such as the ring of 8 Gaussians, `zoo.data.ring`, is unbounded, so no tanh). The discriminator
has `depth` LeakyReLU(0.2) hidden layers (the paper used maxout; LeakyReLU is the common modern
substitute, e.g. in the unrolled-GAN toy experiments of Metz et al. 2017) and a linear output
unit: logits, D(x) = sigmoid(logit). Flax's default initialisation (LeCun normal kernels, zero
biases).

Here the "images" of the GAN contract are points: the generator returns `[B, out_dim]` and the
discriminator reads `[B, in_dim]` (the batch key `point` of `zoo.data.ring`).
"""

from __future__ import annotations

import numbers

import jax
import ml_collections
from flax import nnx


def _positive_int(value, what: str) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{what} must be a positive int, got {value!r}")
    return int(value)


def _mlp(in_dim: int, hidden: int, depth: int, rngs: nnx.Rngs) -> nnx.List:
    return nnx.List(
        [nnx.Linear(in_dim if i == 0 else hidden, hidden, rngs=rngs) for i in range(depth)]
    )


class MLPGenerator(nnx.Module):
    """`z: [B, z_dim]` -> points `[B, out_dim]` float32 (unbounded).

    Args:
      z_dim: noise dimension.
      hidden: width of every hidden layer.
      depth: number of hidden (Linear + ReLU) layers, >= 1.
      out_dim: dimension of the generated points (2 for the toy datasets).
    """

    def __init__(self, z_dim: int, hidden: int, depth: int, out_dim: int, *, rngs: nnx.Rngs):
        self.z_dim = _positive_int(z_dim, "z_dim")
        hidden, depth = _positive_int(hidden, "hidden"), _positive_int(depth, "depth")
        self.out_dim = _positive_int(out_dim, "out_dim")
        self.hidden = _mlp(self.z_dim, hidden, depth, rngs)
        self.out = nnx.Linear(hidden, self.out_dim, rngs=rngs)

    def __call__(
        self, z: jax.Array, cond: dict | None = None, *, noise_key=None, truncation: float = 1.0
    ) -> jax.Array:
        """Unconditional and noise-free: `cond`, `noise_key` and `truncation` are ignored."""
        del cond, noise_key, truncation
        if z.ndim != 2 or z.shape[-1] != self.z_dim:
            raise ValueError(f"z must be [B, {self.z_dim}], got shape {z.shape}")
        h = z
        for layer in self.hidden:
            h = nnx.relu(layer(h))
        return self.out(h)


class MLPDiscriminator(nnx.Module):
    """Points `[B, in_dim]` -> logits `[B]` float32.

    Args:
      in_dim: dimension of the points.
      hidden: width of every hidden layer.
      depth: number of hidden (Linear + LeakyReLU 0.2) layers, >= 1.
    """

    def __init__(self, in_dim: int, hidden: int, depth: int, *, rngs: nnx.Rngs):
        self.in_dim = _positive_int(in_dim, "in_dim")
        hidden, depth = _positive_int(hidden, "hidden"), _positive_int(depth, "depth")
        self.hidden = _mlp(self.in_dim, hidden, depth, rngs)
        self.out = nnx.Linear(hidden, 1, rngs=rngs)

    def __call__(self, x: jax.Array, cond: dict | None = None) -> jax.Array:
        """Unconditional: `cond` is ignored."""
        del cond
        if x.ndim != 2 or x.shape[-1] != self.in_dim:
            raise ValueError(f"points must be [B, {self.in_dim}], got shape {x.shape}")
        h = x
        for layer in self.hidden:
            h = nnx.leaky_relu(layer(h), 0.2)
        return self.out(h)[:, 0]


def net_config() -> ml_collections.ConfigDict:
    """Architecture fields of `config.net`.

    z_dim: noise dimension (16). hidden: width of every hidden layer of both players (128).
    depth: hidden layers per player (3).
    """
    return ml_collections.ConfigDict(dict(z_dim=16, hidden=128, depth=3))


def build_networks(config, *, rngs: nnx.Rngs) -> tuple[MLPGenerator, MLPDiscriminator]:
    """(generator, discriminator) from `config.net` and `config.data.dim` (point dimension, 2)."""
    net = config.net
    dim = config.data.get("dim", 2)
    generator = MLPGenerator(net.z_dim, net.hidden, net.depth, dim, rngs=rngs)
    discriminator = MLPDiscriminator(dim, net.hidden, net.depth, rngs=rngs)
    return generator, discriminator
