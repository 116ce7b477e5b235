"""``ranklab-report RUN_DIR_OR_PARENT... [--metrics test/auc test/logloss] [--baseline DeepFM]``

One row per experiment (the config without the seed): runs that share data and model but differ
in configuration are separate rows, labelled by the keys that differ; the same experiment and
seed twice counts once; smoke runs are left out; runs made on other data or warm-started from
other weights are other rows. ``--by data model`` pools on purpose and says what it pooled.
With ``--baseline``, every metric of every row is tested against the baseline's (paired t-test
over shared seeds, Welch's where they are not the same seeds; ``--holm`` corrects for the
number of comparisons). The costs follow the metrics where the runs measured them (parameters,
peak memory, latency of a batch of 4,096; ``--costs`` names others). Writes table.md, table.tex,
runs.csv, summary.csv and a bar plot into --out, and prints the Markdown table with its notes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ranklab.errors import RanklabError
from ranklab.report.plots import bar_plot
from ranklab.report.tables import (
    ROW,
    aggregate,
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

# the cost columns shown by default: parameters, peak memory (process RSS), and the latency of
# a batch of 4,096 (p50, ms); the GPU's peak memory and batch-1 latency with --costs
COSTS = ("n_params", "efficiency/peak_rss_mb", "efficiency/latency_ms_batch4096/p50")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="ranklab-report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("runs", nargs="+", help="run directories or folders holding them")
    ap.add_argument("--metrics", nargs="+", default=["test/auc", "test/logloss"])
    ap.add_argument(
        "--costs",
        nargs="*",
        default=list(COSTS),
        help="what the results cost, shown after the metrics where the runs measured it "
        "(never tested for significance; lowest is best); --costs alone shows none",
    )
    ap.add_argument(
        "--by",
        nargs="+",
        default=None,
        help="pool runs by these columns (e.g. data model); default: one row per experiment",
    )
    ap.add_argument("--baseline", default=None, help="row (or model) to test the others against")
    ap.add_argument("--holm", action="store_true", help="Holm-correct the p-values")
    ap.add_argument(
        "--relaimpr", action="store_true", help="add RelaImpr over the baseline for AUC metrics"
    )
    ap.add_argument("--include-smoke", action="store_true", help="count smoke/debug runs too")
    ap.add_argument("--digits", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None, help="folder for the files (default: none)")
    args = ap.parse_args(argv)
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        print(f"error: --out {args.out} is a file: give a folder for the report", file=sys.stderr)
        return 2  # checked before the table: nothing printed, nothing written
    try:
        return _report(args)
    except RanklabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _report(args: argparse.Namespace) -> int:
    runs = load_runs(args.runs, include_smoke=args.include_smoke)
    df = runs.df
    if df.is_empty():
        print(f"error: no finished runs (metrics.json) under {args.runs}", file=sys.stderr)
        for n in runs.notes:
            print(f"  {n}", file=sys.stderr)
        return 2
    by = list(args.by or ROW)
    missing = [m for m in [*args.metrics, *by] if m not in df.columns]
    if missing:
        print(
            f"error: unknown column(s) {missing}; runs have {sorted(df.columns)}", file=sys.stderr
        )
        return 2
    # a cost no run measured (efficiency=false) is left out rather than shown empty
    if args.costs != list(COSTS):  # named on the command line: each must be there
        missing = [c for c in args.costs if c not in df.columns]
        if missing:
            print(
                f"error: unknown cost column(s) {missing}; runs have {sorted(df.columns)}",
                file=sys.stderr,
            )
            return 2
    costs = [c for c in args.costs if c in df.columns and df[c].drop_nulls().len()]
    shown = [*args.metrics, *[c for c in costs if c not in args.metrics]]
    notes = list(runs.notes)
    if args.by:
        notes += pooling_notes(runs, by)
    notes += missing_notes(df, shown, by)
    key = by[-1]
    table = aggregate(df, shown, by)
    extra, footnote = [], None
    if args.baseline:
        base = resolve_baseline(df, args.baseline, key, by[:-1])
        correction = "holm" if args.holm else None
        sig = significance(df, args.metrics, base, key, by[:-1], correction)
        footnote = significance_note(sig, base, key, args.holm)
        # each row's p-value against its own data set's baseline (stars and summary.csv)
        table = with_pvalues(table, sig, key, by[:-1])
        if args.relaimpr:
            for m in args.metrics:
                if m.endswith("auc"):
                    table = relaimpr(table, m, base, key, by[:-1])
                    extra.append(f"RelaImpr {m}")
    md = to_markdown(table, shown, by, args.digits, extra=extra)
    print(md)
    if footnote:
        print(footnote)
    for n in notes:
        print(f"note: {n}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        body = md + ("\n" + footnote + "\n" if footnote else "")
        body += "".join(f"\nnote: {n}" for n in notes) + ("\n" if notes else "")
        (args.out / "table.md").write_text(body)
        (args.out / "table.tex").write_text(to_latex(table, shown, by, args.digits, extra=extra))
        df.write_csv(args.out / "runs.csv")
        table.write_csv(args.out / "summary.csv")
        ceiling = None
        if "bayes/test/auc" in df.columns and args.metrics[0] == "test/auc":
            ceiling = df["bayes/test/auc"].drop_nulls().drop_nans().mean()
        bar_plot(table, args.metrics[0], label=key, ceiling=ceiling, path=args.out / "metric.png")
        print(f"written {args.out}/table.md, table.tex, runs.csv, summary.csv, metric.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
