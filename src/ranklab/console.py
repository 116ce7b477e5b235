"""The end-of-run summary table (rich)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

ORDER = ("auc", "gauc", "logloss", "ne", "calibration")


def fmt(v: Any, digits: int = 5) -> str:
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return "" if v is None else str(v)


def summary_table(metrics: dict[str, Any]) -> Table:
    """One table: val and test metrics, the Bayes-optimal ceiling when known, and run facts."""
    bayes = metrics.get("bayes") or {}
    m = metrics
    table = Table(title=f"ranklab · {m.get('model')} on {m.get('data')} · seed {m.get('seed')}")
    table.add_column("metric")
    table.add_column("val", justify="right")
    table.add_column("test", justify="right")
    if bayes:
        table.add_column("Bayes-optimal (test)", justify="right")
    names = [k for k in ORDER if k in metrics.get("test", {}) or k in metrics.get("val", {})]
    names += [k for k in metrics.get("test", {}) if k not in names]
    for k in names:
        row = [k, fmt(metrics.get("val", {}).get(k)), fmt(metrics.get("test", {}).get(k))]
        if bayes:
            row.append(fmt(bayes.get("test", {}).get(k)))
        table.add_row(*row)
    table.add_section()
    facts = [
        ("best epoch", metrics.get("best_epoch")),
        ("epochs run", metrics.get("epochs")),
        ("parameters", f"{metrics.get('n_params', 0):,}"),
        ("train samples/s", f"{metrics.get('train_samples_per_s', 0):,.0f}"),
        ("wall time (s)", fmt(metrics.get("wall_time_s"), 1)),
        ("run dir", metrics.get("run_dir")),
    ]
    env = metrics.get("environment")
    if env:  # the digits depend on these too
        threads = f"{env['threads']} threads"
        facts.append(("environment", f"torch {env['torch']}, {env['device']}, {threads}"))
    for k, v in facts:
        table.add_row(k, "", str(v), *([""] if bayes else []))
    return table


def print_summary(metrics: dict[str, Any]) -> None:
    Console().print(summary_table(metrics))
