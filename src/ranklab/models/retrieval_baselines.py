"""Retrieval baselines: most popular items, and the mean of the history's item embeddings."""

from __future__ import annotations

import torch
from torch import Tensor

from ranklab.data.schema import Schema
from ranklab.errors import SchemaError
from ranklab.models.base import RetrievalModel


class PopRec(RetrievalModel):
    """Scores every item by log(1 + its training count), whatever the history: no parameters.

    Reads the counts from ``schema.meta["item_counts"]`` (fit on the training split by the
    data source). ``encode`` gives a constant one-dimensional state so that score = <state, e>.
    """

    def __init__(
        self, schema: Schema, history: str | None = None, target: str | None = None
    ) -> None:
        super().__init__(schema, history, target)
        counts = schema.meta.get("item_counts")
        if counts is None:
            raise SchemaError("PopRec needs the training item counts (schema.meta['item_counts'])")
        self.register_buffer(
            "log_pop", torch.log1p(torch.tensor(counts, dtype=torch.float32)).unsqueeze(1)
        )

    def item_embeddings(self) -> Tensor:
        return self.log_pop  # (V, 1)

    def encode(self, history: Tensor) -> Tensor:
        return torch.ones(*history.shape, 1, device=history.device)  # (B, L, 1)


class MeanPoolRec(RetrievalModel):
    """State after t = mean of the embeddings of items <= t (causal, padding masked);
    score = <state, item embedding>, with the item table shared. Trained like SASRec."""

    def __init__(
        self,
        schema: Schema,
        embedding_dim: int = 64,
        history: str | None = None,
        target: str | None = None,
        init_std: float = 0.02,
    ) -> None:
        super().__init__(schema, history, target, embedding_dim, init_std)

    def encode(self, history: Tensor) -> Tensor:
        valid = (history != 0).unsqueeze(-1).float()  # (B, L, 1)
        x = self.embedding.lookup(history, self.table) * valid  # (B, L, D)
        return x.cumsum(1) / valid.cumsum(1).clamp(min=1)  # prefix means (B, L, D)
