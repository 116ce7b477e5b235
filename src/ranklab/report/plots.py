"""Plots from run outputs: mean ± std bars per row, validation curves, reliability diagrams.

Every function returns a matplotlib ``Figure`` (shown inline when a notebook cell ends with it)
and saves it only when given ``path``. Figures are built without pyplot, so importing ranklab
changes no backend and leaves no figure open in pyplot's registry.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl
from matplotlib.figure import Figure


def _done(fig: Figure, path: str | Path | None) -> Figure:
    fig.tight_layout()
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    return fig


def bar_plot(
    table: pl.DataFrame,
    metric: str,
    path: str | Path | None = None,
    label: str = "label",
    ceiling: float | None = None,
) -> Figure:
    """Horizontal bars of ``metric`` mean with std error bars; a dashed line at the ceiling.
    Rows without the metric (a single-task model of another label) are left out."""
    table = table.filter(pl.col(f"{metric}:mean").is_not_null())
    fig = Figure(figsize=(7, 0.45 * table.height + 1.2))
    ax = fig.subplots()
    names = [str(x) for x in table[label]]
    means = table[f"{metric}:mean"].to_list()
    stds = [s if s is not None else 0.0 for s in table[f"{metric}:std"].to_list()]
    ax.barh(names, means, xerr=stds, color="#4C72B0", capsize=3)
    lo = min(m - s for m, s in zip(means, stds))
    hi = max([m + s for m, s in zip(means, stds)] + ([ceiling] if ceiling else []))
    pad = (hi - lo) * 0.15 or 0.01
    ax.set_xlim(lo - pad, hi + pad)
    if ceiling is not None:
        ax.axvline(ceiling, ls="--", color="k", lw=1, label="Bayes-optimal")
        ax.legend(loc="lower right")
    ax.set_xlabel(f"{metric} (mean ± std over seeds)")
    ax.invert_yaxis()
    return _done(fig, path)


def _metrics(run: Path) -> dict[str, Any]:
    return json.loads((Path(run) / "metrics.json").read_text())


def learning_curves(
    run_dirs: Sequence[str | Path],
    path: str | Path | None = None,
    metric: str = "auc",
    names: Sequence[str] | None = None,
) -> Figure:
    """Validation ``metric`` per epoch for each run (from metrics.json ``history``), named by
    ``names`` (one per run) or ``<model> s<seed>``."""
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for i, run in enumerate(run_dirs):
        m = _metrics(Path(run))
        hist = [h for h in m.get("history") or [] if metric in h]
        if hist:
            name = names[i] if names is not None else f"{m['model']} s{m['seed']}"
            ax.plot([h["epoch"] for h in hist], [h[metric] for h in hist], marker=".", label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"val {metric}")
    if ax.lines:
        ax.legend(fontsize=7, ncol=2)
    return _done(fig, path)


def reliability_diagram(
    runs: dict[str, Sequence[str | Path]], path: str | Path | None = None, split: str = "test"
) -> Figure:
    """One panel per name in ``runs`` (e.g. a model): observed click rate against mean
    prediction in equal-mass bins (``metrics.json`` ``reliability``), every run of it one line,
    the diagonal for perfect calibration, log scales (click probabilities crowd near 0)."""
    names = [n for n, dirs in runs.items() if any(_reliability(d, split) for d in dirs)]
    fig = Figure(figsize=(3.2 * max(1, len(names)), 3.4))
    axes = fig.subplots(1, max(1, len(names)), squeeze=False)[0]
    for ax, name in zip(axes, names):
        lo = 1.0
        for d in runs[name]:
            r = _reliability(d, split)
            if r:
                pts = [(p, y) for p, y in zip(r["mean_pred"], r["pos_rate"]) if p > 0 and y > 0]
                ax.plot(*zip(*pts), marker="o", ms=3, lw=1, label=f"seed {_metrics(d)['seed']}")
                lo = min(lo, *(min(p, y) for p, y in pts))
        ax.plot([lo, 1], [lo, 1], ls="--", color="k", lw=0.8)
        ax.set(xscale="log", yscale="log", title=name, xlabel="mean prediction")
        ax.legend(fontsize=6)
    axes[0].set_ylabel(f"observed click rate ({split})")
    return _done(fig, path)


def _reliability(run: str | Path, split: str) -> dict[str, list[float]] | None:
    return (_metrics(Path(run)).get("reliability") or {}).get(split)


def gap_plot(
    points: pl.DataFrame, x: str, path: str | Path | None = None, ylabel: str = "gap"
) -> Figure:
    """One panel per ``label``: mean ``gap`` (± std over seeds) against ``x`` for each
    ``line`` (e.g. a model). ``points``: one row per run, columns ``line``, ``label``, ``x``
    (numeric) and ``gap``."""
    labels = points["label"].unique(maintain_order=True).to_list()
    fig = Figure(figsize=(4.2 * max(1, len(labels)), 3.6))
    axes = fig.subplots(1, max(1, len(labels)), squeeze=False)[0]
    for ax, label in zip(axes, labels):
        sub = points.filter(pl.col("label") == label)
        stats = (
            sub.group_by(["line", "x"], maintain_order=True)
            .agg(pl.col("gap").mean().alias("mean"), pl.col("gap").std().alias("std"))
            .sort("x")
        )
        for line in stats["line"].unique(maintain_order=True).to_list():
            s = stats.filter(pl.col("line") == line)
            err = [v if v is not None else 0.0 for v in s["std"].to_list()]
            ax.errorbar(
                s["x"].to_list(),
                s["mean"].to_list(),
                yerr=err,
                marker="o",
                ms=3,
                capsize=2,
                label=line,
            )
        ax.axhline(0.0, color="k", lw=0.8, ls="--")
        ax.set(title=label, xlabel=x, ylabel=ylabel)
        ax.legend(fontsize=7)
    return _done(fig, path)
