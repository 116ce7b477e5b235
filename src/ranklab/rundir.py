"""A run folder's state and who may write it: ``status.json``, the lock a running process holds,
which checkpoint ``ckpt_path`` resumes, and the checks that keep one config's run from being
trained over, resumed as, or written at once with another's."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.experimental.callback import Callback as HydraCallback
from omegaconf import DictConfig

from ranklab.config import config_hash, result_config
from ranklab.errors import ConfigError
from ranklab.loggers import TRACKERS_FILE
from ranklab.utils import atomic_write_json, creatable_dir, flatten

log = logging.getLogger("ranklab")

STATUS_FILE = "status.json"
# held (flock) by the process running in the folder: the kernel lets go when it ends, killed too
LOCK_FILE = ".lock"
# checkpoints carry the config they were trained under, under this key
IDENTITY_KEY = "ranklab_run"  # ("ranklab" holds the task's own state)


LAST = Path("checkpoints") / "last.ckpt"  # a run folder's resume checkpoint


def rank_zero() -> bool:
    """This process writes the run's files (under DDP only global rank 0 does)."""
    from lightning.pytorch.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def write_status(run_dir: Path, status: str, cfg: DictConfig, **extra: Any) -> None:
    """``<run_dir>/status.json``: running, finished, diverged, interrupted, pruned or failed, with
    the config's hash and result config (what a later run in the folder is checked against). A
    folder whose status is not ``finished`` holds an unfinished run (a killed process leaves
    ``running``)."""
    if not rank_zero():
        return
    record = {"status": status, "config_hash": config_hash(cfg), "pid": os.getpid()}
    record["time"] = datetime.now().isoformat(timespec="seconds")
    record["config"] = result_config(cfg)
    atomic_write_json(run_dir / STATUS_FILE, {**record, **extra})


def read_status(run_dir: Path) -> dict[str, Any]:
    """The folder's ``status.json``; empty when there is none (or it is unreadable)."""
    try:
        status = json.loads((Path(run_dir) / STATUS_FILE).read_text())
    except (OSError, ValueError):  # missing, unreadable, not JSON, not UTF-8
        return {}
    return status if isinstance(status, dict) else {}


def continued_trackers(cfg: DictConfig, resume: str | None, run_dir: Path) -> dict[str, Any]:
    """The tracker runs (``trackers.json``) a resumed run continues: those this folder's run of
    this very config started. Empty for a fresh run, for a checkpoint of another folder (a
    sweep's retried trial, a run started from another run's checkpoint: tracker runs of their
    own, as two processes must never log to one), and for a file left by another config. A
    run started afresh in a folder whose run of this config was stopped before its first
    checkpoint continues that run's tracker runs too (from step 0), rather than leaving them
    open (MLflow's would stay RUNNING) beside new ones under the same name."""
    if not resume:
        if read_status(run_dir).get("status") in (None, "finished"):
            return {}
    elif Path(resume).resolve().parent.parent != run_dir.resolve():
        return {}
    try:
        saved = json.loads((run_dir / TRACKERS_FILE).read_text())
    except (OSError, ValueError):  # missing, unreadable, not JSON
        return {}
    ok = isinstance(saved, dict) and saved.get("config_hash") == config_hash(cfg)
    return saved if ok else {}


class RunIdentity(L.Callback):
    """Writes the run's config hash and result config into every checkpoint it saves (best and
    last), so that ``ckpt_path`` can tell a checkpoint of another config wherever it lies;
    and, for a warm-started run, where its first weights came from (``initialized_from``), so
    that resuming it needs its checkpoint, not the source's."""

    def __init__(self, cfg: DictConfig, initialized_from: dict[str, Any] | None = None) -> None:
        self.identity = {"config_hash": config_hash(cfg), "config": result_config(cfg)}
        if initialized_from is not None:
            self.identity["initialized_from"] = initialized_from

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[IDENTITY_KEY] = self.identity


def load_mapped(path: str | Path) -> Any:
    """``torch.load`` of plain types on the CPU, memory-mapped where the file allows it (the
    weights stay on disk until read)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # not torch's zip format, which alone maps: read it whole
        return torch.load(path, map_location="cpu", weights_only=True)


def _load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's top-level entries, memory-mapped (the weights stay on disk); fails naming
    ``ckpt_path`` when the file is not a training checkpoint."""
    try:
        state = load_mapped(path)
        int(state["global_step"])
        return state
    except Exception as e:  # torch raises anything from RuntimeError to UnpicklingError
        raise ConfigError(
            "ckpt_path",
            f"{path} is not a training checkpoint ranklab can resume from "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})",
        ) from e


def global_step(checkpoint: str | Path) -> int:
    """The training step a checkpoint was taken at."""
    return int(_load_checkpoint(checkpoint)["global_step"])


def config_differences(here: dict[str, Any], there: dict[str, Any], most: int = 3) -> str:
    """``optimizer.lr: 0.005 here, 0.001 there; ...``: the first keys in which two result
    configs differ."""
    a, b = flatten(here, sep="."), flatten(there, sep=".")
    missing = "(not set)"
    keys = [k for k in sorted(set(a) | set(b)) if a.get(k, missing) != b.get(k, missing)]
    shown = [f"{k}: {a.get(k, missing)} here, {b.get(k, missing)} there" for k in keys[:most]]
    more = f"; and {len(keys) - most} more" if len(keys) > most else ""
    return "; ".join(shown) + more


def describe_other_config(cfg: DictConfig, held: dict[str, Any]) -> str:
    """How the config a folder or checkpoint was written by differs from ``cfg``."""
    if isinstance(held.get("config"), dict):
        diff = config_differences(result_config(cfg), held["config"])
        if diff:
            return diff
    return f"config hash {held.get('config_hash')}, this one {config_hash(cfg)}"


def _check_checkpoint(cfg: DictConfig, path: Path) -> None:
    """``ckpt_path=<file>``: a training checkpoint of this very config. One of another config
    (another lr, another model) would be resumed as it is, optimiser state and all, and its
    results labelled with a config it was not trained under."""
    state = _load_checkpoint(path)  # a file that is no training checkpoint fails here
    identity = state.get(IDENTITY_KEY)
    if not isinstance(identity, dict):  # written before checkpoints carried it: its folder's
        identity = read_status(path.resolve().parent.parent)
    if identity.get("config_hash") == config_hash(cfg):
        return
    what = (
        describe_other_config(cfg, identity)
        if identity
        else "it says nothing of its config, nor does a status.json beside its folder"
    )
    raise ConfigError(
        "ckpt_path",
        f"{path} was written by a run of another config ({what}): a run resumes only its own "
        f"config's state, or its results would be labelled with a config it was not trained "
        f"under; rerun that config to continue it, or start a new run from its weights with "
        f"init_from={path} instead of ckpt_path",
    )


def guard_run_dir(cfg: DictConfig, run_dir: Path) -> dict[str, Any] | None:
    """What the run folder and ``ckpt_path`` allow, checked before anything is read or written.

    A folder holding a run of another config (``status.json``) is never trained over: the
    same folder named twice (``hydra.run.dir``, ``paths.output_dir``) fails naming the keys
    in which the configs differ, and a finished run of the same config is not trained over
    either. A ``ckpt_path`` file must be a training checkpoint of this
    config. With ``auto`` a finished run is not trained again (its metrics are returned,
    nothing is written), and a diverged one would diverge again the same way. A folder another
    process is running in is refused (:func:`hold_run_dir`). Returns the finished run's metrics,
    or None when training should go on."""
    wanted = cfg.get("ckpt_path")
    if wanted and str(wanted) != "auto":
        if not Path(wanted).is_file():
            raise ConfigError("ckpt_path", f"no checkpoint {wanted}")
        _check_checkpoint(cfg, Path(wanted))
    check_not_in_use(run_dir)
    status = read_status(run_dir)
    if not status:
        return None
    if status.get("config_hash") != config_hash(cfg):
        key = "ckpt_path" if str(wanted) == "auto" else "paths.output_dir"
        how = "auto continues only the same config, and " if key == "ckpt_path" else "a run "
        raise ConfigError(
            key,
            f"{run_dir} holds a run of another config ({status.get('status')}; "
            f"{describe_other_config(cfg, status)}): {how}never overwrites another: name another "
            f"folder (hydra.run.dir or paths.output_dir), or delete that one",
        )
    finished = status.get("status") == "finished" and (run_dir / "metrics.json").is_file()
    if not wanted and finished:
        # trained again, it would overwrite the results and checkpoints it holds, and leave
        # them mixed with the new run's if that one failed
        raise ConfigError(
            "paths.output_dir",
            f"{run_dir} holds this config's finished run, and a run never overwrites another: "
            f"ckpt_path=auto keeps it (nothing to do); to train it again, name another folder "
            f"(hydra.run.dir or paths.output_dir) or delete that one",
        )
    if str(wanted) != "auto":
        return None
    if status.get("status") == "diverged":
        raise ConfigError(
            "ckpt_path",
            f"the run of this config in {run_dir} diverged ({status.get('error', '')}); run "
            f"again, it would diverge the same way: change the config (e.g. a lower "
            f"optimizer.lr) or name another folder",
        )
    metrics = run_dir / "metrics.json"
    if finished:
        print(f"ckpt_path=auto: {run_dir} holds this run, finished; nothing to do", file=sys.stderr)
        return json.loads(metrics.read_text())
    return None


def _in_use_error(run_dir: Path) -> ConfigError:
    pid = read_status(run_dir).get("pid")
    return ConfigError(
        "paths.output_dir",
        f"{run_dir} is in use: another process{f' (pid {pid})' if pid else ''} is running in "
        f"it, and two never write one folder: wait for it to end, or name another folder",
    )


def check_not_in_use(run_dir: Path) -> None:
    """Fail when another process holds the folder's lock; takes nothing, writes nothing."""
    import fcntl

    if not rank_zero():  # DDP ranks run in rank 0's folder, which holds the lock
        return
    try:
        fd = os.open(Path(run_dir) / LOCK_FILE, os.O_RDONLY)
    except OSError:  # no lock file: no process of this version ran here
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _in_use_error(run_dir) from None
    finally:
        os.close(fd)  # (lets go of the probe's lock)


@contextlib.contextmanager
def hold_run_dir(run_dir: Path) -> Iterator[None]:
    """Hold the folder's lock while a run writes it: a second process (a resume started twice,
    the same folder named in two commands) fails at once instead of writing the same files.
    An advisory ``flock``: the kernel lets go when the process ends, however it ends."""
    import fcntl

    if not rank_zero():
        yield
        return
    fd = os.open(Path(run_dir) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _in_use_error(run_dir) from None
        yield
    finally:
        os.close(fd)


def resume_checkpoint(cfg: DictConfig, run_dir: Path) -> str | None:
    """The checkpoint ``ckpt_path`` names: a path, or with ``auto`` this run directory's
    ``checkpoints/last.ckpt`` when the folder holds an unfinished run of the same config (the
    CLI first points ``paths.output_dir`` at the newest such folder: :func:`run_to_continue`)."""
    wanted = cfg.get("ckpt_path")
    if not wanted:
        return None
    if str(wanted) != "auto":
        return str(wanted)  # a file of this config: guard_run_dir makes sure
    last = run_dir / LAST
    status = read_status(run_dir)
    same = status.get("config_hash") == config_hash(cfg)
    if last.is_file() and same and status.get("status") != "finished":
        return str(last)
    return None


def run_to_continue(cfg: DictConfig) -> Path | None:
    """The newest folder under ``<log_dir>/runs/<run_name>/`` of this config that ``ckpt_path=
    auto`` continues: an unfinished run with a checkpoint to resume from (killed, interrupted,
    failed), or a finished one, which leaves nothing to do (a job requeued by a signal that came
    after its run had finished is not trained again). Diverged runs are passed over."""
    root = Path(cfg.paths.log_dir) / "runs" / str(cfg.run_name)
    want = config_hash(cfg)

    def candidate(d: Path) -> bool:
        status = read_status(d)
        if status.get("config_hash") != want:
            return False
        if status.get("status") == "finished":
            return (d / "metrics.json").is_file()
        return status.get("status") not in (None, "diverged") and (d / LAST).is_file()

    def last_active(d: Path) -> float:
        return max(p.stat().st_mtime for p in (d / STATUS_FILE, d / LAST) if p.is_file())

    return max(filter(candidate, root.glob("*")), key=last_active, default=None)


class OutputCheck(HydraCallback):
    """Hydra callback (``conf/hydra/default.yaml``): the run or multirun folder Hydra is about
    to make is checked first, so that an ``outputs`` that is a file or not writable is one line
    naming the config key and exit status 2, not Hydra's traceback of its own mkdir."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, str(config.hydra.run.dir), "paths.output_dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, str(config.hydra.sweep.dir), "paths.multirun_dir")

    @staticmethod
    def _check(config: DictConfig, folder: str, key: str) -> None:
        log_dir = Path(str(config.paths.log_dir)).absolute()
        if log_dir in (Path(folder).absolute(), *Path(folder).absolute().parents):
            key = "paths.log_dir"  # the default layout: the log folder is what to change
        try:
            creatable_dir(folder, key)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
