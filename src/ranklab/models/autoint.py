"""AutoInt / AutoInt+ (Song et al., CIKM 2019): stacked multi-head self-attention over fields,
with residuals; AutoInt+ adds a DNN in parallel."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ranklab.data.schema import Schema
from ranklab.nn import MLP, FeatureEmbedding, LinearTerm
from ranklab.nn.attention import FieldSelfAttention


class AutoInt(nn.Module):
    """logit = w . flatten(attention^L(E)) [+ MLP(flatten(E)) when ``hidden_units``, AutoInt+]
    [+ LR(x) with ``use_wide``]; E (B, F, D), each of the ``attention_layers`` layers
    (B, F, attention_dim), its ``num_heads`` heads splitting ``attention_dim`` (FuxiCTR's)."""

    def __init__(
        self,
        schema: Schema,
        embedding_dim: int = 10,
        attention_layers: int = 3,
        num_heads: int = 2,
        attention_dim: int = 32,
        use_residual: bool = True,
        use_scale: bool = False,
        layer_norm: bool = False,
        use_wide: bool = False,
        hidden_units: Sequence[int] = (400, 400, 400),
        dropout: float = 0.0,
        batch_norm: bool = False,
        activation: str = "relu",
        init_std: float = 1e-4,
    ) -> None:
        super().__init__()
        self.embedding = FeatureEmbedding(schema, embedding_dim, init_std=init_std)
        n = self.embedding.num_fields_total
        dims = [embedding_dim] + [attention_dim] * attention_layers
        self.attention = nn.Sequential(
            *(
                FieldSelfAttention(
                    dims[i], attention_dim, num_heads, use_residual, use_scale, layer_norm, dropout
                )
                for i in range(attention_layers)
            )
        )
        self.attention_out = nn.Linear(n * dims[-1], 1)
        self.mlp = (
            MLP(n * embedding_dim, hidden_units, 1, dropout, batch_norm, activation)
            if hidden_units
            else None
        )
        self.linear = LinearTerm(schema, init_std=init_std) if use_wide else None

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        emb = self.embedding(features)  # (B, F, D)
        logit = self.attention_out(self.attention(emb).flatten(1)).squeeze(-1)  # (B,)
        if self.mlp is not None:
            logit = logit + self.mlp(emb.flatten(1)).squeeze(-1)
        if self.linear is not None:
            logit = logit + self.linear(features)
        return logit
