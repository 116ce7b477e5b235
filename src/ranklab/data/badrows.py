"""``on_bad_rows: skip``: malformed rows are counted and dropped instead of failing the run.

A :class:`BadRows` collector is made active (:func:`collecting`) while a file is read and
checked; the checks that would raise at a malformed row (a line with the wrong number of
fields, a label outside its kind, a value that does not parse or is not finite) record every
such row instead. The first few are kept with their file and line for the report; the count
goes to the cache's meta and to ``metrics.json``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import numpy as np

from ranklab.errors import DataError

log = logging.getLogger(__name__)
SHOWN = 5  # malformed rows quoted in the report (all are counted)
_ACTIVE: ContextVar[BadRows | None] = ContextVar("bad_rows", default=None)


@dataclass
class BadRows:
    """Malformed rows of one file: lines the reader dropped, then rows a check rejected."""

    dropped_lines: int = 0  # lines with the wrong number of fields, dropped by the reader
    examples: list[DataError] = field(default_factory=list)
    mask: np.ndarray | None = None  # (rows,) rows of the read frame a check rejected
    lines: np.ndarray | None = None  # (rows,) each row's file line, where lines were dropped

    def note(self, error: DataError) -> None:
        if len(self.examples) < SHOWN:
            self.examples.append(error)

    def drop_lines(self, errors: list[DataError], kept_lines: np.ndarray) -> None:
        """The reader dropped these lines; ``kept_lines`` are the file lines of its rows."""
        self.dropped_lines += len(errors)
        for e in errors:
            self.note(e)
        self.lines = kept_lines

    def relocate(self, read: str, path: str, delta: int) -> None:
        """What was read from a chunk file ``read`` belongs to ``path``, ``delta`` lines on."""
        self.examples = [
            DataError(e.message, path, None if e.line is None else e.line + delta, e.column)
            if e.path == read
            else e
            for e in self.examples
        ]
        if self.lines is not None:
            self.lines = self.lines + delta

    def report(self) -> dict:
        # in line order (the checks run column by column, each noting its first failure)
        shown = sorted(self.examples, key=lambda e: (e.path or "", e.line or 0))
        return {"skipped": self.count, "examples": [str(e) for e in shown]}

    def reject(self, rows: np.ndarray, error: DataError) -> None:
        """Rows (indices into the frame) that failed a check; ``error`` names the first."""
        assert self.mask is not None, "rows are rejected after start(frame rows)"
        self.mask[rows] = True
        self.note(error)

    def start(self, rows: int) -> None:
        """The reader is done: row checks of a frame of ``rows`` rows follow."""
        self.mask = np.zeros(rows, dtype=bool)

    def line(self, row: int, line_offset: int) -> int:
        return int(self.lines[row]) if self.lines is not None else row + line_offset

    @property
    def count(self) -> int:
        return self.dropped_lines + (int(self.mask.sum()) if self.mask is not None else 0)


def active() -> BadRows | None:
    """The collector of the file being read, or None (``on_bad_rows: fail``)."""
    return _ACTIVE.get()


@contextmanager
def collecting() -> Iterator[BadRows]:
    collector = BadRows()
    token = _ACTIVE.set(collector)
    try:
        yield collector
    finally:
        _ACTIVE.reset(token)


def warn_skipped(path: str, report: dict) -> None:
    """The one warning a file's skipped rows get."""
    log.warning(
        "%s: skipped %d malformed rows (data.source.on_bad_rows: skip); the first: %s",
        path,
        report["skipped"],
        report["examples"][0],
    )


def merge_reports(reports: list[dict]) -> dict:
    """One split's report from its files' (or chunks'): the count and the first examples."""
    examples = [e for r in reports for e in r["examples"]][:SHOWN]
    return {"skipped": sum(r["skipped"] for r in reports), "examples": examples}
