"""Trackers: W&B run names, groups, job types and tags (offline, read back from the run file),
MLflow against a real tracking server, TensorBoard event files; the config logged once and the
final metrics in each tracker's summary."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf.message import DecodeError
from sweep_helpers import sweep_config
from tiny import TINY_DATA

from ranklab.loggers import wandb_logger
from ranklab.sweep import load_spec, run_sweep
from ranklab.train import train


def wandb_records(path: Path) -> list:
    """The protobuf records of a W&B offline run file (``run-<id>.wandb``, LevelDB log format:
    32 KiB blocks of records, each with a 7-byte header crc32/length/type, after a 7-byte file
    header)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block, pos = path.read_bytes(), 32768, 7
    chunks, pending = [], b""
    while pos + 7 <= len(data):
        space = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if space < 7 or kind == 0:  # block trailer or padding
            pos += space
            continue
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 1:  # full
            chunks.append(chunk)
        elif kind == 2:  # first
            pending = chunk
        else:  # middle (3), last (4)
            pending += chunk
            if kind == 4:
                chunks.append(pending)
    records = []
    for c in chunks:
        r = pb.Record()
        r.ParseFromString(c)
        records.append(r)
    return records


def wandb_run(run_dir: Path) -> dict:
    """:func:`wandb_run_of` the one offline W&B run in a run directory."""
    (offline_run,) = run_dir.glob("wandb/offline-run-*")
    return wandb_run_of(offline_run)


def wandb_run_of(offline_run: Path) -> dict:
    """Name, group, job type, tags, config keys and final summary keys of an offline run."""
    (path,) = offline_run.glob("run-*.wandb")
    # W&B's service process writes the file, ending with an exit record; `finish` can return
    # before it is flushed
    deadline = time.monotonic() + 30
    while True:
        try:
            recs = wandb_records(path)
        except DecodeError:  # a record cut short mid-write
            recs = []
        kinds = [r.WhichOneof("record_type") for r in recs]
        if "exit" in kinds or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    (run,) = [r.run for r in recs if r.WhichOneof("record_type") == "run"]
    configs = [r.config for r in recs if r.WhichOneof("record_type") == "config"]
    summary = {
        u.key for r in recs if r.WhichOneof("record_type") == "summary" for u in r.summary.update
    }
    return {
        "name": run.display_name,
        "group": run.run_group,
        "job_type": run.job_type,
        "tags": list(run.tags),
        "config_records": len(configs),
        "config_keys": [u.key for c in configs for u in c.update],
        "summary": summary,
    }


@pytest.fixture
def offline(monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


def test_sweep_trials_get_distinct_wandb_names_in_one_group(tmp_path: Path, offline, capfd) -> None:
    path = sweep_config(
        tmp_path,
        {"optimizer.lr": "interval(1e-3, 1e-2)"},
        trials=2,
        name="wbsweep",
        fixed=["logger=wandb", "tags=[paper]"],
    )
    run_sweep(load_spec(str(path)), quiet=True)
    runs = [wandb_run(d) for d in sorted((tmp_path / "sweeps" / "wbsweep" / "trials").iterdir())]
    assert [r["name"] for r in runs] == ["wbsweep/trial0000-seed2021", "wbsweep/trial0001-seed2021"]
    assert {r["group"] for r in runs} == {"wbsweep"}
    assert {r["job_type"] for r in runs} == {"sweep"}
    assert all(r["tags"] == ["paper", "wbsweep"] for r in runs)
    for r in runs:  # the resolved config once, nothing beside it; the final metrics in the summary
        assert r["config_records"] == 1
        assert "task" in r["config_keys"] and "lr" not in r["config_keys"]
        assert "hparams" not in r["config_keys"]
        assert {"final/val/auc", "final/test/auc", "final/best_epoch"} <= r["summary"]
    assert "anonymous setting has no effect" not in capfd.readouterr().err


def test_wandb_logger_passes_every_argument_through(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    # nothing starts until the run is used: no network here
    lg = wandb_logger(
        save_dir=str(tmp_path), offline=False, log_model=True, job_type="evaluate", entity="team"
    )
    assert lg._log_model is True
    assert lg._wandb_init["job_type"] == "evaluate" and lg._wandb_init["entity"] == "team"
    assert "anonymous" not in lg._wandb_init


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """A real MLflow tracking server on 127.0.0.1 with a SQLite backend in tmp_path."""
    port = _free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    proc = subprocess.Popen(
        [
            str(mlflow),
            "server",
            "--backend-store-uri",
            f"sqlite:///{tmp_path}/mlflow.db",
            "--default-artifact-root",
            str(tmp_path / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start (exit {proc.poll()})")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def test_mlflow_logs_params_and_final_metrics_to_a_tracking_server(
    make_cfg, mlflow_server: str, monkeypatch
) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = make_cfg(
        "model=lr",
        "logger=mlflow",
        f"logger.mlflow.tracking_uri={mlflow_server}",
        "tags=[paper,ablation]",
    )
    metrics = train(cfg)
    # Lightning sets it for the process: the next config composed here would log to this server
    assert "MLFLOW_TRACKING_URI" not in os.environ
    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name("ranklab")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.run_name == metrics["tracking"]["name"]
    assert run.data.params["optimizer/lr"] == "0.001" and run.data.params[
        "model/_target_"
    ].endswith("LR")
    assert run.data.metrics["final/test/auc"] == pytest.approx(metrics["test"]["auc"])
    assert run.data.metrics["final/val/logloss"] == pytest.approx(metrics["val"]["logloss"])
    tags = run.data.tags
    assert tags["paper"] == "true" and tags["ablation"] == "true"
    assert tags["ranklab.group"] == metrics["tracking"]["group"]
    assert tags["ranklab.job_type"] == "train"


def test_tensorboard_gets_the_final_metrics(make_cfg, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    metrics = train(make_cfg("model=lr", "logger=tensorboard", "trainer.max_epochs=1"))
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard")).Reload()
    (final,) = events.Scalars("final/test/auc")
    assert final.value == pytest.approx(metrics["test"]["auc"], abs=1e-6)
    # the last step: after every point of the run (it was at the number of epochs, step 1)
    last = max(e.step for t in events.Tags()["scalars"] for e in events.Scalars(t))
    assert final.step == last and last > metrics["epochs"]
    assert "train/loss_epoch" in events.Tags()["scalars"]


def test_an_evaluation_is_logged_beside_its_training_run(make_cfg, tmp_path: Path, offline) -> None:
    from ranklab.evaluate import evaluate

    metrics = train(make_cfg("model=lr", "logger=wandb", "trainer.max_epochs=1"))
    run = tmp_path / "run"
    evaluate(run, ["data.eval_batch_size=500"], track=True)
    runs = {r["job_type"]: r for r in map(wandb_run_of, run.glob("wandb/offline-run-*"))}
    trained, evaluated = runs["train"], runs["evaluate"]
    assert trained["job_type"] == "train" and evaluated["job_type"] == "evaluate"
    assert evaluated["group"] == trained["group"] == metrics["tracking"]["group"]
    assert evaluated["name"] == f"{trained['name']}/evaluate-data.eval_batch_size=500"
    assert "final/test/auc" in evaluated["summary"]


def test_a_resumed_run_logs_to_the_tracker_runs_it_started(
    make_cfg, tmp_path: Path, offline
) -> None:
    """SIGTERM mid-run, then ``ckpt_path=auto``: the same W&B run id (a second offline folder,
    which ``wandb sync`` appends) and the same MLflow run, ended FINISHED with the results."""
    from faults import SignalAt
    from mlflow.tracking import MlflowClient

    store = tmp_path / "mlflow.db"
    overrides = ["model=lr", "logger=[wandb,mlflow]", f"logger.mlflow.store={store}"]
    fault = SignalAt(epoch=1, batch=2, signum=signal.SIGTERM, marker=str(tmp_path / "sent"))
    with pytest.raises(SystemExit) as stopped:
        train(make_cfg(*overrides, "efficiency=false"), callbacks=[fault])
    assert stopped.value.code == 128 + signal.SIGTERM
    run = tmp_path / "run"
    saved = json.loads((run / "trackers.json").read_text())
    time.sleep(1.1)  # the default tracker name holds the start time, to the second
    metrics = train(make_cfg(*overrides, "efficiency=false", "ckpt_path=auto"), callbacks=[fault])
    assert metrics["resumed_from"] and metrics["tracking"]["name"] == saved["name"]
    assert json.loads((run / "trackers.json").read_text()) == saved

    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    (mlrun,) = client.search_runs([client.get_experiment_by_name("ranklab").experiment_id])
    assert mlrun.info.run_id == saved["mlflow"]["run_id"]
    assert mlrun.info.status == "FINISHED" and mlrun.info.run_name == saved["name"]
    assert mlrun.data.metrics["final/test/auc"] == pytest.approx(metrics["test"]["auc"])
    steps = [m.step for m in client.get_metric_history(mlrun.info.run_id, "train/loss")]
    assert steps == [11, 23]  # 12 batches an epoch: step 11 logged before the signal, 23 after

    offline_runs = sorted(run.glob("wandb/offline-run-*"))
    assert [p.name.rsplit("-", 1)[1] for p in offline_runs] == [saved["wandb"]["id"]] * 2
    first, resumed = map(wandb_run_of, offline_runs)
    assert first["name"] == resumed["name"] == saved["name"]
    assert "final/test/auc" in resumed["summary"]


def test_a_run_killed_with_sigkill_keeps_what_it_logged_to_wandb(tmp_path: Path) -> None:
    """W&B's service writes the offline run file every 15 s by default: a run killed with
    SIGKILL sooner lost its run record, config and history (a 7-byte file). Written every
    second, what it logged before the kill is there for ``wandb sync``."""
    root = Path(__file__).resolve().parents[2]
    run = tmp_path / "run"
    env = {  # not this process's W&B service (WANDB_SERVICE), which an earlier test started
        **{k: v for k, v in os.environ.items() if not k.startswith("WANDB_")},
        "PYTHONPATH": str(root / "tests"),
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
    }
    fault = [  # epoch 1's third batch, 3 s after epoch 0's validation was logged
        "+callbacks.fault._target_=faults.SignalAt",
        "+callbacks.fault.epoch=1",
        "+callbacks.fault.batch=2",
        f"+callbacks.fault.signum={int(signal.SIGKILL)}",
        f"+callbacks.fault.marker={tmp_path / 'sent'}",
        "+callbacks.fault.delay=3",
    ]
    r = subprocess.run(
        [sys.executable, "-m", "ranklab.train", *TINY_DATA, "trainer.max_epochs=2",
         "trainer.enable_progress_bar=false", "model=lr", "logger=wandb", "efficiency=false",
         f"hydra.run.dir={run}",
         f"paths.cache_dir={tmp_path}/cache", *fault],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    (path,) = run.glob("wandb/offline-run-*/run-*.wandb")
    kinds = [rec.WhichOneof("record_type") for rec in wandb_records(path)]
    assert "run" in kinds and "config" in kinds and "history" in kinds, kinds
    assert "exit" not in kinds  # killed: W&B never heard the end


def test_a_restart_before_any_checkpoint_continues_the_same_tracker_run(
    make_cfg, tmp_path: Path
) -> None:
    """Stopped before its first checkpoint, a run starts afresh in its folder: it logs to the
    MLflow run it had started (left RUNNING beside a new one of the same name until stop 31),
    each point once."""
    from faults import RaiseAt
    from mlflow.tracking import MlflowClient

    store = tmp_path / "mlflow.db"
    overrides = ["model=lr", "logger=mlflow", f"logger.mlflow.store={store}", "efficiency=false"]
    with pytest.raises(RuntimeError, match="boom"):
        train(make_cfg(*overrides), callbacks=[RaiseAt(epoch=0, batch=3)])
    assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()
    metrics = train(make_cfg(*overrides, "ckpt_path=auto"))
    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    (run,) = client.search_runs([client.get_experiment_by_name("ranklab").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == metrics["tracking"]["name"]
    for name in ("val/auc", "train/loss"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, name)]
        assert steps and steps == sorted(set(steps)), (name, steps)


def test_only_this_folders_run_of_this_config_has_its_tracker_runs_continued(
    make_cfg, tmp_path: Path
) -> None:
    from ranklab.config import config_hash
    from ranklab.train import continued_trackers

    cfg = make_cfg("model=lr")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    last = str(run / "checkpoints" / "last.ckpt")
    record = {"name": "n", "config_hash": config_hash(cfg), "wandb": {"id": "abc"}}
    (run / "trackers.json").write_text(json.dumps(record))
    assert continued_trackers(cfg, last, run) == record
    assert continued_trackers(cfg, None, run) == {}  # not resumed
    other = tmp_path / "elsewhere"  # a checkpoint of another folder: tracker runs of its own
    assert continued_trackers(cfg, last, other) == {}
    (run / "trackers.json").write_text(json.dumps({**record, "config_hash": "another config"}))
    assert continued_trackers(cfg, last, run) == {}
    for bad in ("{not json", "[1, 2]", "\xff"):
        (run / "trackers.json").write_text(bad, encoding="latin-1")
        assert continued_trackers(cfg, last, run) == {}


def test_only_a_resumed_runs_logger_skips_the_points_its_mlflow_run_holds(tmp_path: Path) -> None:
    """A run_id the user gives logs every point (another training into the same MLflow run);
    the logger of a resumed run skips, from the checkpoint's step on, the points the killed
    process logged, counted per metric and step (Lightning logs ``epoch`` twice at an epoch's
    end)."""
    from mlflow.tracking import MlflowClient

    from ranklab.loggers import mlflow_logger

    store = tmp_path / "mlflow.db"

    def points(run_id: str) -> list[tuple[str, int, float]]:
        client = MlflowClient(tracking_uri=f"sqlite:///{store}")
        keys = client.get_run(run_id).data.metrics
        history = [(k, m.step, m.value) for k in keys for m in client.get_metric_history(run_id, k)]
        return sorted(history)

    first = mlflow_logger(store=str(store))
    for step in range(4):
        first.log_metrics({"loss": float(step), "epoch": 0.0}, step=step)
    first.log_metrics({"epoch": 0.0, "auc@1": 0.5}, step=3)
    run_id = first.run_id
    assert len(points(run_id)) == 10

    again = mlflow_logger(store=str(store), run_id=run_id)  # the user's choice: all logged
    again.log_metrics({"loss": 0.0}, step=0)
    assert len(points(run_id)) == 11

    resumed = mlflow_logger(store=str(store), run_id=run_id)
    resumed.skip_held_points(from_step=3)  # a checkpoint at global step 3
    for step in range(2, 5):  # what a resumed process logs again (2, 3), then a new step
        resumed.log_metrics({"loss": float(step), "epoch": 0.0}, step=step)
    resumed.log_metrics({"epoch": 0.0, "auc@1": 0.5}, step=3)
    resumed.log_metrics({"epoch": 0.0}, step=3)  # a third: not held, logged
    resumed.log_metrics({"loss": 0.0}, step=0)  # before the checkpoint: not read, logged
    assert points(run_id) == sorted(
        [("loss", s, float(s)) for s in range(5)]
        + [("loss", 0, 0.0)] * 2
        + [("epoch", s, 0.0) for s in (0, 1, 2, 3, 3, 3, 4)]
        + [("auc1", 3, 0.5)]
    )


def test_continue_kwargs_skip_what_cannot_be_continued(tmp_path: Path, offline) -> None:
    from ranklab.loggers import continue_kwargs, mlflow_logger

    wandb = wandb_logger(save_dir=str(tmp_path))
    assert continue_kwargs(wandb, {"wandb": {"id": "abc"}}) == {"id": "abc", "resume": "allow"}
    for bad in ({}, {"wandb": "abc"}, {"wandb": {}}, {"wandb": {"id": 3}}):
        assert continue_kwargs(wandb, bad) == {}
    store = tmp_path / "mlflow.db"
    first = mlflow_logger(store=str(store))
    run_id = first.run_id  # starts the run
    uri = first._tracking_uri
    again = mlflow_logger(store=str(store))
    assert continue_kwargs(again, {"mlflow": {"run_id": run_id, "tracking_uri": uri}}) == {
        "run_id": run_id
    }
    elsewhere = {"mlflow": {"run_id": run_id, "tracking_uri": "http://other:5000"}}
    assert continue_kwargs(again, elsewhere) == {}
    first.experiment.delete_run(run_id)  # deleted since: a new run
    assert continue_kwargs(again, {"mlflow": {"run_id": run_id, "tracking_uri": uri}}) == {}
    gone = {"mlflow": {"run_id": "0" * 32, "tracking_uri": uri}}
    assert continue_kwargs(again, gone) == {}


def test_a_store_mlflow_refuses_is_one_line_naming_the_key(
    make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow 3 refuses a plain folder store: the key, why, and what to give instead (it was
    Hydra's multi-line InstantiationException with exit status 1)."""
    import mlflow

    from ranklab.errors import ConfigError

    if int(mlflow.__version__.split(".")[0]) < 3:
        pytest.skip("MLflow before 3 takes a folder store")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    cfg = make_cfg("logger=mlflow", f"logger.mlflow.tracking_uri=file://{tmp_path}/mlruns")
    with pytest.raises(ConfigError) as e:
        train(cfg)
    assert str(e.value).startswith(
        f"config key 'logger.mlflow.tracking_uri': MLflow refuses file://{tmp_path}/mlruns: "
        "MLflow 3 refuses a folder store (MLFLOW_ALLOW_FILE_STORE=true allows one); give a "
        "database"
    )
    assert "\n" not in str(e.value)
