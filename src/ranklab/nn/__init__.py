"""Reusable blocks, each documented with shapes and tested against a naive reference."""

from ranklab.nn.embedding import FeatureEmbedding, LinearTerm
from ranklab.nn.interaction import CrossNet, CrossNetMix, CrossNetV2, FMInteraction
from ranklab.nn.mlp import MLP

__all__ = [
    "MLP",
    "CrossNet",
    "CrossNetMix",
    "CrossNetV2",
    "FMInteraction",
    "FeatureEmbedding",
    "LinearTerm",
]
