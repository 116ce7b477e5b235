"""DIN (Zhou et al., 2018): target attention over the behaviour history."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from ranklab.data.schema import Schema
from ranklab.nn import MLP, FeatureEmbedding
from ranklab.nn.sequence import LocalActivationUnit, embed_steps, history_fields


class DIN(nn.Module):
    """Deep Interest Network.

    For each history step l, the local activation unit scores the target q (the target's
    embeddings, e.g. [item, cate], (B, P*D)) against the step k_l (B, L, P*D):
    w_l = MLP([q, k_l, q - k_l, q * k_l, s_l]), unnormalised, 0 where padded; the user's
    interest is sum_l w_l [k_l, s_l] (B, (P+S)*D). Side fields without a target (action type,
    time gap) are s_l: they enter the activation unit and the pooled interest. The logit is
    MLP([every field embedding (targets included), interest]).

    ``activation`` is used by both MLPs; ``dice`` (the paper's) is the default.
    """

    family: ClassVar[str] = "sequence"

    def __init__(
        self,
        schema: Schema,
        history: str | None = None,
        embedding_dim: int = 16,
        attention_units: Sequence[int] = (64,),
        hidden_units: Sequence[int] = (200, 80),
        activation: str = "dice",
        dropout: float = 0.0,
        batch_norm: bool = False,
        init_std: float = 0.1,
    ) -> None:
        super().__init__()
        self.fields = history_fields(schema, history, "DIN")
        self.embedding = FeatureEmbedding(schema, embedding_dim, init_std=init_std)
        self.target_idx = [self.embedding.cat_fields.index(t) for t in self.fields.targets]
        dq = len(self.fields.paired) * embedding_dim
        ds = len(self.fields.side) * embedding_dim
        self.attention = LocalActivationUnit(dq, attention_units, ds, activation)
        in_dim = self.embedding.num_fields_total * embedding_dim + dq + ds
        self.mlp = MLP(in_dim, hidden_units, 1, dropout, batch_norm, activation)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        emb = self.embedding(features)  # (B, F, D)
        query = emb[:, self.target_idx].flatten(1)  # (B, P*D)
        keys = embed_steps(self.embedding, features, self.fields.sequences)  # (B, L, P*D)
        side = embed_steps(self.embedding, features, self.fields.side) if self.fields.side else None
        mask = features[self.fields.history] != 0  # (B, L)
        w = self.attention(query, keys, mask, side)  # (B, L)
        values = keys if side is None else torch.cat([keys, side], dim=-1)  # (B, L, (P+S)*D)
        interest = (w.unsqueeze(-1) * values).sum(1)  # (B, (P+S)*D)
        return self.mlp(torch.cat([emb.flatten(1), interest], dim=1)).squeeze(-1)
