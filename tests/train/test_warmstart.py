"""init_from: a new run from another run's weights only (a warm start), checked before data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from faults import RaiseAt
from tiny import TINY_DATA

from ranklab.config import compose, config_hash
from ranklab.errors import ConfigError
from ranklab.train import train

FAST = ["trainer.enable_progress_bar=false", "print_summary=false", "efficiency=false"]


def cfg_at(folder: Path, *overrides: str):
    return compose(
        [
            *TINY_DATA,
            *FAST,
            "model=deepfm",
            "model.hidden_units=[16]",
            f"paths.output_dir={folder}",
            f"paths.cache_dir={folder.parent}/cache",
            *overrides,
        ]
    )


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One finished run (2 epochs) whose weights the tests start from: (its folder, metrics)."""
    folder = tmp_path_factory.mktemp("warm") / "source"
    return folder, train(cfg_at(folder, "trainer.max_epochs=2"))


class FitStart(L.Callback):
    """The task's weights as fit begins, and the lr its optimiser starts with."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.weights = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.lr = trainer.optimizers[0].param_groups[0]["lr"]


def best_weights(folder: Path) -> dict[str, torch.Tensor]:
    state = torch.load(folder / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    return state["state_dict"]


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_a_warm_start_begins_a_new_run_from_the_best_weights_of_another(
    source: tuple[Path, dict], tmp_path: Path
) -> None:
    folder, first = source
    start = FitStart()
    # the same seed: without the warm start the model would begin from the source's own
    # initial weights, not from its trained ones
    m = train(
        cfg_at(tmp_path / "warm", f"init_from={folder}", "trainer.max_epochs=1"), callbacks=[start]
    )
    assert_same(start.weights, best_weights(folder))
    assert start.lr == pytest.approx(1e-3)  # the optimiser starts afresh, at the config's lr
    assert m["initialized_from"] == {
        "path": str(folder / "checkpoints" / "best.ckpt"),
        "config_hash": first["config_hash"],
    }
    assert [h["epoch"] for h in m["history"]] == [0]  # a history of its own
    assert m["config_hash"] != first["config_hash"] and m["config"]["init_from"] == str(folder)
    assert first["initialized_from"] is None
    # an unset init_from is not part of the hash: configs from before it hash as they did
    assert "init_from" not in first["config"]


def test_configs_from_before_init_from_hash_as_they_did() -> None:
    """The hashes of the default experiment and Frappe_x1 DeepFM before init_from existed (their
    runs are found by ckpt_path=auto and pooled by reports by it); `init_from=` is unset too."""
    assert config_hash(compose([])) == "85b41ea7e6b75dea"
    frappe = ["data=frappe_x1", "model=deepfm", "seed=2021"]
    assert config_hash(compose(frappe)) == "e574a8f17e00980c"
    assert config_hash(compose([*frappe, "init_from="])) == "e574a8f17e00980c"
    assert config_hash(compose([*frappe, "init_from=runs/a"])) != "e574a8f17e00980c"


def test_a_bare_state_dict_is_a_warm_start_too(source: tuple[Path, dict], tmp_path: Path) -> None:
    folder, _ = source
    trained = best_weights(folder)
    bare = {k.removeprefix("model."): v for k, v in trained.items()}
    torch.save(bare, tmp_path / "model.pt")  # what torch.save(model.state_dict()) writes
    start = FitStart()
    m = train(
        cfg_at(tmp_path / "run", f"init_from={tmp_path}/model.pt", "trainer.max_epochs=1"),
        callbacks=[start],
    )
    assert_same(start.weights, trained)
    assert m["initialized_from"] == {"path": f"{tmp_path}/model.pt", "config_hash": None}


@pytest.mark.parametrize(
    ("given", "overrides", "message"),
    [
        ("nowhere.ckpt", [], "nowhere.ckpt: no such checkpoint file"),
        ("empty-folder", [], "is a folder without checkpoints/best.ckpt"),
        ("notes.txt", [], "is not a checkpoint torch can load"),
        ("numbered.pt", [], "holds no state_dict: its key 0 is not a name"),
        ("SOURCE", ["model=dnn", "model.hidden_units=[16]"], "does not fit this model"),
        ("SOURCE", ["model.embedding_dim=4"], "weight is (80, 10) there, (80, 4) here; 1 more"),
    ],
)
def test_a_checkpoint_that_cannot_start_this_model_fails_naming_init_from(
    source: tuple[Path, dict], tmp_path: Path, given: str, overrides: list[str], message: str
) -> None:
    folder, _ = source
    (tmp_path / "empty-folder").mkdir()
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    torch.save({0: torch.zeros(2)}, tmp_path / "numbered.pt")
    path = folder if given == "SOURCE" else tmp_path / given
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match="config key 'init_from'") as e:
        train(cfg_at(run, f"init_from={path}", *overrides))
    assert message in str(e.value)
    if given != "SOURCE":  # a file that is no checkpoint fails before any folder or data
        assert not run.exists() and not (tmp_path / "cache").exists()


def test_the_refusal_of_another_configs_checkpoint_points_to_a_warm_start(
    source: tuple[Path, dict], tmp_path: Path
) -> None:
    """ckpt_path never resumes another config's state; the message's way out, init_from with the
    same file, starts the new config from those weights."""
    folder, _ = source
    last = folder / "checkpoints" / "last.ckpt"
    other = ["optimizer.lr=0.01", "trainer.max_epochs=1"]
    with pytest.raises(ConfigError, match=rf"'ckpt_path'.*with init_from={last} instead"):
        train(cfg_at(tmp_path / "resumed", f"ckpt_path={last}", *other))
    start = FitStart()
    m = train(cfg_at(tmp_path / "warm", f"init_from={last}", *other), callbacks=[start])
    saved = torch.load(last, map_location="cpu", weights_only=True)["state_dict"]
    assert_same(start.weights, saved)
    assert start.lr == pytest.approx(0.01) and m["status"] == "finished"


def test_a_warm_started_run_resumes_after_its_source_is_gone(
    source: tuple[Path, dict], tmp_path: Path
) -> None:
    """A resumed run's weights come from its own last.ckpt, which also records where its first
    weights came from: the source checkpoint may be deleted in between."""
    folder, first = source
    copy = tmp_path / "source-copy"
    shutil.copytree(folder, copy)
    args = [f"init_from={copy}", "trainer.max_epochs=3", "ckpt_path=auto"]
    whole = train(cfg_at(tmp_path / "whole", *args))
    with pytest.raises(RuntimeError, match="boom at epoch 2"):
        train(cfg_at(tmp_path / "cut", *args), callbacks=[RaiseAt(epoch=2, batch=0)])
    shutil.rmtree(copy)
    resumed = train(cfg_at(tmp_path / "cut", *args))
    assert resumed["resumed_from"] == str(tmp_path / "cut" / "checkpoints" / "last.ckpt")
    assert resumed["initialized_from"] == whole["initialized_from"]
    assert resumed["initialized_from"] == {
        "path": str(copy / "checkpoints" / "best.ckpt"),
        "config_hash": first["config_hash"],
    }
    assert resumed["test"] == whole["test"] and resumed["history"] == whole["history"]
    # finished, it is not trained again: the same command returns its metrics
    again = train(cfg_at(tmp_path / "cut", *args))
    assert again["test"] == resumed["test"] and again["wall_time_s"] == resumed["wall_time_s"]
    # a run that is not resumed still needs the file
    with pytest.raises(ConfigError, match=r"'init_from'.*no such checkpoint file"):
        train(cfg_at(tmp_path / "fresh", *args))


def test_a_relative_init_from_is_where_the_command_started(
    source: tuple[Path, dict], tmp_path: Path
) -> None:
    """Under hydra.job.chdir=true the run starts in its own folder; init_from=<relative path>
    still names the file relative to where the command was started, as typed, and so do the
    paths (the cache is built beside the source, not in the run's folder)."""
    folder, first = source
    args = [*TINY_DATA, *FAST, "model=deepfm", "model.hidden_units=[16]", "trainer.max_epochs=1"]
    args += ["hydra.job.chdir=true", f"init_from={folder.name}", f"hydra.run.dir={tmp_path}/run"]
    cache = folder.parent / "cache"  # where the source run built its cache: cfg_at
    before = set(cache.iterdir())
    done = subprocess.run(
        [sys.executable, "-m", "ranklab.train", *args, "paths.cache_dir=cache"],
        cwd=folder.parent,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["initialized_from"] == {
        "path": str(folder / "checkpoints" / "best.ckpt"),
        "config_hash": first["config_hash"],
    }
    assert set(cache.iterdir()) == before  # the same data: the source's cache was used
    assert not (tmp_path / "run" / "cache").exists()


def test_other_vocabularies_are_refused_by_a_warm_start_and_an_evaluation(
    make_cfg, tmp_path: Path
) -> None:
    """The next day's file, with the same values counted otherwise, is encoded with other
    ids (vocabularies are ordered by training count): the embeddings' shapes match, and a warm
    start or an evaluation on it read each row for another value, silently, until stop 31."""
    from ranklab.evaluate import evaluate

    lines = [f"{i % 2} {i % 7}:1 {i % 11 + 20}:0.5" for i in range(600)]
    for day, extra in (("day1", []), ("day2", ["1 6:1"] * 300)):
        d = tmp_path / day / "libfm"
        d.mkdir(parents=True)
        (d / "train.libfm").write_text("\n".join(lines + extra) + "\n")
    base = ["data=libfm", "model=fm", "trainer.max_epochs=1", *FAST]

    def cfg(day: str, run: str, *extra: str):
        c = make_cfg(*base, f"paths.data_dir={tmp_path}/{day}", *extra, tiny=False)
        c.paths.output_dir = str(tmp_path / run)
        return c

    train(cfg("day1", "run1"))
    with pytest.raises(ConfigError, match=r"'init_from': .*other ids \(features: "):
        train(cfg("day2", "run2", f"init_from={tmp_path}/run1"))
    train(cfg("day1", "run3", f"init_from={tmp_path}/run1"))  # the same vocabularies
    with pytest.raises(ConfigError, match=r"'data.source.dir': the data evaluated gives values"):
        evaluate(tmp_path / "run1", [f"data.source.dir={tmp_path}/day2/libfm"])
    evaluate(tmp_path / "run1", [])
