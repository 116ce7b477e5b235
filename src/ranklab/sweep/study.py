"""The study in its storage: creating it once, the lock that keeps the trial count exact,
samplers, pruners, and counting the trials that use up the budget.

Why RDB storage (SQLite by default, any SQLAlchemy URL otherwise) rather than Optuna's journal
file: only RDB storage has heartbeats, which let a study notice a worker that was killed
mid-trial, fail that trial and queue it again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import sqlite3
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from ranklab.errors import ConfigError
from ranklab.sweep.spec import SweepSpec

warnings.filterwarnings("ignore", category=ExperimentalWarning)


def backend(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).get_backend_name()


def safe_url(url: str) -> str:
    """The storage URL without its password, for logs and files."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def make_storage(spec: SweepSpec, create_tables: bool) -> RDBStorage:
    """An ``RDBStorage`` with heartbeats; a heartbeat-stale trial is failed and re-queued
    (same parameters) up to ``storage.max_retry`` times."""
    st = spec.conf.storage
    url = spec.storage_url
    kind = backend(url)
    engine_kwargs: dict[str, Any] = {}
    if kind == "sqlite":
        db = Path(sqlite_path(url))
        db.parent.mkdir(parents=True, exist_ok=True)
        if create_tables:
            # WAL: readers (dashboard, idle workers) do not block the writer
            with contextlib.closing(sqlite3.connect(db, timeout=60)) as con:
                con.execute("PRAGMA journal_mode=WAL")
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True
    with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.9
        warnings.simplefilter("ignore", ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=int(st.max_retry))
        return RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=int(st.heartbeat_interval),
            grace_period=int(st.grace_period),
            heartbeat_stale_trial_callback=retry,
            skip_table_creation=not create_tables,
        )


def sqlite_path(url: str) -> str:
    from sqlalchemy.engine import make_url

    return str(make_url(url).database)


class StudyLock:
    """A mutex shared by every worker of a study: a ``flock`` on a file next to a SQLite
    database (workers on one machine), a PostgreSQL advisory lock (workers anywhere). The OS or
    the server drops it when its holder dies, so a killed worker never leaves it taken.

    Other databases get a file lock in the sweep directory: exact for workers on one machine;
    workers on several machines may then overshoot ``trials`` by up to one trial each.
    """

    def __init__(self, spec: SweepSpec, name: str) -> None:
        self.key = _lock_key(f"ranklab-sweep:{name}")
        self.kind = backend(spec.storage_url)
        self._held = False
        self._fd: int | None = None
        self._conn: Any = None
        if self.kind == "postgresql":
            import sqlalchemy
            from sqlalchemy.pool import NullPool

            self._engine = sqlalchemy.create_engine(spec.storage_url, poolclass=NullPool)
        else:
            safe = re.sub(r"[^\w.-]", "_", name)
            if self.kind == "sqlite":
                db = Path(sqlite_path(spec.storage_url))
                path = db.parent / f"{db.name}.{safe}.lock"
            else:
                path = spec.dir / f".{safe}.lock"
            path.parent.mkdir(parents=True, exist_ok=True)
            self._path = path

    def acquire(self) -> None:
        if self._held:
            return
        if self.kind == "postgresql":
            import sqlalchemy

            if self._conn is None:
                conn = self._engine.connect()
                self._conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            self._conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": self.key})
        else:
            if self._fd is None:
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        self._held = True

    def release(self) -> None:
        """Release if held (safe to call twice)."""
        if not self._held:
            return
        self._held = False
        if self.kind == "postgresql":
            import sqlalchemy

            self._conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
        else:
            assert self._fd is not None
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self.release()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()


def _lock_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def init_study(spec: SweepSpec) -> optuna.Study:
    """Create the tables and the study once, under a lock (two processes creating the tables
    of a fresh database race, and one crashes), or load it. Refuses a study made for another
    metric or direction, or whose trials ran on another base config (the experiment and the
    ``fixed`` overrides): their results would be ranked, and sampled from, together."""
    base_hash, base = base_config(spec)
    lock = StudyLock(spec, "init")
    try:
        with lock.held():
            storage = make_storage(spec, create_tables=True)
            study = optuna.create_study(
                storage=storage,
                study_name=spec.study_name,
                direction=str(spec.conf.direction),
                load_if_exists=True,
            )
            attrs = study.user_attrs
            if "metric" not in attrs:
                study.set_user_attr("metric", spec.metric)
                study.set_user_attr("params", dict(spec.conf.params))
                study.set_user_attr("workers_started", 0)
            elif attrs["metric"] != spec.metric and not study.get_trials(
                deepcopy=False, states=(TrialState.COMPLETE,)
            ):  # nothing was scored on the old metric (e.g. a misspelt one): take the new one
                study.set_user_attr("metric", spec.metric)
            held = attrs.get("base_config_hash")
            # any trial binds, a running one too (another worker's, on the held config)
            started = study.get_trials(deepcopy=False)
            if held is None or (held != base_hash and not started):
                # a new study, one from before this record, or one with no trial yet
                study.set_user_attr("base_config_hash", base_hash)
                study.set_user_attr("base_config", base)
            check_matches(study, spec, base_hash, base, "choose another study_name (or dir)")
            with warnings.catch_warnings():  # "experimental" since Optuna 3.2
                warnings.simplefilter("ignore", ExperimentalWarning)
                study.set_metric_names([spec.metric])  # the dashboard shows it: not "Objective 0"
            return study
    finally:
        lock.close()


def base_config(spec: SweepSpec) -> tuple[str, dict[str, Any]]:
    """The hash and the result config of the sweep's base config (the experiment and the
    ``fixed`` overrides, no sampled parameter), as a study records them."""
    from ranklab.config import compose, config_hash, result_config

    base_cfg = compose(spec.base_overrides())
    return config_hash(base_cfg), result_config(base_cfg)


def check_matches(
    study: optuna.Study,
    spec: SweepSpec,
    base_hash: str,
    base: dict[str, Any],
    remedy: str,
) -> None:
    """Refuse a ``spec`` whose metric, direction or base config (the experiment and the
    ``fixed`` overrides) is not the study's own: its trials would be ranked, sampled from, or
    reported under another name. ``remedy``: what the message tells the user to do."""
    from ranklab.rundir import config_differences

    attrs = study.user_attrs
    where = f"study '{spec.study_name}' in {safe_url(spec.storage_url)}"
    if attrs.get("metric", spec.metric) != spec.metric:
        raise ConfigError(
            "metric", f"{where} optimises {attrs['metric']}, not {spec.metric}; {remedy}"
        )
    if study.direction.name.lower() != spec.conf.direction:
        raise ConfigError(
            "direction", f"{where} was created to {study.direction.name.lower()}; {remedy}"
        )
    held = attrs.get("base_config_hash")
    if held is not None and held != base_hash:
        diff = config_differences(base, attrs.get("base_config") or {})
        raise ConfigError(
            "fixed", f"{where} ran its trials on another base config ({diff}); {remedy}"
        )


def make_sampler(spec: SweepSpec, seed: int | None) -> optuna.samplers.BaseSampler:
    conf = spec.conf.sampler
    if conf.name == "grid":
        return optuna.samplers.GridSampler({p.key: p.grid() for p in spec.params}, seed=seed)
    if conf.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # constant_liar: parallel workers avoid proposing what a running trial is already trying
    return optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=int(conf.n_startup_trials), constant_liar=True
    )


def make_pruner(spec: SweepSpec) -> optuna.pruners.BasePruner:
    conf = spec.conf.pruner
    if conf.name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=int(conf.n_startup_trials), n_warmup_steps=int(conf.n_warmup_steps)
        )
    if conf.name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=int(conf.min_resource), reduction_factor=int(conf.reduction_factor)
        )
    return optuna.pruners.NopPruner()


def grid_size(spec: SweepSpec) -> int | None:
    if spec.conf.sampler.name != "grid":
        return None
    n = 1
    for p in spec.params:
        n *= len(p.grid())
    return n


def worker_seed(seed: int | None, slot: int) -> int | None:
    """The first worker of a study uses the configured seed as it is (one worker: the sweep is
    reproducible); later workers, and reruns, derive their own so they do not repeat it."""
    if seed is None or slot == 0:
        return seed
    import numpy as np

    return int(np.random.SeedSequence([int(seed), slot]).generate_state(1)[0])


@dataclass
class Budget:
    """How far a study is: ``used`` trials count towards ``trials`` (a trial that went stale
    and was re-queued is replaced by its retry and no longer counts)."""

    used: int
    running: int
    waiting: int

    def remaining(self, total: int) -> int:
        return total - self.used


def retry_of(trial: FrozenTrial) -> int | None:
    """The trial a queued retry repeats (the first of a chain): what
    ``RetryHeartbeatStaleTrialCallback.retried_trial_number`` returns, read from the system
    attribute it writes, without its experimental-API warning."""
    return trial.system_attrs.get("failed_trial")


def superseded(trials: list[FrozenTrial]) -> set[int]:
    """Numbers of trials that were retried (their retry counts instead): the callback's
    ``retry_history`` system attribute."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", [])}


def budget(study: optuna.Study) -> Budget:
    trials = study.get_trials(deepcopy=False)
    gone = superseded(trials)
    return Budget(
        used=sum(t.number not in gone for t in trials),
        running=sum(t.state == TrialState.RUNNING for t in trials),
        waiting=sum(t.state == TrialState.WAITING for t in trials),
    )


def fail_stale(study: optuna.Study) -> None:
    """Fail trials whose heartbeat stopped (and re-queue them), as ``optimize`` does."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
