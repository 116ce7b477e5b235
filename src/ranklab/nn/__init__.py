"""Reusable blocks, each documented with shapes and tested against a naive reference."""

from ranklab.nn.embedding import FeatureEmbedding, LinearTerm
from ranklab.nn.interaction import CrossNet, CrossNetMix, CrossNetV2, FMInteraction
from ranklab.nn.mlp import MLP, Dice
from ranklab.nn.multitask import Experts, ExtractionLayer, Gate, mix
from ranklab.nn.sequence import (
    AUGRU,
    AUGRUCell,
    LocalActivationUnit,
    MaskedGRU,
    RecencyEmbedding,
    TransformerBlock,
)

__all__ = [
    "AUGRU",
    "MLP",
    "AUGRUCell",
    "CrossNet",
    "CrossNetMix",
    "CrossNetV2",
    "Dice",
    "Experts",
    "ExtractionLayer",
    "FMInteraction",
    "FeatureEmbedding",
    "Gate",
    "LinearTerm",
    "LocalActivationUnit",
    "MaskedGRU",
    "RecencyEmbedding",
    "TransformerBlock",
    "mix",
]
