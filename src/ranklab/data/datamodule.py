"""The LightningDataModule: load or build once, hold tensors in memory, cut batches by slicing."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch

from ranklab.data.batch import BatchLoader, TensorSplit
from ranklab.data.dataset import DataSource, EncodedData, load_or_build
from ranklab.data.outofcore import BlockLoader, MappedSplit
from ranklab.data.schema import Schema
from ranklab.errors import ConfigError, DataError
from ranklab.utils import parse_bytes


class RankDataModule(L.LightningDataModule):
    """Serves one dataset to the trainer.

    The data is prepared once (``setup`` is idempotent) and kept as tensors; each epoch's
    loaders are cheap iterables over them, so validation passes never rebuild data or start
    worker processes. With ``device_resident`` the tensors move to the accelerator once and
    batches are sliced there.

    Args:
        source: a DataSource (synthetic generator or file reader).
        batch_size: training batch size; ``eval_batch_size`` defaults to it.
        cache_dir: root of the preprocessing cache (None disables caching).
        seed: seeds the shuffling permutation (epoch e uses seed + e).
        device_resident: "auto" (on an accelerator, yes), true or false.
        memory_budget: bytes (or "512MB", "4GB") the data may take in memory; None: no limit.
            A file source whose text would not fit is preprocessed in chunks
            (:mod:`ranklab.data.streaming`); encoded splits larger than the budget are read
            from the cache block by block (:mod:`ranklab.data.outofcore`). Under the budget
            everything is as without one.
        block_rows: rows per out-of-core block (the shuffle's unit); None: an eighth of the
            budget's rows.
    """

    def __init__(
        self,
        source: DataSource,
        batch_size: int = 4096,
        eval_batch_size: int | None = None,
        cache_dir: str | None = None,
        seed: int = 0,
        device_resident: bool | str = "auto",
        name: str | None = None,
        memory_budget: int | str | None = None,
        block_rows: int | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ConfigError("data.batch_size", f"must be >= 1, got {batch_size}")
        for key, value in (("eval_batch_size", eval_batch_size), ("block_rows", block_rows)):
            if value is not None and int(value) < 1:  # (null: the default)
                raise ConfigError(f"data.{key}", f"must be >= 1 or null, got {value}")
        self.source = source
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.seed = seed
        self.device_resident = device_resident
        self.memory_budget = parse_bytes(memory_budget, "data.memory_budget")
        self.block_rows = block_rows
        self.name = name or source.name
        self.data: EncodedData | None = None
        self._splits: dict[str, TensorSplit | MappedSplit] = {}
        self._loaders: dict[str, BatchLoader] = {}
        self._next_epoch: int | None = None  # from a resumed checkpoint (load_state_dict)

    # -- preparation ------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.data is None:
            data = load_or_build(self.source, self.cache_dir, self.memory_budget)
            empty = [s for s in data.splits if data.rows(s) == 0]
            if empty:
                files = data.meta.get("files", {})
                where = files.get(empty[0], files.get("all", self.name))
                raise DataError(f"the {empty[0]} split has no rows", path=str(where))
            self.data = data
            mapped = self.memory_budget is not None and data.nbytes() > self.memory_budget
            if mapped and data.directory is None:
                raise ConfigError("data.memory_budget", "out-of-core data needs data.cache_dir")
            self._splits = {
                s: self._mapped(s) if mapped else self.data.tensors(s) for s in self.data.splits
            }

    @property
    def schema(self) -> Schema:
        if self.data is None:
            self.setup()
        return self.data.schema

    @property
    def meta(self) -> dict:
        if self.data is None:
            self.setup()
        return self.data.meta

    def split(self, name: str) -> TensorSplit | MappedSplit:
        self.setup()
        return self._splits[name]

    def labels(self, name: str) -> dict[str, torch.Tensor]:
        """A split's labels (N,) float32, in memory whether or not the split is."""
        self.setup()
        assert self.data is not None
        arrays = self.data.splits[name]
        return {
            lb: torch.from_numpy(
                np.array(arrays[lb], dtype=np.float32)
            )  # a copy: maps are read-only
            for lb in self.data.schema.label_names
        }

    # -- loaders ----------------------------------------------------------------------
    def _device(self) -> torch.device | None:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return None
        device = trainer.strategy.root_device
        wanted = self.device_resident
        if wanted == "auto":
            wanted = device.type != "cpu"
        return device if wanted else None

    def _mapped(self, split: str) -> MappedSplit:
        assert self.data is not None and self.data.directory is not None
        trainer = getattr(self, "trainer", None)
        on_gpu = trainer is not None and trainer.strategy.root_device.type == "cuda"
        return MappedSplit(self.data.directory / split, self.data.schema, pin=on_gpu)

    def _block_rows(self, split: MappedSplit) -> int:
        if self.block_rows is not None:
            return self.block_rows
        assert self.memory_budget is not None
        return max(self.batch_size, self.memory_budget // (8 * max(1, split.row_bytes())))

    def _loader(self, split: str, train: bool) -> BatchLoader:
        self.setup()
        if split not in self._loaders:
            device = self._device()
            data = self._splits[split]
            if isinstance(data, TensorSplit) and device is not None and data.device != device:
                self._splits[split] = data = data.to(device)
            trainer = getattr(self, "trainer", None)
            rank = trainer.global_rank if trainer is not None else 0
            world = trainer.world_size if trainer is not None else 1
            kw = {
                "shuffle": train,
                "seed": self.seed,
                "rank": rank,
                "world_size": world,
                "progress": self._trained_batches if train else None,
            }
            bs = self.batch_size if train else self.eval_batch_size
            if isinstance(data, MappedSplit):
                self._loaders[split] = BlockLoader(data, bs, self._block_rows(data), **kw)
            else:
                self._loaders[split] = BatchLoader(data, bs, **kw)
            if train and self._next_epoch is not None:
                self._loaders[split].epoch = self._next_epoch
        return self._loaders[split]

    # Lightning restores the training loader's own state only for a run stopped mid-epoch; one
    # stopped at an epoch's end (a signal during its last validation batch) would start the
    # next epoch with epoch 0's order. The datamodule's state (restored first) carries the
    # next epoch; a mid-epoch loader state then overrides it with the epoch to finish.
    def state_dict(self) -> dict[str, int]:
        loader = self._loaders.get("train")
        return {"train_next_epoch": loader.epoch} if loader is not None else {}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self._next_epoch = state_dict.get("train_next_epoch")
        if self._next_epoch is not None and "train" in self._loaders:
            self._loaders["train"].epoch = self._next_epoch

    def _trained_batches(self) -> int | None:
        """Batches of the current training epoch whose step has run (what a resumed run skips)."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return None
        return int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)

    def train_dataloader(self) -> BatchLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> BatchLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> BatchLoader:
        return self._loader("test", train=False)
