"""Deep & Cross Network (Wang et al., 2017): a cross network beside a DNN."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ranklab.data.schema import Schema
from ranklab.nn import MLP, CrossNet, FeatureEmbedding


class DCN(nn.Module):
    """x0 = flatten(E); logit = w . [CrossNet(x0), MLP(x0)] + b.  features -> (B,)."""

    def __init__(
        self,
        schema: Schema,
        embedding_dim: int = 10,
        num_cross_layers: int = 3,
        hidden_units: Sequence[int] = (400, 400, 400),
        dropout: float = 0.0,
        batch_norm: bool = False,
        activation: str = "relu",
        init_std: float = 1e-4,
    ) -> None:
        super().__init__()
        self.embedding = FeatureEmbedding(schema, embedding_dim, init_std=init_std)
        d = self.embedding.num_fields_total * embedding_dim
        self.cross = CrossNet(d, num_cross_layers)
        self.mlp = MLP(d, hidden_units, None, dropout, batch_norm, activation)
        self.out = nn.Linear(d + self.mlp.out_dim, 1)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        x0 = self.embedding(features).flatten(1)  # (B, d)
        return self.out(torch.cat([self.cross(x0), self.mlp(x0)], dim=1)).squeeze(-1)
