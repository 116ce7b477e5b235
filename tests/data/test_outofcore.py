"""Out-of-core batches (``data.memory_budget``): block-shuffled reads from the cache's files.
With one block holding the whole split the batches are the in-memory loader's, for one
process and for each rank of two; with small blocks every row comes once an epoch, in an
order fixed by seed and block size; a resumed epoch continues it; and a run trained out of
core ends with the in-memory run's digits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ranklab.data.batch import Batch, BatchLoader
from ranklab.data.dataset import load_or_build
from ranklab.data.outofcore import BlockLoader, MappedSplit
from ranklab.data.synthetic import SyntheticCTR
from ranklab.train import train


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    source = SyntheticCTR(
        n_train=1000,
        n_val=200,
        n_test=200,
        vocab_sizes=[20, 10, 5, 5],
        n_pairs=2,
        n_triples=1,
        seed=2,
    )
    root = tmp_path_factory.mktemp("cache")
    data = load_or_build(source, root, memory_budget=1)  # over any budget: mapped
    assert data.directory is not None
    return data.directory, data


def _rows(batches: list[Batch]) -> list[list[float]]:
    """Each batch's rows as comparable tuples (features and labels)."""
    out = []
    for b in batches:
        cols = [b.features[k].float().reshape(len(b), -1) for k in sorted(b.features)]
        cols += [b.labels[k].reshape(len(b), 1) for k in sorted(b.labels)]
        out.append(torch.cat(cols, 1).tolist())
    return out


@pytest.mark.parametrize("world", [1, 2])
@pytest.mark.parametrize("drop_last", [False, True])
def test_one_block_gives_the_in_memory_batches(cache, world: int, drop_last: bool) -> None:
    directory, data = cache
    mapped = MappedSplit(directory / "train", data.schema)
    memory = data.tensors("train")
    for rank in range(world):
        kw = {"shuffle": True, "seed": 7, "rank": rank, "world_size": world, "drop_last": drop_last}
        a, b = BatchLoader(memory, 96, **kw), BlockLoader(mapped, 96, 10**9, **kw)
        for _ in range(2):  # two epochs: two permutations
            ours, theirs = list(b), list(a)
            assert len(ours) == len(b) == len(a)
            assert _rows(ours) == _rows(theirs)
    # evaluation: contiguous slices read from the files
    val = MappedSplit(directory / "val", data.schema)
    assert _rows(list(BlockLoader(val, 64, 50))) == _rows(
        list(BatchLoader(data.tensors("val"), 64))
    )


def test_small_blocks_shuffle_every_row_once_deterministically(cache) -> None:
    directory, data = cache
    mapped = MappedSplit(directory / "train", data.schema)
    memory = data.tensors("train")
    key = torch.cat(
        [memory.features[k].float().reshape(1000, -1) for k in sorted(memory.features)], 1
    )

    def epoch_rows(loader: BlockLoader) -> list[tuple]:
        return [tuple(r) for batch in _rows(list(loader)) for r in batch]

    loader = BlockLoader(mapped, 64, 150, shuffle=True, seed=1)
    first, second = epoch_rows(loader), epoch_rows(loader)
    everything = sorted(
        tuple(r) for r in torch.cat([key, memory.labels["label"][:, None]], 1).tolist()
    )
    assert sorted(first) == sorted(second) == everything  # each row once an epoch
    assert first != second  # epochs differ
    again = BlockLoader(mapped, 64, 150, shuffle=True, seed=1)
    assert epoch_rows(again) == first  # the same seed and block size: the same order
    assert epoch_rows(BlockLoader(mapped, 64, 150, shuffle=True, seed=2)) != first
    # block shuffle: a batch holds rows of at most two blocks (it straddles one boundary)
    ids = torch.arange(1000)
    lookup = {
        tuple(r): i
        for r, i in zip(
            torch.cat([key, memory.labels["label"][:, None]], 1).tolist(), ids.tolist(), strict=True
        )
    }
    for batch in _rows(list(BlockLoader(mapped, 64, 150, shuffle=True, seed=1))):
        blocks = {lookup[tuple(r)] // 150 for r in batch}
        assert len(blocks) <= 2
    # resumed after 5 batches: the rest of the same epoch
    full = _rows(list(BlockLoader(mapped, 64, 150, shuffle=True, seed=3)))
    resumed = BlockLoader(mapped, 64, 150, shuffle=True, seed=3)
    resumed.load_state_dict({"current": 0, "trained": 5, "next": 1})
    assert _rows(list(resumed)) == full[5:]


def test_a_run_trained_out_of_core_ends_with_the_in_memory_digits(make_cfg, tmp_path) -> None:
    def cfg(folder: str, *overrides: str):  # three configs: three run folders
        c = make_cfg("model=deepfm", "model.hidden_units=[16]", "trainer.max_epochs=2", *overrides)
        c.paths.output_dir = str(tmp_path / folder)
        return c

    memory = train(cfg("memory"))
    run = cfg("mapped", "data.memory_budget=1KB", "data.block_rows=1000000000")
    mapped = train(run)
    assert mapped["test"] == memory["test"] and mapped["history"] == memory["history"]
    # small blocks: another order, still a proper run
    blocks = train(cfg("blocks", "data.memory_budget=1KB", "data.block_rows=500"))
    assert blocks["test"]["auc"] > 0.6 and blocks["history"] != memory["history"]
    assert json.loads(Path(run.paths.output_dir, "metrics.json").read_text())["test"]


def test_memory_budget_sizes_parse_or_name_the_key() -> None:
    from ranklab.errors import ConfigError
    from ranklab.utils import parse_bytes

    assert parse_bytes("4GB", "k") == 4 * 10**9 and parse_bytes("512MB", "k") == 512 * 10**6
    assert parse_bytes("1.5GiB", "k") == int(1.5 * 2**30) and parse_bytes("2kib", "k") == 2048
    assert parse_bytes(12345, "k") == 12345 and parse_bytes(None, "k") is None
    for bad in ("4 apples", "-1GB", "0", 0):
        with pytest.raises(ConfigError, match=r"data\.memory_budget"):
            parse_bytes(bad, "data.memory_budget")
