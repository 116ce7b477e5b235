"""Faults cost at most the work since the last checkpoint and never end with status 0: SIGKILL
and SIGTERM mid-run, then ``ckpt_path=auto`` resumes to the same digits as an uninterrupted
run; a NaN loss stops the run at once with strict JSON and the last finite checkpoint kept."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ranklab.errors import ConfigError, Diverged
from ranklab.train import train

ROOT = Path(__file__).resolve().parents[2]
RUN = [
    "data.source.n_train=20000",
    "data.source.n_val=4000",
    "data.source.n_test=4000",
    "data.source.vocab_sizes=[30,20,10,5,5]",
    "data.batch_size=512",
    "data.eval_batch_size=1000",  # four validation batches: a signal can arrive mid-validation
    "model=deepfm",
    "model.hidden_units=[32]",
    "model.dropout=0.2",  # dropout: the resumed run must continue the same random stream
    "trainer.max_epochs=4",
    "callbacks.early_stopping.patience=10",
    "threads=1",
    "efficiency=false",
    "print_summary=false",
    "trainer.log_every_n_steps=1",  # a CSV row per step: the resumed file must hold each once
    "logger=[csv,tensorboard,mlflow]",  # and TensorBoard and MLflow each step's scalars once
]


def cli(run_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests"), "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "ranklab.train", *RUN, f"hydra.run.dir={run_dir}", *extra],
        cwd=run_dir.parent,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


def signal_at(
    epoch: int, batch: int, signum: int, marker: Path, during: str = "train"
) -> list[str]:
    return [
        "+callbacks.fault._target_=faults.SignalAt",
        f"+callbacks.fault.epoch={epoch}",
        f"+callbacks.fault.batch={batch}",
        f"+callbacks.fault.signum={int(signum)}",
        f"+callbacks.fault.marker={marker}",
        f"+callbacks.fault.during={during}",
    ]


def results(run_dir: Path) -> dict:
    """What a resumed run must reproduce: the metrics, the history, every row of the CSV log but
    the last (the final metrics, with the run's measured samples/s), and every TensorBoard
    scalar as TensorBoard reads the folder and every point of the MLflow run's metric history
    (the final ones aside, as in the CSV)."""
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    m = json.loads((run_dir / "metrics.json").read_text())
    rows = (run_dir / "csv" / "metrics.csv").read_text().splitlines()[:-1]
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0}).Reload()
    tags = [t for t in events.Tags()["scalars"] if not t.startswith("final/")]
    scalars = sorted((t, e.step, e.value) for t in tags for e in events.Scalars(t))
    # the run's only MLflow run, in the default store under the folder the command started in
    client = MlflowClient(tracking_uri=f"sqlite:///{run_dir.parent}/outputs/mlflow.db")
    (mlrun,) = client.search_runs([client.get_experiment_by_name("ranklab").experiment_id])
    names = [k for k in mlrun.data.metrics if not k.startswith("final/")]
    history = sorted(
        (k, p.step, p.value) for k in names for p in client.get_metric_history(mlrun.info.run_id, k)
    )
    keys = ("val", "test", "history", "best_epoch", "epochs")
    return {k: m[k] for k in keys} | {"csv": rows, "tensorboard": scalars, "mlflow": history}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("full") / "run"
    r = cli(d)
    assert r.returncode == 0, r.stderr[-3000:]
    return results(d)


@pytest.mark.parametrize(
    ("signum", "during", "epoch", "batch", "code", "saved", "extra"),
    [
        # SIGKILL: the checkpoint written between epochs (after epoch 2's first batch)
        (signal.SIGKILL, "train", 2, 10, -signal.SIGKILL, (2, 81), ()),
        # SIGTERM: the one written at the signal, after the batch
        (signal.SIGTERM, "train", 1, 17, 128 + signal.SIGTERM, (1, 58), ()),
        # mid-validation Lightning cannot resume the validation loop: the checkpoint of the
        # epoch's first batch is kept, and the resumed run redoes the epoch's rest
        (signal.SIGTERM, "validation", 1, 1, 128 + signal.SIGTERM, (1, 41), ()),
        # at the last validation batch Lightning stops at the epoch's end: saved there
        (signal.SIGTERM, "validation", 1, 3, 128 + signal.SIGTERM, (2, 80), ()),
        # every 40 steps lands on epoch 1's last batch, where a restored run would skip that
        # epoch's validation: not written there, the one after the epoch's first batch stays
        (signal.SIGKILL, "train", 1, 39, -signal.SIGKILL, (1, 41), ("every_n_steps=40",)),
        # during the test, after fit: the fit's last checkpoint stays (one written there held
        # the best epoch's weights and the end of fit: resumed, an early-stopped run trained on)
        (signal.SIGTERM, "test", 4, 1, 128 + signal.SIGTERM, (3, 121), ()),
        # SIGUSR1 after fit was the default action (a kill, the folder saying running), and a
        # signal at a stage's last batch was ignored (exit 0)
        (signal.SIGUSR1, "test", 4, 3, 128 + signal.SIGUSR1, (3, 121), ()),
    ],
    ids=[
        "sigkill-after-a-checkpoint",
        "sigterm-mid-epoch",
        "sigterm-mid-validation",
        "sigterm-at-epoch-end",
        "sigkill-at-an-epochs-last-batch",
        "sigterm-during-test",
        "sigusr1-at-the-last-test-batch",
    ],
)
def test_killed_run_resumes_to_the_same_digits(
    tmp_path: Path,
    uninterrupted: dict,
    signum: int,
    during: str,
    epoch: int,
    batch: int,
    code: int,
    saved: tuple[int, int],
    extra: tuple[str, ...],
) -> None:
    run = tmp_path / "run"
    fault = signal_at(epoch, batch, signum, tmp_path / "sent", during)  # part of the config: kept
    fault += [f"callbacks.resume.{x}" for x in extra]
    r = cli(run, *fault)
    assert r.returncode == code, r.stderr[-3000:]  # never 0
    assert not (run / "metrics.json").exists()
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == ("running" if signum == signal.SIGKILL else "interrupted")
    last = run / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True, map_location="cpu")
    assert (state["epoch"], state["global_step"]) == saved  # 40 batches an epoch
    r = cli(run, *fault, "ckpt_path=auto")  # the same command, continued
    assert r.returncode == 0, r.stderr[-3000:]
    assert results(run) == uninterrupted
    m = json.loads((run / "metrics.json").read_text())
    assert m["status"] == "finished"
    assert (run.parent / m["resumed_from"]).resolve() == last.resolve()
    # the resumed epoch's log line times only that process's part of it, and shows throughput
    lines = [x for x in (run / "train.log").read_text().splitlines() if "] epoch " in x]
    assert lines and all("samples/s" in x and float(x.split()[-2]) < 300 for x in lines)


def test_a_run_max_steps_ends_mid_epoch_resumes_to_the_same_digits(tmp_path: Path) -> None:
    """``max_steps`` ends epoch 2 at its 20th batch, before its validation: early stopping
    re-checked epoch 1's validation there, and a process resumed within that epoch had none, so
    every ``ckpt_path=auto`` failed (RuntimeError). It now checks after validations only."""
    steps = "+trainer.max_steps=100"  # 40 batches an epoch
    (tmp_path / "full").mkdir()
    assert cli(tmp_path / "full" / "run", steps).returncode == 0
    run = tmp_path / "run"
    fault = [steps, *signal_at(2, 5, signal.SIGKILL, tmp_path / "sent")]
    assert cli(run, *fault).returncode == -signal.SIGKILL
    r = cli(run, *fault, "ckpt_path=auto")
    assert r.returncode == 0, r.stderr[-3000:]
    assert results(run) == results(tmp_path / "full" / "run")


def test_early_stopping_checks_after_validation_whatever_its_target() -> None:
    """Early stopping is built to check after validations (train._callback); a ``_target_``
    that is a function still instantiates (a class check on it raised ValueError)."""
    import sys

    from lightning.pytorch.callbacks import EarlyStopping
    from omegaconf import OmegaConf

    from ranklab.train import _callback

    sys.path.insert(0, str(ROOT / "tests"))
    for target in ("lightning.pytorch.callbacks.EarlyStopping", "faults.early_stopping"):
        cb = _callback(OmegaConf.create({"_target_": target, "monitor": "val/auc"}))
        assert isinstance(cb, EarlyStopping) and cb._check_on_train_epoch_end is False
    kept = {"check_on_train_epoch_end": True}  # the user's own choice stands
    cb = _callback(OmegaConf.create({"_target_": "faults.early_stopping", "monitor": "x", **kept}))
    assert cb._check_on_train_epoch_end is True


@pytest.mark.parametrize(
    "deferred, every",
    [
        (False, None),
        # as on a GPU: the loss read at the step's end; a checkpoint due at that step checks it
        # first (the step's update, made from the NaN, is never saved)
        (True, None),
        (True, 1),
    ],
)
def test_nan_loss_stops_at_once_and_keeps_the_finite_checkpoint(
    make_cfg, tmp_path: Path, deferred: bool, every: int | None, caplog: pytest.LogCaptureFixture
) -> None:
    from faults import DeferLossCheck, NaNAt

    cfg = make_cfg("model=dnn", "model.hidden_units=[16]", "trainer.max_epochs=5")
    if every:
        cfg.callbacks.resume.every_n_steps = every
    callbacks = [NaNAt(epoch=1, batch=3), *([DeferLossCheck()] if deferred else [])]
    # 12 steps an epoch: epoch 1's batch 3 is step 15
    with (
        caplog.at_level("WARNING", logger="ranklab"),
        pytest.raises(Diverged, match=r"training loss is nan at epoch 1, step 15: "),
    ):
        train(cfg, callbacks=callbacks)
    # the loss stops it, not the weights' check of a checkpoint made after the step
    assert "not writing" not in caplog.text
    run = tmp_path / "run"
    text = (run / "metrics.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    m = json.loads(text)  # strict JSON
    assert m["status"] == "diverged" and m["diverged_at"]["epoch"] == 1
    assert [h["epoch"] for h in m["history"]] == [0]
    assert json.loads((run / "status.json").read_text())["status"] == "diverged"
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    # written after epoch 1's first batch (or every step: after the step before the NaN's)
    assert state["epoch"] == 1 and state["global_step"] == (15 if every else 13)
    assert all(
        torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point()
    )
    cfg.ckpt_path = "auto"  # the same config again would diverge the same way: refused
    with pytest.raises(ConfigError, match=r"ckpt_path.*diverged.*lower optimizer.lr"):
        train(cfg)
    assert json.loads((run / "status.json").read_text())["status"] == "diverged"


def test_a_checkpoint_is_never_written_from_non_finite_weights(
    make_cfg, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A running statistic that overflows while the loss stays finite: last.ckpt keeps the
    state from before it, with a warning naming the buffer, and the run stops as diverged
    before the epoch's validation (no checkpoint or result from weights that are not finite)."""
    from faults import InfBufferAt

    cfg = make_cfg(
        "model=dnn",
        "model.hidden_units=[16]",
        "model.batch_norm=true",
        "trainer.max_epochs=2",
        "callbacks.resume.every_n_steps=2",
        "efficiency=false",
    )
    with (
        caplog.at_level("WARNING", logger="ranklab"),
        pytest.raises(Diverged, match=r"running_var is not finite at epoch 0, step 12: "),
    ):
        train(cfg, callbacks=[InfBufferAt(epoch=0, batch=5)])
    run = tmp_path / "run"
    assert json.loads((run / "status.json").read_text())["status"] == "diverged"
    assert json.loads((run / "metrics.json").read_text())["diverged_at"] == {"epoch": 0, "step": 12}
    assert not (run / "checkpoints" / "best.ckpt").exists()
    last = run / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True, map_location="cpu")
    assert state["global_step"] == 4  # the saves at steps 6, 8, ... were refused
    assert all(
        torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point()
    )
    assert "running_var is not finite (kept the previous one)" in caplog.text


def test_a_huge_lr_diverges_from_the_first_step_with_status_2(tmp_path: Path) -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "ranklab.train",
            "data.source.n_train=3000",
            "data.source.n_val=1000",
            "data.source.n_test=1000",
            "optimizer.lr=1e20",
            f"hydra.run.dir={tmp_path}/run",
            "efficiency=false",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2
    assert "diverged" in r.stderr and "epoch 0, step" in r.stderr


def test_auto_in_a_named_folder_never_overwrites_and_never_retrains(
    make_cfg, tmp_path: Path
) -> None:
    """ckpt_path=auto with the folder named (a SLURM requeue, hydra.run.dir): this config's
    finished run is returned as it is; another config's run is refused, not trained over."""
    run = tmp_path / "run"
    first = train(make_cfg("efficiency=false"))
    written = (run / "metrics.json").stat().st_mtime_ns
    again = train(make_cfg("efficiency=false", "ckpt_path=auto"))
    assert again == json.loads((run / "metrics.json").read_text())
    assert again["test"] == first["test"] and again["config_hash"] == first["config_hash"]
    assert (run / "metrics.json").stat().st_mtime_ns == written  # nothing trained or written
    with pytest.raises(ConfigError, match=r"'ckpt_path'.*holds a run of another config"):
        train(make_cfg("efficiency=false", "ckpt_path=auto", "optimizer.lr=0.01"))
    assert (run / "metrics.json").stat().st_mtime_ns == written
    assert json.loads((run / "status.json").read_text())["config_hash"] == first["config_hash"]


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("trainer.max_epochs=0", "trainer.max_epochs"),
        ("ckpt_path=/no/such.ckpt", "ckpt_path"),
        ("ckpt_path={tmp}/junk.ckpt", "ckpt_path"),  # a file, but no checkpoint
        ("ckpt_path={tmp}/weights.pt", "ckpt_path"),  # torch's, without a training state
        ("trainer.max_epochs=-3", "trainer.max_epochs"),
        ("trainer.max_epochs=abc", "trainer.max_epochs"),
        ("optimizer.lr=-1", "optimizer.lr"),
        ("optimizer.lr=abc", "optimizer.lr"),
        ("seed=abc", "seed"),  # these were tracebacks
        ("threads=abc", "threads"),
        ("threads=1.5", "threads"),
    ],
)
def test_runs_that_cannot_train_fail_before_writing(
    make_cfg, tmp_path: Path, override: str, key: str
) -> None:
    (tmp_path / "junk.ckpt").write_text("junk\n")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "weights.pt")
    with pytest.raises(ConfigError, match=f"'{key}'"):
        train(make_cfg(override.format(tmp=tmp_path)))
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_whole_numbers_from_the_environment_are_numbers() -> None:
    """``threads=${oc.env:SLURM_CPUS_PER_TASK}`` resolves to the string '8': a number."""
    from ranklab.errors import whole_number

    assert whole_number("8", "threads", 0) == 8 and whole_number(2.0, "seed", 0) == 2
    for bad in ("8.5", "eight", 1.5, True, -1, None):
        with pytest.raises(ConfigError, match="'threads': must be a whole number >= 0"):
            whole_number(bad, "threads", 0)


def test_the_error_a_run_stops_on_is_in_its_train_log(make_cfg, tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        train(make_cfg("model=dnn", "+model.hidden_unit=[8]"))
    log = (tmp_path / "run" / "train.log").read_text()
    assert "[ranklab][ERROR] error: config key 'model.hidden_unit'" in log


def test_a_folder_or_checkpoint_of_another_config_is_never_trained_over(
    make_cfg, tmp_path: Path
) -> None:
    """The same folder named for another config fails naming the keys that differ, and so does
    a checkpoint of another config (it would be resumed, optimiser state and all, and its
    results labelled with this config); the same config's checkpoint is taken from anywhere."""
    run = tmp_path / "run"
    first = train(make_cfg("efficiency=false"))
    kept = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(
        ConfigError,
        match=r"'paths.output_dir'.*holds a run of another config \(finished; optimizer.lr: "
        r"0.01 here, 0.001 there\): a run never overwrites another",
    ):
        train(make_cfg("efficiency=false", "optimizer.lr=0.01"))
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == kept
    # nor is the same config's finished run (a failed rerun would leave its results mixed
    # with the new run's checkpoints); ckpt_path=auto keeps it
    with pytest.raises(
        ConfigError,
        match=r"'paths.output_dir'.*holds this config's finished run, and a run never "
        r"overwrites another: ckpt_path=auto keeps it",
    ):
        train(make_cfg("efficiency=false"))
    assert train(make_cfg("efficiency=false", "ckpt_path=auto"))["test"] == first["test"]
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == kept

    last = run / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True, map_location="cpu")
    assert state["ranklab_run"]["config_hash"] == first["config_hash"]

    def elsewhere(folder: str, *overrides: str):
        cfg = make_cfg("efficiency=false", f"ckpt_path={last}", *overrides)
        cfg.paths.output_dir = str(tmp_path / folder)
        return cfg

    for override, differs in [
        ("optimizer.lr=0.01", r"optimizer.lr: 0.01 here, 0.001 there"),
        ("model=lr", r"model._target_: ranklab.models.LR here, ranklab.models.DeepFM there"),
    ]:
        with pytest.raises(ConfigError, match=rf"'ckpt_path'.*another config \({differs}"):
            train(elsewhere("other", override))
        assert not (tmp_path / "other").exists()
    # a checkpoint written before checkpoints carried their config: its folder's status says
    del state["ranklab_run"]
    torch.save(state, tmp_path / "old.ckpt")
    cfg = elsewhere("other", "optimizer.lr=0.01")
    cfg.ckpt_path = str(tmp_path / "old.ckpt")
    with pytest.raises(ConfigError, match=r"'ckpt_path'.*says nothing of its config"):
        train(cfg)
    again = train(elsewhere("same"))  # this config's checkpoint, in a folder of its own
    assert again["status"] == "finished" and again["resumed_from"] == str(last)


def test_a_folder_another_process_runs_in_is_refused(make_cfg, tmp_path: Path) -> None:
    """Two processes never write one folder: the second fails at once, writing nothing."""
    from ranklab.rundir import hold_run_dir

    run = tmp_path / "run"
    run.mkdir()
    with hold_run_dir(run):  # as a running process holds it (another open file: a conflict)
        with pytest.raises(ConfigError, match=r"'paths.output_dir'.*is in use: another process"):
            train(make_cfg("efficiency=false"))
        assert [p.name for p in run.iterdir()] == [".lock"]
    assert train(make_cfg("efficiency=false"))["status"] == "finished"  # let go: it runs


def test_a_signal_after_fit_is_an_interruption_not_a_kill(
    make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM while the latency is measured (after Lightning's handlers are gone): exit
    status 143 and the folder says interrupted, as during fit, rather than the default action
    killing the process with the folder saying running."""
    import ranklab.train as train_module
    from ranklab.errors import Interrupted

    def preempted(*args: object) -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(train_module, "efficiency", preempted)
    with pytest.raises(Interrupted) as e:
        train(make_cfg())
    assert e.value.code == 128 + signal.SIGTERM
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["status"] == "interrupted" and status["checkpoint"].endswith("last.ckpt")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # put back as it was


def test_a_crash_is_recorded_in_the_folder(make_cfg, tmp_path: Path) -> None:
    """An error that is not the user's (a bug): status failed with the error, and the
    traceback in train.log, where the folder would otherwise go on saying running."""
    from faults import RaiseAt

    with pytest.raises(RuntimeError, match="boom"):
        train(make_cfg(), callbacks=[RaiseAt(epoch=1, batch=2)])
    run = tmp_path / "run"
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "failed" and status["error"] == "RuntimeError: boom at epoch 1"
    log = (run / "train.log").read_text()
    assert "Traceback (most recent call last)" in log and "RuntimeError: boom at epoch 1" in log
    # Lightning runs no teardown hook after an error: the signal handlers are put back anyway
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def small_cli(cwd: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    args = [
        "data.source.n_train=3000",
        "data.source.n_val=1000",
        "data.source.n_test=1000",
        "trainer.max_epochs=1",
        "efficiency=false",
        "print_summary=false",
        f"paths.log_dir={cwd}/logs",
        f"paths.cache_dir={cwd}/cache",
    ]
    return subprocess.run(
        # Hydra's flags (-m) before the overrides: argparse takes them only there
        [sys.executable, "-m", "ranklab.train", *[a for a in extra if a[0] == "-"], *args]
        + [a for a in extra if a[0] != "-"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(ROOT / "tests")},
    )


def test_a_preempted_multirun_continues_in_its_folder_with_auto(tmp_path: Path) -> None:
    """ranklab-train -m ... ckpt_path=auto finds the multirun of the same overrides (Hydra's
    own among them, which it records apart): the interrupted job continues from its last.ckpt,
    the job never started runs, and a third command finds every job finished."""
    fault = signal_at(1, 2, signal.SIGTERM, tmp_path / "sent")
    command = ["-m", "model=lr,fm", "trainer.max_epochs=2", *fault, "ckpt_path=auto"]
    command.append("hydra.job.chdir=true")  # each job works in its folder: paths stay absolute
    r = small_cli(tmp_path, *command)
    assert r.returncode == 128 + signal.SIGTERM, r.stdout[-3000:] + r.stderr[-2000:]
    assert "ckpt_path=auto: no multirun of these overrides in" in r.stderr  # a new one
    (sweep,) = (tmp_path / "logs" / "multirun").iterdir()
    assert json.loads((sweep / "0" / "status.json").read_text())["status"] == "interrupted"
    assert not (sweep / "1").exists()
    r = small_cli(tmp_path, *command)  # the same command again
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"ckpt_path=auto: continuing the multirun in {sweep}" in r.stderr
    first, second = (json.loads((sweep / j / "metrics.json").read_text()) for j in ("0", "1"))
    assert tmp_path / first["resumed_from"] == sweep / "0" / "checkpoints" / "last.ckpt"
    assert first["model"] == "LR" and second["model"] == "FM" and second["resumed_from"] is None
    r = small_cli(tmp_path, *command)
    assert r.returncode == 0 and r.stderr.count("finished; nothing to do") == 2, r.stderr[-2000:]


def test_a_refused_or_finished_command_leaves_hydras_files_as_they_were(tmp_path: Path) -> None:
    """A named folder is checked before Hydra writes its .hydra/*.yaml there: another config
    (exit 2, one line) and ckpt_path=auto with this run finished (exit 0) change nothing."""
    run = tmp_path / "run"
    assert small_cli(tmp_path, f"hydra.run.dir={run}").returncode == 0
    kept = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    r = small_cli(tmp_path, f"hydra.run.dir={run}", "optimizer.lr=0.01")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"error: config key 'paths.output_dir': {run} holds a run of another config (finished; "
        "optimizer.lr: 0.01 here, 0.001 there): a run never overwrites another: name another "
        "folder (hydra.run.dir or paths.output_dir), or delete that one"
    ]
    r = small_cli(tmp_path, f"hydra.run.dir={run}", "ckpt_path=auto")
    assert r.returncode == 0 and "finished; nothing to do" in r.stderr
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == kept


def test_auto_with_nothing_to_continue_says_so(tmp_path: Path, capsys) -> None:
    from ranklab.train import _auto_resume_argv

    argv = ["ranklab-train", "ckpt_path=auto", f"paths.log_dir={tmp_path}"]
    assert _auto_resume_argv(argv) == argv  # a new run, in a new folder
    err = capsys.readouterr().err
    assert err.startswith(f"ckpt_path=auto: no unfinished run of this config in {tmp_path}/runs/")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.batch_size=abc", "config key 'data.batch_size': must be a whole number, got 'abc'"),
        ("model.dropout=abc", "config key 'model.dropout': must be a number, got 'abc'"),
        ("data.source.n_train=1.5", "config key 'data.source.n_train': must be a whole number"),
    ],
)
def test_a_value_of_the_wrong_type_is_one_line_before_the_data_is_read(
    make_cfg, tmp_path: Path, override: str, message: str
) -> None:
    with pytest.raises(ConfigError) as e:
        train(make_cfg(override))
    assert str(e.value).startswith(message)
    assert not (tmp_path / "cache").exists()


def test_a_monitor_the_validation_does_not_log_fails_at_the_first_validation(
    make_cfg, tmp_path: Path
) -> None:
    with pytest.raises(
        ConfigError,
        match=r"'task.monitor': 'val/nope' is not a validation metric of this run \(it has "
        r"val/auc, val/calibration",
    ):
        train(make_cfg("task.monitor=val/nope", "task.mode=max"))
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["status"] == "failed" and "task.monitor" in status["error"]
    assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()  # before any epoch


def test_a_config_file_that_is_not_yaml_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "conf" / "data").mkdir(parents=True)
    bad = tmp_path / "conf" / "data" / "mine.yaml"
    bad.write_text("name: mine\nsource: {bad: [1, 2\n")
    r = small_cli(tmp_path, f"--config-dir={tmp_path / 'conf'}", "data=mine")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"error: {bad}, line 3, column 1: not valid YAML: while parsing a flow sequence: did "
        "not find expected ',' or ']'"
    ]


def test_auto_continues_a_run_of_a_config_kept_outside_the_repository(tmp_path: Path) -> None:
    """``--config-dir`` (a user's own config folder) made ``ckpt_path=auto`` start afresh in a
    new folder, since the command line was not composed with that folder."""
    (tmp_path / "conf" / "data").mkdir(parents=True)
    (tmp_path / "conf" / "data" / "mine.yaml").write_text(
        "defaults:\n  - synthetic\n  - _self_\nname: mine\n"
    )
    fault = signal_at(1, 2, signal.SIGTERM, tmp_path / "sent")
    command = [f"--config-dir={tmp_path}/conf", "data=mine", "trainer.max_epochs=2", *fault]
    r = small_cli(tmp_path, *command)
    assert r.returncode == 128 + signal.SIGTERM, r.stderr[-2000:]
    (run,) = (tmp_path / "logs" / "runs").glob("mine-*/*")
    r = small_cli(tmp_path, *command, "ckpt_path=auto")
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"ckpt_path=auto: continuing {run}" in r.stderr
    assert json.loads((run / "metrics.json").read_text())["resumed_from"] is not None
    assert len(list((tmp_path / "logs" / "runs").glob("mine-*/*"))) == 1
    # requeued once more (a signal after the run had finished): nothing is trained again
    kept = (run / "metrics.json").read_bytes()
    r = small_cli(tmp_path, *command, "ckpt_path=auto")
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"ckpt_path=auto: {run} finished this config already" in r.stderr
    assert "finished; nothing to do" in r.stderr and (run / "metrics.json").read_bytes() == kept
    assert len(list((tmp_path / "logs" / "runs").glob("mine-*/*"))) == 1


def test_a_run_resumed_in_another_folder_keeps_the_best_epoch(tmp_path: Path) -> None:
    """``ckpt_path=<another folder's last.ckpt>`` (a sweep's retried trial does this): Lightning
    restored the best checkpoint's score only in the folder that wrote it, so the first epoch
    after the resume was taken for the best, however it compared, and the test ran on it. The
    monitor here (the highest log loss) makes epoch 0 the best, before the kill at epoch 1."""
    mine = ["data.source.n_train=3000", "data.source.n_val=1000", "data.source.n_test=1000"]
    mine += ["trainer.max_epochs=3", "task.monitor=val/logloss", "task.mode=max"]
    first = tmp_path / "first"
    fault = signal_at(1, 2, signal.SIGTERM, tmp_path / "sent")  # 6 batches an epoch
    r = cli(first, *mine, *fault)
    assert r.returncode == 128 + signal.SIGTERM, r.stderr[-3000:]
    best = (first / "checkpoints" / "best.ckpt").read_bytes()  # epoch 0's
    second = tmp_path / "second"
    r = cli(second, *mine, *fault, f"ckpt_path={first}/checkpoints/last.ckpt")
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((second / "metrics.json").read_text())
    logloss = [h["logloss"] for h in m["history"]]
    assert m["epochs"] == 3 and logloss[0] == max(logloss)  # epoch 0 is the best
    assert m["best_epoch"] == 0 and m["val"]["logloss"] == logloss[0]
    # the best weights are this folder's own copy of epoch 0's: the other folder may go
    assert (second / "checkpoints" / "best.ckpt").read_bytes() == best


def test_best_checkpoint_state_moves_with_its_file(tmp_path: Path) -> None:
    from ranklab.callbacks import BestCheckpoint

    old = BestCheckpoint(dirpath=str(tmp_path / "a"), monitor="val/auc", mode="max")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "best.ckpt").write_bytes(b"weights")
    old.best_model_path = old.kth_best_model_path = str(tmp_path / "a" / "best.ckpt")
    old.best_model_score = old.kth_value = torch.tensor(0.75)
    old.best_k_models = {old.best_model_path: torch.tensor(0.75)}
    state = old.state_dict()
    new = BestCheckpoint(dirpath=str(tmp_path / "b"), monitor="val/auc", mode="max")
    new.load_state_dict(state)
    moved = str(tmp_path / "b" / "best.ckpt")
    assert new.best_model_score == 0.75 and new.best_model_path == moved
    assert new.best_k_models == {moved: 0.75} and new.kth_best_model_path == moved
    assert Path(moved).read_bytes() == b"weights"
    # the file gone: Lightning's own (the path kept, the score not)
    (tmp_path / "a" / "best.ckpt").unlink()
    lost = BestCheckpoint(dirpath=str(tmp_path / "c"), monitor="val/auc", mode="max")
    with pytest.warns(UserWarning, match="dirpath has changed"):
        lost.load_state_dict(state)
    assert lost.best_model_score is None
    # the same folder: Lightning's own restore
    same = BestCheckpoint(dirpath=str(tmp_path / "a"), monitor="val/auc", mode="max")
    same.load_state_dict(state)
    assert same.best_model_score == 0.75 and same.best_model_path == state["best_model_path"]
