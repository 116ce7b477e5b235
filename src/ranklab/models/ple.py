"""PLE (Tang et al., RecSys 2020): progressive layered extraction, stacked CGC layers with
task-specific and shared experts."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ranklab.data.schema import Schema
from ranklab.models.base import MultiTaskModel
from ranklab.nn import FeatureEmbedding
from ranklab.nn.multitask import ExtractionLayer


class PLE(MultiTaskModel):
    """x = flatten(E) (B, d) feeds every task's and the shared branch of the first extraction
    layer; each layer's outputs feed the next (the last one has no shared output); label k's
    tower reads its branch's final output (B, H). ``num_layers=1`` is CGC."""

    def __init__(
        self,
        schema: Schema,
        embedding_dim: int = 10,
        num_layers: int = 2,
        num_specific_experts: int = 2,
        num_shared_experts: int = 2,
        expert_units: Sequence[int] = (128, 64),
        tower_units: Sequence[int] = (64,),
        dropout: float = 0.0,
        batch_norm: bool = False,
        activation: str = "relu",
        init_std: float = 1e-4,
    ) -> None:
        super().__init__(schema)
        self.embedding = FeatureEmbedding(schema, embedding_dim, init_std=init_std)
        d = self.embedding.num_fields_total * embedding_dim
        layers = []
        for i in range(num_layers):
            layers.append(
                ExtractionLayer(
                    d if i == 0 else expert_units[-1],
                    len(self.labels),
                    num_specific_experts,
                    num_shared_experts,
                    expert_units,
                    last=i == num_layers - 1,
                    dropout=dropout,
                    batch_norm=batch_norm,
                    activation=activation,
                )
            )
        self.layers = nn.ModuleList(layers)
        self.build_towers(expert_units[-1], tower_units, dropout, batch_norm, activation)

    def encode(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        x = self.embedding(features).flatten(1)  # (B, d)
        tasks, shared = [x] * len(self.labels), x
        for layer in self.layers:
            tasks, shared = layer(tasks, shared)
        return dict(zip(self.labels, tasks))
