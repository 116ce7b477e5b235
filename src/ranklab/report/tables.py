"""Run directories -> one polars frame -> mean ± std tables (Markdown, LaTeX, CSV) with tests.

Only ``metrics.json`` files are read: they are the source of truth for every table.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import polars as pl
from scipy import stats

from ranklab.utils import flatten

ID_COLUMNS = ("data", "model", "experiment_hash", "seed", "run_dir")


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Every directory holding a metrics.json at or below the given paths, sorted."""
    found: set[Path] = set()
    for p in map(Path, paths):
        if p.is_file() and p.name == "metrics.json":
            found.add(p.parent)
        elif p.is_dir():
            found.update(m.parent for m in p.rglob("metrics.json"))
    return sorted(found)


def collect_runs(paths: Iterable[str | Path]) -> pl.DataFrame:
    """One row per run: identifiers plus every scalar metric, flattened as ``test/auc``."""
    rows = []
    for run in find_runs(paths):
        m = json.loads((run / "metrics.json").read_text())
        flat = {
            k: v
            for k, v in flatten(m).items()
            if isinstance(v, int | float | str | None) and k != "history"
        }
        flat["run_dir"] = str(run)
        rows.append(flat)
    if not rows:
        return pl.DataFrame()
    return pl.DataFrame(rows, infer_schema_length=None)


def aggregate(
    df: pl.DataFrame, metrics: Sequence[str], by: Sequence[str] = ("data", "model")
) -> pl.DataFrame:
    """Mean, sample std (ddof 1) and count over seeds for each group."""
    aggs = [pl.len().alias("n")]
    for m in metrics:
        aggs += [pl.col(m).mean().alias(f"{m}:mean"), pl.col(m).std(ddof=1).alias(f"{m}:std")]
    return df.group_by(list(by), maintain_order=True).agg(aggs).sort(list(by))


def significance(
    df: pl.DataFrame,
    metric: str,
    baseline: str,
    by: str = "model",
    group: Sequence[str] = ("data",),
) -> pl.DataFrame:
    """p-value of each model against ``baseline`` on ``metric``, per data set.

    Paired t-test over the seeds both have (the same seeds give the same data order and
    initialisation streams), Welch's t-test when the seeds differ.
    """
    out = []
    for key, sub in df.group_by(list(group), maintain_order=True):
        base = sub.filter(pl.col(by) == baseline)
        for name, other in sub.group_by(by, maintain_order=True):
            name = name[0]
            p = math.nan
            test = "-"
            if name != baseline and base.height >= 2 and other.height >= 2:
                joined = base.select("seed", pl.col(metric).alias("a")).join(
                    other.select("seed", pl.col(metric).alias("b")), on="seed"
                )
                if joined.height >= 2 and joined.height == base.height == other.height:
                    p, test = float(stats.ttest_rel(joined["b"], joined["a"]).pvalue), "paired t"
                else:
                    p = float(stats.ttest_ind(other[metric], base[metric], equal_var=False).pvalue)
                    test = "Welch t"
            out.append({**dict(zip(group, key)), by: name, "p_value": p, "test": test})
    return pl.DataFrame(out)


def fmt_mean_std(mean: float | None, std: float | None, digits: int = 5) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _best(table: pl.DataFrame, metric: str, higher: bool) -> set[int]:
    col = table[f"{metric}:mean"]
    if col.is_null().all():
        return set()
    target = col.max() if higher else col.min()
    return {i for i, v in enumerate(col) if v == target}


LOWER_IS_BETTER = ("logloss", "ne", "wall_time_s", "gap_to_bayes")


def to_markdown(
    table: pl.DataFrame,
    metrics: Sequence[str],
    by: Sequence[str] = ("data", "model"),
    digits: int = 5,
    pvalues: dict[str, float] | None = None,
    pvalue_key: str | None = None,
) -> str:
    """Markdown table; the best mean per metric in bold; ``*`` marks p < 0.05 vs the baseline
    (``pvalues`` keyed by the values of column ``pvalue_key``, default the last ``by``)."""
    key = pvalue_key or by[-1]
    head = [*by, "n", *metrics]
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] * len(by) + ["---:"] * (1 + len(metrics))) + "|",
    ]
    best = {m: _best(table, m, not m.endswith(LOWER_IS_BETTER)) for m in metrics}
    for i, row in enumerate(table.iter_rows(named=True)):
        cells = [str(row[b]) for b in by] + [str(row["n"])]
        for m in metrics:
            c = fmt_mean_std(row[f"{m}:mean"], row[f"{m}:std"], digits)
            if i in best[m]:
                c = f"**{c}**"
            cells.append(c)
        if pvalues and pvalues.get(row[key], 1.0) < 0.05:
            cells[list(by).index(key)] += "*"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_latex(
    table: pl.DataFrame,
    metrics: Sequence[str],
    by: Sequence[str] = ("data", "model"),
    digits: int = 5,
) -> str:
    """A booktabs table; the best mean per metric in bold."""
    best = {m: _best(table, m, not m.endswith(LOWER_IS_BETTER)) for m in metrics}
    esc = lambda s: str(s).replace("_", r"\_").replace("&", r"\&")  # noqa: E731
    lines = [
        r"\begin{tabular}{" + "l" * len(by) + "r" * (1 + len(metrics)) + "}",
        r"\toprule",
        " & ".join([*(esc(b) for b in by), "$n$", *(esc(m) for m in metrics)]) + r" \\",
        r"\midrule",
    ]
    for i, row in enumerate(table.iter_rows(named=True)):
        cells = [esc(row[b]) for b in by] + [str(row["n"])]
        for m in metrics:
            mean, std = row[f"{m}:mean"], row[f"{m}:std"]
            s = f"{mean:.{digits}f}" if mean is not None else "--"
            if i in best[m]:
                s = rf"\textbf{{{s}}}"
            if std is not None and not math.isnan(std):
                s += rf" $\pm$ {std:.{digits}f}"
            cells.append(s)
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"
