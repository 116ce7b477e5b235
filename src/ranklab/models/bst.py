"""BST (Chen et al., 2019): Behavior Sequence Transformer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from ranklab.data.schema import Schema
from ranklab.nn import MLP, FeatureEmbedding
from ranklab.nn.sequence import (
    RecencyEmbedding,
    TransformerBlock,
    embed_steps,
    history_fields,
    masked_mean,
)


class BST(nn.Module):
    """A transformer over the history followed by the target item.

    Step l of the history is [paired embeddings, side embeddings] (B, L, d), d = (P+S)*D; the
    target step is [target embeddings, the side tables' padding rows] (a learned "this is the
    target" value where the target has no action or gap). A learned position embedding counted
    from the target (target 0, most recent behaviour 1, ...) is added; padded keys are masked.
    The paper flattens all L+1 outputs, which ties the model to one width L and lets padding
    reach the MLP; here the output is [the target step's output, the mean of the valid history
    steps' outputs] (B, 2d). logit = MLP([every field embedding, that output]).
    """

    family: ClassVar[str] = "sequence"

    def __init__(
        self,
        schema: Schema,
        history: str | None = None,
        embedding_dim: int = 16,
        num_layers: int = 1,
        num_heads: int = 2,
        dim_feedforward: int = 64,
        transformer_dropout: float = 0.1,
        hidden_units: Sequence[int] = (200, 80),
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        init_std: float = 0.1,
    ) -> None:
        super().__init__()
        self.fields = history_fields(schema, history, "BST")
        self.embedding = FeatureEmbedding(schema, embedding_dim, init_std=init_std)
        self.target_idx = [self.embedding.cat_fields.index(t) for t in self.fields.targets]
        self.side_tables = [self.embedding.table_of[s] for s in self.fields.side]
        d = (len(self.fields.paired) + len(self.fields.side)) * embedding_dim
        self.position = RecencyEmbedding(schema[self.fields.history].max_len + 1, d)
        self.blocks = nn.ModuleList(
            TransformerBlock(d, num_heads, dim_feedforward, transformer_dropout)
            for _ in range(num_layers)
        )
        in_dim = self.embedding.num_fields_total * embedding_dim + 2 * d
        self.mlp = MLP(in_dim, hidden_units, 1, dropout, batch_norm, activation)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        emb = self.embedding(features)  # (B, F, D)
        ids = features[self.fields.history]
        pad = torch.zeros_like(ids[:, :1])  # (B, 1)
        target = [emb[:, self.target_idx].flatten(1).unsqueeze(1)]  # (B, 1, P*D)
        target += [self.embedding.lookup(pad, t) for t in self.side_tables]  # (B, 1, D) each
        names = self.fields.sequences + list(self.fields.side)
        hist = embed_steps(self.embedding, features, names)  # (B, L, d)
        x = torch.cat([hist, torch.cat(target, dim=-1)], dim=1)  # (B, L+1, d)
        x = x + self.position(x.shape[1])  # target at position 0
        mask = torch.cat([ids != 0, torch.ones_like(pad, dtype=torch.bool)], dim=1)  # (B, L+1)
        for block in self.blocks:
            x = block(x, mask)
        out = torch.cat([x[:, -1], masked_mean(x[:, :-1], mask[:, :-1])], dim=1)  # (B, 2d)
        return self.mlp(torch.cat([emb.flatten(1), out], dim=1)).squeeze(-1)
