"""``init_from``: a new run that starts from another run's weights (a warm start).

Resuming (``ckpt_path``) continues one run of one config, optimiser state and all; a warm start
begins a new run, under its own config, from a trained model's weights only: more epochs after
a finished run, another learning rate, a new day's data with the same vocabularies. The
optimiser, the lr schedule and the epoch history start afresh.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.utils import to_absolute_path
from torch import Tensor, nn

from ranklab.errors import ConfigError
from ranklab.rundir import IDENTITY_KEY, load_mapped

log = logging.getLogger("ranklab")

KEY = "init_from"
# a run folder names its best checkpoint so (conf/callbacks/default.yaml)
BEST = Path("checkpoints") / "best.ckpt"


@dataclass(frozen=True)
class WarmStart:
    """The checkpoint a run starts from, and the config hash of the run that wrote it (None for
    a bare ``state_dict``): what ``metrics.json`` records as ``initialized_from``."""

    path: Path
    config_hash: str | None

    def record(self) -> dict[str, Any]:
        return {"path": str(self.path.resolve()), "config_hash": self.config_hash}


def init_checkpoint(value: Any) -> WarmStart | None:
    """``init_from`` as a checkpoint file: a ``.ckpt`` (or a saved ``state_dict``), or a run
    folder, whose ``checkpoints/best.ckpt`` is taken. None when unset. Fails naming the key,
    before any data is read, when there is no such file or it holds no weights."""
    if value is None or value == "":
        return None
    # relative to where the command started, also under hydra.job.chdir=true
    path = Path(to_absolute_path(str(Path(str(value)).expanduser())))
    if path.is_dir():
        if not (path / BEST).is_file():
            raise ConfigError(KEY, f"{path} is a folder without {BEST}: name a checkpoint file")
        path = path / BEST
    if not path.is_file():
        raise ConfigError(KEY, f"{path}: no such checkpoint file")
    _, state = _state_dict(path)  # one that is not a checkpoint fails now, not after the data
    identity = state.get(IDENTITY_KEY) if "state_dict" in state else None
    source_hash = identity.get("config_hash") if isinstance(identity, dict) else None
    return WarmStart(path, source_hash)


def recorded(checkpoint: str | Path) -> dict[str, Any] | None:
    """The ``initialized_from`` a warm-started run's checkpoint carries (None for a run that was
    not warm-started): a resumed run reports its first weights' source without reading it."""
    identity = load_mapped(checkpoint).get(IDENTITY_KEY)
    found = identity.get("initialized_from") if isinstance(identity, dict) else None
    return found if isinstance(found, dict) else None


def _state_dict(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(the weights, the whole checkpoint) of a Lightning checkpoint or a bare ``state_dict``,
    memory-mapped where torch can (the weights are read when they are copied)."""
    try:
        state = load_mapped(path)
    except Exception as e:  # torch raises anything from RuntimeError to UnpicklingError
        first = str(e).splitlines()[0] if str(e) else ""
        raise ConfigError(
            KEY, f"{path} is not a checkpoint torch can load ({type(e).__name__}: {first})"
        ) from e
    weights = state.get("state_dict", state) if isinstance(state, dict) else None
    if not isinstance(weights, dict) or not weights:
        raise ConfigError(KEY, f"{path} holds no weights (no state_dict)")
    bad = next((k for k, v in weights.items() if not isinstance(v, Tensor)), None)
    if bad is not None:
        raise ConfigError(KEY, f"{path} holds no state_dict: {bad!r} is not a tensor")
    bad = next((k for k in weights if not isinstance(k, str)), None)
    if bad is not None:
        raise ConfigError(KEY, f"{path} holds no state_dict: its key {bad!r} is not a name")
    return weights, state


def mismatch(own: dict[str, Tensor], weights: dict[str, Tensor]) -> str | None:
    """How ``weights`` (a state dict) fail to fit a module whose state dict is ``own``: the
    first tensors whose shapes differ, that are missing or extra; None when they fit."""
    missing = [k for k in own if k not in weights]
    extra = [k for k in weights if k not in own]
    shapes = [
        f"{k} is {tuple(weights[k].shape)} there, {tuple(v.shape)} here"
        for k, v in own.items()
        if k in weights and weights[k].shape != v.shape
    ]
    problems = shapes[:2] + [f"{k} is not there" for k in missing[:2]]
    problems += [f"{k} is not in this model" for k in extra[:2]]
    if not problems:
        return None
    n = len(shapes) + len(missing) + len(extra)
    more = f"; {n - len(problems)} more" if n > len(problems) else ""
    return "; ".join(problems) + more


def vocabularies(hparams: Any) -> dict[str, str] | None:
    """table -> vocabulary hash of the data a task (or a checkpoint's ``hyper_parameters``)
    was built on; None where the run predates them or its data has no vocabularies."""
    try:
        found = hparams["hparams"]["schema"]["meta"].get("vocabularies")
    except (KeyError, TypeError, AttributeError):
        return None
    return dict(found) if found else None


def other_draw(checkpoint: dict[str, Any], task: nn.Module) -> bool:
    """Whether ``task``'s synthetic data is another draw (other generator settings: another
    planted model, other rows) than the one the checkpoint was trained on."""

    def draw(hparams: Any) -> str | None:
        try:
            return hparams["hparams"]["schema"]["meta"].get("generator")
        except (KeyError, TypeError, AttributeError):
            return None

    theirs = draw(checkpoint.get("hyper_parameters"))
    ours = draw(getattr(task, "hparams", None))
    return theirs is not None and ours is not None and theirs != ours


def other_vocabularies(checkpoint: dict[str, Any], task: nn.Module) -> list[str]:
    """The tables whose vocabulary in ``task``'s data gives values other ids than in the data
    the checkpoint was trained on (its embeddings' rows would be read for other values)."""
    theirs = vocabularies(checkpoint.get("hyper_parameters"))
    ours = vocabularies(getattr(task, "hparams", None))
    if not theirs or not ours:
        return []
    return sorted(t for t in theirs.keys() & ours.keys() if theirs[t] != ours[t])


def load_initial_weights(task: nn.Module, path: Path) -> None:
    """Copy the weights of ``path`` into ``task`` (its ``model.`` prefix is added to a bare
    model ``state_dict``); every tensor must match by name and shape, or this fails naming the
    first ones that do not."""
    weights, state = _state_dict(path)
    if not any(k.startswith("model.") for k in weights):  # torch.save(model.state_dict())
        weights = {f"model.{k}": v for k, v in weights.items()}
    if (why := mismatch(task.state_dict(), weights)) is not None:
        raise ConfigError(
            KEY,
            f"{path} does not fit this model ({why}): a warm start needs the same model config "
            f"and the same vocabularies",
        )
    if other := other_vocabularies(state, task):
        raise ConfigError(
            KEY,
            f"{path} was trained on data whose vocabularies give values other ids "
            f"({', '.join(other)}: this data's training rows were fitted to others): its "
            f"embeddings would be read for other values; a warm start needs the same "
            f"vocabularies (the same training rows, or hash_buckets for those features)",
        )
    task.load_state_dict(weights, strict=True)
    log.info("weights from %s (a warm start: optimiser and schedule start afresh)", path)
