"""Batches and the in-memory loader that cuts them by slicing tensors (no per-row Python)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Batch:
    """features: name -> (B,) or (B, L) tensor; label: (B,) float32; group: (B,) int64 or None."""

    features: dict[str, Tensor]
    label: Tensor
    group: Tensor | None = None

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return Batch(
            {k: v.to(device, non_blocking=non_blocking) for k, v in self.features.items()},
            self.label.to(device, non_blocking=non_blocking),
            None if self.group is None else self.group.to(device, non_blocking=non_blocking),
        )

    def __len__(self) -> int:
        return self.label.shape[0]


@dataclass
class TensorSplit:
    """One split held in memory: every tensor has the same first dimension N."""

    features: dict[str, Tensor]
    label: Tensor
    group: Tensor | None = None

    def __len__(self) -> int:
        return self.label.shape[0]

    def to(self, device: torch.device | str) -> TensorSplit:
        b = Batch(self.features, self.label, self.group).to(device)
        return TensorSplit(b.features, b.label, b.group)

    def take(self, index: Tensor | slice) -> Batch:
        """Rows ``index`` as a Batch: a view for a slice, a gather for an index tensor."""
        if isinstance(index, slice):
            pick = lambda t: t[index]  # noqa: E731
        else:
            pick = lambda t: t.index_select(0, index)  # noqa: E731
        return Batch(
            {k: pick(v) for k, v in self.features.items()},
            pick(self.label),
            None if self.group is None else pick(self.group),
        )


class BatchLoader:
    """Iterates a TensorSplit in batches cut from a permutation (shuffle) or by slicing.

    Deterministic: epoch ``e`` uses the permutation drawn from ``seed + e``. Under
    data parallelism each of ``world_size`` ranks takes an equal share of every epoch's
    permutation (training) or a contiguous shard (evaluation).
    """

    def __init__(
        self,
        split: TensorSplit,
        batch_size: int,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.split, self.batch_size = split, batch_size
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def _rows(self) -> int:
        n = len(self.split)
        if self.world_size == 1:
            return n
        if self.shuffle:  # equal shares, so every rank runs the same number of steps
            return n // self.world_size
        per = math.ceil(n / self.world_size)
        return max(0, min(n, (self.rank + 1) * per) - self.rank * per)

    def __len__(self) -> int:
        n = self._rows()
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        n_total, n, bs = len(self.split), self._rows(), self.batch_size
        stop = (n // bs) * bs if self.drop_last else n
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            perm = torch.randperm(n_total, generator=g)
            perm = perm[self.rank * n : (self.rank + 1) * n].to(self.split.label.device)
            self.epoch += 1
            for i in range(0, stop, bs):
                yield self.split.take(perm[i : i + bs])
        else:
            start = self.rank * math.ceil(n_total / self.world_size) if self.world_size > 1 else 0
            for i in range(0, stop, bs):
                yield self.split.take(slice(start + i, start + min(i + bs, n)))
