"""Shared defaults of every GAN config: the engine sections plus ``gan`` and ``net``."""

from __future__ import annotations

import importlib

from zoo.engine.config import base_config
from zoo.engine.stages import stage_entry
from zoo.gan.objective import NETWORKS, gan_config


def gan_base_config(model: str):
    """``base_config()`` with ``model``, ``gan`` (:func:`gan_config`) and ``net`` (the
    network module's ``net_config()``); Adam 2e-4, beta1 0.5 (Radford et al.), no clip."""
    c = base_config()
    c.model = model
    # --config.init.generator.workdir=RUN starts from RUN's generator (its EMA copy).
    c.init.generator = stage_entry("generator")
    c.init.discriminator = stage_entry("discriminator", ema=False)
    c.gan = gan_config()
    c.net = importlib.import_module(NETWORKS[model][0]).net_config()
    c.optim.update(dict(name="adam", lr=2e-4, b1=0.5, b2=0.999, grad_clip=0.0))
    return c
