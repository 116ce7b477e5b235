"""TransAct (Xia et al., 2023): a transformer over the user's actions in a DCNv2 ranker."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from ranklab.data.schema import Schema
from ranklab.nn import MLP, CrossNetV2, FeatureEmbedding
from ranklab.nn.sequence import TransformerBlock, embed_steps, history_fields, transact_pool


class TransAct(nn.Module):
    """Transformer over [action, item and side embeddings of each step, target] (early fusion).

    Step l is [paired embeddings (item, cate), side embeddings (the action type, a time gap),
    target embeddings] (B, L, d), d = (2P + S)*D: the target is concatenated to every step, as
    in the paper's early fusion. A transformer encoder with masked padded keys and no position
    encoding (as in the paper) maps it to (B, L, d); the output is the max over valid steps and
    the K most recent steps' outputs flattened, (B, (K+1)*d), zeros where a step is padding.
    With every field embedding, x0 (B, F*D + (K+1)*d) feeds a DCNv2 ranker: a full-rank cross
    network in parallel with an MLP, joined by a linear layer.
    """

    family: ClassVar[str] = "sequence"

    def __init__(
        self,
        schema: Schema,
        history: str | None = None,
        embedding_dim: int = 8,
        num_layers: int = 2,
        num_heads: int = 2,
        dim_feedforward: int = 64,
        transformer_dropout: float = 0.0,
        last_k: int = 5,
        num_cross_layers: int = 1,
        ranker_hidden_units: Sequence[int] = (128, 64),
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        init_std: float = 0.1,
    ) -> None:
        super().__init__()
        self.fields = history_fields(schema, history, "TransAct")
        self.embedding = FeatureEmbedding(schema, embedding_dim, init_std=init_std)
        self.target_idx = [self.embedding.cat_fields.index(t) for t in self.fields.targets]
        d = (2 * len(self.fields.paired) + len(self.fields.side)) * embedding_dim
        self.blocks = nn.ModuleList(
            TransformerBlock(d, num_heads, dim_feedforward, transformer_dropout)
            for _ in range(num_layers)
        )
        self.last_k = last_k
        d0 = self.embedding.num_fields_total * embedding_dim + (last_k + 1) * d
        self.cross = CrossNetV2(d0, num_cross_layers)
        self.mlp = MLP(d0, ranker_hidden_units, None, dropout, batch_norm, activation)
        self.out = nn.Linear(d0 + self.mlp.out_dim, 1)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        emb = self.embedding(features)  # (B, F, D)
        names = self.fields.sequences + list(self.fields.side)
        steps = embed_steps(self.embedding, features, names)  # (B, L, (P+S)*D)
        target = emb[:, self.target_idx].flatten(1)  # (B, P*D)
        x = torch.cat([steps, target.unsqueeze(1).expand(-1, steps.shape[1], -1)], dim=-1)
        mask = features[self.fields.history] != 0  # (B, L)
        for block in self.blocks:
            x = block(x, mask)  # (B, L, d)
        x0 = torch.cat([emb.flatten(1), transact_pool(x, mask, self.last_k)], dim=1)  # (B, d0)
        return self.out(torch.cat([self.cross(x0), self.mlp(x0)], dim=1)).squeeze(-1)
