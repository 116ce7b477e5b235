"""User-facing errors: each names what is wrong and where (file, line, column or config key)."""

from __future__ import annotations

import re

# a quoted value in a message (a field, a token, a line as repr() writes it) longer than this is
# cut, so that a 2 MB field still makes a one-line error a terminal can show
QUOTED = re.compile(r"'(?:[^'\\\n]|\\.){121,}'|\"(?:[^\"\\\n]|\\.){121,}\"")


def shorten_quoted(message: str, keep: int = 100) -> str:
    """``message`` with every quoted value of over 120 characters cut to its first ``keep``,
    followed by how long it was."""
    return QUOTED.sub(
        lambda m: f"{m.group(0)[: keep + 1]}…{m.group(0)[0]} ({len(m.group(0)) - 2:,} characters)",
        message,
    )


class RanklabError(Exception):
    """Base class of the errors a user can fix; the CLI prints them without a traceback."""


class ConfigError(RanklabError):
    """A config value is wrong; the message names the key."""

    def __init__(self, key: str, message: str) -> None:
        self.key, self.message = key, message
        super().__init__(f"config key '{key}': {message}")


def whole_number(value: object, key: str, least: int) -> int:
    """``value`` as an int, or a ConfigError naming ``key``: a word (``seed=abc``), a fraction
    (``min_count=1.7``, which ``int()`` would quietly truncate) or a number below ``least``.
    Digits as text are a number: ``threads=${oc.env:SLURM_CPUS_PER_TASK}`` is a string."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(key, f"must be a whole number >= {least}, got {value!r}")
    return value


class DataError(RanklabError):
    """Input data is wrong; the message names the file and, where known, line and column."""

    def __init__(
        self,
        message: str,
        path: str | None = None,
        line: int | None = None,
        column: str | None = None,
    ) -> None:
        message = shorten_quoted(message)
        self.message, self.path, self.line, self.column = message, path, line, column
        where = []
        if path is not None:
            where.append(str(path))
        if line is not None:
            where.append(f"line {line}")
        if column is not None:
            where.append(f"column '{column}'")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class SchemaError(RanklabError):
    """A model needs a field the data does not have (or has with the wrong kind)."""


class Diverged(RanklabError):
    """Training produced a non-finite loss: the run stops at once (status ``diverged``)."""

    def __init__(self, message: str, epoch: int, step: int) -> None:
        self.epoch, self.step = epoch, step
        super().__init__(message)


class Interrupted(SystemExit):
    """A run stopped by a signal (SIGTERM or SIGUSR1, what a scheduler sends before preemption)
    or by Ctrl-C, its state saved where it could be: the process exits with ``code``, 128 plus
    the signal number (130 for Ctrl-C), never 0."""

    def __init__(self, code: int) -> None:
        super().__init__(code)


class StopRequested(KeyboardInterrupt):
    """Ctrl-C or a signal inside a sweep worker. Optuna records a trial whose objective raised
    KeyboardInterrupt as failed (and the worker queues it again), while a SystemExit would pass
    through and leave the trial running; ``code`` is the exit status the worker ends with."""

    def __init__(self, code: int = 130) -> None:
        super().__init__(code)
        self.code = code
