"""Wide & Deep (Cheng et al., 2016): a linear (wide) part plus a DNN (deep) part."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ranklab.data.schema import Schema
from ranklab.nn import MLP, FeatureEmbedding, LinearTerm


class WideDeep(nn.Module):
    """logit = LR term + MLP(flattened embeddings).  features -> (B,)."""

    def __init__(
        self,
        schema: Schema,
        embedding_dim: int = 10,
        hidden_units: Sequence[int] = (400, 400, 400),
        dropout: float = 0.0,
        batch_norm: bool = False,
        activation: str = "relu",
        init_std: float = 1e-4,
    ) -> None:
        super().__init__()
        self.linear = LinearTerm(schema, init_std=init_std, bias=False)  # the MLP has the bias
        self.embedding = FeatureEmbedding(schema, embedding_dim, init_std=init_std)
        in_dim = self.embedding.num_fields_total * embedding_dim
        self.mlp = MLP(in_dim, hidden_units, 1, dropout, batch_norm, activation)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        deep = self.mlp(self.embedding(features).flatten(1)).squeeze(-1)
        return self.linear(features) + deep
