"""Every CTR model on the default synthetic data, over seeds, against the Bayes-optimal ceiling.

    python experiments/synthetic_ctr.py                      # 3 seeds, all CTR models
    python experiments/synthetic_ctr.py --models lr deepfm --seeds 1 2 3 4 5

The data is the same for every run (its own seed is fixed in conf/data/synthetic.yaml); the
seeds vary initialisation and shuffling. The table shows how far each model is from the ceiling.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import polars as pl

from ranklab.report import aggregate, bar_plot, collect_runs, to_latex, to_markdown
from ranklab.runs import run_grid

ROOT = Path(__file__).resolve().parents[1]
MODELS = ["lr", "fm", "dnn", "wide_deep", "deepfm", "dcn", "dcnv2"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[2021, 2022, 2023])
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "experiments" / "synthetic_ctr")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = ap.parse_args(argv)
    runs = run_grid(
        ["data=synthetic", *args.overrides],
        [(m, [f"model={m}"]) for m in args.models],
        args.seeds,
        args.out,
    )
    df = collect_runs(runs).with_columns(
        (pl.col("bayes/test/auc") - pl.col("test/auc")).alias("gap_to_bayes")
    )
    metrics = ["test/auc", "gap_to_bayes", "test/logloss", "bayes/test/auc"]
    table = aggregate(df, metrics, by=["model"])
    md = to_markdown(table, metrics, by=["model"], digits=4)
    print(md)
    (args.out / "table.md").write_text(md)
    (args.out / "table.tex").write_text(to_latex(table, metrics, by=["model"], digits=4))
    bar_plot(
        table, "test/auc", args.out / "test_auc.png", ceiling=float(df["bayes/test/auc"].mean())
    )
    print(f"written {args.out}/table.md, table.tex, test_auc.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
