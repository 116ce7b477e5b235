"""DIEN (Zhou et al., 2019): interest extraction (GRU + auxiliary loss), interest evolution
(AUGRU driven by target attention)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ranklab.data.schema import Schema
from ranklab.nn import MLP, FeatureEmbedding
from ranklab.nn.sequence import (
    AUGRU,
    MaskedGRU,
    embed_steps,
    history_fields,
    masked_softmax,
)


class DIEN(nn.Module):
    """Deep Interest Evolution Network.

    Steps x_l = [paired embeddings e_l (B, L, P*D), side embeddings (action, gap)] go through
    the interest-extractor GRU (hidden size P*D, the size of the target embedding q):
    states h_l (B, L, P*D). Attention a_l = softmax over valid steps of h_l W q (paper eq. 4);
    the AUGRU runs over h_l with update gates scaled by a_l; its final state is the evolved
    interest. logit = MLP([every field embedding, interest]).

    In training the output also holds ``aux_loss`` (paper eq. 3): h_l should score the next
    behaviour e_{l+1} above a negative, sum over valid steps of
    -log sigmoid(h_l . e_{l+1}) - log(1 - sigmoid(h_l . e'_{l+1})), averaged over valid pairs.
    The negative e' is the same step of the next row of the batch (another user's behaviour,
    so a draw from the data's item distribution with its true side fields; training batches
    are shuffled), skipped where it is padding or the same item.
    """

    family: ClassVar[str] = "sequence"

    def __init__(
        self,
        schema: Schema,
        history: str | None = None,
        embedding_dim: int = 16,
        hidden_units: Sequence[int] = (200, 80),
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        init_std: float = 0.2,
    ) -> None:
        super().__init__()
        self.fields = history_fields(schema, history, "DIEN")
        self.embedding = FeatureEmbedding(schema, embedding_dim, init_std=init_std)
        self.target_idx = [self.embedding.cat_fields.index(t) for t in self.fields.targets]
        dq = len(self.fields.paired) * embedding_dim
        d_in = dq + len(self.fields.side) * embedding_dim
        self.extractor = MaskedGRU(d_in, dq)
        self.attention = nn.Linear(dq, dq, bias=False)  # W of h_l W q
        self.evolution = AUGRU(dq, dq)
        in_dim = self.embedding.num_fields_total * embedding_dim + dq
        self.mlp = MLP(in_dim, hidden_units, 1, dropout, batch_norm, activation)

    def forward(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        """features -> {"logits": (B,)} (+ "aux_loss": scalar in training)."""
        emb = self.embedding(features)  # (B, F, D)
        query = emb[:, self.target_idx].flatten(1)  # (B, P*D)
        items = embed_steps(self.embedding, features, self.fields.sequences)  # (B, L, P*D)
        steps = embed_steps(
            self.embedding, features, self.fields.sequences + list(self.fields.side)
        )
        ids = features[self.fields.history]
        mask = ids != 0  # (B, L)
        states = self.extractor(steps, mask)  # (B, L, P*D)
        scores = (states * self.attention(query).unsqueeze(1)).sum(-1)  # (B, L)
        interest = self.evolution(states, masked_softmax(scores, mask), mask)  # (B, P*D)
        logits = self.mlp(torch.cat([emb.flatten(1), interest], dim=1)).squeeze(-1)
        if not self.training:
            return {"logits": logits}
        return {"logits": logits, "aux_loss": self.auxiliary_loss(states, items, ids)}

    @staticmethod
    def auxiliary_loss(states: Tensor, items: Tensor, ids: Tensor) -> Tensor:
        """states, items (B, L, H), ids (B, L) -> scalar next-behaviour loss."""
        h, pos = states[:, :-1], items[:, 1:]  # state after step l, behaviour l+1
        neg, neg_ids = items.roll(1, dims=0)[:, 1:], ids.roll(1, dims=0)[:, 1:]  # another row
        valid = (ids[:, :-1] != 0) & (ids[:, 1:] != 0)  # (B, L-1)
        neg_valid = valid & (neg_ids != 0) & (neg_ids != ids[:, 1:])
        pos_loss = F.softplus(-(h * pos).sum(-1)) * valid  # -log sigmoid(h . e)
        neg_loss = F.softplus((h * neg).sum(-1)) * neg_valid  # -log(1 - sigmoid(h . e'))
        return pos_loss.sum() / valid.sum().clamp(min=1) + neg_loss.sum() / neg_valid.sum().clamp(
            min=1
        )
