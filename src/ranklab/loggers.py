"""Logger factories. W&B runs offline unless the user has configured a key."""

from __future__ import annotations

import netrc
import os
from collections.abc import Sequence
from pathlib import Path

from lightning.pytorch.loggers import WandbLogger


def wandb_has_key() -> bool:
    """True when W&B could log online: WANDB_API_KEY is set or `wandb login` wrote ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        rc = netrc.netrc(os.environ.get("NETRC", Path.home() / ".netrc"))
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("//")[-1].split("/")[0]
    return rc.authenticators(host) is not None


def wandb_logger(
    project: str = "ranklab",
    save_dir: str = ".",
    offline: bool | str = "auto",
    name: str | None = None,
    group: str | None = None,
    tags: Sequence[str] = (),
    entity: str | None = None,
) -> WandbLogger:
    """A WandbLogger; ``offline="auto"`` means online exactly when a key is configured.

    WANDB_MODE=offline/online in the environment wins over everything, as in wandb itself.
    """
    if offline == "auto":
        offline = not wandb_has_key()
    mode = os.environ.get("WANDB_MODE")
    if mode in ("offline", "disabled", "dryrun"):
        offline = True
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return WandbLogger(
        project=project,
        save_dir=save_dir,
        offline=bool(offline),
        name=name,
        group=group,
        tags=list(tags),
        entity=entity,
    )
