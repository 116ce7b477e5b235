"""``ranklab-study experiments/<name>.yaml``: run a declared study and write its table.

A study file names the base overrides, the variants (each a list of overrides), the seeds,
the metrics of the table and, optionally, published reference values to compare against:

    name: frappe_x1_bars
    base: [data=frappe_x1, "paths.data_dir=${data_dir}"]
    variants: {lr: [model=lr], deepfm: [model=deepfm]}
    seeds: [2021, 190034]
    metrics: [test/auc, test/logloss]
    reference: {metric: test/auc, source: "BARS", values: {LR: 0.9356, DeepFM: 0.98395}}
    gap_plot: {x: data.source.task_correlation, labels: [click, conversion], metric: auc}

``gap_plot`` draws each label's gap to its Bayes-optimal value (``bayes/test/<label>/<metric>``
minus the run's ``test/<label>/<metric>``) against a config key, one line per model (and
``task.labels``), into ``gap.png``.

Every (variant, seed) is an ordinary run directory under ``--out/<variant>/seed<seed>``;
finished runs are skipped, so an interrupted study resumes. ``${data_dir}`` in overrides is
replaced by ``--data-dir``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from ranklab.config import closest, yaml_error
from ranklab.console import LOG_FORMAT
from ranklab.errors import ConfigError, RanklabError
from ranklab.report import (
    aggregate,
    bar_plot,
    gap_plot,
    load_runs,
    missing_notes,
    pooling_notes,
    significance,
    significance_note,
    to_latex,
    to_markdown,
    with_pvalues,
)
from ranklab.report.tables import Runs, fmt_mean_std
from ranklab.runs import run_grid

ROOT = Path(__file__).resolve().parents[2]
KEYS = {
    "name",
    "description",
    "base",
    "variants",
    "seeds",
    "metrics",
    "by",
    "baseline",
    "reference",
    "digits",
    "ceiling",
    "gap_plot",
}


def load_study(path: str | Path) -> dict[str, Any]:
    """Read and check a study file; unknown keys fail naming the key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("study", f"no study file {path}")
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise yaml_error(path, e, "study") from None
    if not isinstance(spec, dict):
        raise ConfigError("study", f"{path}: must map keys to values, got {type(spec).__name__}")
    unknown = set(spec) - KEYS
    if unknown:
        raise ConfigError(
            f"{path.name}: {sorted(unknown)[0]}", f"unknown key (known: {sorted(KEYS)})"
        )
    for key in ("variants", "seeds", "metrics"):
        if not spec.get(key):
            raise ConfigError(f"{path.name}: {key}", "is required and must not be empty")
    shapes = {
        "variants": (dict, "a mapping of variant names to lists of overrides"),
        "seeds": (list, "a list of seeds, e.g. [1, 2, 3]"),
        "metrics": (list, "a list of metrics, e.g. [test/auc, test/logloss]"),
    }
    for key, (kind, what) in shapes.items():
        if not isinstance(spec[key], kind):
            raise ConfigError(f"{path.name}: {key}", f"must be {what}, got {spec[key]!r}")
    for name, overrides in spec["variants"].items():
        if not isinstance(overrides, list):
            raise ConfigError(
                f"{path.name}: variants.{name}",
                f"must be a list of overrides, e.g. [{overrides}], got {overrides!r}",
            )
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in spec["seeds"]):
        raise ConfigError(f"{path.name}: seeds", f"must be whole numbers, got {spec['seeds']}")
    baseline = spec.get("baseline")
    by_variant = spec.get("by", "variant") == "variant"
    if baseline is not None and by_variant and baseline not in spec["variants"]:
        near = closest(str(baseline), [str(v) for v in spec["variants"]])
        hint = f"did you mean '{near}'? " if near else ""
        raise ConfigError(
            f"{path.name}: baseline",
            f"'{baseline}' is not a variant ({hint}variants: {', '.join(spec['variants'])})",
        )
    spec.setdefault("name", path.stem)
    spec.setdefault("base", [])
    spec.setdefault("by", "variant")
    spec.setdefault("digits", 5)
    return spec


def run_study(
    spec: dict[str, Any],
    out: Path,
    data_dir: Path,
    variants: list[str] | None = None,
    seeds: list[int] | None = None,
    train: bool = True,
) -> str:
    """Train what is missing (unless ``train`` is false), then write table.md / table.tex /
    runs.csv / summary.csv / plot.png from the finished runs."""
    subst = lambda o: str(o).replace("${data_dir}", str(data_dir.resolve()))  # noqa: E731
    chosen = variants or list(spec["variants"])
    missing = [v for v in chosen if v not in spec["variants"]]
    if missing:
        raise ConfigError(
            "--variants", f"{missing} not in the study (it has {list(spec['variants'])})"
        )
    grid = [(v, [subst(o) for o in spec["variants"][v]]) for v in chosen]
    runs, notes, diverged = run_grid(
        [subst(o) for o in spec["base"]],
        grid,
        seeds or spec["seeds"],
        out,
        train_missing=train,
        study=spec["name"],
    )
    if not runs and diverged:
        raise RunsDiverged(f"every run diverged: {', '.join(diverged)}; no table written", False)
    if not runs:
        raise ConfigError("study", f"no finished runs under {out}")
    md = _tabulate(spec, out, runs, notes, chosen)
    if diverged:  # a numerical fault: the table is written, and the study does not end with 0
        raise RunsDiverged(
            f"{len(diverged)} run(s) diverged: {', '.join(diverged)}; {out}/table.md leaves "
            "them out (see its notes)"
        )
    return md


class RunsDiverged(RanklabError):
    """Runs of a study diverged: the table of the others is written (``table``), and the
    study exits 2."""

    def __init__(self, message: str, table: bool = True) -> None:
        super().__init__(message)
        self.table = table


def _tabulate(
    spec: dict[str, Any], out: Path, runs: list[Path], notes: list[str], chosen: list[str]
) -> str:
    """table.md / table.tex / runs.csv / summary.csv / plot.png of the finished ``runs``."""
    loaded = load_runs(runs)
    # the variant is the run's parent directory (<out>/<variant>/seed<seed>)
    df = with_variants(
        loaded.df.with_columns(pl.col("run_dir").str.split("/").list.get(-2).alias("variant"))
    )
    if "bayes/test/auc" in df.columns and "test/auc" in df.columns:
        df = df.with_columns((pl.col("bayes/test/auc") - pl.col("test/auc")).alias("gap_to_bayes"))
    by = ["variant", "model"] if spec["by"] == "variant" else [spec["by"]]
    metrics = check_columns(df, spec, by)
    key = "variant" if "variant" in by else by[0]
    table = aggregate(df, metrics, by=by)
    order = {v: i for i, v in enumerate(chosen)}
    if "variant" in by:
        table = table.sort(pl.col("variant").replace_strict(order, default=len(order)))
    footnote = ""
    baseline = spec.get("baseline")
    if baseline and key == "variant" and baseline not in set(df["variant"].to_list()):
        split = [v for v in df["variant"].unique().to_list() if v.startswith(f"{baseline} (")]
        if split:  # with_variants split it: no one row to test against
            notes.append(
                f"nothing is tested against the baseline '{baseline}': its runs are "
                f"{len(split)} rows ({'; '.join(sorted(split))})"
            )
        else:  # left out by --variants, or none of its runs finished
            notes.append(
                f"nothing is tested against the baseline '{baseline}': it has no finished run "
                f"in this table"
            )
        baseline = None
    if baseline:
        sig = significance(df, metrics, spec["baseline"], key=key, group=["data"])
        # a variant is one data set's: its p-value against the baseline on the same data
        table = with_pvalues(table, sig.drop("data"), key)
        footnote = "\n" + significance_note(sig, spec["baseline"], key, False) + "\n"
    md = f"### {spec['name']}\n\n" + to_markdown(table, metrics, by, spec["digits"], group=())
    notes += loaded.notes + missing_notes(df, metrics, by)
    if by != ["variant", "model"]:
        notes += pooling_notes(Runs(df, loaded.configs), by)
    md += footnote + "".join(f"\nnote: {n}\n" for n in notes)
    ref = spec.get("reference")
    if ref:
        src = ref["source"]
        md += f"\n| model | {src} {ref['metric']} | ours | ours − {src} |\n|---|---:|---:|---:|\n"
        for r in table.iter_rows(named=True):
            if r["model"] in ref["values"] and f"{ref['metric']}:mean" in r:
                ours, theirs = r[f"{ref['metric']}:mean"], ref["values"][r["model"]]
                md += f"| {r['model']} | {theirs:.5f} | {ours:.5f} | {ours - theirs:+.5f} |\n"
    out.mkdir(parents=True, exist_ok=True)
    if spec.get("gap_plot"):  # its table belongs in table.md too
        md += gap_figure(loaded, df, spec["gap_plot"], out / "gap.png")
    (out / "table.md").write_text(md)
    (out / "table.tex").write_text(to_latex(table, metrics, by, spec["digits"], group=()))
    df.write_csv(out / "runs.csv")
    table.write_csv(out / "summary.csv")
    ceiling = (
        df["bayes/test/auc"].mean()
        if "bayes/test/auc" in df.columns and metrics[0] == "test/auc"
        else None
    )
    bar_plot(table, metrics[0], path=out / "plot.png", label=key, ceiling=ceiling)
    return md


def check_columns(df: pl.DataFrame, spec: dict[str, Any], by: list[str]) -> list[str]:
    """The study's metrics that its runs report; a metric no run reports, a ``by`` column
    or a baseline the runs lack fails naming the study's key (a typo would otherwise drop a
    column from the table, or test nothing, without a word)."""
    columns = sorted(c for c in df.columns if "/" in c)
    for m in spec["metrics"]:
        if m not in df.columns:
            near = closest(str(m), columns)
            hint = f"did you mean '{near}'? " if near else ""
            raise ConfigError(
                "metrics", f"no run reports '{m}' ({hint}they report {', '.join(columns)})"
            )
    for b in by:
        if b not in df.columns:
            raise ConfigError("by", f"the runs have no column '{b}' (try variant, model, data)")
    key = "variant" if "variant" in by else by[0]
    baseline = spec.get("baseline")
    if baseline is not None and key != "variant" and baseline not in set(df[key].to_list()):
        rows = sorted({str(v) for v in df[key].to_list()})
        raise ConfigError("baseline", f"'{baseline}' is no row of the table ({', '.join(rows)})")
    return list(spec["metrics"])


def with_variants(df: pl.DataFrame) -> pl.DataFrame:
    """A variant whose runs are of several experiments (some made on other data, or warm-started
    from other weights: :func:`ranklab.report.tables.load_runs` split them) becomes as many
    variants, each named after what tells it apart: ``lr (data_fingerprint=...)``."""
    if df.is_empty():
        return df
    counts = df.group_by("variant").agg(pl.col("experiment").n_unique().alias("_k"))
    df = df.join(counts, on="variant", how="left")
    suffix = pl.col("label").str.strip_prefix(pl.col("model")).str.strip_chars()
    named = pl.when(pl.col("_k") > 1).then(pl.concat_str(pl.col("variant"), pl.lit(" "), suffix))
    return df.with_columns(named.otherwise(pl.col("variant")).alias("variant")).drop("_k")


def gap_figure(loaded: Any, df: pl.DataFrame, conf: dict[str, Any], path: Path) -> str:
    """Each label's gap to its Bayes-optimal value against a config key (``gap_plot``), as a
    figure and a Markdown table (mean ± std over seeds)."""
    x, metric = str(conf["x"]), str(conf.get("metric", "auc"))
    rows = []
    for r in df.iter_rows(named=True):
        config = loaded.configs.get(r["experiment"]) or {}
        trained = config.get("task.labels")
        line = r["model"] + (f" ({', '.join(trained)})" if trained else "")
        for label in conf["labels"]:
            ours, best = r.get(f"test/{label}/{metric}"), r.get(f"bayes/test/{label}/{metric}")
            if ours is not None and best is not None and x in config:
                rows.append(
                    {"line": line, "label": label, "x": float(config[x]), "gap": best - ours}
                )
    if not rows:
        return ""
    points = pl.DataFrame(rows)
    gap_plot(points, x, path, ylabel=f"Bayes {metric} - test {metric}")
    stats = (
        points.group_by(["label", "line", "x"], maintain_order=True)
        .agg(
            pl.col("gap").mean().alias("mean"),
            pl.col("gap").std().alias("std"),
            pl.len().alias("n"),
        )
        .sort(["label", "line", "x"])
    )
    xs = sorted(set(stats["x"].to_list()))
    md = f"\n#### Gap to the Bayes-optimal test {metric} (mean ± std over seeds) against {x}\n\n"
    md += "| label | model | " + " | ".join(f"{v:g}" for v in xs) + " |\n"
    md += "|---|---|" + "---:|" * len(xs) + "\n"
    for (label, line), sub in stats.group_by(["label", "line"], maintain_order=True):
        cells = {r["x"]: fmt_mean_std(r["mean"], r["std"], 4) for r in sub.iter_rows(named=True)}
        md += f"| {label} | {line} | " + " | ".join(cells.get(v, "–") for v in xs) + " |\n"
    return md


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="ranklab-study",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("study", type=Path, help="a study file, e.g. experiments/frappe_x1_bars.yaml")
    ap.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("RANKLAB_DATA_DIR", "data")),
        help="what ${data_dir} stands for (default: $RANKLAB_DATA_DIR, else data/)",
    )
    ap.add_argument("--variants", nargs="+", default=None, help="run only these variants")
    ap.add_argument("--seeds", nargs="+", type=int, default=None, help="override the study's seeds")
    ap.add_argument(
        "--out", type=Path, default=None, help="default: outputs/studies/<name> (in this folder)"
    )
    ap.add_argument(
        "--table-only", action="store_true", help="tabulate finished runs, train nothing"
    )
    args = ap.parse_args(argv)
    # each run's epoch lines on the console (and in its train.log): long runs show progress
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stdout)
    try:
        spec = load_study(args.study)
        out = args.out or Path("outputs") / "studies" / spec["name"]  # as ranklab-train's outputs/
        print(
            run_study(
                spec, out, args.data_dir, args.variants, args.seeds, train=not args.table_only
            )
        )
        print(f"written {out}/table.md, table.tex, runs.csv, summary.csv, plot.png")
    except RunsDiverged as e:
        if e.table:
            print((out / "table.md").read_text())
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RanklabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
