"""Batches and the in-memory loader that cuts them by slicing tensors (no per-row Python)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class Ragged:
    """Rows of different lengths, stored flat: row i is ``values[offsets[i]:offsets[i+1]]``.

    values (E,) int64; offsets (N+1,) int64, offsets[0] = 0. A user's seen items take as much
    room as the user has events, not as much as the longest user has.
    """

    values: Tensor
    offsets: Tensor

    def __len__(self) -> int:
        return self.offsets.shape[0] - 1

    def lengths(self) -> Tensor:
        """(N,) row lengths."""
        return self.offsets[1:] - self.offsets[:-1]

    def rows(self) -> Tensor:
        """(E,) the row of each value."""
        return torch.repeat_interleave(
            torch.arange(len(self), device=self.values.device), self.lengths()
        )

    def take(self, index: Tensor | slice) -> Ragged:
        """Rows ``index`` (a slice, or (B,) row ids) as a new Ragged."""
        if isinstance(index, slice):
            start, stop, _ = index.indices(len(self))
            lo, hi = int(self.offsets[start]), int(self.offsets[max(start, stop)])
            return Ragged(self.values[lo:hi], self.offsets[start : max(start, stop) + 1] - lo)
        starts = self.offsets[index]  # (B,)
        lengths = self.offsets[index + 1] - starts  # (B,)
        offsets = torch.zeros(len(index) + 1, dtype=torch.long, device=starts.device)
        offsets[1:] = torch.cumsum(lengths, 0)
        within = torch.arange(int(offsets[-1]), device=starts.device) - torch.repeat_interleave(
            offsets[:-1], lengths
        )  # (E_b,) position inside its row
        return Ragged(self.values[torch.repeat_interleave(starts, lengths) + within], offsets)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Ragged:
        return Ragged(
            self.values.to(device, non_blocking=non_blocking),
            self.offsets.to(device, non_blocking=non_blocking),
        )

    def dense(self, pad: int = 0) -> Tensor:
        """(N, longest row) right-padded with ``pad`` (for tests and small checks)."""
        n, width = len(self), int(self.lengths().max()) if len(self) else 0
        out = torch.full((n, width), pad, dtype=self.values.dtype, device=self.values.device)
        within = torch.arange(self.values.shape[0], device=self.values.device)
        within = within - torch.repeat_interleave(self.offsets[:-1], self.lengths())
        out[self.rows(), within] = self.values
        return out


Column = Tensor | Ragged


def _first(*groups: dict[str, Tensor]) -> Tensor:
    """The first tensor of the first non-empty dict: what the row count and device are read
    from (per step, so no dict merging)."""
    for g in groups:
        for v in g.values():
            return v
    raise ValueError("a batch with neither features nor labels")


def _move(t: Column, device: torch.device | str, non_blocking: bool) -> Column:
    return t.to(device, non_blocking=non_blocking)


def _take(t: Column, index: Tensor | slice) -> Column:
    if isinstance(t, Ragged):
        return t.take(index)
    return t[index] if isinstance(index, slice) else t.index_select(0, index)


@dataclass
class Batch:
    """What a step sees.

    features: name -> (B,) or (B, L) tensor, the model's input.
    labels: label name -> (B,) float32, in the schema's label order.
    group: (B,) int64 group id (user, for grouped AUC) or None.
    eval: evaluation-only tensors (a retrieval user's seen items as :class:`Ragged`, the
        sampled negatives (B, K), counterfactual labels (B,)); the task and its evaluator read
        them, models never see them.
    """

    features: dict[str, Tensor]
    labels: dict[str, Tensor] = field(default_factory=dict)
    group: Tensor | None = None
    eval: dict[str, Column] = field(default_factory=dict)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return Batch(
            {k: v.to(device, non_blocking=non_blocking) for k, v in self.features.items()},
            {k: v.to(device, non_blocking=non_blocking) for k, v in self.labels.items()},
            None if self.group is None else self.group.to(device, non_blocking=non_blocking),
            {k: _move(v, device, non_blocking) for k, v in self.eval.items()},
        )

    @property
    def device(self) -> torch.device:
        return _first(self.features, self.labels).device

    @property
    def label(self) -> Tensor:
        """The only label (B,) of a single-label batch."""
        if len(self.labels) != 1:
            raise KeyError(f"the batch has {len(self.labels)} labels: {list(self.labels)}")
        return next(iter(self.labels.values()))

    def __len__(self) -> int:
        return _first(self.features, self.labels).shape[0]

    def take(self, index: Tensor | slice) -> Batch:
        """Rows ``index`` as a Batch: a view for a slice, a gather for (B,) row ids."""
        return Batch(
            {k: _take(v, index) for k, v in self.features.items()},
            {k: _take(v, index) for k, v in self.labels.items()},
            None if self.group is None else _take(self.group, index),
            {k: _take(v, index) for k, v in self.eval.items()},
        )


@dataclass
class TensorSplit:
    """One split held in memory: every tensor (and every Ragged) has N rows."""

    features: dict[str, Tensor]
    labels: dict[str, Tensor] = field(default_factory=dict)
    group: Tensor | None = None
    eval: dict[str, Column] = field(default_factory=dict)

    def __len__(self) -> int:
        return _first(self.features, self.labels).shape[0]

    @property
    def device(self) -> torch.device:
        return _first(self.features, self.labels).device

    @property
    def label(self) -> Tensor:
        """The only label (N,) of a single-label split."""
        return Batch(self.features, self.labels).label

    def to(self, device: torch.device | str) -> TensorSplit:
        b = Batch(self.features, self.labels, self.group, self.eval).to(device)
        return TensorSplit(b.features, b.labels, b.group, b.eval)

    def take(self, index: Tensor | slice) -> Batch:
        """Rows ``index`` as a Batch: a view for a slice, a gather for an index tensor."""
        return Batch(self.features, self.labels, self.group, self.eval).take(index)


class BatchLoader:
    """Iterates a TensorSplit in batches cut from a permutation (shuffle) or by slicing.

    Deterministic: epoch ``e`` uses the permutation drawn from ``seed + e``. Under data
    parallelism (training) the ``world_size`` ranks together take the single-process batches of
    ``world_size * batch_size`` rows of the same permutation, each rank its slice of every one:
    each row once per epoch, every rank the same number of steps, and a step's averaged
    gradient that of the whole global batch. Evaluation gives each rank a contiguous shard.
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
        progress: Callable[[], int | None] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.split, self.batch_size = split, batch_size
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0  # the next epoch to iterate
        self.current: int | None = None  # the epoch being iterated
        self.progress = progress  # batches of the current epoch trained (the trainer's count)
        self._skip = 0

    # Resumable (Lightning saves and restores a loader with these): the epoch in progress and
    # the batches trained in it, so that a resumed run sees the rest of the same permutation.
    # The trained count comes from the trainer: batches already fetched ahead are not trained.
    def state_dict(self) -> dict[str, int | None]:
        done = self.progress() if self.progress is not None else None
        return {"current": self.current, "trained": done, "next": self.epoch}

    def load_state_dict(self, state: dict[str, int | None]) -> None:
        current, trained = state.get("current"), state.get("trained")
        if current is not None and trained is not None and trained < len(self):
            self.epoch, self._skip = int(current), int(trained)  # finish that epoch
        else:
            self.epoch, self._skip = int(state.get("next") or 0), 0

    def _rows(self) -> int:
        n = len(self.split)
        if self.world_size == 1:
            return n
        if self.shuffle:  # equal shares, so every rank runs the same number of steps
            return n // self.world_size
        per = math.ceil(n / self.world_size)
        return max(0, min(n, (self.rank + 1) * per) - self.rank * per)

    def _rank_rows(self, perm: Tensor) -> list[Tensor]:
        """This rank's rows of each global batch: step i of the global order
        ``perm[i*G:(i+1)*G]`` (G = world_size * batch_size) split into equal slices."""
        world, bs = self.world_size, self.batch_size
        n = (len(perm) // world) * world  # equal shares: up to world - 1 rows wait an epoch
        steps = []
        for lo in range(0, n, world * bs):
            b = min(bs, (n - lo) // world)
            steps.append(perm[lo + self.rank * b : lo + (self.rank + 1) * b])
        return steps

    def __len__(self) -> int:
        n = self._rows()
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        n_total, n, bs = len(self.split), self._rows(), self.batch_size
        stop = (n // bs) * bs if self.drop_last else n
        if self.shuffle:
            self.current, skip, self._skip = self.epoch, self._skip, 0
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            perm = torch.randperm(n_total, generator=g).to(self.split.device)
            self.epoch += 1
            if self.world_size > 1:
                steps = self._rank_rows(perm)
                if self.drop_last:
                    steps = [s for s in steps if len(s) == bs]
                for rows in steps[skip:]:
                    yield self.split.take(rows)
                return
            for i in range(skip * bs, stop, bs):
                yield self.split.take(perm[i : i + bs])
        else:
            start = self.rank * math.ceil(n_total / self.world_size) if self.world_size > 1 else 0
            for i in range(0, stop, bs):
                yield self.split.take(slice(start + i, start + min(i + bs, n)))
