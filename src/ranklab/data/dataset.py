"""Encoded datasets, the source interface, and the fingerprinted on-disk cache."""

from __future__ import annotations

import json
import logging
import shutil
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ranklab.data.batch import Ragged, TensorSplit
from ranklab.data.schema import Schema, weight_key
from ranklab.errors import ConfigError
from ranklab.utils import atomic_directory, atomic_write_json, writable_dir

log = logging.getLogger(__name__)
CACHE_FORMAT = 3  # bump when the on-disk layout or preprocessing semantics change
GROUP_KEY = "__group__"


@dataclass
class EncodedData:
    """A dataset after preprocessing: arrays per split, ready to become tensors.

    ``splits[name]`` maps each feature name, each label name, each evaluation field and
    (optionally) ``__group__`` to an (N,) or (N, L) array; a ragged evaluation field is two
    arrays, ``<name>.values`` (E,) and ``<name>.offsets`` (N+1,). ``meta`` carries provenance
    and, for synthetic data, the Bayes-optimal metrics under ``meta["bayes"][split]``.
    """

    schema: Schema
    splits: dict[str, dict[str, np.ndarray]]
    meta: dict = field(default_factory=dict)
    directory: Path | None = None  # the cache it was loaded from (arrays may map its files)

    def nbytes(self, split: str | None = None) -> int:
        """Bytes of the encoded arrays (of one split, or of all)."""
        names = [split] if split else list(self.splits)
        return sum(a.nbytes for s in names for a in self.splits[s].values())

    def tensors(self, split: str) -> TensorSplit:
        arrays = self.splits[split]

        def tensor(a: np.ndarray, dtype: type | None = None) -> torch.Tensor:
            return torch.from_numpy(np.require(a, dtype=dtype, requirements=["C", "W"]))

        feats = {f.name: tensor(arrays[f.name]) for f in self.schema.features}
        for f in self.schema.bags:
            if f.weighted:
                feats[weight_key(f.name)] = tensor(arrays[weight_key(f.name)], np.float32)
        labels = {lb: tensor(arrays[lb], np.float32) for lb in self.schema.label_names}
        evaluation: dict[str, torch.Tensor | Ragged] = {}
        for f in self.schema.evaluation:  # a split may lack one (counterfactuals: test only)
            if f.kind != "ragged" and f.name not in arrays:
                continue
            if f.kind == "ragged":
                evaluation[f.name] = Ragged(
                    tensor(arrays[f"{f.name}.values"], np.int64),
                    tensor(arrays[f"{f.name}.offsets"], np.int64),
                )
            else:
                evaluation[f.name] = tensor(arrays[f.name])
        group = arrays.get(GROUP_KEY)
        return TensorSplit(feats, labels, None if group is None else tensor(group), evaluation)

    def rows(self, split: str) -> int:
        names = self.schema.label_names or self.schema.names
        return len(self.splits[split][names[0]])


class DataSource(ABC):
    """Where a dataset comes from. ``fingerprint`` keys the cache; ``build`` does the work."""

    name: str = "data"
    cacheable: bool = True

    @abstractmethod
    def fingerprint(self) -> str:
        """Hash of the raw inputs and every option that changes the encoded result."""

    @abstractmethod
    def build(self) -> EncodedData:
        """Read, validate and encode; fit everything on the training split only."""

    def streams(self, memory_budget: int) -> bool:
        """Whether building in memory would exceed ``memory_budget`` bytes, so that the source
        is encoded in chunks (:meth:`build_streaming`) instead. Sources that cannot stream
        (the synthetic generators build what they are told to) say no."""
        return False

    def build_streaming(self, directory: Path, memory_budget: int) -> dict:
        """Encode into the cache ``directory`` in chunks, within ``memory_budget`` bytes (one
        folder of ``.npy`` files per split, and ``schema.json``); returns the meta, with each
        split's row count under ``rows``."""
        raise NotImplementedError


def save_encoded(data: EncodedData, directory: Path) -> None:
    for split, arrays in data.splits.items():
        (directory / split).mkdir(parents=True, exist_ok=True)
        for key, arr in arrays.items():
            np.save(directory / split / f"{key}.npy", arr, allow_pickle=False)
    data.schema.save(directory / "schema.json")
    # meta.json is written last: its presence marks a complete cache
    columns = {split: sorted(arrays) for split, arrays in data.splits.items()}  # checked on load
    atomic_write_json(
        directory / "meta.json", {**data.meta, "splits": list(data.splits), "columns": columns}
    )


def load_encoded(directory: Path, mmap: bool = False) -> EncodedData:
    """The cache in ``directory``; with ``mmap`` the arrays map their files (read-only, read
    on use) instead of being read whole."""
    meta = json.loads((directory / "meta.json").read_text())
    schema = Schema.load(directory / "schema.json")
    mode = "r" if mmap else None
    splits = {
        s: {
            p.stem: np.load(p, allow_pickle=False, mmap_mode=mode)
            for p in sorted((directory / s).glob("*.npy"))
        }
        for s in meta.pop("splits")
    }
    columns = meta.pop("columns", None)  # (caches written before it was recorded: not checked)
    for s, arrays in splits.items():  # every split's columns, of one length (N; offsets N + 1)
        if columns is not None and sorted(arrays) != columns[s]:
            raise ValueError(f"split {s!r} lacks {sorted(set(columns[s]) - set(arrays))}")
        rows = {len(a) - k.endswith(".offsets") for k, a in arrays.items() if ".values" not in k}
        if len(rows) != 1:
            raise ValueError(f"split {s!r}: {len(arrays)} arrays of unequal (or no) rows")
        group = arrays.get(GROUP_KEY)
        # caches streamed before missing group values got their own id held NaN there
        if group is not None and group.dtype.kind not in "iu":
            raise ValueError(f"split {s!r}: group ids of type {group.dtype}, not integers")
    return EncodedData(schema, splits, meta, directory)


def load_or_build(
    source: DataSource, cache_dir: str | Path | None, memory_budget: int | None = None
) -> EncodedData:
    """Return the cached encoding of ``source`` or build it and cache it atomically.

    The cache directory is ``<cache_dir>/<source.name>-<fingerprint>``; it is created by
    renaming a completed temporary directory, so an interrupted build leaves nothing a later
    run would trust. With a ``memory_budget`` (bytes) a source too large to build in memory
    is encoded in chunks straight into the cache, and the arrays are returned mapped.
    """
    fp = source.fingerprint()
    stream = memory_budget is not None and source.streams(memory_budget)
    if cache_dir is None:
        if stream:
            raise ConfigError(
                "data.memory_budget",
                "a source larger than the budget is encoded into the cache: set data.cache_dir",
            )
        data = source.build()
        data.meta.setdefault("fingerprint", fp)
        return data
    final = Path(cache_dir) / f"{source.name}-{fp}"
    if source.cacheable and (final / "meta.json").is_file():
        try:
            data = load_encoded(final, mmap=memory_budget is not None)
        except Exception as e:  # truncated .npy, edited JSON, a missing file: rebuild it
            why = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            log.warning("data: cache %s is damaged (%s): building it again", final, why)
            shutil.rmtree(final, ignore_errors=True)
        else:
            log.info("data: cache hit %s", final)
            return data
    writable_dir(cache_dir, "data.cache_dir")  # fail before the work, not after it
    t0 = time.perf_counter()
    if stream:
        if final.exists():  # not made by us (we only rename complete directories)
            shutil.rmtree(final)
        with atomic_directory(final) as tmp:
            meta = source.build_streaming(tmp, memory_budget)  # type: ignore[arg-type]
            # meta.json is written last: its presence marks a complete cache
            meta = {**meta, "fingerprint": fp, "splits": list(meta["rows"])}
            atomic_write_json(tmp / "meta.json", meta)
        log.info("data: streamed %s in %.1fs", final, time.perf_counter() - t0)
        return load_encoded(final, mmap=True)
    data = source.build()
    data.meta["fingerprint"] = fp
    over = memory_budget is not None and data.nbytes() > memory_budget
    if not source.cacheable and not over:
        return data
    # an uncacheable source over the budget is written too: out-of-core batches read files
    if final.exists() and not (final / "meta.json").is_file():
        shutil.rmtree(final)
    if not final.exists():
        with atomic_directory(final) as tmp:
            save_encoded(data, tmp)
        log.info("data: built %s in %.1fs", final, time.perf_counter() - t0)
    if over:
        return load_encoded(final, mmap=True)  # served from the cache's files
    data.directory = final
    return data
