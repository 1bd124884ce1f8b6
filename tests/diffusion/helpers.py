"""Helpers shared by the diffusion tests."""

import jax
from flax import nnx


def perturb_params(module: nnx.Module, scale: float, seed: int = 0) -> None:
    """Adds ``scale`` x N(0, 1) noise to every parameter of ``module`` in place.

    Zero-initialised layers (U-Net output convolutions, residual branches, attention outputs)
    make a fresh network ignore its conditions; tests that check a condition's effect use this.
    """
    leaves, treedef = jax.tree.flatten(nnx.state(module, nnx.Param))
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    moved = [p + scale * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys, strict=True)]
    nnx.update(module, jax.tree.unflatten(treedef, moved))
