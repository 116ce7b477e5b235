"""Shared-Bottom (Caruana, 1997): one bottom network shared by every label, a tower each."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from ranklab.data.schema import Schema
from ranklab.models.base import MultiTaskModel
from ranklab.nn import MLP, FeatureEmbedding


class SharedBottom(MultiTaskModel):
    """flatten(E) (B, F*D) -> bottom MLP (B, H) -> per label: tower MLP -> logit (B,)."""

    def __init__(
        self,
        schema: Schema,
        embedding_dim: int = 10,
        bottom_units: Sequence[int] = (256, 128),
        tower_units: Sequence[int] = (64,),
        dropout: float = 0.0,
        batch_norm: bool = False,
        activation: str = "relu",
        init_std: float = 1e-4,
    ) -> None:
        super().__init__(schema)
        self.embedding = FeatureEmbedding(schema, embedding_dim, init_std=init_std)
        d = self.embedding.num_fields_total * embedding_dim
        self.bottom = MLP(d, bottom_units, None, dropout, batch_norm, activation)
        self.build_towers(self.bottom.out_dim, tower_units, dropout, batch_norm, activation)

    def encode(self, features: dict[str, Tensor]) -> Tensor:
        return self.bottom(self.embedding(features).flatten(1))  # (B, H)
