"""One worker: takes trials from the study until the requested total is reached.

Each trial is ``train(cfg)`` on the base config plus the sampled overrides, in its own run
directory ``<sweep dir>/trials/<number>``; its score is read from the returned metrics (the same
dict as ``metrics.json``). The total is exact over any number of workers: a worker takes the
study's lock, counts the trials already created, and releases the lock only once its own trial
exists (first thing in the objective), so two workers never both take the last slot.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from ranklab.errors import ConfigError, Interrupted, StopRequested
from ranklab.sweep.spec import SweepSpec, quote
from ranklab.sweep.study import (
    StudyLock,
    budget,
    fail_stale,
    grid_size,
    make_pruner,
    make_sampler,
    make_storage,
    retry_of,
    safe_url,
    worker_seed,
)
from ranklab.utils import atomic_write_json

warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")


class TrialFailed(Exception):
    """A trial raised, or its metric is NaN or infinite: recorded as failed, the sweep goes on."""


class MetricMissing(ConfigError):
    """The sweep's metric is not one the run reports: every trial would fail the same way, so
    the sweep stops (exit 2) and the trial is queued again for the corrected command."""


class OptunaPruning(L.Callback):
    """Report ``monitor`` (e.g. ``val/auc``) to the trial after every validation epoch of
    ``fit`` and raise ``optuna.TrialPruned`` when the pruner says so (not after the last epoch:
    the training is done by then). A validation metric the run does not report stops the
    sweep at the first validation (the sanity check's), not after the trial has trained."""

    def __init__(self, trial: optuna.Trial, monitor: str) -> None:
        self.trial = trial
        self.monitor = monitor
        self.checked = False

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        values = getattr(pl_module, "results", {}).get("val")
        if not self.checked and values is not None:  # the first validation's metrics
            self.checked = True
            split, name = self.monitor.split("/", 1)
            if split == "val" and name not in values:
                raise MetricMissing(
                    "metric",
                    f"'{self.monitor}' is not a validation metric of this run (it has "
                    f"val/{', val/'.join(sorted(values))})",
                )
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        value = float(value)
        if not math.isfinite(value):
            return  # the trial fails on its final metric; nothing to compare here
        epoch = int(trainer.current_epoch)
        self.trial.report(value, step=epoch)
        last = trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs
        if not last and self.trial.should_prune():  # pruning after the last epoch saves nothing
            raise optuna.TrialPruned(f"pruned after epoch {epoch}: {self.monitor} {value:.5f}")


def worker_label() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_worker(
    spec: SweepSpec, threads: int | None = None, ready: Callable[[], None] | None = None
) -> int:
    """Run trials until the study holds ``trials`` of them and none is running or queued.

    ``threads`` sets torch threads per trial unless the sweep fixes ``threads``; ``ready`` is
    called once the study is open (local workers start together). Returns the trials run here.
    """
    from ranklab.config import compose, set_tracking
    from ranklab.train import train

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # each trial prints its own line
    label = worker_label()
    storage = make_storage(spec, create_tables=False)
    lock = StudyLock(spec, f"study-{spec.study_name}")
    study = optuna.load_study(study_name=spec.study_name, storage=storage)
    with lock.held():
        slot = int(study.user_attrs.get("workers_started", 0))
        study.set_user_attr("workers_started", slot + 1)
    seed = worker_seed(spec.conf.sampler.seed, slot)
    study = optuna.load_study(
        study_name=spec.study_name,
        storage=storage,
        sampler=make_sampler(spec, seed),
        pruner=make_pruner(spec),
    )
    total = min(spec.trials, grid_size(spec) or spec.trials)
    extra = [] if threads is None or _fixes(spec, "threads") else [f"threads={threads}"]
    current: dict[str, Any] = {}

    def objective(trial: optuna.Trial) -> float:
        lock.release()  # the trial exists: the next worker may count it and ask for its own
        current.update(number=trial.number, finished=False)
        values = {p.key: p.suggest(trial) for p in spec.params}
        run_dir = spec.dir / "trials" / f"{trial.number:04d}"
        original = _retry_of(study, trial.number)
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("worker", label)
        if "error" in trial.user_attrs:  # copied from the trial this one retries
            trial.set_user_attr("error", None)
        overrides = spec.trial_overrides(values, run_dir) + extra
        if extra:  # the best config repeats it: another thread count rounds otherwise
            trial.set_user_attr("threads", threads)
        if original is not None:  # a retry continues the trial it repeats from its checkpoint
            last = spec.dir / "trials" / f"{original:04d}" / "checkpoints" / "last.ckpt"
            if last.is_file():
                overrides.append(f"ckpt_path={quote(str(last))}")
        shown = " ".join(f"{k}={_short(p.text(values[k]))}" for k, p in _by_key(spec).items())
        head = f"[trial {trial.number}{f' retry of {original}' if original is not None else ''}]"
        record = {
            "number": trial.number,
            "study": spec.study_name,
            "storage": safe_url(spec.storage_url),
            "worker": label,
            "retry_of": original,
            "params": {k: p.text(values[k]) for k, p in _by_key(spec).items()},
            "overrides": overrides,
            "metric": spec.metric,
        }
        t0 = time.perf_counter()
        try:
            cfg = compose(overrides)
            # trackers: one run per trial, all in the study's group
            name = f"{spec.study_name}/trial{trial.number:04d}-seed{cfg.seed}"
            set_tracking(cfg, name, spec.study_name, "sweep", tag=spec.study_name)
            taken = (
                _finished_before(spec.dir / "trials" / f"{original:04d}", cfg)
                if (original is not None)
                else None
            )
            if taken is not None:  # its worker was lost after the run had finished
                run_dir = spec.dir / "trials" / f"{original:04d}"
                trial.set_user_attr("run_dir", str(run_dir))
                print(f"{head} trial {original} had finished: its result is taken", flush=True)
                metrics = taken
            else:
                metrics = train(cfg, callbacks=[OptunaPruning(trial, spec.metric)])
            split, name = spec.metric.split("/", 1)
            value = metrics.get(split, {}).get(name)
            if value is None:
                raise MetricMissing(
                    "metric",
                    f"'{spec.metric}' is not in {run_dir}/metrics.json "
                    f"(it has {sorted(metrics.get(split, {}))})",
                )
        except optuna.TrialPruned as e:
            _finish(run_dir, record, "pruned", t0, note=str(e))
            print(f"{head} pruned ({e}) {shown}", flush=True)
            raise
        except (KeyboardInterrupt, Interrupted) as e:
            # Ctrl-C, or SIGTERM/SIGUSR1 (train() saved a checkpoint at the signal and raised
            # Interrupted, a SystemExit, which Optuna would let through with the trial left
            # running): the trial is failed as interrupted and queued again (run_worker)
            trial.set_user_attr("error", "interrupted")
            _finish(run_dir, record, "interrupted", t0)
            code = e.code if isinstance(e, (Interrupted, StopRequested)) else 130
            raise StopRequested(int(code or 130)) from e
        except MetricMissing as e:  # at the first validation, or missing from metrics.json
            trial.set_user_attr("error", str(e))
            _finish(run_dir, record, "failed", t0, error=str(e))
            raise
        except Exception as e:
            raise _failed(trial, run_dir, record, t0, head, shown, e) from e
        value = float(value)
        if not math.isfinite(value):
            err = FloatingPointError(f"{spec.metric} is {value}")
            raise _failed(trial, run_dir, record, t0, head, shown, err)
        current["finished"] = True
        _finish(run_dir, record, "complete", t0, value=value)
        print(f"{head} {spec.metric} {value:.5f} ({_secs(t0)}) {shown}", flush=True)
        return value

    if ready is not None:
        ready()
    n_run = 0
    idle = min(int(spec.conf.storage.heartbeat_interval), 5)
    try:
        while True:
            wait = False
            lock.acquire()
            try:
                fail_stale(study)
                b = budget(study)
                if b.remaining(total) <= 0 and b.waiting == 0:
                    if b.running == 0:
                        break
                    wait = True  # a running trial may still go stale and be queued again
                else:
                    current.clear()
                    study.optimize(objective, n_trials=1, catch=(TrialFailed,))
                    n_run += 1
            except (UpdateFinishedTrialError, AssertionError):
                # Optuna refuses to record a trial that another worker already failed as stale
                # (its heartbeat was late by more than grace_period); its retry will run it.
                if not current.get("finished") or _state(study, current["number"]) in (
                    TrialState.RUNNING,
                    None,
                ):
                    raise
                print(
                    f"[trial {current['number']}] was failed as stale by another worker while "
                    f"it ran (raise storage.grace_period); its result is not recorded",
                    flush=True,
                )
            finally:
                lock.release()
            if wait:
                time.sleep(idle)
    except (KeyboardInterrupt, MetricMissing) as e:
        # the trial is run again (or its finished run taken) by the next or corrected command
        why = "stopped on a config error" if isinstance(e, MetricMissing) else "interrupted"
        _requeue(study, current.get("number"), int(spec.conf.storage.max_retry), why)
        raise
    finally:
        lock.close()
    return n_run


def _fixes(spec: SweepSpec, key: str) -> bool:
    return any(str(o).lstrip("+").split("=", 1)[0] == key for o in spec.conf.fixed)


def _by_key(spec: SweepSpec) -> dict[str, Any]:
    return {p.key: p for p in spec.params}


def _short(text: str) -> str:
    try:
        return f"{float(text):.4g}" if "." in text or "e" in text else text
    except ValueError:
        return text


def _secs(t0: float) -> str:
    return f"{time.perf_counter() - t0:.1f} s"


def _retry_of(study: optuna.Study, number: int) -> int | None:
    """The trial a running retry repeats (``optuna.Trial`` does not expose system attrs)."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.number == number:
            return retry_of(t)
    return None


def _state(study: optuna.Study, number: int) -> TrialState | None:
    for t in study.get_trials(deepcopy=False):
        if t.number == number:
            return t.state
    return None


def _finished_before(run_dir: Path, cfg: Any) -> dict[str, Any] | None:
    """The metrics of the run a retried trial repeats when that run had finished (its worker
    was killed between the run's end and the trial's record): taken, not trained again. Only
    for the very same config (its hash), and only a finished run's."""
    from ranklab.config import config_hash
    from ranklab.rundir import read_status

    status = read_status(run_dir)
    if status.get("status") != "finished" or status.get("config_hash") != config_hash(cfg):
        return None
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(metrics, dict) and metrics.get("config_hash") == config_hash(cfg)
    return metrics if ok and metrics.get("status") == "finished" else None


def _finish(
    run_dir: Path,
    record: dict[str, Any],
    state: str,
    t0: float,
    value: float | None = None,
    note: str | None = None,
    error: str | None = None,
) -> None:
    """``trial.json`` beside the run's own files: the trial's number, state and parameters."""
    out = {**record, "state": state, "value": value, "duration_s": time.perf_counter() - t0}
    if note:
        out["note"] = note
    if error:
        out["error"] = error
    atomic_write_json(run_dir / "trial.json", out)


def _failed(
    trial: optuna.Trial,
    run_dir: Path,
    record: dict[str, Any],
    t0: float,
    head: str,
    shown: str,
    err: BaseException,
) -> TrialFailed:
    """Record a failed trial (user attr ``error``, ``error.txt``, ``trial.json``)."""
    message = f"{type(err).__name__}: {err}".strip().splitlines()[0][:500]
    trial.set_user_attr("error", message)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "error.txt").write_text("".join(traceback.format_exception(err)))
    _finish(run_dir, record, "failed", t0, error=message)
    print(f"{head} FAILED {message} {shown}", flush=True)
    return TrialFailed(message)


def _requeue(
    study: optuna.Study, number: int | None, max_retry: int, why: str = "interrupted"
) -> None:
    """After Ctrl-C (or SIGTERM), queue the interrupted trial again, as a stale one would be."""
    if number is None:
        return
    for t in study.get_trials(deepcopy=True):
        if t.number == number and t.state == TrialState.FAIL:
            RetryHeartbeatStaleTrialCallback(max_retry=max_retry)(study, t)
            print(f"[trial {number}] {why}: queued again for the next run", flush=True)
