"""Aggregation of run directories into publication tables and plots."""

from ranklab.report.plots import bar_plot, learning_curves
from ranklab.report.tables import (
    aggregate,
    collect_runs,
    find_runs,
    significance,
    to_latex,
    to_markdown,
)

__all__ = [
    "aggregate",
    "bar_plot",
    "collect_runs",
    "find_runs",
    "learning_curves",
    "significance",
    "to_latex",
    "to_markdown",
]
