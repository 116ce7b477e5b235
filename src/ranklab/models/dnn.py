"""DNN: concatenated field embeddings through an MLP (the BARS "DNN" baseline)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ranklab.data.schema import Schema
from ranklab.nn import MLP, FeatureEmbedding


class DNN(nn.Module):
    """features -> (B, F, D) -> flatten (B, F*D) -> MLP -> (B,)."""

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
        self.embedding = FeatureEmbedding(schema, embedding_dim, init_std=init_std)
        in_dim = self.embedding.num_fields_total * embedding_dim
        self.mlp = MLP(in_dim, hidden_units, 1, dropout, batch_norm, activation)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        return self.mlp(self.embedding(features).flatten(1)).squeeze(-1)
