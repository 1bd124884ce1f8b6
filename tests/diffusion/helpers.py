"""Helpers shared by the diffusion tests."""

import jax
from flax import nnx

from zoo.diffusion import ddpm

# The Gaussian toy: data x0 ~ N(MU, S^2) per dimension, whose exact denoiser is known.
MU, S = 0.3, 0.5


def gaussian_denoiser(sched, prediction="eps"):
    """The exact model output of the Gaussian toy: E[eps | x_t] (or x0, v) in closed form."""

    def denoise(x, t):
        a = ddpm.extract(sched.sqrt_alphas_cumprod, t, x)
        sig = ddpm.extract(sched.sqrt_one_minus_alphas_cumprod, t, x)
        eps = sig * (x - a * MU) / (a**2 * S**2 + sig**2)
        x0 = (x - sig * eps) / a
        return {"eps": eps, "x0": x0, "v": a * eps - sig * x0}[prediction]

    return denoise


def perturb_params(module: nnx.Module, scale: float, seed: int = 0) -> None:
    """Adds ``scale`` x N(0, 1) noise to every parameter of ``module`` in place.

    Zero-initialised layers (U-Net output convolutions, residual branches, attention outputs)
    make a fresh network ignore its conditions; tests that check a condition's effect use this.
    """
    leaves, treedef = jax.tree.flatten(nnx.state(module, nnx.Param))
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    moved = [p + scale * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys, strict=True)]
    nnx.update(module, jax.tree.unflatten(treedef, moved))
