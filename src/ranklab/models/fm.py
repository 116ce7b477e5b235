"""Factorization machine (Rendle, 2010)."""

from __future__ import annotations

from torch import Tensor, nn

from ranklab.data.schema import Schema
from ranklab.nn import FeatureEmbedding, FMInteraction, LinearTerm


class FM(nn.Module):
    """logit = LR term + sum_{i<j} <v_i, v_j>.  features -> (B,).

    Over fields; a sum-pooled bag (libFM tokens) also adds the pairs among its own items, so
    on a libFM file read as bags this is libFM's FM over every token.
    """

    def __init__(self, schema: Schema, embedding_dim: int = 10, init_std: float = 1e-4) -> None:
        super().__init__()
        self.linear = LinearTerm(schema, init_std=init_std)
        self.embedding = FeatureEmbedding(schema, embedding_dim, init_std=init_std)
        self.fm = FMInteraction()

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        emb, within = self.embedding.with_bag_pairs(features)
        out = self.linear(features) + self.fm(emb)
        return out if within is None else out + within
