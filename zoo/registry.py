"""Maps a config's model name to its family's objective builder.

Entries are import paths, so that importing the registry loads no family and
a new family registers with one line.
"""

from __future__ import annotations

import importlib

from zoo.engine import precision
from zoo.engine.objective import Objective

OBJECTIVES = {
    "ddpm": "zoo.diffusion.objective:build_objective",
    "ldm": "zoo.diffusion.objective:build_objective",
    "imagen_sr": "zoo.diffusion.objective:build_objective",
    "inpaint": "zoo.diffusion.objective:build_objective",
    "gan": "zoo.gan.objective:build_objective",
    "dcgan": "zoo.gan.objective:build_objective",
    "stylegan2": "zoo.gan.objective:build_objective",
    "gigagan": "zoo.gan.objective:build_objective",
    "styleswin": "zoo.gan.objective:build_objective",
    "nerf": "zoo.nerf.objective:build_objective",
    "vqvae": "zoo.autoregressive.tokenizer_objective:build_objective",
    "vqgan": "zoo.autoregressive.tokenizer_objective:build_objective",
    "dvae": "zoo.autoregressive.tokenizer_objective:build_objective",
    # Latent diffusion's KL autoencoder (zoo.nn.kl_autoencoder) trains as a stage-1
    # tokenizer: the same reconstruction, LPIPS and PatchGAN terms as VQGAN.
    "klvae": "zoo.autoregressive.tokenizer_objective:build_objective",
    "transformer": "zoo.autoregressive.prior_objective:build_objective",
    "dalle": "zoo.autoregressive.prior_objective:build_objective",
    "parti": "zoo.autoregressive.prior_objective:build_objective",
    "clip": "zoo.diffusion.clip_objective:build_objective",
    "unclip_prior": "zoo.diffusion.unclip_prior:build_objective",
    "unclip_decoder": "zoo.diffusion.unclip_decoder:build_objective",
}


def build_objective(config) -> Objective:
    """The objective for ``config.model`` under ``config.precision``
    (:func:`zoo.engine.precision.apply_policy`); a clear error for unknown names."""
    name = config.model
    if name not in OBJECTIVES:
        raise ValueError(f"unknown model {name!r}; known models: {sorted(OBJECTIVES)}")
    precision.policy(config)  # a bad policy fails before the family builds anything
    module, attr = OBJECTIVES[name].split(":")
    objective = getattr(importlib.import_module(module), attr)(config)
    return precision.apply_policy(objective, config)
