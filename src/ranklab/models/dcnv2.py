"""DCNv2 (Wang et al., 2021): full-rank or low-rank mixture-of-experts cross network,
stacked before a DNN or in parallel with it."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ranklab.data.schema import Schema
from ranklab.nn import MLP, CrossNetMix, CrossNetV2, FeatureEmbedding


class DCNv2(nn.Module):
    """x0 = flatten(E) (B, d).

    stacked:  logit = w . MLP(Cross(x0)) + b
    parallel: logit = w . [Cross(x0), MLP(x0)] + b

    ``low_rank`` > 0 switches the cross layers to the mixture of ``num_experts`` low-rank
    experts (DCN-Mix); ``hidden_units=[]`` leaves the cross network alone.
    """

    def __init__(
        self,
        schema: Schema,
        embedding_dim: int = 10,
        structure: str = "parallel",
        num_cross_layers: int = 3,
        low_rank: int = 0,
        num_experts: int = 4,
        hidden_units: Sequence[int] = (400, 400, 400),
        dropout: float = 0.0,
        batch_norm: bool = False,
        activation: str = "relu",
        init_std: float = 1e-4,
    ) -> None:
        super().__init__()
        if structure not in ("stacked", "parallel"):
            raise ValueError(f"model.structure must be 'stacked' or 'parallel', got '{structure}'")
        self.structure = structure
        self.embedding = FeatureEmbedding(schema, embedding_dim, init_std=init_std)
        d = self.embedding.num_fields_total * embedding_dim
        self.cross = (
            CrossNetMix(d, num_cross_layers, low_rank, num_experts)
            if low_rank > 0
            else CrossNetV2(d, num_cross_layers)
        )
        self.mlp = MLP(d, hidden_units, None, dropout, batch_norm, activation)
        out_in = self.mlp.out_dim if structure == "stacked" else d + self.mlp.out_dim
        self.out = nn.Linear(out_in, 1)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        x0 = self.embedding(features).flatten(1)  # (B, d)
        if self.structure == "stacked":
            h = self.mlp(self.cross(x0))
        else:
            h = torch.cat([self.cross(x0), self.mlp(x0)], dim=1)
        return self.out(h).squeeze(-1)
