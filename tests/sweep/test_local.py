"""Sweeps on one machine: worker processes sharing a study, resuming, failing trials, pruning,
and creating a fresh study from two processes at once."""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from sweep_helpers import TINY_TRIAL, start_together, sweep_config

from ranklab.config import compose
from ranklab.errors import ConfigError
from ranklab.sweep import load_spec, run_sweep
from ranklab.sweep.worker import OptunaPruning
from ranklab.train import train

PNG = b"\x89PNG\r\n\x1a\n"


def load(spec) -> optuna.Study:
    return optuna.load_study(study_name=spec.study_name, storage=spec.storage_url)


def test_two_worker_processes_share_one_study(tmp_path: Path, run_cli) -> None:
    params = {
        "optimizer.lr": "tag(log, interval(1e-3, 3e-2))",
        "task.embedding_regularizer": "tag(log, interval(1e-7, 1e-3))",
    }
    path = sweep_config(tmp_path, params, trials=6, sampler={"name": "tpe", "seed": 1})
    proc = run_cli(f"sweep={path}", "--workers", "2", timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    spec = load_spec(str(path))
    trials = load(spec).trials

    # exactly the requested total, each trial run once, by one of the two workers
    assert sorted(t.number for t in trials) == list(range(6))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    workers = {t.user_attrs["worker"] for t in trials}
    assert len(workers) == 2, workers  # both processes took trials
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 6  # no point twice
    for t in trials:
        run = Path(t.user_attrs["run_dir"])
        assert run == spec.dir / "trials" / f"{t.number:04d}"
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["val"]["auc"] == t.value  # the score is metrics.json's
        assert (run / "config.yaml").is_file()
        assert json.loads((run / "trial.json").read_text())["worker"] == t.user_attrs["worker"]
    assert len(list((spec.dir / "trials").glob("*/metrics.json"))) == 6
    assert proc.stdout.count(f"] {spec.metric} 0.") == 6  # one line per trial

    # outputs: tables, plots, and the best trial as a ready-to-run experiment
    csv_lines = (spec.dir / "trials.csv").read_text().splitlines()
    assert len(csv_lines) == 7 and "optimizer.lr" in csv_lines[0]
    assert "| trial | state | val/auc" in (spec.dir / "trials.md").read_text()
    for png in ("optimization_history.png", "param_importances.png"):
        data = (spec.dir / png).read_bytes()
        assert data.startswith(PNG) and len(data) > 5000
    best = max(trials, key=lambda t: t.value)
    best_file = spec.dir / "experiment" / "tiny_best.yaml"
    assert f"trial {best.number}" in best_file.read_text()
    again = compose(
        [
            f"hydra.searchpath=[file://{spec.dir}]",
            "experiment=tiny_best",
            f"paths.cache_dir={tmp_path}/cache",
            "trainer.enable_progress_bar=false",
            "print_summary=false",
        ]
    )
    best_metrics = json.loads((Path(best.user_attrs["run_dir"]) / "metrics.json").read_text())
    from ranklab.config import config_hash

    assert config_hash(again) == best_metrics["config_hash"]  # the same experiment


def test_rerunning_continues_the_study(tmp_path: Path) -> None:
    path = sweep_config(tmp_path, {"optimizer.lr": "tag(log, interval(1e-3, 3e-2))"}, trials=2)
    first = run_sweep(load_spec(str(path)), quiet=True)
    assert first["counts"] == {"complete": 2}
    spec = load_spec(str(path), ["trials=3"])
    before = {t.number: (t.params, t.datetime_complete) for t in load(spec).trials}
    run_sweep(spec, quiet=True)
    trials = load(spec).trials
    assert [t.number for t in trials] == [0, 1, 2]
    assert {t.number: (t.params, t.datetime_complete) for t in trials[:2]} == before
    assert trials[2].params != trials[0].params  # a rerun does not repeat the first samples
    run_sweep(spec, quiet=True)  # nothing left to do
    assert len(load(spec).trials) == 3
    # continued with another fixed override: its trials would be ranked with the others
    other = load_spec(str(path), ["trials=4", "trainer.max_epochs=3"])
    with pytest.raises(
        ConfigError,
        match=r"'fixed'.*ran its trials on another base config "
        r"\(trainer.max_epochs: 3 here, \d+ there\)",
    ):
        run_sweep(other, quiet=True)
    assert len(load(spec).trials) == 3
    run_sweep(
        load_spec(str(path), ["trials=3", f"paths.cache_dir={tmp_path}/elsewhere"]), quiet=True
    )
    # --report-only under another metric, direction or base config would rewrite the tables
    # and the best config as if the trials had been scored so: refused, the outputs kept
    from ranklab.sweep.cli import _report_only

    table = (spec.dir / "trials.md").read_text()
    for extra, key in (
        (["metric=val/logloss", "direction=minimize"], "metric"),
        (["direction=minimize"], "direction"),
        (["trainer.max_epochs=3"], "fixed"),
    ):
        with pytest.raises(ConfigError, match=f"config key '{key}': study 'tiny' in "):
            _report_only(load_spec(str(path), extra))
    assert (spec.dir / "trials.md").read_text() == table
    _report_only(spec)


def test_nan_and_raising_trials_are_failed_and_the_rest_complete(tmp_path: Path) -> None:
    # a huge embedding regulariser makes the training loss infinite at the first step: the run
    # diverges and its trial fails, whatever its metric; an unknown mode makes the trial raise
    params = {
        "task.embedding_regularizer": "choice(0.0, 1e300)",
        "task.mode": "choice(max, nosuch)",
        "optimizer.lr": "choice(0.001, 0.01)",
    }
    path = sweep_config(
        tmp_path,
        params,
        trials=8,
        metric="val/auc",  # a diverged trial used to score AUC 0.5 here and count as complete
        direction="maximize",
        sampler={"name": "grid", "seed": 0},
    )
    spec = load_spec(str(path))
    summary = run_sweep(spec, quiet=True)
    trials = load(spec).trials
    assert len(trials) == 8
    by_kind: dict[str, list] = {"ok": [], "nan": [], "raise": []}
    for t in trials:
        p = t.params
        kind = (
            "raise"
            if p["task.mode"] == "nosuch"
            else "nan"
            if p["task.embedding_regularizer"] > 0
            else "ok"
        )
        by_kind[kind].append(t)
    assert [len(v) for v in by_kind.values()] == [2, 2, 4]  # the grid, each point once
    for t in by_kind["ok"]:
        assert t.state == TrialState.COMPLETE and math.isfinite(t.value)
    for t in by_kind["nan"]:
        assert t.state == TrialState.FAIL
        assert t.user_attrs["error"].startswith("Diverged: training loss is inf at epoch 0, step 0")
    for t in by_kind["raise"]:
        assert t.state == TrialState.FAIL
        assert "task.mode" in t.user_attrs["error"] and "nosuch" in t.user_attrs["error"]
        error_txt = Path(t.user_attrs["run_dir"]) / "error.txt"
        assert "Traceback" in error_txt.read_text()
    assert summary["counts"] == {"complete": 2, "fail": 6}
    assert summary["best"]["number"] in {t.number for t in by_kind["ok"]}
    table = (spec.dir / "trials.csv").read_text()
    assert table.count("Diverged") == 2 and table.count("'nosuch'") == 4


class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return True


@pytest.mark.parametrize(("pruner", "epochs"), [("nop", 2), ("always", 2), ("always", 1)])
def test_pruning_callback_reports_each_epoch(tmp_path: Path, pruner: str, epochs: int) -> None:
    always = pruner == "always"
    study = optuna.create_study(
        direction="maximize", pruner=AlwaysPrune() if always else optuna.pruners.NopPruner()
    )
    trial = study.ask()
    cfg = compose(
        [
            *TINY_TRIAL,
            f"trainer.max_epochs={epochs}",
            f"paths.output_dir={tmp_path}/run",
            f"paths.cache_dir={tmp_path}/cache",
            "trainer.enable_progress_bar=false",
            "print_summary=false",
        ]
    )
    callback = OptunaPruning(trial, "val/auc")
    if always and epochs > 1:  # pruned after the first epoch
        with pytest.raises(optuna.TrialPruned, match="after epoch 0"):
            train(cfg, callbacks=[callback])
        study.tell(trial, state=TrialState.PRUNED)
        assert list(study.trials[0].intermediate_values) == [0]
        assert not (tmp_path / "run" / "metrics.json").exists()
        status = json.loads((tmp_path / "run" / "status.json").read_text())
        assert status["status"] == "pruned"  # not "failed", and no traceback in train.log
        assert "Traceback" not in (tmp_path / "run" / "train.log").read_text()
    else:  # never pruned after the last epoch: the training is done
        metrics = train(cfg, callbacks=[callback])
        reported = study.trials[0].intermediate_values
        assert reported == {h["epoch"]: pytest.approx(h["auc"]) for h in metrics["history"]}
        assert len(reported) == epochs  # fit epochs only: no sanity check, no final validation


def test_two_processes_creating_a_fresh_sqlite_study_do_not_race(tmp_path: Path) -> None:
    path = sweep_config(tmp_path, {"optimizer.lr": "interval(0.001, 0.01)"}, trials=1)
    for proc in start_together(path, tmp_path / "barrier"):
        assert proc.returncode == 0, proc.stderr
    assert load(load_spec(str(path))).direction == optuna.study.StudyDirection.MAXIMIZE


def test_a_metric_missing_from_metrics_json_stops_the_sweep(tmp_path: Path) -> None:
    """A validation metric the runs do not report stops the sweep at the first validation
    (it trained the whole trial first, then counted it as failed); the trial is queued
    again, so the corrected command still runs them all."""
    path = sweep_config(tmp_path, {"optimizer.lr": "interval(0.001, 0.01)"}, trials=3)
    with pytest.raises(ConfigError, match=r"'metric': 'val/acu' is not a validation metric of"):
        run_sweep(load_spec(str(path), ["metric=val/acu"]), quiet=True)
    spec = load_spec(str(path))
    trial = load(spec).trials[0]
    assert trial.state == TrialState.FAIL and len(load(spec).trials) == 2  # and its retry
    assert not (Path(trial.user_attrs["run_dir"]) / "metrics.json").exists()  # not trained
    run_sweep(spec, quiet=True)  # fixed: the study takes the right metric and goes on
    states = [t.state for t in load(spec).trials]
    assert states.count(TrialState.COMPLETE) == 3, states
