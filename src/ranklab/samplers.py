"""Negative samplers for retrieval losses: ``sample(n, n_items, targets) -> (n,) item ids``.

Ids 0 (padding) and 1 (out of vocabulary) are never drawn. ``targets`` are the positions'
positive items (the in-batch sampler draws from them; the others ignore them).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ranklab.data.schema import FIRST_ID


class NegativeSampler(nn.Module):
    """Base class: ``sample(n, n_items, targets (N,)) -> (n,) int64 ids on targets' device``."""

    def sample(self, n: int, n_items: int, targets: Tensor) -> Tensor:
        raise NotImplementedError


class Uniform(NegativeSampler):
    """Every real item equally likely."""

    def sample(self, n: int, n_items: int, targets: Tensor) -> Tensor:
        return torch.randint(FIRST_ID, n_items, (n,), device=targets.device)


class Popularity(NegativeSampler):
    """Items drawn in proportion to ``counts ** power`` (word2vec's 0.75 by default), e.g. the
    training counts the data records in ``schema.meta["item_counts"]`` (the retrieval task
    passes them when ``counts`` is null)."""

    def __init__(self, counts: Sequence[float] | None = None, power: float = 0.75) -> None:
        super().__init__()
        self.power = float(power)
        self.register_buffer("weights", torch.empty(0), persistent=False)
        if counts is not None:
            self.set_counts(counts)

    def set_counts(self, counts: Sequence[float] | Tensor) -> None:
        w = torch.as_tensor(counts, dtype=torch.float64).clamp(min=0) ** self.power
        w[:FIRST_ID] = 0
        self.weights = (w / w.sum()).float().to(self.weights.device)

    def sample(self, n: int, n_items: int, targets: Tensor) -> Tensor:
        if self.weights.numel() != n_items:
            raise ValueError(
                f"Popularity sampler has {self.weights.numel()} counts for {n_items} items"
            )
        return torch.multinomial(self.weights, n, replacement=True).to(targets.device)


class InBatch(NegativeSampler):
    """Other positions' positive items (in-batch negatives: popularity-distributed for free)."""

    def sample(self, n: int, n_items: int, targets: Tensor) -> Tensor:
        return targets[torch.randint(0, targets.shape[0], (n,), device=targets.device)]
