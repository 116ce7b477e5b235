"""One run, one folder: where ranklab-train writes, what the folder holds, and what reports,
the console and the log make of it."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from tiny import TINY_DATA

from ranklab.callbacks import ProgressBar
from ranklab.config import compose
from ranklab.errors import ConfigError
from ranklab.report.cli import main as report_main
from ranklab.train import build, objective_value, train

TINY_CLI = [
    *TINY_DATA,
    "trainer.max_epochs=2",
    "threads=1",
    "model.hidden_units=[16]",
]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``ranklab-train`` as a process, output piped (as in a cluster job)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "ranklab.train", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


def test_multirun_folder_holds_its_runs_and_reports_one_row_per_experiment(
    tmp_path: Path, capsys
) -> None:
    cache = f"paths.cache_dir={tmp_path}/cache"
    r = cli("-m", "model=lr,dnn", "seed=1,2", cache, *TINY_CLI[:-1], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    (multirun,) = (tmp_path / "outputs" / "multirun").iterdir()
    jobs = sorted(p.name for p in multirun.iterdir() if p.is_dir())
    assert jobs == ["0", "1", "2", "3"]
    for job in jobs:
        d = multirun / job
        for f in ("metrics.json", "config.yaml", ".hydra/config.yaml", "checkpoints/best.ckpt"):
            assert (d / f).is_file(), (job, f)
        assert "epoch 2/2" in (d / "train.log").read_text()
    assert not (tmp_path / "outputs" / "runs").exists()  # nothing split off elsewhere

    assert report_main([str(multirun)]) == 0
    out = capsys.readouterr().out
    assert "| synthetic | DNN | 2 |" in out and "| synthetic | LR | 2 |" in out

    # a third run of one model at another dropout: its own row; a copied run counts once
    extra = tmp_path / "extra"
    r = cli(
        "model=dnn",
        "model.dropout=0.1",
        "seed=1",
        cache,
        f"hydra.run.dir={extra}",
        *TINY_CLI[:-1],
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    shutil.copytree(multirun / "0", tmp_path / "copy")
    assert report_main([str(multirun), str(extra), str(tmp_path / "copy")]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| synthetic")]
    assert len(rows) == 3, out
    assert any("DNN (model.dropout=0.1) | 1 |" in line for line in rows), rows
    # conf/tuned/synthetic_dnn.yaml sets 0.2
    assert any("DNN (model.dropout=0.2) | 2 |" in line for line in rows), rows
    assert "counted once" in out


def test_hydra_run_dir_holds_every_file_of_the_run(tmp_path: Path) -> None:
    run = tmp_path / "X"
    r = cli(f"hydra.run.dir={run}", f"paths.cache_dir={tmp_path}/cache", *TINY_CLI, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    names = {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()}
    for f in (
        ".hydra/config.yaml",
        ".hydra/overrides.yaml",
        "train.log",
        "config.yaml",
        "metrics.json",
        "checkpoints/best.ckpt",
        "csv/metrics.csv",
    ):
        assert f in names, (f, sorted(names))
    recorded = Path(json.loads((run / "metrics.json").read_text())["run_dir"])
    assert (tmp_path / recorded).resolve() == run.resolve()  # relative to where it ran
    assert not (tmp_path / "outputs").exists()
    log = (run / "train.log").read_text()
    assert "[ranklab.progress][INFO] epoch 1/2  train/loss" in log and "test: auc" in log
    # piped: one line per epoch, no bar; the run directory on a line of its own, never cut
    assert "epoch 2/2" in r.stdout and "it/s" not in r.stderr
    assert f"run dir: {recorded}" in r.stdout.splitlines()


def test_paths_output_dir_moves_hydra_files_too(tmp_path: Path) -> None:
    run = tmp_path / "Y"
    args = [f"paths.output_dir={run}", f"paths.cache_dir={tmp_path}/cache", "model=lr"]
    r = cli(*args, *TINY_CLI[:-1], "trainer.max_epochs=1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (run / ".hydra" / "config.yaml").is_file() and (run / "metrics.json").is_file()


def test_debug_runs_go_to_their_own_tree_and_stay_out_of_reports(tmp_path: Path) -> None:
    r = cli("debug=default", f"paths.cache_dir={tmp_path}/cache", *TINY_CLI, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    (run,) = (tmp_path / "outputs" / "debug").glob("*/*")
    assert json.loads((run / "metrics.json").read_text())["smoke"] is True
    assert not (tmp_path / "outputs" / "runs").exists()
    assert report_main([str(tmp_path / "outputs")]) == 2  # nothing to tabulate


def test_result_files_are_readable_by_others(make_cfg, tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        train(make_cfg("model=lr", "trainer.max_epochs=1"))
    finally:
        os.umask(old)
    for f in ("metrics.json", "config.yaml", "train.log", "checkpoints/best.ckpt"):
        mode = stat.S_IMODE((tmp_path / "run" / f).stat().st_mode)
        assert mode == 0o644, (f, oct(mode))


def test_train_loss_reaches_the_logger_every_epoch_on_small_runs(make_cfg, tmp_path: Path) -> None:
    # 6000 rows / batch 512 = 12 batches per epoch, fewer than log_every_n_steps=50
    m = train(make_cfg("model=lr", "trainer.max_epochs=3", "trainer.log_every_n_steps=50"))
    rows = list(csv.DictReader((tmp_path / "run" / "csv" / "metrics.csv").open()))
    assert sum(bool(r.get("train/loss")) for r in rows) >= 3
    assert sum(bool(r.get("train/loss_epoch")) for r in rows) == 3
    assert all(h["train_loss"] > 0 for h in m["history"])


class StepLosses(L.Callback):
    """Each training step's loss, by the step the loggers record it under."""

    def __init__(self) -> None:
        self.loss: dict[int, float] = {}
        self.calls = 0  # self.log("train/loss", ...) calls: Lightning's log costs ms a call

    def on_train_start(self, trainer, pl_module) -> None:
        log = pl_module.log

        def counted(name, *args, **kwargs):
            self.calls += name == "train/loss"
            return log(name, *args, **kwargs)

        pl_module.log = counted

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.loss[trainer.fit_loop.epoch_loop._batches_that_stepped] = float(outputs["loss"])


def test_train_loss_is_logged_on_the_steps_the_loggers_write(make_cfg, tmp_path: Path) -> None:
    # 12 batches per epoch, 2 epochs: the loggers write steps 4, 9, 14, 19 (every 5th); the
    # value each gets is that step's own loss (no embedding regulariser: loss = total)
    steps = StepLosses()
    train(
        make_cfg("model=lr", "trainer.max_epochs=2", "trainer.log_every_n_steps=5"),
        callbacks=[steps],
    )
    rows = list(csv.DictReader((tmp_path / "run" / "csv" / "metrics.csv").open()))
    logged = {int(r["step"]): float(r["train/loss"]) for r in rows if r.get("train/loss")}
    assert sorted(logged) == [4, 9, 14, 19]
    assert steps.calls == 4  # not one a step
    for step, value in logged.items():
        assert value == pytest.approx(steps.loss[step], rel=1e-6)


def test_progress_bar_shows_the_epoch_mean_loss_so_far(make_cfg) -> None:
    task = build(make_cfg("model=lr"))[2]
    task.add_loss(torch.tensor(0.5), 100)  # no trainer attached: summed, not logged
    task.add_loss(torch.tensor(0.2), 300)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_model_summary=False)
    trainer.training = True
    items = ProgressBar().get_metrics(trainer, task)
    assert items["train/loss"] == f"{(0.5 * 100 + 0.2 * 300) / 400:.4f}"


def test_objective_resolves_nested_names_and_refuses_the_test_split(make_cfg) -> None:
    cfg = make_cfg("objective=val/full/ndcg@10")
    assert objective_value(cfg, {"val": {"full/ndcg@10": 0.25}}) == 0.25
    with pytest.raises(ConfigError, match="never tuned on"):
        train(make_cfg("objective=test/auc"))
    with pytest.raises(ConfigError, match="not a validation metric of this run"):
        objective_value(make_cfg("objective=val/nope"), {"val": {"auc": 0.5}})


def test_help_lists_the_groups_ranklab_train_accepts(tmp_path: Path) -> None:
    r = cli("--help", cwd=tmp_path)
    assert r.returncode == 0
    groups = r.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    assert (
        "model: autoint, bst, dcn, dcnv2, deepfm" in groups
        and "logger: csv, many, mlflow" in groups
    )
    assert "sweep:" not in groups and "hydra" not in groups


def test_max_time_is_a_trainer_key() -> None:
    cfg = compose(["trainer.max_time=00:00:01:00"])
    assert cfg.trainer.max_time == "00:00:01:00"


def test_ranklab_train_reads_the_config_directory_ranklab_conf_names(tmp_path: Path) -> None:
    from ranklab.config import CONF_DIR

    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    (conf / "model" / "my_lr.yaml").write_text("_target_: ranklab.models.LR\ninit_std: 1.0e-4\n")
    env = {**os.environ, "RANKLAB_CONF": str(conf), "PYTHONWARNINGS": "ignore"}
    r = subprocess.run(
        [sys.executable, "-m", "ranklab.train", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert r.returncode == 0 and "my_lr" in r.stdout


def test_threads_null_is_torchs_default_whatever_an_earlier_run_set(
    make_cfg, tmp_path: Path
) -> None:
    """A multirun or a study trains its runs in one process: a run with threads=1 must not
    leave a later threads=null run (same config hash as any other) on one thread."""
    import torch

    from ranklab.train import DEFAULT_THREADS

    one = make_cfg("threads=1")
    one.paths.output_dir = str(tmp_path / "one")
    assert train(one)["environment"]["threads"] == 1
    assert train(make_cfg())["environment"]["threads"] == DEFAULT_THREADS
    assert torch.get_num_threads() == DEFAULT_THREADS


def test_efficiency_against_independent_measures(make_cfg) -> None:
    """metrics.json's costs: parameters are the model's numel; peak RSS is in MiB (at most the
    process's peak so far, /proc's VmHWM in KiB / 1024: a figure in MB would be 4.9% above it);
    latencies come from enough timings for a p99 (20 timings of a batch of 4,096 made its p99
    all but their maximum), and the summary says MiB and counts the best epoch from 1, as its
    epoch lines do."""
    from rich.console import Console

    from ranklab.console import summary_table

    m = train(make_cfg("model=lr", "efficiency=true", "trainer.max_epochs=3"))
    eff = m["efficiency"]
    assert eff["parameters"] == m["n_params"]
    hwm = int(re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())[1])
    assert 50 < eff["peak_rss_mb"] <= hwm / 1024
    for size in (1, 4096):
        lat = eff[f"latency_ms_batch{size}"]
        assert lat["rows"] == size and 0 < lat["p50"] <= lat["p99"]
        assert lat["timings"] == 200  # LR's batch of 4,096 takes well under 25 ms
    console = Console(width=200, record=True)
    console.print(summary_table(m))
    text = console.export_text()
    assert "peak memory (MiB)" in text and "(MB)" not in text
    assert re.search(rf"best epoch[\s│]+{m['best_epoch'] + 1}\b", text), text


def test_every_run_of_a_process_records_the_commit_it_started_with(
    make_cfg, tmp_path: Path
) -> None:
    """A long study's runs recorded the commit at each run's end: a commit made while the
    study ran (its code already imported) was recorded as the code of its later runs."""
    import ranklab.utils as utils

    utils._own_commit.cache_clear()
    calls: list[object] = []
    real = utils._commit_of

    def counted(cwd: object) -> str | None:
        calls.append(cwd)
        return real(cwd)

    utils._commit_of = counted
    try:
        a = train(make_cfg("trainer.max_epochs=1", "efficiency=false"))
        again = ("trainer.max_epochs=1", "efficiency=false", "seed=7")
        b = train(make_cfg(*again, f"paths.output_dir={tmp_path}/second"))
    finally:
        utils._commit_of = real
    assert len(calls) == 1 and a["git_commit"] == b["git_commit"]
