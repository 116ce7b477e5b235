"""Aggregation of run directories into publication tables and plots."""

from ranklab.report.plots import bar_plot, gap_plot, learning_curves, reliability_diagram
from ranklab.report.tables import (
    Runs,
    aggregate,
    collect_runs,
    find_runs,
    holm,
    load_runs,
    missing_notes,
    pooling_notes,
    relaimpr,
    resolve_baseline,
    significance,
    significance_note,
    to_latex,
    to_markdown,
    with_pvalues,
)

__all__ = [
    "Runs",
    "aggregate",
    "bar_plot",
    "collect_runs",
    "find_runs",
    "gap_plot",
    "holm",
    "learning_curves",
    "load_runs",
    "missing_notes",
    "pooling_notes",
    "relaimpr",
    "reliability_diagram",
    "resolve_baseline",
    "significance",
    "significance_note",
    "to_latex",
    "to_markdown",
    "with_pvalues",
]
