"""Reproduce the BARS Frappe_x1 leaderboard: every CTR model, BARS protocol, five BARS seeds.

    make reproduce-frappe                       # DATA_DIR=../shared/data by default
    python experiments/frappe_x1_bars.py --data-dir ../shared/data --models deepfm --seeds 2021

Each (model, seed) is one ordinary run directory under --out; rerunning skips finished runs.
The table compares the test AUC / log loss means with the published BARS figures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import polars as pl

from ranklab.report import aggregate, bar_plot, collect_runs, to_latex, to_markdown
from ranklab.runs import run_grid

ROOT = Path(__file__).resolve().parents[1]
BARS_SEEDS = [2021, 190034, 992817, 27011, 948432]
MODELS = ["lr", "fm", "dnn", "wide_deep", "deepfm", "dcn", "dcnv2"]
# Published test AUC on Frappe_x1 (../shared/data/README.md, BARS): five-seed means where
# BARS reports them, single runs (seed 2021) for LR and FM.
BARS_AUC = {
    "LR": 0.9356,
    "FM": 0.9671,
    "DNN": 0.98405,
    "WideDeep": 0.98307,
    "DeepFM": 0.98395,
    "DCN": 0.98342,
    "DCNv2": 0.98382,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--seeds", nargs="+", type=int, default=BARS_SEEDS)
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "experiments" / "frappe_x1_bars")
    args = ap.parse_args(argv)
    base = ["data=frappe_x1", f"paths.data_dir={args.data_dir.resolve()}"]
    runs = run_grid(base, [(m, [f"model={m}"]) for m in args.models], args.seeds, args.out)
    df = collect_runs(runs)
    metrics = ["test/auc", "test/logloss", "val/auc", "best_epoch", "wall_time_s"]
    table = aggregate(df, metrics, by=["model"])
    table = table.with_columns(
        pl.col("model")
        .replace_strict(BARS_AUC, default=None, return_dtype=pl.Float64)
        .alias("bars_auc")
    ).with_columns((pl.col("test/auc:mean") - pl.col("bars_auc")).alias("delta_vs_bars"))
    md = to_markdown(table, metrics[:3], by=["model"])
    md += "\n| model | BARS test AUC | ours − BARS |\n|---|---:|---:|\n"
    for r in table.iter_rows(named=True):
        md += f"| {r['model']} | {r['bars_auc']:.5f} | {r['delta_vs_bars']:+.5f} |\n"
    print(md)
    (args.out / "table.md").write_text(md)
    (args.out / "table.tex").write_text(to_latex(table, metrics[:2], by=["model"]))
    table.write_csv(args.out / "summary.csv")
    bar_plot(table, "test/auc", args.out / "test_auc.png")
    print(f"written {args.out}/table.md, table.tex, summary.csv, test_auc.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
