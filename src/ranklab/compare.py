"""``ranklab-compare A.users.parquet B.users.parquet``: paired test of two retrieval runs.

Each file is the per-user test ranks that ``ranklab-evaluate`` writes beside an evaluation
(``<run>/evaluations/<overrides>.users.parquet``). The two must rank the same test users
(same targets and history lengths, in the same order) under the same protocol (full-ranking
candidates and sampled negatives, read from the evaluations' JSON files). For each metric the
per-user difference B - A is tested with a paired t-test; with thousands of users its mean is
close to normal, so the t interval is the 95% confidence interval of the difference.
``--length-buckets 4 6 10 20`` repeats the comparison per bucket of history length, and
``--popularity-buckets 5 20 100`` per bucket of the target item's training count (the
``target_train_count`` column).

Seeds are a second source of variance that this test does not see: run several seeds
(``ranklab-study``) for that.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import polars as pl
import torch
from scipy import stats

from ranklab.errors import DataError, RanklabError
from ranklab.metrics import per_user_metrics
from ranklab.task import bucket_index, bucket_labels
from ranklab.utils import atomic_write

COLUMNS = (
    "target",
    "history_len",
    "full_rank",
    "full_candidates",
    "sampled_rank",
    "sampled_candidates",
)
METRIC = re.compile(r"^(full|sampled)/(hr@\d+|ndcg@\d+|mrr|auc)$")


def load_users(path: Path) -> tuple[pl.DataFrame, dict | None]:
    """A ``.users.parquet`` file and the protocol of its evaluation JSON (None if absent)."""
    if not path.is_file():
        raise DataError(
            "no such file (ranklab-evaluate writes <run>/evaluations/*.users.parquet)",
            path=str(path),
        )
    try:
        df = pl.read_parquet(path, glob=False)  # names like "[5,8]" are not globs
    except Exception as e:  # polars raises several kinds for a file that is not parquet
        raise DataError(f"not a parquet file ({e})", path=str(path)) from e
    for c in COLUMNS:
        if c not in df.columns:
            raise DataError(
                "missing column (not a ranklab-evaluate users file)", str(path), column=c
            )
    meta = path.with_name(path.name.removesuffix(".users.parquet") + ".json")
    protocol = json.loads(meta.read_text()).get("protocol") if meta.is_file() else None
    return df, protocol


def check_paired(a: pl.DataFrame, b: pl.DataFrame, path_b: Path) -> None:
    """Raise DataError (naming ``path_b`` and the first differing row) unless ``a`` and ``b``
    hold the same test users in the same order."""
    if a.height != b.height:
        raise DataError(f"{b.height} test users, the first file has {a.height}", path=str(path_b))
    for c in ("target", "history_len"):
        diff = np.flatnonzero(a[c].to_numpy() != b[c].to_numpy())
        if diff.size:
            i = int(diff[0])
            raise DataError(
                f"not the same test users as the first file: {c} {b[c][i]} vs {a[c][i]}",
                str(path_b),
                line=i + 1,
                column=c,
            )


def user_values(df: pl.DataFrame, metric: str) -> np.ndarray:
    """(N,) per-user values of ``metric`` (e.g. ``sampled/ndcg@10``) from a users table."""
    mode, name = METRIC.match(metric).groups()  # type: ignore[union-attr]
    ks = (int(name.split("@")[1]),) if "@" in name else ()
    ranks = torch.from_numpy(df[f"{mode}_rank"].to_numpy(writable=True))
    n = torch.from_numpy(df[f"{mode}_candidates"].to_numpy(writable=True))
    return per_user_metrics(ranks, n, ks)[name].numpy()


def paired_rows(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Means, difference B - A, its 95% t interval and the paired t-test's p-value (NaN, not
    tested, for fewer than two users: one difference has no spread to test against)."""
    d = b - a
    mean = float(d.mean()) if d.size else math.nan
    if d.size < 2:
        low = high = p = math.nan
    elif float(d.std()) == 0.0:  # every user differs by the same amount: the difference is exact
        low = high = mean
        p = 1.0 if mean == 0.0 else 0.0
    else:
        res = stats.ttest_rel(b, a)
        ci = res.confidence_interval(0.95)
        low, high, p = float(ci.low), float(ci.high), float(res.pvalue)
    base = float(a.mean()) if a.size else math.nan
    return {
        "users": int(d.size),
        "a": base,
        "b": float(b.mean()),
        "diff": mean,
        "ci_low": low,
        "ci_high": high,
        "rel": mean / base if base else float("nan"),
        "p_value": p,
    }


def compare(
    path_a: Path,
    path_b: Path,
    metrics: list[str],
    length_buckets: list[int] | None = None,
    popularity_buckets: list[int] | None = None,
) -> pl.DataFrame:
    """One row per (bucket, metric): users, a, b, diff, ci_low, ci_high, rel, p_value.

    Buckets: ``len...`` by history length, ``pop...`` by the target's training count."""
    for m in metrics:
        if not METRIC.match(m):
            raise RanklabError(f"unknown metric '{m}': use full|sampled / hr@K, ndcg@K, mrr or auc")
    a, proto_a = load_users(path_a)
    b, proto_b = load_users(path_b)
    check_paired(a, b, path_b)
    if proto_a and proto_b:
        for key in ("full_ranking", "sampled"):
            if proto_a.get(key) != proto_b.get(key):
                raise DataError(
                    f"evaluated under another protocol: {key} {proto_b.get(key)} vs "
                    f"{proto_a.get(key)}; evaluate both runs with the same overrides",
                    path=str(path_b),
                )
    groups = [("all", np.ones(a.height, dtype=bool))]
    for column, edges, prefix in (
        ("history_len", length_buckets, "len"),
        ("target_train_count", popularity_buckets, "pop"),
    ):
        if not edges:
            continue
        if column not in a.columns:
            raise DataError(
                "missing column (written by ranklab-evaluate since popularity buckets exist: "
                "evaluate the run again)",
                str(path_a),
                column=column,
            )
        edges = sorted(set(edges))
        values = torch.from_numpy(a[column].to_numpy(writable=True))
        bucket = bucket_index(values, edges).numpy()  # the task's bucketing rule
        groups += [(lab, bucket == i) for i, lab in enumerate(bucket_labels(edges, prefix))]
    rows = []
    for m in metrics:
        va, vb = user_values(a, m), user_values(b, m)
        for label, rows_in in groups:
            if rows_in.any():
                rows.append({"bucket": label, "metric": m, **paired_rows(va[rows_in], vb[rows_in])})
    return pl.DataFrame(rows)


def to_markdown(table: pl.DataFrame, digits: int = 4) -> str:
    """Markdown table; ``*`` marks p < 0.05; a bucket of one user is not tested (p ``nan``)."""
    head = "| bucket | metric | users | A | B | B - A [95% CI] | rel. | p |\n"
    head += "|---|---|---:|---:|---:|---:|---:|---:|\n"
    lines = []
    for r in table.iter_rows(named=True):
        star = "*" if r["p_value"] < 0.05 else ""
        rel = "–" if math.isnan(r["rel"]) else f"{r['rel']:+.1%}"
        lines.append(
            f"| {r['bucket']} | {r['metric']} | {r['users']} | {r['a']:.{digits}f} | "
            f"{r['b']:.{digits}f} | {r['diff']:+.{digits}f} [{r['ci_low']:+.{digits}f}, "
            f"{r['ci_high']:+.{digits}f}]{star} | {rel} | {r['p_value']:.2g} |"
        )
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="ranklab-compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("a", type=Path, help="users file of the reference run (A)")
    ap.add_argument("b", type=Path, help="users file of the run compared with it (B)")
    ap.add_argument(
        "--metrics",
        nargs="+",
        default=["full/ndcg@10", "full/hr@10", "sampled/ndcg@10", "sampled/hr@10"],
    )
    ap.add_argument("--length-buckets", nargs="+", type=int, default=None)
    ap.add_argument(
        "--popularity-buckets",
        nargs="+",
        type=int,
        default=None,
        help="edges of the target's training count, e.g. 5 20 100",
    )
    ap.add_argument("--digits", type=int, default=4)
    ap.add_argument("--out", type=Path, default=None, help="also write the table as CSV here")
    args = ap.parse_args(argv)
    if args.out is not None and args.out.is_dir():
        print(f"error: --out {args.out} is a folder: give a file name (.csv)", file=sys.stderr)
        return 2
    try:
        table = compare(args.a, args.b, args.metrics, args.length_buckets, args.popularity_buckets)
    except RanklabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"A: {args.a}\nB: {args.b}")
    print(to_markdown(table, args.digits), end="")
    print("* p < 0.05, paired t-test over test users (one seed: seed variance not included)")
    if args.out:
        atomic_write(args.out, lambda tmp: table.write_csv(tmp))
        print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
