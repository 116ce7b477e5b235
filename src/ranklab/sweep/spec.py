"""The sweep config: ``conf/sweep/<name>.yaml`` (or any YAML path), command-line overrides, and
the checks that run before any trial.

A sweep config is its own primary config, loaded with OmegaConf onto the typed schema below, so
that a misspelt sweep key fails naming it. Command-line arguments whose first component is a
sweep key (``trials=4``, ``storage.url=...``, ``params.task.lr=interval(1e-4,1e-2)``) change
the sweep; every other argument (``paths.data_dir=../shared/data``) is a fixed training override
added to ``fixed`` and applied to every trial.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ranklab.config import conf_dir, yaml_error
from ranklab.errors import ConfigError
from ranklab.sweep.space import Param, parse_param

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("none", "median", "hyperband")
DIRECTIONS = ("maximize", "minimize")
# Added to every trial by the driver (not part of the experiment, so not in the best config).
DRIVER_KEYS = ("paths.output_dir", "trainer.enable_progress_bar", "print_summary")


@dataclass
class SamplerConf:
    """``tpe`` (seeded; ``n_startup_trials`` random trials first), ``random`` or ``grid``."""

    name: str = "tpe"
    seed: int | None = 0
    n_startup_trials: int = 10


@dataclass
class PrunerConf:
    """``median`` or ``hyperband`` (fed the metric after every validation epoch), or ``none``."""

    name: str = "median"
    n_startup_trials: int = 5  # median: complete trials before any pruning
    n_warmup_steps: int = 1  # median: epochs a trial always gets
    min_resource: int = 1  # hyperband: epochs in the smallest bracket
    reduction_factor: int = 3  # hyperband


@dataclass
class StorageConf:
    """Where the study lives. ``url``: any SQLAlchemy URL (``postgresql://user:pw@host/db``);
    null: ``sqlite:///<dir>/study.db``. A running trial records a heartbeat every
    ``heartbeat_interval`` s; one silent for ``grace_period`` s is failed and retried up to
    ``max_retry`` times."""

    url: str | None = None
    heartbeat_interval: int = 10
    grace_period: int = 60
    max_retry: int = 1


@dataclass
class SweepConf:
    """Schema of ``conf/sweep/*.yaml``."""

    experiment: str | None = None  # base experiment: conf/experiment/<name>.yaml, or null
    fixed: list[str] = field(default_factory=list)  # training overrides applied to every trial
    params: dict[str, Any] = field(default_factory=dict)  # config key -> sweep expression
    metric: str = "val/auc"
    direction: str = MISSING
    trials: int = 20  # total over all workers (and machines)
    sampler: SamplerConf = field(default_factory=SamplerConf)
    pruner: PrunerConf = field(default_factory=PrunerConf)
    storage: StorageConf = field(default_factory=StorageConf)
    study_name: str | None = None  # default: the sweep's name
    dir: str | None = None  # default: outputs/sweeps/<study_name>


SWEEP_KEYS = tuple(f.name for f in dataclasses.fields(SweepConf))


@dataclass
class SweepSpec:
    """A loaded, checked sweep: everything a worker needs."""

    name: str
    conf: DictConfig  # the SweepConf, with study_name, dir and storage.url filled in
    params: list[Param]

    @property
    def study_name(self) -> str:
        return str(self.conf.study_name)

    @property
    def dir(self) -> Path:
        return Path(self.conf.dir)

    @property
    def storage_url(self) -> str:
        return str(self.conf.storage.url)

    @property
    def metric(self) -> str:
        return str(self.conf.metric)

    @property
    def trials(self) -> int:
        return int(self.conf.trials)

    def base_overrides(self) -> list[str]:
        """The base experiment and the fixed overrides, as Hydra overrides."""
        exp = [f"experiment={self.conf.experiment}"] if self.conf.experiment else []
        return exp + [str(o) for o in self.conf.fixed]

    def trial_overrides(self, values: dict[str, Any], run_dir: Path) -> list[str]:
        """Every override of one trial: base, fixed, sampled values, its own run directory."""
        sampled = [p.override(values[p.key]) for p in self.params]
        return [
            *self.base_overrides(),
            *sampled,
            f"paths.output_dir={quote(str(run_dir))}",
            "trainer.enable_progress_bar=false",
            "print_summary=false",
        ]

    def to_yaml(self) -> str:
        return OmegaConf.to_yaml(self.conf)


def quote(s: str) -> str:
    """A Hydra override value quoted as a string (paths may hold '=', ',', spaces)."""
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def sweep_path(name: str) -> Path:
    """``synthetic_fast`` -> ``conf/sweep/synthetic_fast.yaml``; a path to a YAML file as is."""
    if name.endswith((".yaml", ".yml")) or os.sep in name:
        path = Path(name)
    else:
        path = conf_dir() / "sweep" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (conf_dir() / "sweep").glob("*.yaml"))
        raise ConfigError("sweep", f"no sweep config {path} (known: {', '.join(known)})")
    return path


def load_spec(name: str, overrides: Sequence[str] = ()) -> SweepSpec:
    """Load a sweep config by name (or path), apply command-line overrides, parse the search
    space. Errors name the key. Composition checks are in :func:`check_spec`."""
    path = sweep_path(name)
    try:
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except yaml.YAMLError as e:
        raise yaml_error(Path(path), e, "sweep") from None
    if not isinstance(raw, dict):
        raise ConfigError("sweep", f"{path}: expected a mapping of sweep keys")
    params = raw.pop("params", None) or {}
    if not isinstance(params, dict):
        raise ConfigError("params", "expected a mapping: config key -> sweep expression")
    conf = _typed(raw, where=str(path))

    sweep_args, train_args = [], []
    for arg in overrides:
        key = arg.split("=", 1)[0].lstrip("+~")
        top = key.split(".", 1)[0]
        if top == "params":
            _param_override(params, arg)
        elif top in SWEEP_KEYS:
            sweep_args.append(arg)
        else:
            train_args.append(arg)
    for arg in sweep_args:
        if "=" not in arg or arg.startswith(("~", "+")):
            raise ConfigError(arg.lstrip("+~").split("=")[0], "expected key=value")
        try:
            conf = OmegaConf.merge(conf, OmegaConf.from_dotlist([arg]))
        except OmegaConfBaseException as e:
            raise ConfigError(arg.split("=", 1)[0], _omegaconf_reason(e)) from None
    conf.fixed = [*conf.fixed, *train_args]
    for o in conf.fixed:
        if "=" not in str(o) or str(o).startswith("~"):
            raise ConfigError("fixed", f"'{o}': expected key=value (deletions are not supported)")

    stem = path.stem
    conf.study_name = conf.study_name or stem
    conf.dir = str(Path(conf.dir or Path("outputs") / "sweeps" / conf.study_name).absolute())
    if conf.storage.url is None:
        conf.storage.url = f"sqlite:///{Path(conf.dir) / 'study.db'}"
    _check_values(conf)
    conf.storage.url = with_driver(str(conf.storage.url))
    parsed = [parse_param(str(k), v) for k, v in params.items()]
    conf.params = {p.key: p.expr for p in parsed}
    if conf.sampler.name == "grid":
        for p in parsed:
            p.grid()  # raises for intervals
    return SweepSpec(name=stem, conf=conf, params=parsed)


def spec_from_conf(resolved: DictConfig) -> SweepSpec:
    """Rebuild a spec from its resolved config (:meth:`SweepSpec.to_yaml`), for workers."""
    raw = OmegaConf.to_container(resolved, resolve=False)
    assert isinstance(raw, dict)
    params = raw.pop("params", None) or {}
    conf = _typed(raw, where="the resolved sweep config")
    conf.params = params
    name = Path(str(conf.dir)).name
    return SweepSpec(name=name, conf=conf, params=[parse_param(k, v) for k, v in params.items()])


def _typed(raw: dict[str, Any], where: str) -> DictConfig:
    schema = OmegaConf.structured(SweepConf)
    try:
        conf = OmegaConf.merge(schema, raw)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "sweep"
        raise ConfigError(str(key), f"{_omegaconf_reason(e)} (in {where})") from None
    OmegaConf.set_struct(conf, True)
    return conf  # type: ignore[return-value]


def _omegaconf_reason(e: OmegaConfBaseException) -> str:
    msg = str(e).strip().splitlines()[0]
    if "not in struct" in msg or ("Key '" in msg and "not" in msg):
        return f"not a sweep key (sweep keys: {', '.join(SWEEP_KEYS)}); {msg}"
    return msg


def _param_override(params: dict[str, Any], arg: str) -> None:
    """``params.task.lr=interval(...)`` sets a parameter; ``~params.task.lr`` removes one."""
    if arg.startswith("~"):
        key = arg[1:].split("=", 1)[0][len("params.") :]
        if key not in params:
            raise ConfigError(f"params.{key}", "cannot remove: not a parameter of this sweep")
        del params[key]
        return
    key, _, value = arg.lstrip("+").partition("=")
    if not value:
        raise ConfigError(key, "expected params.<config key>=<sweep expression>")
    params[key[len("params.") :]] = value


def _check_values(conf: DictConfig) -> None:
    if OmegaConf.is_missing(conf, "direction"):
        raise ConfigError("direction", f"required: one of {DIRECTIONS}")
    if conf.direction not in DIRECTIONS:
        raise ConfigError("direction", f"must be one of {DIRECTIONS}, got '{conf.direction}'")
    split, _, name = str(conf.metric).partition("/")
    if split != "val" or not name:
        raise ConfigError(
            "metric",
            f"expected val/<metric> (e.g. val/auc), got '{conf.metric}': trials are compared "
            "on the validation split; the test split stays unseen until the end",
        )
    if conf.trials < 1:
        raise ConfigError("trials", f"must be at least 1, got {conf.trials}")
    if conf.sampler.name not in SAMPLERS:
        raise ConfigError("sampler.name", f"must be one of {SAMPLERS}, got '{conf.sampler.name}'")
    if conf.pruner.name not in PRUNERS:
        raise ConfigError("pruner.name", f"must be one of {PRUNERS}, got '{conf.pruner.name}'")
    st = conf.storage
    if st.heartbeat_interval < 1:
        raise ConfigError("storage.heartbeat_interval", "must be a positive number of seconds")
    if st.grace_period <= st.heartbeat_interval:
        raise ConfigError(
            "storage.grace_period",
            f"must exceed heartbeat_interval ({st.heartbeat_interval} s), got {st.grace_period}",
        )
    if st.max_retry < 0:
        raise ConfigError("storage.max_retry", "must be 0 or more")
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(str(st.url))
    except ArgumentError as e:
        raise ConfigError("storage.url", f"not an SQLAlchemy URL: {e}") from None
    kind = url.get_backend_name()
    if kind not in ("sqlite", "postgresql"):  # the locks (flock, advisory) exist for these
        raise ConfigError(
            "storage.url",
            f"a {kind} database: the sweep's storage is SQLite (one machine) or PostgreSQL "
            "(postgresql://user:password@host:5432/db)",
        )
    if kind == "sqlite" and url.database in (None, "", ":memory:"):
        raise ConfigError("storage.url", "an in-memory SQLite database cannot hold a study")


def with_driver(url: str) -> str:
    """``postgresql://`` names no driver, and SQLAlchemy 2.1 then wants psycopg 3; use the
    driver that is installed (psycopg2-binary is in the lock)."""
    import importlib.util

    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.drivername != "postgresql":
        return url
    for module in ("psycopg", "psycopg2"):
        if importlib.util.find_spec(module) is not None:
            return u.set(drivername=f"postgresql+{module}").render_as_string(hide_password=False)
    return url


def check_spec(spec: SweepSpec) -> None:
    """Compose the training config as the trials will, before any trial runs: a misspelt base
    override, parameter path or config-group option fails here, naming the key."""
    from ranklab.config import compose_checked
    from ranklab.train import check_config

    def fails(overrides: list[str]) -> str | None:
        try:
            check_config(compose_checked(overrides))
        except ConfigError as e:
            return str(e)
        return None

    base = spec.base_overrides()
    if (reason := fails(base)) is not None:
        for i in range(len(base)):  # find the first override that breaks it
            if (why := fails(base[: i + 1])) is not None:
                key = base[i].split("=", 1)[0].lstrip("+")
                if key == "experiment":
                    raise ConfigError(key, why)
                raise ConfigError(
                    key,
                    f"'{base[i]}' is not a sweep setting ({', '.join(SWEEP_KEYS)}) and, as a "
                    f"fixed training override, does not compose: {why}",
                )
        raise ConfigError("fixed", reason)
    for p in spec.params:
        for text in _values_to_check(p):
            if (why := fails([*base, f"{p.key}={text}"])) is not None:
                raise ConfigError(f"params.{p.key}", f"{p.key}={text} does not compose: {why}")
    together = [*base, *(f"{p.key}={p.first()}" for p in spec.params)]
    if spec.params and (why := fails(together)) is not None:
        raise ConfigError("params", f"the parameters do not compose together: {why}")


def _values_to_check(p: Param) -> list[str]:
    # a config-group option must exist for every choice; other keys need one value to show
    # that the key exists
    if p.kind == "choice" and "." not in p.key and (conf_dir() / p.key).is_dir():
        return list(p.texts)
    return [p.first()]
