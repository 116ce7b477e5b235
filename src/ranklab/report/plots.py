"""Plots from run outputs: mean ± std bars per model, validation curves per epoch."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import polars as pl


def bar_plot(
    table: pl.DataFrame,
    metric: str,
    path: str | Path,
    label: str = "model",
    ceiling: float | None = None,
) -> Path:
    """Horizontal bars of ``metric`` mean with std error bars; a dashed line at the ceiling."""
    path = Path(path)
    fig, ax = plt.subplots(figsize=(6, 0.45 * table.height + 1.2))
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
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def learning_curves(run_dirs: Sequence[str | Path], path: str | Path, metric: str = "auc") -> Path:
    """Validation ``metric`` per epoch for each run (from metrics.json history)."""
    path = Path(path)
    fig, ax = plt.subplots(figsize=(6, 4))
    for run in map(Path, run_dirs):
        m = json.loads((run / "metrics.json").read_text())
        hist = m.get("history") or []
        if hist:
            ax.plot(
                [h["epoch"] for h in hist],
                [h[metric] for h in hist],
                marker=".",
                label=f"{m['model']} s{m['seed']}",
            )
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"val {metric}")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
