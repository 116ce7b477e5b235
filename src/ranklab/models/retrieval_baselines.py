"""Retrieval baselines: most popular items, and the mean of the history's item embeddings."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from ranklab.data.schema import Schema
from ranklab.errors import SchemaError
from ranklab.nn import FeatureEmbedding


class PopRec(nn.Module):
    """Scores every item by log(1 + its training count), whatever the history: no parameters.

    Reads the counts from ``schema.meta["item_counts"]`` (fit on the training split by the
    data source). ``encode`` gives a constant one-dimensional state so that score = <state, e>.
    """

    family: ClassVar[str] = "retrieval"

    def __init__(self, schema: Schema, history: str = "history", target: str = "target") -> None:
        super().__init__()
        schema.require([history], kind="sequence", model="PopRec")
        counts = schema.meta.get("item_counts")
        if counts is None:
            raise SchemaError("PopRec needs the training item counts (schema.meta['item_counts'])")
        self.history, self.target = history, target
        self.register_buffer(
            "log_pop", torch.log1p(torch.tensor(counts, dtype=torch.float32)).unsqueeze(1)
        )

    def item_embeddings(self) -> Tensor:
        return self.log_pop  # (V, 1)

    def encode(self, history: Tensor) -> Tensor:
        return torch.ones(*history.shape, 1, device=history.device)  # (B, L, 1)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        return self.log_pop[features[self.target], 0]  # (B,)


class MeanPoolRec(nn.Module):
    """State after t = mean of the embeddings of items <= t (causal, padding masked);
    score = <state, item embedding>, with the item table shared. Trained like SASRec."""

    family: ClassVar[str] = "retrieval"

    def __init__(
        self,
        schema: Schema,
        embedding_dim: int = 64,
        history: str = "history",
        target: str = "target",
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        schema.require([history], kind="sequence", model="MeanPoolRec")
        self.history, self.target = history, target
        self.table = schema[history].table
        self.n_items = schema.tables[self.table]
        self.embedding = FeatureEmbedding(
            schema, embedding_dim, fields=[], extra_tables=[self.table], init_std=init_std
        )

    def item_embeddings(self) -> Tensor:
        start = self.embedding.offsets[self.table]
        return self.embedding.embedding.weight[start : start + self.n_items]

    def encode(self, history: Tensor) -> Tensor:
        valid = (history != 0).unsqueeze(-1).float()  # (B, L, 1)
        x = self.embedding.lookup(history, self.table) * valid  # (B, L, D)
        return x.cumsum(1) / valid.cumsum(1).clamp(min=1)  # prefix means (B, L, D)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        state = self.encode(features[self.history])[:, -1]
        return (state * self.embedding.lookup(features[self.target], self.table)).sum(-1)
