"""SASRec (Kang & McAuley, 2018): causal self-attention over the item sequence; the next item
is scored by the dot product with the shared item embeddings."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ranklab.data.schema import Schema
from ranklab.errors import ConfigError
from ranklab.models.base import RetrievalModel

LAYOUTS = ("pre_norm", "reference")


def causal_mask(valid: Tensor) -> Tensor:
    """valid (B, L) -> attention mask (B, L, L), True where query i may NOT attend to key j.

    Query i sees keys j <= i that are valid; every position also sees itself, so padded rows
    never have all keys masked (their outputs are zeroed afterwards).
    """
    L = valid.shape[1]
    future = torch.ones(L, L, dtype=torch.bool, device=valid.device).triu(1)  # (L, L)
    blocked = future.unsqueeze(0) | ~valid.unsqueeze(1)  # (B, L, L)
    return blocked & ~torch.eye(L, dtype=torch.bool, device=valid.device)


class ReferenceBlock(nn.Module):
    """The block of the SASRec authors' released code, which differs from the paper's equations:
    only the queries are layer-normalised (keys and values read the raw sequence), the attention
    residual adds to the *normalised* queries, and the feed-forward network reads and adds to a
    second normalisation. Each block thus re-normalises the stream, where the pre-norm layout
    carries the sqrt(d)-scaled input embedding through every residual unnormalised. On Beauty it
    scores higher than the pre-norm layout under every protocol (README, Results).

    x (B, L, D), mask (B*H, L, L) True where blocked -> (B, L, D).
    """

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(dim, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor, src_mask: Tensor) -> Tensor:
        q = self.attn_norm(x)
        x = q + self.attn(q, x, x, attn_mask=src_mask, need_weights=False)[0]
        h = self.ffn_norm(x)
        return h + self.ffn(h)


class SASRec(RetrievalModel):
    """history (B, L) -> states (B, L, D); score(item) = <state, item embedding>.

    Positions are learned and counted from the most recent item (position 0), which equals the
    original's absolute positions on left-padded, fixed-width inputs and keeps the output
    independent of extra left padding. ``layout="pre_norm"``: the paper's equations, pre-norm
    transformer layers (self-attention and a point-wise feed-forward network with ReLU,
    dropout and residuals, x + f(LayerNorm(x))); ``layout="reference"``: the block of the
    authors' released code (:class:`ReferenceBlock`). ``history``/``target``: field names
    (None: from the schema).
    """

    def __init__(
        self,
        schema: Schema,
        embedding_dim: int = 64,
        num_blocks: int = 2,
        num_heads: int = 1,
        dropout: float = 0.2,
        history: str | None = None,
        target: str | None = None,
        init_std: float = 0.02,
        layout: str = "reference",
    ) -> None:
        if layout not in LAYOUTS:
            raise ConfigError("model.layout", f"must be one of {LAYOUTS}, got '{layout}'")
        super().__init__(schema, history, target, embedding_dim, init_std)
        self.position = nn.Embedding(self.max_len, embedding_dim)
        nn.init.normal_(self.position.weight, std=init_std)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            ReferenceBlock(embedding_dim, num_heads, dropout)
            if layout == "reference"
            else nn.TransformerEncoderLayer(
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
