"""Labels declared in a data config, read from a table and checked against their spec.

A source takes ``label: <column>`` (one binary label, as every single-label config has) or
``labels:`` a list, each a column name or a mapping::

    labels:
      - {name: click, column: clk}
      - {name: conversion, column: conv, condition: click, joint: ctcvr}
      - {name: income, column: income_50k, positive: ["50000+."]}   # a binary label from values
      - {name: label, positive: ["1", "+1"], negative: ["0", "-1"]}  # any other value: an error
      - {name: dwell, column: dwell_s, kind: regression, weight: 0.5}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from ranklab.data.preprocess import fail_at_first, require_scalar
from ranklab.data.readers import separator_hint
from ranklab.data.schema import LABEL_KINDS, LabelSpec
from ranklab.errors import ConfigError, DataError

KEYS = ("name", "column", "kind", "weight", "condition", "joint", "positive", "negative")


@dataclass(frozen=True)
class LabelColumn:
    """How one label is read: its spec, the column holding it, and (binary labels from a
    categorical column) the values that mean 1; every other value means 0, unless
    ``negative`` lists the values that mean 0, and then any other value is an error."""

    spec: LabelSpec
    column: str
    positive: tuple[str, ...] = field(default=())
    negative: tuple[str, ...] = field(default=())
    key: str = "data.source.labels"  # the config key that names the column, for errors


def parse_labels(
    label: str | None, labels: Sequence[Any] | None, key: str = "data.source"
) -> list[LabelColumn]:
    """``label`` (one binary column) or ``labels`` (the list above); exactly one of them."""
    if (label is None) == (labels is None):
        raise ConfigError(f"{key}.labels", "give either `label: <column>` or a `labels:` list")
    if label is not None:
        return [LabelColumn(LabelSpec(str(label)), str(label), key=f"{key}.label")]
    out = []
    for i, entry in enumerate(labels or []):
        where = f"{key}.labels[{i}]"
        entry = {"name": entry} if isinstance(entry, str) else dict(entry)
        unknown = sorted(set(entry) - set(KEYS))
        if unknown:
            raise ConfigError(f"{where}.{unknown[0]}", f"unknown option (known: {list(KEYS)})")
        if "name" not in entry:
            raise ConfigError(where, "needs a 'name'")
        kind = entry.get("kind", "binary")
        if kind not in LABEL_KINDS:
            raise ConfigError(f"{where}.kind", f"must be one of {LABEL_KINDS}, got '{kind}'")
        positive = tuple(str(v) for v in entry.get("positive") or ())
        negative = tuple(str(v) for v in entry.get("negative") or ())
        if positive and kind != "binary":
            raise ConfigError(f"{where}.positive", "only a binary label takes positive values")
        if negative and not positive:
            raise ConfigError(f"{where}.negative", "goes with `positive` (the values meaning 1)")
        if set(positive) & set(negative):
            both = sorted(set(positive) & set(negative))
            raise ConfigError(f"{where}.negative", f"{both} listed as positive too")
        spec = LabelSpec(
            str(entry["name"]),
            kind,
            float(entry.get("weight", 1.0)),
            entry.get("condition"),
            entry.get("joint"),
        )
        column = str(entry.get("column", entry["name"]))
        out.append(LabelColumn(spec, column, positive, negative, key=f"{where}.column"))
    if not out:
        raise ConfigError(f"{key}.labels", "needs at least one label")
    names = [c.spec.name for c in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"{key}.labels", f"duplicate label names in {names}")
    for i, c in enumerate(out):
        cond = c.spec.condition
        if cond is not None and (cond not in names or cond == c.spec.name):
            raise ConfigError(
                f"{key}.labels[{i}].condition",
                f"label '{c.spec.name}': its condition '{cond}' is not another label ({names})",
            )
        if cond is not None and out[names.index(cond)].spec.kind != "binary":
            raise ConfigError(f"{key}.labels[{i}].condition", f"'{cond}' is not a binary label")
    return out


def encode_labels(
    df: pl.DataFrame, columns: Sequence[LabelColumn], path: str, line_offset: int = 2
) -> dict[str, np.ndarray]:
    """Each label as float32 (N,), checked: a binary label is 0 or 1 (or read through
    ``positive``), a regression label a finite number, and a conditional label is 0 wherever
    its condition is 0. A failure names the file, line and column. ``line_offset`` converts a
    0-based row to a file line (2 = one header line)."""
    out: dict[str, np.ndarray] = {}
    for c in columns:
        if c.column not in df.columns:
            raise DataError(
                f"label '{c.spec.name}' (config key {c.key}) reads column "
                f"'{c.column}', which the file does not have (it has {df.columns})"
                f"{separator_hint(df.columns)}",
                path=path,
            )
        require_scalar(df, [c.column], path, c.key)
        raw = df[c.column]
        if c.positive:
            text = raw.cast(pl.String).str.strip_chars()
            if c.negative:
                known = [*c.positive, *c.negative]
                fail_at_first(
                    ~text.is_in(known).fill_null(False),
                    lambda i, raw=raw, c=c: (
                        f"label must be one of {list(c.positive)} (1) or {list(c.negative)} (0), "
                        f"found {_shown(raw[i])}"
                    ),
                    path,
                    line_offset,
                    c.column,
                )
            out[c.spec.name] = (
                text.is_in(list(c.positive)).fill_null(False).cast(pl.Float32).to_numpy()
            )
            continue
        num = raw.cast(pl.Float64, strict=False) if raw.dtype == pl.String else raw.cast(pl.Float64)
        if c.spec.kind == "binary":
            bad = num.is_null() | ~num.is_in([0.0, 1.0])
            why = "label must be 0 or 1"
        else:
            bad = num.is_null() | ~num.is_finite()
            why = f"regression label '{c.spec.name}' must be a finite number"
        msg = lambda i, why=why, raw=raw: f"{why}, found {_shown(raw[i])}"  # noqa: E731
        fail_at_first(bad, msg, path, line_offset, c.column)
        out[c.spec.name] = num.fill_null(0.0).cast(pl.Float32).to_numpy()  # skipped rows: 0
    by_name = {c.spec.name: c for c in columns}
    for c in columns:
        cond = c.spec.condition
        if cond is None or cond not in out:
            continue
        y = out[c.spec.name]
        fail_at_first(
            pl.Series((out[cond] == 0) & (y != 0)),
            lambda i, c=c, cond=cond, y=y: (
                f"label '{c.spec.name}' is {y[i]:g} where its condition "
                f"'{cond}' (column '{by_name[cond].column}') is 0: it is observed only where "
                f"{cond} == 1"
            ),
            path,
            line_offset,
            c.column,
        )
    return out


def label_meta(arrays: Mapping[str, np.ndarray], columns: Sequence[LabelColumn]) -> dict:
    """Per label: its mean (the base rate of a binary label) and, for a conditional label, the
    rows where it is observed."""
    out = {}
    for c in columns:
        y = arrays[c.spec.name]
        entry: dict[str, float] = {"mean": float(y.mean()) if len(y) else float("nan")}
        if c.spec.condition is not None:
            observed = arrays[c.spec.condition] == 1
            entry["observed_rows"] = int(observed.sum())
            entry["mean_observed"] = float(y[observed].mean()) if observed.any() else float("nan")
        out[c.spec.name] = entry
    return out


def _shown(value: object) -> str:
    """A label field as a message shows it: an empty (null) one is said so, not ``None``."""
    return "an empty field" if value is None else repr(value)
