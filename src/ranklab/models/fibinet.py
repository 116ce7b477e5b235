"""FiBiNET (Huang et al., RecSys 2019): SENET field re-weighting and bilinear interactions."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ranklab.data.schema import Schema
from ranklab.nn import MLP, FeatureEmbedding, LinearTerm
from ranklab.nn.interaction import BilinearInteraction, SENet


class FiBiNET(nn.Module):
    """p = Bilinear(E), q = Bilinear(SENET(E)) (B, F(F-1)/2, D) each, one bilinear layer for
    both (as in FuxiCTR); logit = LR(x) + MLP(flatten([p, q])), the LR term without a bias of
    its own (the MLP's output has one; FuxiCTR's FiBiNET likewise). ``bilinear_type``:
    field_all | field_each | field_interaction."""

    def __init__(
        self,
        schema: Schema,
        embedding_dim: int = 10,
        bilinear_type: str = "field_interaction",
        reduction_ratio: float = 3.0,
        hidden_units: Sequence[int] = (400, 400, 400),
        dropout: float = 0.0,
        batch_norm: bool = False,
        activation: str = "relu",
        init_std: float = 1e-4,
    ) -> None:
        super().__init__()
        self.linear = LinearTerm(schema, init_std=init_std, bias=False)
        self.embedding = FeatureEmbedding(schema, embedding_dim, init_std=init_std)
        n = self.embedding.num_fields_total
        self.senet = SENet(n, reduction_ratio)
        self.bilinear = BilinearInteraction(n, embedding_dim, bilinear_type)
        pairs = n * (n - 1) // 2
        self.mlp = MLP(2 * pairs * embedding_dim, hidden_units, 1, dropout, batch_norm, activation)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        emb = self.embedding(features)  # (B, F, D)
        p, q = self.bilinear(emb), self.bilinear(self.senet(emb))  # (B, P, D) each
        deep = self.mlp(torch.cat([p, q], dim=1).flatten(1)).squeeze(-1)
        return self.linear(features) + deep
