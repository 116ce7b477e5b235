"""Reusable blocks, each documented with shapes and tested against a naive reference."""

from ranklab.nn.attention import FieldSelfAttention
from ranklab.nn.embedding import FeatureEmbedding, LinearTerm
from ranklab.nn.gating import BilinearFusion, FeatureGating, MaskBlock
from ranklab.nn.interaction import (
    CIN,
    BilinearInteraction,
    CrossNet,
    CrossNetMix,
    CrossNetV2,
    DotInteraction,
    FMInteraction,
    SENet,
)
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
    "CIN",
    "MLP",
    "AUGRUCell",
    "BilinearFusion",
    "BilinearInteraction",
    "CrossNet",
    "CrossNetMix",
    "CrossNetV2",
    "Dice",
    "DotInteraction",
    "Experts",
    "ExtractionLayer",
    "FMInteraction",
    "FeatureEmbedding",
    "FeatureGating",
    "FieldSelfAttention",
    "Gate",
    "LinearTerm",
    "LocalActivationUnit",
    "MaskBlock",
    "MaskedGRU",
    "RecencyEmbedding",
    "SENet",
    "TransformerBlock",
    "mix",
]
