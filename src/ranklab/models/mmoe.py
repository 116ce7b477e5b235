"""MMoE (Ma et al., KDD 2018): experts shared by every label, one softmax gate per label."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ranklab.data.schema import Schema
from ranklab.models.base import MultiTaskModel
from ranklab.nn import FeatureEmbedding
from ranklab.nn.multitask import Experts, Gate, mix


class MMoE(MultiTaskModel):
    """x = flatten(E) (B, d); experts f_i(x) (B, E, H); label k's input sum_i g_k(x)_i f_i(x)
    (B, H), g_k = softmax(W_k x); then its tower -> logit (B,)."""

    def __init__(
        self,
        schema: Schema,
        embedding_dim: int = 10,
        num_experts: int = 8,
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
        self.experts = Experts(d, num_experts, expert_units, dropout, batch_norm, activation)
        self.gates = nn.ModuleDict({name: Gate(d, num_experts) for name in self.labels})
        self.build_towers(self.experts.out_dim, tower_units, dropout, batch_norm, activation)

    def encode(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        x = self.embedding(features).flatten(1)  # (B, d)
        experts = self.experts(x)  # (B, E, H)
        return {name: mix(experts, gate(x)) for name, gate in self.gates.items()}
