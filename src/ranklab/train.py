"""``train(cfg) -> metrics``: one experiment from a composed config. The CLI is a thin wrapper.

ranklab-train model=dcnv2 data=frappe_x1 paths.data_dir=../shared/data seed=7
python -m ranklab.train experiment=frappe_x1_deepfm
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import math
import os
import signal
import sys
import time
import traceback
import warnings
from collections.abc import Collection, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import MLFlowLogger
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from ranklab.callbacks import EpochLog, ProgressBar, Resumable, Throughput
from ranklab.config import (
    closest,
    compose_checked,
    conf_dir,
    config_hash,
    is_smoke,
    model_name,
    result_config,
    seeded_keys,
    to_plain,
    train_groups,
)
from ranklab.console import note_error, print_summary, run_log
from ranklab.errors import (
    ConfigError,
    Diverged,
    Interrupted,
    RanklabError,
    StopRequested,
    whole_number,
)
from ranklab.loggers import (
    TRACKERS_FILE,
    CSVLogger,
    RanklabMLFlowLogger,
    close_trackers,
    continue_kwargs,
    log_final_metrics,
    tracker_runs,
)
from ranklab.rundir import (
    RunIdentity,
    continued_trackers,
    global_step,
    guard_run_dir,
    hold_run_dir,
    rank_zero,
    read_status,
    resume_checkpoint,
    run_to_continue,
    write_status,
)
from ranklab.utils import atomic_write_json, atomic_write_text, git_commit, writable_dir
from ranklab.warmstart import WarmStart, init_checkpoint, load_initial_weights, recorded

log = logging.getLogger("ranklab")

# Lightning's advice about DataLoader workers does not apply: batches are slices of tensors.
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*LeafSpec.*")
warnings.filterwarnings("ignore", ".*overridden `transfer_batch_to_device`.*")


def _quiet_lightning() -> None:
    for name in (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.pytorch.accelerators.cuda",
        "lightning.fabric",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)


def instantiate_config(conf: Any, *args: Any, **kwargs: Any) -> Any:
    """Hydra's ``instantiate``, except that a user error raised in a constructor (a
    :class:`RanklabError` naming the config key) arrives as itself, not wrapped in Hydra's
    InstantiationException: the CLI prints it in one line and exits with status 2."""
    from hydra.errors import InstantiationException

    try:
        return instantiate(conf, *args, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        while cause is not None and not isinstance(cause, RanklabError):
            cause = cause.__cause__
        if cause is None:
            raise
        raise cause from None


# arguments build() supplies itself rather than the config
MODEL_PASSED = ("schema", "compile")
TASK_PASSED = ("model", "schema", "hparams", "optimizer", "scheduler")
TRAINER_PASSED = (
    "callbacks",
    "logger",
    "default_root_dir",
    "enable_progress_bar",
    "log_every_n_steps",
    "sync_batchnorm",
)


def check_arguments(conf: Any, key: str, passed: tuple[str, ...] = ()) -> None:
    """Fail naming ``key.<name>`` when a config node gives an argument its ``_target_`` does
    not take (``+model.dropuot=0.1``), before any data is read; ``passed`` are the arguments
    the code supplies itself. Targets that take ``**kwargs`` are not checked."""

    from hydra.utils import get_method

    target = conf.get("_target_") if conf is not None else None
    if not target:
        return
    try:
        obj = get_method(target)
    except Exception as e:
        raise ConfigError(f"{key}._target_", f"cannot import '{target}': {e}") from None
    # a class whose __init__ forwards **kwargs to its base takes the base's arguments too
    params: dict[str, inspect.Parameter] = {}
    hints: dict[str, Any] = {}
    for fn in (
        [c.__init__ for c in obj.__mro__ if "__init__" in vars(c)]
        if inspect.isclass(obj)
        else [obj]
    ):
        own = inspect.signature(fn).parameters
        params.update(own)
        hints = {**_type_hints(fn), **hints}
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in own.values()):
            break
    else:
        _check_types(conf, key, hints, passed)
        return
    _check_types(conf, key, hints, passed)
    extra = [k for k in conf if not str(k).startswith("_") and k not in params]
    extra = [k for k in extra if k not in passed]
    if extra:
        named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        takes = sorted(
            k for k, p in params.items() if p.kind in named and k not in passed and k != "self"
        )
        raise ConfigError(
            f"{key}.{extra[0]}",
            f"{target.rsplit('.', 1)[-1]} takes no argument '{extra[0]}' (it takes {takes})",
        )


# torch's own thread count, as this process started: what threads=null runs with, whatever
# an earlier run in the same process set
DEFAULT_THREADS = torch.get_num_threads()

# the groups whose entries are each instantiated (a name -> config mapping), and what they hold
NAMED_GROUPS = {"callbacks": "Lightning callback", "logger": "logger"}


def check_named_groups(cfg: DictConfig) -> None:
    """Fail naming ``callbacks.<name>`` / ``logger.<name>`` when an entry is neither null (the
    entry turned off) nor a config with a ``_target_``, or gives an argument its target does
    not take: one line before any data is read, not Hydra's "Cannot instantiate config of
    type int" after it."""
    for group, what in NAMED_GROUPS.items():
        node = cfg.get(group)
        if node is None:
            continue
        if not isinstance(node, DictConfig):
            raise ConfigError(group, f"must map names to {what} configs (or be null), got {node!r}")
        for name in node:
            key = f"{group}.{name}"
            conf = node[name]
            if conf is None:
                continue
            if not isinstance(conf, DictConfig) or not conf.get("_target_"):
                raise ConfigError(
                    key,
                    f"must be a {what} config with a _target_, or null to turn it off; got "
                    f"{OmegaConf.to_container(conf) if isinstance(conf, DictConfig) else conf!r}",
                )
            check_arguments(conf, key)


@functools.lru_cache(maxsize=4)
def _known_keys(root: Path) -> dict[str, frozenset[str]]:
    """The keys of the config's plain sections, as the config folder ``root`` defines them:
    the top level (``train.yaml``'s keys and its groups), ``tracking``, and ``paths`` (every
    ``paths/*.yaml``'s). Read once a process: studies check every run."""
    import yaml

    main = yaml.safe_load((root / "train.yaml").read_text()) or {}
    groups = set(train_groups())
    for entry in main.get("defaults") or []:
        if isinstance(entry, dict):
            groups |= {str(k).split()[-1] for k in entry}
    paths: set[str] = set()
    for f in sorted((root / "paths").glob("*.yaml")):
        paths |= {str(k) for k in (yaml.safe_load(f.read_text()) or {}) if k != "defaults"}
    return {
        "": frozenset({str(k) for k in main if k != "defaults"} | groups),
        "tracking": frozenset(str(k) for k in main.get("tracking") or {}),
        "paths": frozenset(paths),
    }


def check_unread_keys(
    cfg: DictConfig, elsewhere: Sequence[str] = (), only: Collection[str] | None = None
) -> None:
    """Fail naming a key added to the parts of the config read as plain values (the top
    level, ``paths``, ``tracking``) that nothing reads: not one of ranklab's keys, and no
    interpolation refers to it. ``+sede=3`` or ``+paths.dta_dir=x`` would otherwise run with
    the default, silently. (Keys of constructors' configs are checked by
    :func:`check_arguments`.) ``elsewhere``: more text that may refer to keys (Hydra's own
    overrides, when the config is composed before Hydra runs). ``only``: check these keys
    alone (``ranklab-evaluate``'s additions to a run's saved config, whose other keys may
    predate this version)."""
    import re

    known = _known_keys(conf_dir())
    texts: list[str] = [t for t in elsewhere if "${" in t]

    def strings(node: Any) -> None:
        if isinstance(node, dict):
            for v in node.values():
                strings(v)
        elif isinstance(node, list):
            for v in node:
                strings(v)
        elif isinstance(node, str) and "${" in node:
            texts.append(node)

    strings(OmegaConf.to_container(cfg, resolve=False))
    try:  # the run folder's settings may refer to a key of the user's (hydra.run.dir=${x})
        from hydra.core.hydra_config import HydraConfig

        strings(OmegaConf.to_container(HydraConfig.get(), resolve=False))
    except ValueError:  # not under ranklab-train's Hydra
        pass
    for section, names in known.items():
        node = OmegaConf.select(cfg, section) if section else cfg
        if not isinstance(node, DictConfig) or (section and section not in cfg):
            continue
        for name in node:
            path = f"{section}.{name}" if section else str(name)
            if str(name) in names or (only is not None and path not in only):
                continue
            refers = re.compile(r"(?<![\w.])" + re.escape(path) + r"(?!\w)")
            if any(refers.search(t) for t in texts):
                continue
            near = closest(str(name), sorted(names))
            hint = f"did you mean '{section + '.' if section else ''}{near}'? " if near else ""
            raise ConfigError(
                path,
                f"is not a key of ranklab's config and nothing refers to it ({hint}a key of "
                f"your own is for interpolations: ${{{path}}})",
            )


def check_config(cfg: DictConfig, elsewhere: Sequence[str] = ()) -> None:
    """The checks on a composed config that need no data: keys nothing reads, the callbacks'
    and loggers' entries."""
    check_resolves(cfg)
    check_unread_keys(cfg, elsewhere)
    check_named_groups(cfg)


def check_resolves(cfg: DictConfig) -> None:
    """Fail naming the key whose interpolation does not resolve (``seed=${sede}``, an
    environment variable that is not set), before anything reads it."""
    from omegaconf.errors import OmegaConfBaseException

    try:
        OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as e:
        why = " ".join(str(e).splitlines()[0].split()) if str(e) else type(e).__name__
        raise ConfigError(str(getattr(e, "full_key", "") or "config"), why) from None


def _type_hints(fn: Any) -> dict[str, Any]:
    """A function's resolved annotations; empty when they cannot be resolved."""
    import typing

    try:
        return typing.get_type_hints(inspect.unwrap(fn))
    except Exception:  # a name only a type checker sees, a C function: nothing to check
        return {}


def _fits(value: Any, hint: Any) -> bool | None:
    """Whether a config value fits a plain annotation (int, float, bool, str, unions of them
    and None); None when the annotation says more than these (lists, tensors, literals)."""
    import types
    import typing

    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        fits = [_fits(value, h) for h in typing.get_args(hint)]
        return True if any(fits) else None if None in fits else False
    return None


def _describe(hint: Any) -> str:
    import types
    import typing

    names = {int: "a whole number", float: "a number", bool: "true or false", str: "a string"}
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        parts = [h for h in typing.get_args(hint) if h is not type(None)]
        shown = " or ".join(names.get(h, getattr(h, "__name__", str(h))) for h in parts)
        return shown + (" or null" if len(parts) < len(typing.get_args(hint)) else "")
    return names.get(hint, str(hint))


def _check_types(conf: Any, key: str, hints: dict[str, Any], passed: tuple[str, ...]) -> None:
    """Fail naming ``key.<name>`` on a value its target's annotation rules out
    (``data.batch_size=abc``, ``model.dropout=high``): one line now, not a TypeError deep in
    torch after the data is read."""
    for name in conf:
        name = str(name)
        if name.startswith("_") or name in passed or name not in hints:
            continue
        try:
            value = conf[name]
        except Exception:  # an interpolation that does not resolve: Hydra says so itself
            continue
        if isinstance(value, DictConfig | ListConfig) or _fits(value, hints[name]) is not False:
            continue
        raise ConfigError(f"{key}.{name}", f"must be {_describe(hints[name])}, got {value!r}")


def check_model_values(conf: Any, key: str = "model") -> None:
    """Fail naming ``model.<arg>`` on values no model takes, before any data is read (they
    would end in a torch traceback, or, like a 0-wide embedding, train nothing): a dropout
    outside [0, 1), a width (``embedding_dim``, ``*_units``, ``*_dim``) below 1, a count
    (``num_*``) below 1."""

    def values(v: Any) -> list[Any]:
        return list(v) if isinstance(v, list | tuple | ListConfig) else [v]

    for name, v in (conf or {}).items():
        name = str(name)
        if name.startswith("_") or v is None or isinstance(v, bool | DictConfig):
            continue
        if name == "dropout" or name.endswith("_dropout"):
            bad = [x for x in values(v) if not (isinstance(x, int | float) and 0 <= x < 1)]
            if bad:
                raise ConfigError(f"{key}.{name}", f"must be in [0, 1), got {v}")
        elif name.endswith(("_units", "_dim")) or name.startswith("num_"):
            bad = [x for x in values(v) if not (isinstance(x, int) and x >= 1)]
            if bad:
                raise ConfigError(f"{key}.{name}", f"must be a whole number >= 1 (each), got {v}")


def auc_standard_error(positives: int, negatives: int, auc: float = 0.75) -> float:
    """Hanley & McNeil (1982): the standard error of an AUC estimated from this many positives
    and negatives, at the given AUC."""
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    var = (
        auc * (1 - auc) + (positives - 1) * (q1 - auc**2) + (negatives - 1) * (q2 - auc**2)
    ) / max(positives * negatives, 1)
    return math.sqrt(max(var, 0.0))


def rare_label_warnings(datamodule: Any, schema: Any, minimum: int = 100) -> list[str]:
    """One line per split and binary label with fewer than ``minimum`` positives (or one class
    only): validation AUC over 28 clicks picks epochs by noise, silently otherwise."""
    lines = []
    for split in ("train", "val", "test"):
        labels = datamodule.labels(split)
        for spec in schema.labels:
            if spec.kind != "binary" or spec.name not in labels:
                continue
            y = labels[spec.name]
            if spec.condition is not None and spec.condition in labels:
                y = y[labels[spec.condition] == 1]
            pos, n = int(y.sum()), int(y.numel())
            if pos >= minimum and n - pos >= minimum:
                continue
            if pos == 0 or pos == n:
                what = f"only {'positives' if pos else 'negatives'}: AUC is undefined"
            else:
                se = auc_standard_error(pos, n - pos)
                what = f"{pos:,} positives of {n:,}: AUC is uncertain by about ±{se:.3f} (1 s.e.)"
            hint = "; monitor the log loss instead (task.monitor=val/logloss task.mode=min)"
            lines.append(
                f"the {split} split has {what} for '{spec.name}'{hint if split == 'val' else ''}"
            )
    return lines


def grouped_auc_warnings(datamodule: Any, schema: Any) -> list[str]:
    """One line per evaluation split and binary label where no group (user) has both classes:
    grouped AUC is then undefined (null in metrics.json), e.g. under a leave-last-out split,
    which keeps one row per user in validation and test."""
    import numpy as np

    from ranklab.data.dataset import GROUP_KEY

    lines = []
    for split in ("val", "test"):
        group = datamodule.data.splits[split].get(GROUP_KEY)
        if group is None or len(group) == 0:
            continue
        group = np.asarray(group, dtype=np.int64)
        rows = np.bincount(group)
        labels = datamodule.labels(split)
        for spec in schema.labels:
            if spec.kind != "binary" or spec.name not in labels or spec.condition is not None:
                continue
            positives = np.bincount(group, weights=labels[spec.name].numpy())
            if ((positives > 0) & (positives < rows)).any():
                continue
            lines.append(
                f"the {split} split has no {schema.group or 'group'} with both classes for "
                f"'{spec.name}': grouped AUC (gauc) is undefined and reported as null"
                f"{' (one row per user: the leave-last-out split)' if rows.max() == 1 else ''}"
            )
    return lines


def check_monitor_defined(cfg: DictConfig, datamodule: Any, schema: Any) -> None:
    """An AUC monitored on a validation split whose labels hold one class is undefined: it could
    pick no best epoch (nor stop early), so the run fails before training, naming the fix."""
    monitor = str(OmegaConf.select(cfg, "task.monitor") or "")
    if not monitor.endswith("auc") or not monitor.startswith("val/"):
        return
    labels = datamodule.labels("val")
    for spec in schema.labels:
        if spec.kind != "binary" or spec.name not in labels or spec.condition is not None:
            continue
        if monitor not in ("val/auc", f"val/{spec.name}/auc"):
            continue
        y = labels[spec.name]
        positives = int(y.sum())
        if positives in (0, y.numel()):
            only = "positives" if positives else "negatives"
            raise ConfigError(
                "task.monitor",
                f"is {monitor}, but the val split has only {only} for '{spec.name}': its AUC is "
                f"undefined and cannot pick the best epoch; monitor the log loss "
                f"(task.monitor=val/logloss task.mode=min) or give a val split with both classes",
            )


def build(cfg: DictConfig, datamodule: Any | None = None) -> tuple[Any, Any, Any]:
    """Instantiate (datamodule, model, task) from a config; the data is prepared here.

    The model is built for the labels the task trains (``task.labels``, default all of the
    data's); the optimiser and lr schedule come from the ``optimizer`` and ``scheduler``
    groups (``_partial_`` targets the task completes with the parameters). A ``datamodule``
    already built from the same ``cfg.data`` is used as it is (benchmarks: a fresh model on
    data generated once)."""
    check_arguments(cfg.model, "model", passed=MODEL_PASSED)
    check_model_values(cfg.model)
    check_arguments(cfg.task, "task", passed=TASK_PASSED)
    check_arguments(cfg.get("optimizer"), "optimizer", passed=("params",))
    check_arguments(cfg.get("scheduler"), "scheduler", passed=("optimizer",))
    check_arguments(cfg.data, "data")
    if isinstance(cfg.data.get("source"), DictConfig):
        check_arguments(cfg.data.source, "data.source")
    if datamodule is None:
        datamodule = instantiate_config(cfg.data)
    datamodule.setup()
    schema = datamodule.schema.with_labels(OmegaConf.select(cfg, "task.labels"))
    for line in rare_label_warnings(datamodule, schema):
        log.warning(line)
    if OmegaConf.select(cfg, "task.grouped_metrics", default=False):  # ranking tasks
        for line in grouped_auc_warnings(datamodule, schema):
            log.warning(line)
    # _partial_: objects (schema, model) are passed to the constructor as they are, not
    # merged into the config first (Hydra would turn a dataclass into a DictConfig)
    model_cfg = OmegaConf.masked_copy(cfg.model, [k for k in cfg.model if k != "compile"])
    model = instantiate(model_cfg, _partial_=True, _convert_="all")(schema=schema)
    if cfg.model.get("compile"):  # torch.compile in place: state_dict keys stay as they are
        model.compile()
    training = {k: cfg.get(k) for k in ("optimizer", "scheduler")}
    hparams = {
        "model": to_plain(cfg.model),
        **{k: to_plain(v) for k, v in training.items()},
        "data": str(datamodule.name),
        "schema": schema.to_dict(),
        "seed": int(cfg.seed),
    }
    factories = {
        k: instantiate_config(v) if v and v.get("_target_") else None for k, v in training.items()
    }
    # _recursive_=False: per-label loss configs stay plain (the task instantiates them), so
    # they can go to checkpoints
    extra = {}
    if OmegaConf.select(cfg, "task.output_bias") == "base_rate":
        labels = datamodule.labels("train")
        extra["base_rates"] = {
            s.name: float(labels[s.name].mean())
            for s in schema.labels
            if s.kind == "binary" and s.condition is None and s.name in labels
        }
    task = instantiate(cfg.task, _partial_=True, _convert_="all", _recursive_=False)(
        model=model, schema=schema, hparams=hparams, **factories, **extra
    )
    return datamodule, model, task


def objective_metric(cfg: DictConfig) -> str | None:
    """The validation metric a sweeper optimises (``objective``), checked before training:
    ``val/<name>``, where the name may itself hold slashes (``val/full/ndcg@10``)."""
    objective = cfg.get("objective")
    if not objective:
        return None
    split, _, name = str(objective).partition("/")
    if split != "val" or not name:
        raise ConfigError(
            "objective",
            f"must name a validation metric, val/<metric> (the test split is never tuned on), "
            f"got '{objective}'",
        )
    return name


def objective_value(cfg: DictConfig, metrics: dict[str, Any]) -> float | None:
    """The value of ``objective`` in a finished run's validation metrics."""
    name = objective_metric(cfg)
    if name is None:
        return None
    if name not in metrics["val"]:
        raise ConfigError(
            "objective",
            f"'{cfg.objective}' is not a validation metric of this run "
            f"(it has val/{', val/'.join(sorted(metrics['val']))})",
        )
    return float(metrics["val"][name])


def _fill_tracking(cfg: DictConfig) -> None:
    """Default tracker names: group = the experiment (its seeds together, nothing else), name =
    the experiment, the seed and the start time (unique per run)."""
    tracking = cfg.get("tracking") or {}
    if tracking.get("name") and tracking.get("group"):
        return
    experiment = f"{cfg.run_name}-{config_hash(cfg, ignore_seed=True)[:8]}"
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    with open_dict(cfg):
        if "tracking" not in cfg:
            cfg.tracking = {"job_type": "train"}
        cfg.tracking.name = tracking.get("name") or f"{experiment}-seed{cfg.seed}-{stamp}"
        cfg.tracking.group = tracking.get("group") or experiment


def _batches_per_epoch(datamodule: Any) -> int:
    return max(1, math.ceil(len(datamodule.split("train")) / datamodule.batch_size))


def train(cfg: DictConfig, callbacks: list[L.Callback] | None = None) -> dict[str, Any]:
    """Train, restore the best checkpoint, validate and test; write ``metrics.json``.

    ``callbacks`` are added to those the config names (e.g. a sweep's pruning callback).
    Returns the metrics dict (also written to ``<paths.output_dir>/metrics.json``). Everything
    the run writes goes to ``paths.output_dir`` (config.yaml, train.log, metrics.json,
    checkpoints, logger files).
    """
    t_start = time.perf_counter()
    git_commit()  # the code this process runs: read once, before a long study's tree changes
    _quiet_lightning()
    objective_metric(cfg)  # a bad objective fails now, not after training
    check_config(cfg)
    run_dir = Path(cfg.paths.output_dir)
    # what the Trainer is given by train() itself, and need not be in the config
    check_arguments(cfg.trainer, "trainer", passed=TRAINER_PASSED)
    epochs = cfg.trainer.get("max_epochs")
    if epochs is not None and int(epochs) == 0:
        raise ConfigError(
            "trainer.max_epochs",
            "is 0: nothing would be trained, and the untrained model's metrics would be written "
            "as a result; give at least 1 (-1: until early stopping)",
        )
    if epochs is not None and int(epochs) < -1:
        raise ConfigError("trainer.max_epochs", f"must be >= 1, or -1 (no limit), got {epochs}")
    lr = OmegaConf.select(cfg, "optimizer.lr")
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, int | float) or lr <= 0):
        raise ConfigError("optimizer.lr", f"must be a number > 0, got {lr!r}")
    whole_number(cfg.get("seed"), "seed", 0)
    if cfg.get("threads") is not None:  # null or 0: torch's default
        whole_number(cfg.threads, "threads", 0)
    done = guard_run_dir(cfg, run_dir)  # before anything is read or written
    if done is not None:
        return done
    resume = resume_checkpoint(cfg, run_dir)
    # a resumed run's weights are in its own checkpoint: its warm start's source may be gone
    init = None if resume else init_checkpoint(cfg.get("init_from"))
    run_dir.mkdir(parents=True, exist_ok=True)
    with hold_run_dir(run_dir), run_log(run_dir):
        try:
            return _train(cfg, run_dir, list(callbacks or []), t_start, resume, init)
        except RanklabError as e:
            note_error(run_dir, str(e))
            raise
        except Exception as e:  # a bug, not a user error: its traceback is what is left to read
            # a pruned trial is a sweep's decision, no error: one line
            note_error(
                run_dir, str(e) if _pruned(e) else "".join(traceback.format_exception(e)).rstrip()
            )
            raise


def _train(
    cfg: DictConfig,
    run_dir: Path,
    extra_callbacks: list[L.Callback],
    t_start: float,
    resume: str | None,
    init: WarmStart | None,
) -> dict[str, Any]:
    _fill_tracking(cfg)
    if resume is None and str(cfg.get("ckpt_path")) == "auto":
        # the run's own folder (the search for an unfinished run, if any, said where it looked)
        log.info("ckpt_path=auto: nothing to resume in %s: starting afresh", run_dir)
    saved = continued_trackers(cfg, resume, run_dir)
    if isinstance(saved.get("name"), str):
        with open_dict(cfg):
            cfg.tracking.name = saved["name"]
    smoke = is_smoke(cfg)
    log.info("run %s%s", run_dir, " (smoke run: not for tables)" if smoke else "")
    if rank_zero():
        atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    # set for every run, null too: an earlier run in this process (a multirun's, a study's)
    # may have set another number, and the thread count changes the digits
    threads = cfg.get("threads")
    torch.set_num_threads(int(threads) if threads else DEFAULT_THREADS)  # "4" from ${oc.env:...}

    datamodule, model, task = build(cfg)
    if init is not None and not resume:
        load_initial_weights(task, init.path)
    warm = recorded(resume) if resume else init.record() if init is not None else None
    schema = datamodule.schema.with_labels(OmegaConf.select(cfg, "task.labels"))
    check_monitor_defined(cfg, datamodule, schema)
    throughput = Throughput()
    callbacks = [_callback(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    callbacks += extra_callbacks
    # A bar rewrites itself: into a pipe or a file it writes thousands of updates. There, and
    # when the bar is off, the epoch lines (always in train.log) are the progress report.
    bar = bool(cfg.trainer.get("enable_progress_bar", True)) and sys.stderr.isatty()
    if not bar:  # Lightning refuses a bar callback it cannot show
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    callbacks += [throughput, EpochLog(monitor=str(task.hparams.monitor)), RunIdentity(cfg, warm)]
    # from the checkpoint's step; a restart in the folder of a run stopped before any
    # checkpoint continues its tracker runs from step 0
    step = global_step(resume) if resume else 0 if saved else None
    logger_confs = (cfg.get("logger") or {}).values()
    loggers = [_logger(c, saved, step) for c in logger_confs if c is not None]
    # an MLflow run continued already holds the config, and refuses a changed value (the
    # resumed command's ckpt_path=auto); W&B takes the update
    fresh = [lg for lg in loggers if not (isinstance(lg, MLFlowLogger) and lg._run_id)]
    # train/loss reaches the loggers at least once an epoch, however few the batches
    log_every = min(int(cfg.trainer.get("log_every_n_steps") or 50), _batches_per_epoch(datamodule))
    extra: dict[str, Any] = {}
    accelerator = str(cfg.trainer.get("accelerator", "cpu"))
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if cfg.trainer.get("sync_batchnorm") and on_cpu:  # SyncBatchNorm runs on CUDA only
        extra["sync_batchnorm"] = False
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        default_root_dir=str(run_dir),
        enable_progress_bar=bar,
        log_every_n_steps=log_every,
        **extra,
    )
    if resume:  # the CSV log continues the file of the run it resumes
        for lg in loggers:
            if isinstance(lg, CSVLogger):
                lg.keep_previous = True
    write_status(run_dir, "running", cfg, checkpoint=resume)
    try:
        metrics = _fit_and_test(cfg, datamodule, task, trainer, loggers, resume, fresh)
        with _signals_interrupt():  # Lightning's handlers are gone once it has tested
            cost = efficiency(model, datamodule, trainer) if cfg.get("efficiency", True) else None
    except BaseException as e:
        for c in callbacks:
            if isinstance(c, Resumable):
                c.restore_signals()
        close_trackers(loggers, failed=True)
        _record_failure(cfg, run_dir, task, trainer, e, t_start)
        if _preempted(e):  # Lightning's SIGTERMException exits 0: a scheduler would not requeue
            signum = next((c.signum for c in callbacks if isinstance(c, Resumable)), None)
            raise Interrupted(128 + int(signum or signal.SIGTERM)) from e
        if _ctrl_c(e):  # Lightning turns Ctrl-C into sys.exit(1)
            raise Interrupted(128 + signal.SIGINT) from e
        raise
    metrics.update(
        status="finished",
        n_params=int(sum(p.numel() for p in model.parameters())),
        train_samples_per_s=throughput.samples_per_s,
        wall_time_s=time.perf_counter() - t_start,
        efficiency=cost,
        smoke=smoke,
        run_dir=str(run_dir),
        resumed_from=resume,
        initialized_from=warm,
    )
    if trainer.is_global_zero:
        atomic_write_json(run_dir / "metrics.json", metrics)
        write_status(run_dir, "finished", cfg)
        for split in ("val", "test"):
            shown = ", ".join(f"{k} {v:.5f}" for k, v in list(metrics[split].items())[:6])
            log.info("%s: %s", split, shown)
        for lg in loggers:
            log_final_metrics(lg, metrics, step=trainer.global_step)  # after the last step
        if cfg.get("print_summary", True):
            print_summary(metrics)
    close_trackers(loggers, failed=False)
    return metrics


def _callback(conf: DictConfig) -> L.Callback:
    """The callback ``conf`` names. Early stopping checks after each validation, not at each
    training epoch's end (Lightning's choice when validation runs every epoch): an epoch that
    ``max_steps`` ends before its validation re-checked the previous validation's value, and
    in a process resumed within that epoch there is none (a RuntimeError, for good)."""
    from lightning.pytorch.callbacks import EarlyStopping

    cb = instantiate(conf)  # (a class or a factory function: what it makes is what counts)
    if isinstance(cb, EarlyStopping) and cb._check_on_train_epoch_end is None:
        # the constructor's check_on_train_epoch_end, left unset by the user: None lets
        # Lightning choose at setup; False is the constructor's own "after validation"
        cb._check_on_train_epoch_end = False
    return cb


def _logger(conf: DictConfig, saved: dict[str, Any], step: int | None) -> Any:
    """The logger ``conf`` names, continuing what the run it resumes logged (the tracker runs
    in ``saved``, TensorBoard's events up to the checkpoint's ``step``): loggers start nothing
    until first used, so building one twice costs nothing."""
    logger = instantiate_config(conf)
    kwargs = continue_kwargs(logger, saved, step)
    if not kwargs:
        return logger
    logger = instantiate_config(conf, **kwargs)
    if isinstance(logger, RanklabMLFlowLogger):  # the killed process's points are there already
        logger.skip_held_points(from_step=step or 0)
    return logger


def _fit_and_test(
    cfg: DictConfig,
    datamodule: Any,
    task: Any,
    trainer: L.Trainer,
    loggers: list[Any],
    resume: str | None,
    fresh: list[Any],
) -> dict[str, Any]:
    """Log the config to the ``fresh`` trackers (those of ``loggers`` not continuing a tracker
    run that holds it), fit (from ``resume``, a last.ckpt, if given), restore the best
    checkpoint, validate and test; the run's results (train() adds its costs)."""
    config = to_plain(cfg)
    for lg in fresh:  # the resolved config, once per tracker
        lg.log_hyperparams(config)
    runs = tracker_runs(loggers) if rank_zero() else {}  # other ranks' loggers log nothing
    if runs:
        record = {"name": str(cfg.tracking.name), "config_hash": config_hash(cfg), **runs}
        atomic_write_json(Path(cfg.paths.output_dir) / TRACKERS_FILE, record)
    if task.trainable:
        if resume:
            log.info("resuming from %s", resume)
        # our checkpoints hold plain types only: load them that way
        trainer.fit(task, datamodule=datamodule, ckpt_path=resume, weights_only=True)
    else:  # nothing to learn (e.g. the most-popular baseline): evaluate as it is
        log.info("model %s has no trainable parameters: skipping fit", model_name(cfg))
    ckpt_cb = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    ckpt = ckpt_cb.best_model_path if ckpt_cb is not None and ckpt_cb.best_model_path else None
    # fit's handlers are gone: SIGTERM and SIGUSR1 now interrupt at once (Lightning's own
    # SIGTERM handler, chained before this one, ignores a signal at a loop's last batch, and
    # outside SLURM it leaves SIGUSR1 to the default action, a kill)
    with _signals_interrupt(defer=trainer.world_size > 1):
        kw: dict[str, Any] = {"ckpt_path": ckpt, "verbose": False, "weights_only": True}
        trainer.validate(task, datamodule=datamodule, **kw)
        trainer.test(task, datamodule=datamodule, **kw)
    bayes = datamodule.meta.get("bayes")
    return {
        "model": model_name(cfg),
        "data": str(datamodule.name),
        "seed": int(cfg.seed),
        "val": task.results.get("val", {}),
        "test": task.results.get("test", {}),
        "best_epoch": task.best_epoch(),
        "epochs": int(trainer.current_epoch),
        "history": task.history,
        "bayes": {s: bayes[s] for s in ("val", "test") if s in bayes} if bayes else None,
        "protocol": getattr(task, "protocol", None),
        "reliability": getattr(task, "reliability", None),
        "git_commit": git_commit(),
        # CPU results depend on the intra-op thread count (reduction order), GPU results on
        # the card and build: a rerun gives the same digits where these match
        "environment": environment(trainer),
        "config_hash": config_hash(cfg),
        "experiment_hash": config_hash(cfg, ignore_seed=True),
        # what the hashes are of: reports label rows by the keys in which experiments differ
        "config": result_config(cfg),
        "seeded_keys": seeded_keys(cfg),  # e.g. data.seed: ${seed}, not a label of its row
        "tags": list(cfg.get("tags") or []),
        "tracking": to_plain(cfg.get("tracking")),
        "data_fingerprint": datamodule.meta.get("fingerprint"),
        # on_bad_rows: skip: the malformed rows dropped, per file (count and first examples)
        **({"skipped_rows": skipped} if (skipped := datamodule.meta.get("bad_rows")) else {}),
        "checkpoint": ckpt,
    }


def _preempted(e: BaseException) -> bool:
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    return isinstance(e, SIGTERMException)


def _ctrl_c(e: BaseException) -> bool:
    """Ctrl-C: a KeyboardInterrupt, or the ``sys.exit(1)`` Lightning raises while handling one
    (its context is the KeyboardInterrupt)."""
    return isinstance(e, KeyboardInterrupt) or (
        isinstance(e, SystemExit) and isinstance(e.__context__, KeyboardInterrupt)
    )


def _pruned(e: BaseException) -> bool:
    """A sweep's pruner stopped the run (optuna's ``TrialPruned``; named, so that training
    needs no optuna import): a decision, not an error."""
    return type(e).__name__ == "TrialPruned"


def _record_failure(
    cfg: DictConfig, run_dir: Path, task: Any, trainer: L.Trainer, e: BaseException, t0: float
) -> None:
    """A run that diverged or was stopped by a signal says so: status.json, and for divergence
    a strict-JSON metrics.json (status ``diverged``, the history so far, no test results)."""
    last = run_dir / "checkpoints" / "last.ckpt"
    checkpoint = str(last) if last.is_file() else None
    if isinstance(e, Diverged):
        write_status(run_dir, "diverged", cfg, error=str(e), checkpoint=checkpoint)
        record = {
            "status": "diverged",
            "error": str(e),
            "diverged_at": {"epoch": e.epoch, "step": e.step},
            "model": model_name(cfg),
            "seed": int(cfg.seed),
            "val": {},
            "test": {},
            "history": task.history,
            "config_hash": config_hash(cfg),
            "experiment_hash": config_hash(cfg, ignore_seed=True),
            "config": result_config(cfg),
            "checkpoint": checkpoint,
            "wall_time_s": time.perf_counter() - t0,
            "run_dir": str(run_dir),
        }
        if trainer.is_global_zero:
            atomic_write_json(run_dir / "metrics.json", record)
    elif _preempted(e) or _ctrl_c(e) or isinstance(e, Interrupted | StopRequested):
        write_status(run_dir, "interrupted", cfg, checkpoint=checkpoint)
        if not _preempted(e):  # (a signal's checkpoint during fit is reported by Resumable)
            kept = f"kept {checkpoint}" if checkpoint else "no checkpoint yet"
            log.warning("interrupted: %s; rerun with ckpt_path=auto to continue", kept)
    elif _pruned(e):
        write_status(run_dir, "pruned", cfg, error=str(e), checkpoint=checkpoint)
    else:  # any other error: the folder must not go on saying "running"
        error = f"{type(e).__name__}: {e}".splitlines()[0][:500]
        write_status(run_dir, "failed", cfg, error=error, checkpoint=checkpoint)


@contextlib.contextmanager
def _signals_interrupt(defer: bool = False) -> Iterator[None]:
    """SIGTERM and SIGUSR1 (a scheduler's preemption) raise :class:`Interrupted` (exit status
    128 + the signal) while this lasts: outside Lightning's loops, where its own handlers do not
    run, the default action would end the process with the folder still saying "running".
    ``defer`` (several ranks, whose collectives must keep matching): at the block's end."""
    import threading

    if threading.current_thread() is not threading.main_thread():  # handlers: main thread only
        yield
        return
    received: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        if not defer:
            raise Interrupted(128 + signum)
        received.append(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    if received:
        raise Interrupted(128 + received[0])


def efficiency(model: Any, datamodule: Any, trainer: L.Trainer) -> dict[str, Any]:
    """What the result cost: peak process memory (RSS; GPU: max allocated; in MiB, whatever
    the keys' ``mb`` says), parameters, and inference latency (p50, p99 in ms, of up to 200
    timings) of the model's forward pass on test rows, for a batch of 1 and of 4,096 (a smaller
    test split's rows repeated to fill it), on the run's device."""
    import resource

    device = trainer.strategy.root_device
    out: dict[str, Any] = {
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if device.type == "cuda":
        out["peak_gpu_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    split = datamodule.split("test")
    model = model.to(device).eval()
    for size in (1, 4096):
        batch = split.take(slice(0, min(size, len(split))))
        if len(batch) < size:  # a test split smaller than the batch: its rows again, in turn
            # (the index on the split's device: a device-resident split is already on the GPU)
            batch = batch.take(torch.arange(size, device=batch.device) % len(batch))
        batch = batch.to(device)
        times: list[float] = []
        with torch.no_grad():
            # 200 timings after three warm-up passes, or as many as 5 s allow but at least 20
            # (a slow model's batch of 4,096); with 20, p99 is all but the slowest of them
            for i in range(203):
                t0 = time.perf_counter()
                model(batch.features)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                if i >= 3:
                    times.append((time.perf_counter() - t0) * 1000)
                    if len(times) >= 20 and sum(times) > 5000:
                        break
        q = torch.tensor(times).quantile(torch.tensor([0.5, 0.99])).tolist()
        out[f"latency_ms_batch{size}"] = {
            "p50": q[0],
            "p99": q[1],
            "rows": len(batch),
            "timings": len(times),
        }
    return out


def environment(trainer: L.Trainer) -> dict[str, Any]:
    """What besides the config decides the digits: torch build, threads, device."""
    device = trainer.strategy.root_device
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
    }


# paths a user types relative to the folder the command starts in (none is in the config hash;
# init_from is hashed as typed, so warmstart resolves it where it is read)
START_RELATIVE = ("paths.data_dir", "paths.cache_dir", "paths.log_dir", "ckpt_path")


def _run_dir_from_hydra(cfg: DictConfig) -> None:
    """One run, one folder: Hydra's output directory (``hydra.run.dir``, which defaults to
    ``paths.output_dir``, or a multirun's job folder) is the run directory. Under
    ``hydra.job.chdir=true`` the process now runs there, so the relative paths the user gave
    (``START_RELATIVE``) are made absolute from where the command started: otherwise every run
    would read its data from, and build its cache in, its own folder."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import to_absolute_path

    out = Path(HydraConfig.get().runtime.output_dir)
    start = Path(HydraConfig.get().runtime.cwd)
    moved = Path.cwd().resolve() != start.resolve()
    with open_dict(cfg):
        if moved:
            for key in START_RELATIVE:
                value = OmegaConf.select(cfg, key)
                if value and str(value) != "auto":
                    OmegaConf.update(cfg, key, to_absolute_path(str(value)))
        elif out.is_relative_to(start):  # shown as the user wrote it: outputs/runs/...
            out = out.relative_to(start)
        cfg.paths.output_dir = str(out)


@hydra.main(config_path=str(conf_dir()), config_name="train", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float | None:
    try:
        _run_dir_from_hydra(cfg)
        return objective_value(cfg, train(cfg))
    except RanklabError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def _split_flags(args: list[str]) -> tuple[list[str], list[str], list[str]]:
    """A command line's overrides, the folders ``--config-dir``/``-cd`` add, and its other
    flags (``-m``, ``--cfg``, ...)."""
    overrides, dirs, flags = [], [], []
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("--config-dir="):
            dirs.append(a.split("=", 1)[1])
        elif a in ("--config-dir", "-cd") and i + 1 < len(args):
            dirs.append(args[i + 1])
            i += 1
        elif a.startswith("-"):
            flags.append(a)
        else:
            overrides.append(a)
        i += 1
    return overrides, dirs, flags


def _compose_overrides(args: list[str]) -> list[str] | None:
    """The overrides that compose the config this command line runs (the ``--config-dir``
    folders as Hydra's search path), or None where other flags decide what Hydra does."""
    overrides, dirs, flags = _split_flags(args)
    if flags:
        return None
    if dirs and not any(o.split("=", 1)[0].lstrip("+") == "hydra.searchpath" for o in overrides):
        paths = ",".join(f"file://{Path(d).absolute()}" for d in dirs)
        overrides = [*overrides, f"hydra.searchpath=[{paths}]"]
    return overrides


def _auto_resume_argv(argv: list[str]) -> list[str]:
    """``ckpt_path=auto`` on the command line: continue in the newest unfinished folder of the
    same config (its last.ckpt), rather than in a new timestamped one."""
    args = argv[1:]
    if "ckpt_path=auto" not in args:
        return argv
    if "-m" in args or "--multirun" in args:
        return _auto_resume_multirun(argv)
    overrides = _compose_overrides(args)
    if overrides is None:
        return argv
    if any(
        a.split("=", 1)[0].lstrip("+") in ("paths.output_dir", "hydra.run.dir") for a in overrides
    ):
        return argv  # the user named the folder
    from ranklab.config import compose

    cfg = compose(overrides)
    found = run_to_continue(cfg)
    if found is None:
        root = Path(cfg.paths.log_dir) / "runs" / str(cfg.run_name)
        print(
            f"ckpt_path=auto: no unfinished run of this config in {root}: starting a new one",
            file=sys.stderr,
        )
        return argv
    if read_status(found).get("status") == "finished":
        print(f"ckpt_path=auto: {found} finished this config already", file=sys.stderr)
    else:
        print(f"ckpt_path=auto: continuing {found}", file=sys.stderr)
    return [*argv, f"paths.output_dir={found}"]


def _auto_resume_multirun(argv: list[str]) -> list[str]:
    """``ranklab-train -m ... ckpt_path=auto``: continue the newest multirun of the same
    command-line overrides (Hydra's ``multirun.yaml`` records them) in its own folder
    (``hydra.sweep.dir``): the jobs number the same, so each finds its folder, where a finished
    job is not trained again, an unfinished one continues from its last.ckpt, and one never
    started runs."""
    args = argv[1:]
    if any(a.split("=", 1)[0] == "hydra.sweep.dir" for a in args):
        return argv  # the user named the folder

    def same(overrides: list[str]) -> list[str]:
        # what identifies the multirun: Hydra records the hydra.* overrides apart from the
        # others, with its own mode and (when continued) the folder added
        added = ("hydra.mode", "hydra.sweep.dir")
        return sorted(
            a
            for a in overrides
            if a != "ckpt_path=auto" and a.split("=", 1)[0].lstrip("+~") not in added
        )

    mine = same(_split_flags(args)[0])
    named = dict(a.split("=", 1) for a in mine if "=" in a)
    root = Path(named.get("paths.log_dir", "outputs")) / "multirun"
    records = sorted(root.glob("*/multirun.yaml"), key=lambda p: p.stat().st_mtime, reverse=True)
    for record in records:
        try:
            recorded = OmegaConf.load(record).hydra.overrides
            theirs = [*recorded.task, *(recorded.get("hydra") or [])]
        except Exception:  # not Hydra's record, or damaged: not this multirun
            continue
        if same([str(t) for t in theirs]) != mine:
            continue
        print(f"ckpt_path=auto: continuing the multirun in {record.parent}", file=sys.stderr)
        return [*argv, f"hydra.sweep.dir={record.parent}"]
    print(
        f"ckpt_path=auto: no multirun of these overrides in {root}: starting a new one",
        file=sys.stderr,
    )
    return argv


# folders a command line may name: created here (Hydra would create the run folder anyway), so
# one that cannot be is a one-line error, not Hydra's traceback of its own mkdir
OUTPUT_KEYS = ("paths.output_dir", "hydra.run.dir", "paths.log_dir", "paths.cache_dir")


def _check_output_dirs(argv: list[str]) -> None:
    for a in argv[1:]:
        key, eq, value = a.lstrip("+").partition("=")
        if eq and key in OUTPUT_KEYS and value and "$" not in value:
            try:
                writable_dir(value, key)
            except ConfigError as e:
                print(f"error: {e}", file=sys.stderr)
                sys.exit(2)


def _named_folder(args: list[str]) -> str | None:
    """The run folder a command line names (``hydra.run.dir`` wins, as Hydra's own setting)."""
    named = dict(a.lstrip("+").split("=", 1) for a in args if "=" in a)
    return named.get("hydra.run.dir") or named.get("paths.output_dir")


def _check_named_folder(argv: list[str]) -> None:
    """A single run into a named folder is checked before Hydra starts, since Hydra writes
    its ``.hydra/*.yaml`` there first: a folder holding another config's run, one in use,
    a checkpoint of another config and ``auto`` with a finished run end here, the folder as
    it was (exit status 2, or 0 for the finished run)."""
    overrides = _compose_overrides(argv[1:])
    folder = _named_folder(overrides or [])
    if folder is None or overrides is None or not rank_zero():
        return  # (a multirun's jobs, and DDP's other ranks, are checked by train())
    from ranklab.config import compose

    keep = ("hydra.searchpath",)  # the user's config folders; other hydra.* keys are Hydra's
    try:
        cfg = compose(
            [a for a in overrides if not a.lstrip("+").startswith("hydra.") or a.startswith(keep)]
        )
    except Exception:  # Hydra itself reports what is wrong with the command line
        return
    with open_dict(cfg):
        cfg.paths.output_dir = folder
    try:
        done = guard_run_dir(cfg, Path(folder))
    except RanklabError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if done is not None:
        sys.exit(0)


def _ddp_rank_argv(argv: list[str]) -> list[str]:
    """Lightning starts DDP's other ranks as this command with ``hydra.job.name`` set per
    rank, and Hydra's log file is named after the job: those ranks' log lines (rank 0 writes
    the run's ``train.log``) go nowhere rather than into a file of their own in its folder."""
    if any(a.startswith("hydra.job.name=train_ddp_process_") for a in argv[1:]):
        return [*argv, f"hydra.job_logging.handlers.file.filename={os.devnull}"]
    return argv


def _config_dirs(argv: list[str]) -> list[Path]:
    """conf/ (or RANKLAB_CONF) and the folders ``--config-dir``/``-cd`` add."""
    return [conf_dir(), *(Path(d) for d in _split_flags(argv[1:])[1])]


def _check_yaml(argv: list[str]) -> None:
    """A config file that is not valid YAML (a user's own, as often as not) is one line naming
    file, line and column, exit status 2: Hydra would print PyYAML's traceback. Parsing every
    file of the config folders takes about 60 ms."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    for root in _config_dirs(argv):
        for path in sorted(Path(root).rglob("*.yaml")) if Path(root).is_dir() else ():
            try:
                yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
            except yaml.MarkedYAMLError as e:
                mark = e.problem_mark or e.context_mark
                where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
                what = ": ".join(x for x in (e.context, e.problem) if x)
                print(f"error: {path}{where}: not valid YAML: {what}", file=sys.stderr)
                sys.exit(2)
            except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
                print(f"error: {path}: cannot read: {e}", file=sys.stderr)
                sys.exit(2)


MULTIRUN_FLAGS = ("-m", "--multirun")


def _sweep_combinations(overrides: list[str], most: int = 64) -> list[list[str]]:
    """A multirun's command lines to check: each swept override at its first value, then
    each other value of each one in turn (not the whole grid); a sweep Hydra cannot list
    (an interval, a glob) is left to Hydra."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    choices = []
    for o in OverridesParser.create().parse_overrides(overrides):
        if not o.is_sweep_override():
            choices.append([o.input_line])
            continue
        try:
            choices.append([f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()])
        except Exception:  # Hydra's sweeper expands these itself
            continue
    choices = [c for c in choices if c]  # an empty choice() composes nothing
    first = [c[0] for c in choices]
    combos = [first]
    for i, values in enumerate(choices):
        for v in values[1:]:
            combos.append([*first[:i], v, *first[i + 1 :]])
    return combos[:most]


def _check_composes(argv: list[str]) -> None:
    """Compose the config the command line asks for (each swept value of a multirun) before
    Hydra does, and check it: a misspelt option or key, an override Hydra cannot parse, a key
    nothing reads or a callback that is not one is a line naming the key and exit status 2,
    before Hydra makes a run folder (Hydra's own report is several lines, and status 1)."""
    from hydra.errors import HydraException

    args = argv[1:]
    flags = _split_flags(args)[2]
    if set(flags) - set(MULTIRUN_FLAGS):
        return  # --help, --cfg, --info...: Hydra's business
    overrides = _compose_overrides([a for a in args if a not in MULTIRUN_FLAGS]) or []
    keep = ("hydra.searchpath",)
    hydra_own = [a for a in overrides if a.lstrip("+~").startswith("hydra.")]
    mine = [a for a in overrides if a not in hydra_own or a.lstrip("+").startswith(keep)]
    try:
        try:
            combos = _sweep_combinations(mine) if flags else [mine]
        except HydraException:  # unreadable: composing it says which override, and why
            combos = [mine]
        for combo in combos:
            check_config(compose_checked(combo), elsewhere=hydra_own)
    except RanklabError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    _check_yaml(sys.argv)
    _check_composes(sys.argv)  # before any folder is made
    _check_output_dirs(sys.argv)
    sys.argv = _ddp_rank_argv(_auto_resume_argv(sys.argv))
    _check_named_folder(sys.argv)
    _hydra_main()


if __name__ == "__main__":
    main()
