"""Blocks shared by the model families: attention, embeddings, U-Net/VQGAN blocks.

The attention function is ``zoo.nn.attention.attention``; it is not re-exported
here, where its name would shadow the ``zoo.nn.attention`` module.
"""

from zoo.nn.attention import MultiHeadAttention
from zoo.nn.blocks import (
    AttentionBlock,
    Downsample,
    ResBlock,
    Upsample,
    group_norm,
    num_groups,
)
from zoo.nn.embeddings import timestep_embedding

__all__ = [
    "AttentionBlock",
    "Downsample",
    "MultiHeadAttention",
    "ResBlock",
    "Upsample",
    "group_norm",
    "num_groups",
    "timestep_embedding",
]
