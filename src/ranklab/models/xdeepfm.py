"""xDeepFM (Lian et al., KDD 2018): LR + compressed interaction network + DNN."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ranklab.data.schema import Schema
from ranklab.nn import CIN, MLP, FeatureEmbedding, LinearTerm


class XDeepFM(nn.Module):
    """logit = LR(x) + w . CIN(E) + MLP(flatten(E)), E = field embeddings (B, F, D); the CIN's
    sum-pooled feature maps (B, sum H_k) go through one linear layer (as in FuxiCTR)."""

    def __init__(
        self,
        schema: Schema,
        embedding_dim: int = 10,
        cin_layer_units: Sequence[int] = (64,),
        hidden_units: Sequence[int] = (400, 400, 400),
        dropout: float = 0.0,
        batch_norm: bool = False,
        activation: str = "relu",
        init_std: float = 1e-4,
    ) -> None:
        super().__init__()
        self.linear = LinearTerm(schema, init_std=init_std)
        self.embedding = FeatureEmbedding(schema, embedding_dim, init_std=init_std)
        n = self.embedding.num_fields_total
        self.cin = CIN(n, cin_layer_units)
        self.cin_out = nn.Linear(self.cin.out_dim, 1)
        self.mlp = MLP(n * embedding_dim, hidden_units, 1, dropout, batch_norm, activation)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        emb = self.embedding(features)  # (B, F, D)
        cin = self.cin_out(self.cin(emb)).squeeze(-1)  # (B,)
        return self.linear(features) + cin + self.mlp(emb.flatten(1)).squeeze(-1)
