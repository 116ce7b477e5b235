"""Hydra/OmegaConf glue: resolvers, the config directory, composing configs in Python."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from ranklab.errors import ConfigError
from ranklab.utils import flatten, hash_object

# conf/ lives at the repository root next to src/ (an editable install finds it there);
# RANKLAB_CONF overrides it for installed copies.
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"

# Keys that say where things go or how they are shown, not what is computed: left out of the
# config hash so that the same experiment hashes the same wherever and however it runs.
# (``threads`` stays in: the number of threads can change floating-point reduction order.)
NON_RESULT_KEYS = (
    "paths",
    "logger",
    "hydra",
    "run_name",
    "print_summary",
    "tags",
    "tracking",
    "smoke",
    "ckpt_path",
    "efficiency",
)
NON_RESULT_SUBKEYS = {
    "trainer": ("enable_progress_bar", "enable_model_summary", "log_every_n_steps"),
    "callbacks": ("progress_bar", "resume"),
}

# Keys added after runs were written: left out of the hash while unset, so that every earlier
# config hashes as it did (its runs are still found by ckpt_path=auto and pooled by reports).
UNSET_LEFT_OUT = ("init_from",)

# conf/ folders that are not groups of the training config (ranklab-sweep reads sweep/)
NOT_TRAIN_GROUPS = ("hydra", "sweep")


def _register_resolvers() -> None:
    if not OmegaConf.has_resolver("tail"):
        # "ranklab.models.DeepFM" -> "DeepFM": names runs after the model class
        OmegaConf.register_new_resolver("tail", lambda s: str(s).rsplit(".", 1)[-1])
    if not OmegaConf.has_resolver("ranklab_groups"):
        # `ranklab-train --help` lists these instead of every folder of conf/
        OmegaConf.register_new_resolver("ranklab_groups", lambda: format_train_groups())


_register_resolvers()


def conf_dir() -> Path:
    import os

    return Path(os.environ.get("RANKLAB_CONF", CONF_DIR))


def train_groups() -> dict[str, list[str]]:
    """The config groups ``ranklab-train`` composes, each with its options (file stems)."""
    root = conf_dir()
    return {
        d.name: sorted(p.stem for p in d.glob("*.yaml"))
        for d in sorted(root.iterdir())
        if d.is_dir() and d.name not in NOT_TRAIN_GROUPS
    }


def format_train_groups() -> str:
    return "\n".join(f"{g}: {', '.join(opts)}" for g, opts in train_groups().items())


def compose(overrides: Sequence[str] = (), config_name: str = "train") -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` with overrides, as the CLI would (for tests, notebooks,
    sweeps). Hydra's own errors (unknown key, unknown option) propagate unchanged."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides))


def compose_checked(overrides: Sequence[str] = (), config_name: str = "train") -> DictConfig:
    """:func:`compose`, with Hydra's composition errors (an option that is not in its group,
    a key that is not in the config, an override Hydra cannot parse) as one-line
    :class:`~ranklab.errors.ConfigError` naming the key."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        return compose(overrides, config_name)
    except (HydraException, OmegaConfBaseException) as e:
        raise composition_error(e, overrides, config_name) from None


def composition_error(
    e: Exception, overrides: Sequence[str], config_name: str = "train"
) -> ConfigError:
    """Hydra's composition error ``e`` for ``overrides`` as a ConfigError: the key, what is
    wrong and, for a misspelt key or option, what there is."""
    import re

    from hydra.errors import HydraException, MissingConfigException, OverrideParseException

    text = " ".join(str(e).split())
    if isinstance(e, MissingConfigException) and e.missing_cfg_file:
        group, _, option = str(e.missing_cfg_file).rpartition("/")
        if not group:
            return ConfigError(config_name, f"no config '{option}' in {conf_dir()}")
        options = list(e.options or [])
        near = closest(option, options)
        hint = f" (did you mean '{near}'?)" if near else ""
        listed = f"; its options: {', '.join(options)}" if options else ""
        where, why = f"conf/{group}/", ""
        if group.startswith("hydra/"):  # Hydra's own groups: plugins add their options
            where = f"Hydra's group {group}"
            why = " (a launcher or sweeper of a Hydra plugin needs the plugin installed)"
        return ConfigError(
            group.replace("/", "."), f"no option '{option}' in {where}{hint}{listed}{why}"
        )
    if isinstance(e, OverrideParseException):
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parser = OverridesParser.create()
        for o in overrides:
            try:
                parser.parse_override(o)
            except HydraException as bad:
                why = str(bad).splitlines()[0]
                return ConfigError(
                    o.split("=", 1)[0].lstrip("+~") or o,
                    f"'{o}' is not an override Hydra can read: {why} (quote a value holding "
                    "brackets, commas or '=': key='[a,b' ; Hydra's override grammar: "
                    "https://hydra.cc/docs/advanced/override_grammar/basic/)",
                )
        return ConfigError("command line", text)
    if m := re.match(r"Could not override '([^']+)'", text):
        key = m.group(1)
        why = " ".join(str(e.__cause__ or "").splitlines()[:1]) if e.__cause__ else ""
        deeper = str(getattr(e.__cause__, "full_key", "") or "")
        if deeper.startswith(key + "."):  # a mapping given for a mapping merges into it
            sub = deeper[len(key) + 1 :]
            return ConfigError(
                key,
                f"a mapping given here is merged into the one there, which has no key '{sub}'; "
                f"to replace it whole, delete it first: '~{key}' '+{key}={{...}}'",
            )
        if "not in struct" in why or not why:
            parent, _, last = key.rpartition(".")
            near = _close_keys(overrides, key, parent, last, config_name)
            hint = f" (did you mean '{near}'?)" if near else ""
            return ConfigError(
                key,
                f"no such key in the config{hint}; to add a new key, write +{key}=...",
            )
        return ConfigError(key, why)
    if m := re.match(r"Could not (?:append to config|delete)\.? .*?'([^']+)'", text):
        return ConfigError(m.group(1), text)
    if m := re.match(r"Multiple values for ([\w.]+)\.", text):
        group = m.group(1)
        return ConfigError(
            group, f"is chosen twice: '+{group}=...' adds a second choice; write {group}=..."
        )
    return ConfigError("command line", text)


def yaml_error(path: Path, e: Exception, key: str) -> ConfigError:
    """A YAML file that does not parse, in one line naming its file, line and column."""
    mark = getattr(e, "problem_mark", None)
    where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    why = getattr(e, "problem", None) or str(e).splitlines()[0]
    return ConfigError(key, f"{path}{where}: not YAML ({why})")


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice a misspelt ``word`` most likely meant (``sed`` -> ``seed``), or None."""
    import difflib

    near = difflib.get_close_matches(word, [str(c) for c in choices], n=1, cutoff=0.7)
    return near[0] if near else None


def _close_keys(
    overrides: Sequence[str], key: str, parent: str, last: str, config_name: str
) -> str | None:
    """The key of the config nearest to a misspelt ``key`` (``parent.last``), composed
    without the override naming it; None when there is none close, or that fails too."""
    rest = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key]
    try:
        cfg = compose(rest, config_name)
        node = OmegaConf.select(cfg, parent) if parent else cfg
        near = closest(last, node)
    except Exception:  # the rest does not compose either (or parent is no mapping): none
        return None
    return f"{parent}.{near}" if near and parent else near


def to_plain(cfg: Any) -> Any:
    """OmegaConf node -> plain Python containers (resolved)."""
    if isinstance(cfg, DictConfig) or OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def result_config(cfg: DictConfig, ignore_seed: bool = False) -> dict[str, Any]:
    """Everything in a config that changes results, as plain Python: paths (and values built
    from them, such as the checkpoint directory), loggers, trackers' names and the run's name
    are left out. ``ignore_seed`` sets the seed to 0: the experiment, shared by its seeds."""
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        for k in list(cfg.get("paths") or {}):
            cfg.paths[k] = f"<paths.{k}>"
        if ignore_seed and "seed" in cfg:
            cfg.seed = 0
    plain = to_plain(cfg)
    for group, keys in NON_RESULT_SUBKEYS.items():
        for k in keys:
            (plain.get(group) or {}).pop(k, None)
    for k in UNSET_LEFT_OUT:
        if plain.get(k) in (None, ""):  # `key=` on the command line is unset too
            plain.pop(k, None)
    return {k: v for k, v in plain.items() if k not in NON_RESULT_KEYS}


def seeded_keys(cfg: DictConfig) -> list[str]:
    """Config keys (dotted) whose values derive from the seed, such as ``data.seed: ${seed}``:
    they differ between the runs of one experiment, so reports do not label rows by them."""
    seeded = flatten(result_config(cfg), sep=".")
    fixed = flatten(result_config(cfg, ignore_seed=True), sep=".")
    return sorted(k for k in seeded if k != "seed" and seeded[k] != fixed.get(k))


# what follows the seed in every shipped data config (the data module's shuffling)
SHIPPED_SEEDED = ["data.seed"]


def config_hash(cfg: DictConfig, ignore_seed: bool = False) -> str:
    """Hash of :func:`result_config`. ``ignore_seed`` gives the experiment's hash
    (``experiment_hash``), shared by its runs over several seeds: the seed is set to 0, so
    which keys follow it is hashed too (``data.source.seed=${seed}``, fresh data for every
    seed, is another experiment than the data of ``data.source.seed=0``), except where those
    are the shipped configs' own, so that their runs keep the hashes they were written with."""
    plain = result_config(cfg, ignore_seed)
    if ignore_seed and (keys := seeded_keys(cfg)) != SHIPPED_SEEDED:
        plain = {**plain, "seeded_keys": keys}
    return hash_object(plain)[:16]


def set_tracking(
    cfg: DictConfig, name: str, group: str, job_type: str, tag: str | None = None
) -> None:
    """Name a run for the trackers (W&B run name, group and job type; MLflow tags) and add a
    tag (a study's or a sweep's name) to the user's ``tags``. Not part of the config hash."""
    with open_dict(cfg):
        cfg.tracking = {"name": name, "group": group, "job_type": job_type}
        tags = list(cfg.get("tags") or [])
        if tag and tag not in tags:
            tags.append(tag)
        cfg.tags = tags


def is_smoke(cfg: DictConfig) -> bool:
    """A smoke or debug run: ``smoke: true`` (debug=...), ``fast_dev_run``, or a trainer that
    limits the batches of an epoch. Its metrics say nothing about the model: never tabulated."""
    t = cfg.get("trainer") or {}
    limits = [t.get(f"limit_{s}_batches") for s in ("train", "val", "test")]
    return bool(
        cfg.get("smoke") or t.get("fast_dev_run") or any(v not in (None, 1, 1.0) for v in limits)
    )


def model_name(cfg: DictConfig) -> str:
    return str(cfg.model._target_).rsplit(".", 1)[-1]


OLD_OPTIMIZERS = {
    "adam": "torch.optim.Adam",
    "adamw": "torch.optim.AdamW",
    "sgd": "torch.optim.SGD",
    "adagrad": "torch.optim.Adagrad",
}
OLD_TASK_KEYS = ("lr", "optimizer", "weight_decay", "lr_decay_factor", "lr_patience", "min_lr")


def upgrade_config(cfg: DictConfig) -> DictConfig:
    """A run's config.yaml written before optimisers and schedules were config groups (its
    ``task`` holds ``lr``, ``optimizer``, ``lr_decay_factor``...) in today's terms, so that
    ``ranklab-evaluate`` can rebuild its task: the same optimiser and plateau schedule."""
    task = cfg.get("task") or {}
    if "optimizer" in cfg or "lr" not in task:
        return cfg
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        name = str(task.get("optimizer", "adam"))
        cfg.optimizer = {
            "_target_": OLD_OPTIMIZERS.get(name, name),
            "_partial_": True,
            "lr": task.get("lr", 1e-3),
            "weight_decay": task.get("weight_decay", 0.0),
        }
        factor = float(task.get("lr_decay_factor", 1.0))
        cfg.scheduler = (
            {
                "_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau",
                "_partial_": True,
                "mode": task.get("mode", "max"),
                "factor": factor,
                "patience": task.get("lr_patience", 0),
                "threshold": 1e-6,
                "threshold_mode": "abs",
                "min_lr": task.get("min_lr", 1e-6),
            }
            if factor < 1
            else {}
        )
        for k in OLD_TASK_KEYS:
            cfg.task.pop(k, None)
        cfg.task._target_ = str(cfg.task._target_).replace("ranklab.task.", "ranklab.tasks.")
    return cfg
