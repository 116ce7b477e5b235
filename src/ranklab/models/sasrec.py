"""SASRec (Kang & McAuley, 2018): causal self-attention over the item sequence; the next item
is scored by the dot product with the shared item embeddings."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from ranklab.data.schema import Schema
from ranklab.nn import FeatureEmbedding


def causal_mask(valid: Tensor) -> Tensor:
    """valid (B, L) -> attention mask (B, L, L), True where query i may NOT attend to key j.

    Query i sees keys j <= i that are valid; every position also sees itself, so padded rows
    never have all keys masked (their outputs are zeroed afterwards).
    """
    L = valid.shape[1]
    future = torch.ones(L, L, dtype=torch.bool, device=valid.device).triu(1)  # (L, L)
    blocked = future.unsqueeze(0) | ~valid.unsqueeze(1)  # (B, L, L)
    return blocked & ~torch.eye(L, dtype=torch.bool, device=valid.device)


class SASRec(nn.Module):
    """history (B, L) -> states (B, L, D); score(item) = <state, item embedding>.

    Positions are learned and counted from the most recent item (position 0), which equals the
    original's absolute positions on left-padded, fixed-width inputs and keeps the output
    independent of extra left padding. Blocks are pre-norm transformer layers (self-attention
    and a point-wise feed-forward network with ReLU, dropout and residuals), as in the paper.
    """

    family: ClassVar[str] = "retrieval"

    def __init__(
        self,
        schema: Schema,
        embedding_dim: int = 64,
        num_blocks: int = 2,
        num_heads: int = 1,
        dropout: float = 0.2,
        history: str = "history",
        target: str = "target",
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        schema.require([history], kind="sequence", model="SASRec")
        self.history = history
        self.table = schema[history].table
        self.max_len = schema[history].max_len
        self.n_items = schema.tables[self.table]
        self.target = target
        self.embedding = FeatureEmbedding(
            schema, embedding_dim, fields=[], extra_tables=[self.table], init_std=init_std
        )
        self.position = nn.Embedding(self.max_len, embedding_dim)
        nn.init.normal_(self.position.weight, std=init_std)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                embedding_dim,
                num_heads,
                dim_feedforward=embedding_dim,
                dropout=dropout,
                activation="relu",
                batch_first=True,
                norm_first=True,
            )
            for _ in range(num_blocks)
        )
        self.norm = nn.LayerNorm(embedding_dim)
        self.num_heads = num_heads
        self.scale = embedding_dim**0.5

    def item_embeddings(self) -> Tensor:
        """(V, D): the rows of the item table, ids 0 (padding) and 1 (OOV) included."""
        start = self.embedding.offsets[self.table]
        return self.embedding.embedding.weight[start : start + self.n_items]

    def encode(self, history: Tensor) -> Tensor:
        """(B, L) item ids, left-padded -> (B, L, D) states; state t summarises items <= t."""
        L = history.shape[1]
        valid = history != 0  # (B, L)
        x = self.embedding.lookup(history, self.table) * self.scale  # (B, L, D)
        pos = torch.arange(L - 1, -1, -1, device=history.device)  # most recent = 0
        x = self.dropout(x + self.position(pos)) * valid.unsqueeze(-1)
        mask = causal_mask(valid).repeat_interleave(self.num_heads, 0)  # (B*H, L, L)
        for block in self.blocks:
            x = block(x, src_mask=mask) * valid.unsqueeze(-1)
        return self.norm(x) * valid.unsqueeze(-1)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        """Score of ``target`` (B,) given ``history`` (B, L): (B,)."""
        state = self.encode(features[self.history])[:, -1]  # (B, D)
        return (state * self.embedding.lookup(features[self.target], self.table)).sum(-1)
