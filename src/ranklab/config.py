"""Hydra/OmegaConf glue: resolvers, the config directory, composing configs in Python."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from ranklab.utils import hash_object

# conf/ lives at the repository root next to src/ (an editable install finds it there);
# RANKLAB_CONF overrides it for installed copies.
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"

# Keys that say where things go or how they are shown, not what is computed: left out of the
# config hash so that the same experiment hashes the same wherever and however it runs.
# (``threads`` stays in: the number of threads can change floating-point reduction order.)
NON_RESULT_KEYS = ("paths", "logger", "hydra", "run_name", "print_summary")
NON_RESULT_SUBKEYS = {
    "trainer": ("enable_progress_bar", "enable_model_summary", "log_every_n_steps"),
    "callbacks": ("progress_bar",),
}


def _register_resolvers() -> None:
    if not OmegaConf.has_resolver("tail"):
        # "ranklab.models.DeepFM" -> "DeepFM": names runs after the model class
        OmegaConf.register_new_resolver("tail", lambda s: str(s).rsplit(".", 1)[-1])


_register_resolvers()


def conf_dir() -> Path:
    import os

    return Path(os.environ.get("RANKLAB_CONF", CONF_DIR))


def compose(overrides: Sequence[str] = (), config_name: str = "train") -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` with overrides, as the CLI would (for tests, notebooks,
    sweeps). Hydra's own errors (unknown key, unknown option) propagate unchanged."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides))


def to_plain(cfg: Any) -> Any:
    """OmegaConf node -> plain Python containers (resolved)."""
    if isinstance(cfg, DictConfig) or OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def config_hash(cfg: DictConfig, ignore_seed: bool = False) -> str:
    """Hash of everything that changes results: paths (and values built from them, such as the
    checkpoint directory), loggers and the run's name are left out. ``ignore_seed`` gives the
    experiment's hash, shared by its runs over several seeds."""
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
    return hash_object({k: v for k, v in plain.items() if k not in NON_RESULT_KEYS})[:16]


def model_name(cfg: DictConfig) -> str:
    return str(cfg.model._target_).rsplit(".", 1)[-1]
