"""``ranklab-report RUN_DIR_OR_PARENT... [--metrics test/auc test/logloss] [--baseline DeepFM]``

Writes table.md, table.tex, runs.csv, summary.csv and a bar plot into --out, and prints the
Markdown table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ranklab.report.plots import bar_plot
from ranklab.report.tables import aggregate, collect_runs, significance, to_latex, to_markdown


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="ranklab-report", description=__doc__)
    ap.add_argument("runs", nargs="+", help="run directories or folders holding them")
    ap.add_argument("--metrics", nargs="+", default=["test/auc", "test/logloss"])
    ap.add_argument("--by", nargs="+", default=["data", "model"])
    ap.add_argument("--baseline", default=None, help="model to test the others against")
    ap.add_argument("--digits", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None, help="folder for the files (default: none)")
    args = ap.parse_args(argv)
    df = collect_runs(args.runs)
    if df.is_empty():
        print(f"error: no metrics.json under {args.runs}", file=sys.stderr)
        return 2
    missing = [m for m in [*args.metrics, *args.by] if m not in df.columns]
    if missing:
        print(
            f"error: unknown column(s) {missing}; runs have {sorted(df.columns)}", file=sys.stderr
        )
        return 2
    table = aggregate(df, args.metrics, args.by)
    pvals = None
    if args.baseline:
        sig = significance(df, args.metrics[0], args.baseline, by=args.by[-1], group=args.by[:-1])
        pvals = dict(zip(sig[args.by[-1]], sig["p_value"]))
        table = table.join(sig.select([*args.by, "p_value"]), on=list(args.by), how="left")
    md = to_markdown(table, args.metrics, args.by, args.digits, pvals)
    print(md)
    if args.baseline:
        print(
            f"* p < 0.05 against {args.baseline} on {args.metrics[0]} "
            "(paired t-test over shared seeds)"
        )
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "table.md").write_text(md)
        (args.out / "table.tex").write_text(to_latex(table, args.metrics, args.by, args.digits))
        df.write_csv(args.out / "runs.csv")
        table.write_csv(args.out / "summary.csv")
        ceiling = None
        if "bayes/test/auc" in df.columns and args.metrics[0] == "test/auc":
            ceiling = df["bayes/test/auc"].drop_nulls().drop_nans().mean()
        bar_plot(
            table, args.metrics[0], args.out / "metric.png", label=args.by[-1], ceiling=ceiling
        )
        print(f"written {args.out}/table.md, table.tex, runs.csv, summary.csv, metric.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
