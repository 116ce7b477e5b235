"""Helpers for the sweep tests: tiny sweep configs written to tmp_path, the CLI as a process,
two processes started at the same instant."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from tiny import TINY_DATA

# The tiny synthetic instance of tests/tiny.py, one thread, no progress output.
TINY_TRIAL = [
    *TINY_DATA,
    "model=lr",
    "trainer.max_epochs=2",
    "threads=1",
]


def sweep_config(
    tmp_path: Path,
    params: dict[str, str],
    trials: int,
    name: str = "tiny",
    fixed: Sequence[str] = (),
    **keys: Any,
) -> Path:
    """Write ``<tmp_path>/<name>.yaml``: tiny trials, the study in ``<tmp_path>/sweeps/<name>``,
    fast heartbeats (1 s, stale after 4 s), no pruning unless ``pruner`` is given."""
    conf: dict[str, Any] = {
        "fixed": [*TINY_TRIAL, f"paths.cache_dir={tmp_path}/cache", *fixed],
        "params": params,
        "metric": "val/auc",
        "direction": "maximize",
        "trials": trials,
        "sampler": {"name": "random", "seed": 0},
        "pruner": {"name": "none"},
        "storage": {"heartbeat_interval": 1, "grace_period": 4},
        "dir": str(tmp_path / "sweeps" / name),
    }
    for k, v in keys.items():
        if isinstance(v, dict) and isinstance(conf.get(k), dict):
            conf[k] = {**conf[k], **v}
        else:
            conf[k] = v
    path = tmp_path / f"{name}.yaml"
    OmegaConf.save(OmegaConf.create(conf), path)
    return path


def sweep_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "ranklab.sweep", *args]


def cli_env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": "ignore"}


RACE = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from ranklab.sweep.spec import load_spec
    from ranklab.sweep.study import init_study
    spec = load_spec(sys.argv[1], sys.argv[3:])
    Path(sys.argv[2], str(os.getpid())).touch()
    while len(list(Path(sys.argv[2]).iterdir())) < 2:  # both ready: go
        pass
    init_study(spec)
    """
)


def start_together(
    path: Path, barrier: Path, *overrides: str
) -> list[subprocess.CompletedProcess[str]]:
    """Two processes create the same study in a fresh database at the same instant."""
    barrier.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACE, str(path), str(barrier), *overrides],
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    return [subprocess.CompletedProcess(p.args, p.wait(60), *p.communicate()) for p in procs]
