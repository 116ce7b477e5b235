"""Fixtures of the sweep tests (helpers: sweep_helpers.py)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from sweep_helpers import cli_env, sweep_cmd


@pytest.fixture
def run_cli(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """run_cli(*args, timeout=...) -> the finished ``ranklab-sweep`` process (output captured)."""

    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            sweep_cmd(*args),
            cwd=tmp_path,
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run
