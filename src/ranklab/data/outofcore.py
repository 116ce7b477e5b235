"""Out-of-core batches: a split larger than ``data.memory_budget`` stays in the cache's
``.npy`` files and is read a block of rows at a time.

Training order is a block shuffle: epoch ``e`` visits the blocks in a seeded order and each
block's rows in a seeded permutation (``seed + e``, as in memory), so it is deterministic for
a given seed and block size; with one block holding the whole split the batches are exactly
the in-memory loader's. Blocks are read with ``np.fromfile`` into ordinary memory (no mapping,
so the process' resident memory is the blocks', not the file's), pinned when a GPU is there,
and copied to it without blocking.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ranklab.data.batch import Batch, BatchLoader, TensorSplit
from ranklab.data.dataset import GROUP_KEY
from ranklab.data.schema import Schema, weight_key
from ranklab.errors import ConfigError

BLOCK_SALT = 0x9E3779B1  # the block order's generator: seed + epoch + salt


class _Column:
    """One ``.npy`` array read by row ranges."""

    def __init__(self, path: Path, dtype: type | None = None) -> None:
        mm = np.load(path, mmap_mode="r")  # header only: shape, dtype, data offset
        self.path, self.shape, self.dtype, self.offset = path, mm.shape, mm.dtype, mm.offset
        self.row_bytes = int(np.prod(mm.shape[1:], dtype=np.int64)) * mm.dtype.itemsize
        self.cast = dtype
        del mm

    def read(self, lo: int, hi: int) -> Tensor:
        count = (hi - lo) * self.row_bytes // self.dtype.itemsize
        a = np.fromfile(self.path, self.dtype, count, offset=self.offset + lo * self.row_bytes)
        a = a.reshape(hi - lo, *self.shape[1:])
        return torch.from_numpy(a if self.cast is None else a.astype(self.cast, copy=False))


class MappedSplit:
    """A split in its cache folder; ``load(lo, hi)`` reads rows [lo, hi) as a TensorSplit."""

    def __init__(self, directory: Path, schema: Schema, pin: bool = False) -> None:
        if any(f.kind == "ragged" for f in schema.evaluation):
            raise ConfigError(
                "data.memory_budget",
                "out-of-core splits are tabular: a ragged evaluation field (a retrieval "
                "user's seen items) must fit in memory; raise the budget",
            )
        have = {p.stem for p in directory.glob("*.npy")}
        self.features = {f.name: _Column(directory / f"{f.name}.npy") for f in schema.features}
        for f in schema.bags:
            if f.weighted:
                key = weight_key(f.name)
                self.features[key] = _Column(directory / f"{key}.npy", np.float32)
        self.labels = {
            lb: _Column(directory / f"{lb}.npy", np.float32) for lb in schema.label_names
        }
        self.group = _Column(directory / f"{GROUP_KEY}.npy") if GROUP_KEY in have else None
        kept = [f.name for f in schema.evaluation if f.name in have]
        self.eval = {name: _Column(directory / f"{name}.npy") for name in kept}
        self.pin = pin
        first = next(iter({**self.features, **self.labels}.values()))
        self.rows = first.shape[0]
        self.device = torch.device("cpu")

    def __len__(self) -> int:
        return self.rows

    def row_bytes(self) -> int:
        cols = [*self.features.values(), *self.labels.values(), *self.eval.values()]
        return sum(c.row_bytes for c in cols + ([self.group] if self.group else []))

    def load(self, lo: int, hi: int) -> TensorSplit:
        def read(c: _Column) -> Tensor:
            t = c.read(lo, hi)
            return t.pin_memory() if self.pin else t

        return TensorSplit(
            {k: read(c) for k, c in self.features.items()},
            {k: read(c) for k, c in self.labels.items()},
            None if self.group is None else read(self.group),
            {k: read(c) for k, c in self.eval.items()},
        )

    def take(self, index: slice) -> Batch:
        """Rows ``index`` (a slice: evaluation reads contiguous rows)."""
        start, stop, _ = index.indices(self.rows)
        return self.load(start, stop).take(slice(0, stop - start))


def _cat(parts: list[Batch]) -> Batch:
    if len(parts) == 1:
        return parts[0]

    def cat(key: str, group: str) -> Tensor:
        return torch.cat([getattr(p, group)[key] for p in parts])

    first = parts[0]
    return Batch(
        {k: cat(k, "features") for k in first.features},
        {k: cat(k, "labels") for k in first.labels},
        None if first.group is None else torch.cat([p.group for p in parts]),  # type: ignore[misc]
        {k: cat(k, "eval") for k in first.eval},
    )


class BlockLoader(BatchLoader):
    """:class:`BatchLoader` over a :class:`MappedSplit`: the same batches, steps, ranks and
    resume state, with the permutation drawn block by block (``block_rows`` rows each)."""

    def __init__(self, split: MappedSplit, batch_size: int, block_rows: int, **kw) -> None:
        super().__init__(split, batch_size, **kw)  # type: ignore[arg-type]
        if block_rows < 1:
            raise ConfigError("data.block_rows", f"must be >= 1, got {block_rows}")
        self.block_rows = block_rows

    def __iter__(self) -> Iterator[Batch]:
        if not self.shuffle:
            yield from super().__iter__()  # contiguous slices, each read from the files
            return
        split: MappedSplit = self.split  # type: ignore[assignment]
        n, world, bs = len(split), self.world_size, self.batch_size
        self.current, skip, self._skip = self.epoch, self._skip, 0
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        n_blocks = math.ceil(n / self.block_rows)
        gb = torch.Generator().manual_seed(self.seed + self.epoch + BLOCK_SALT)
        order = torch.randperm(n_blocks, generator=gb)
        self.epoch += 1
        # the order is the blocks' permutations one after another; step i takes positions
        # [i*G, (i+1)*G) of it (G = world * batch), cut short at the equal-share end
        G = world * bs
        end = (n // world) * world
        if self.drop_last:
            end = (end // G) * G
        parts: list[Batch] = []
        pos = 0
        for b in order.tolist():
            lo, hi = b * self.block_rows, min(n, (b + 1) * self.block_rows)
            perm = torch.randperm(hi - lo, generator=g)  # drawn for every block: same stream
            start, block_end = pos, pos + hi - lo
            pos = block_end
            if block_end <= skip * G or start >= end:  # already trained (resumed), or past it
                continue
            rows = split.load(lo, hi)
            at = start
            while at < min(block_end, end):
                step = at // G
                batch_end = min((step + 1) * G, end)
                stop = min(batch_end, block_end)
                if step >= skip:
                    parts.append(rows.take(perm[at - start : stop - start]))
                if stop == batch_end:  # the step's rows are complete
                    if step >= skip:
                        yield self._rank_part(_cat(parts))
                    parts = []
                at = stop

    def _rank_part(self, batch: Batch) -> Batch:
        """This rank's slice of a global batch (the whole batch in one process)."""
        if self.world_size == 1:
            return batch
        b = min(self.batch_size, len(batch) // self.world_size)
        rows = slice(self.rank * b, (self.rank + 1) * b)
        return TensorSplit(batch.features, batch.labels, batch.group, batch.eval).take(rows)
