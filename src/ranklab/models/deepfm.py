"""DeepFM (Guo et al., 2017): FM and a DNN sharing one embedding layer."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ranklab.data.schema import Schema
from ranklab.nn import MLP, FeatureEmbedding, FMInteraction, LinearTerm


class DeepFM(nn.Module):
    """logit = LR term + FM(E) + MLP(flatten(E)), E = field embeddings (B, F, D)."""

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
        self.fm = FMInteraction()
        in_dim = self.embedding.num_fields_total * embedding_dim
        self.mlp = MLP(in_dim, hidden_units, 1, dropout, batch_norm, activation)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        emb, within = self.embedding.with_bag_pairs(features)  # (B, F, D); a bag's pairs (FM)
        deep = self.mlp(emb.flatten(1)).squeeze(-1)  # (B,)
        out = self.linear(features) + self.fm(emb) + deep
        return out if within is None else out + within
