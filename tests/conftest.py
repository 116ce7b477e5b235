"""Shared fixtures: small configs composed with Hydra's compose API, shrunk for speed."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from tiny import TINY_DATA

from ranklab.config import compose

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RANKLAB_SHARED_DATA", ROOT.parent / "shared" / "data"))

FAST_TRAINER = [
    "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false",
    "print_summary=false",
    "logger=csv",
]


def pytest_configure(config: pytest.Config) -> None:
    # `make test` runs pytest-xdist workers side by side: one thread each (and in the processes
    # the tests start), so that workers do not fight for the cores
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


# the folders whose files run longest (processes of their own: CLI runs, kills, two-process
# runs, sweep workers) go first, so that two workers end together rather than one finishing a
# long file alone
FIRST = ("train", "sweep", "data", "models")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        folder = item.path.parent.name
        return FIRST.index(folder) if folder in FIRST else len(FIRST)

    items.sort(key=rank)  # stable: a file's tests keep their order


@pytest.fixture(autouse=True)
def _seed_and_threads() -> None:
    torch.manual_seed(0)


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., object]:
    """make_cfg(*overrides, tiny=True) -> a composed config writing under tmp_path."""

    def _make(*overrides: str, tiny: bool = True):
        base = [f"paths.output_dir={tmp_path}/run", f"paths.cache_dir={tmp_path}/cache"]
        if tiny:
            base += TINY_DATA + FAST_TRAINER
        return compose(base + list(overrides))

    return _make


@pytest.fixture
def tiny_overrides() -> list[str]:
    """Overrides that shrink the default synthetic data and trainer for fast tests."""
    return TINY_DATA + FAST_TRAINER


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "frappe_x1" / "train.csv").is_file():
        pytest.skip(f"real datasets not found at {SHARED_DATA} (set RANKLAB_SHARED_DATA)")
    return SHARED_DATA
