"""ranklab-compare: paired per-user tests between two retrieval evaluations."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy import stats

from ranklab.compare import compare, main
from ranklab.errors import DataError, RanklabError

PROTOCOL = {
    "full_ranking": {"candidates": "all items", "exclude_seen": True},
    "sampled": {"negatives": 100, "distribution": "uniform", "never_user_items": True},
}


def write_users(path: Path, full: list[int], sampled: list[int], **over) -> Path:
    n = len(full)
    cols = {
        "target": list(range(2, n + 2)),
        "history_len": [1 + i % 8 for i in range(n)],
        "full_rank": full,
        "full_candidates": [1000] * n,
        "sampled_rank": sampled,
        "sampled_candidates": [100] * n,
    }
    cols.update(over)
    pl.DataFrame(cols).write_parquet(path)
    return path


def test_paired_difference_matches_a_hand_computation(tmp_path: Path) -> None:
    a = write_users(tmp_path / "a.users.parquet", [0, 5, 20, 3], [0, 1, 2, 3])
    b = write_users(tmp_path / "b.users.parquet", [1, 0, 0, 30], [0, 1, 2, 3])
    t = compare(a, b, ["full/ndcg@10", "full/hr@10", "sampled/ndcg@10", "full/mrr"])
    row = t.filter(pl.col("metric") == "full/ndcg@10").row(0, named=True)
    va = np.array([1, 1 / math.log2(7), 0, 1 / math.log2(5)])
    vb = np.array([1 / math.log2(3), 1, 1, 0])
    ref = stats.ttest_rel(vb, va)
    assert row["users"] == 4 and row["bucket"] == "all"
    assert row["a"] == pytest.approx(va.mean()) and row["b"] == pytest.approx(vb.mean())
    assert row["diff"] == pytest.approx((vb - va).mean())
    assert row["p_value"] == pytest.approx(ref.pvalue)
    assert row["ci_low"] < row["diff"] < row["ci_high"]
    hr = t.filter(pl.col("metric") == "full/hr@10").row(0, named=True)
    assert (hr["a"], hr["b"], hr["diff"]) == (0.75, 0.75, 0.0)
    same = t.filter(pl.col("metric") == "sampled/ndcg@10").row(0, named=True)
    assert (same["diff"], same["ci_low"], same["ci_high"], same["p_value"]) == (0, 0, 0, 1.0)
    mrr = t.filter(pl.col("metric") == "full/mrr").row(0, named=True)
    assert mrr["b"] == pytest.approx((1 / 2 + 1 + 1 + 1 / 31) / 4)


def test_length_buckets_split_the_users(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 400
    a = write_users(tmp_path / "a.users.parquet", rng.integers(0, 50, n).tolist(), [5] * n)
    b = write_users(tmp_path / "b.users.parquet", rng.integers(0, 10, n).tolist(), [5] * n)
    t = compare(a, b, ["full/hr@10"], length_buckets=[2, 5])
    by = {r["bucket"]: r for r in t.iter_rows(named=True)}
    lengths = np.array([1 + i % 8 for i in range(n)])
    assert [by[k]["users"] for k in ("all", "len<=2", "len3-5", "len>5")] == [
        n,
        int((lengths <= 2).sum()),
        int(((lengths > 2) & (lengths <= 5)).sum()),
        int((lengths > 5).sum()),
    ]
    pooled = sum(by[k]["diff"] * by[k]["users"] for k in ("len<=2", "len3-5", "len>5")) / n
    assert pooled == pytest.approx(by["all"]["diff"])
    assert by["all"]["diff"] > 0 and by["all"]["p_value"] < 1e-6


def test_popularity_buckets_split_the_users_by_the_targets_training_count(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n = 300
    counts = rng.integers(0, 40, n)
    pop = {"target_train_count": counts.tolist()}
    a = write_users(tmp_path / "a.users.parquet", rng.integers(0, 50, n).tolist(), [5] * n, **pop)
    b = write_users(tmp_path / "b.users.parquet", rng.integers(0, 50, n).tolist(), [5] * n, **pop)
    t = compare(a, b, ["full/ndcg@10"], length_buckets=[4], popularity_buckets=[20, 5])
    by = {r["bucket"]: r for r in t.iter_rows(named=True)}
    assert list(by) == ["all", "len<=4", "len>4", "pop<=5", "pop6-20", "pop>20"]
    assert [by[k]["users"] for k in ("pop<=5", "pop6-20", "pop>20")] == [
        int((counts <= 5).sum()),
        int(((counts > 5) & (counts <= 20)).sum()),
        int((counts > 20).sum()),
    ]
    pooled = sum(by[k]["diff"] * by[k]["users"] for k in ("pop<=5", "pop6-20", "pop>20")) / n
    assert pooled == pytest.approx(by["all"]["diff"])
    old = write_users(tmp_path / "old.users.parquet", [0] * n, [5] * n)  # evaluated before
    with pytest.raises(DataError, match=r"old\.users\.parquet, column 'target_train_count'"):
        compare(old, b, ["full/ndcg@10"], popularity_buckets=[5])


def test_unpaired_or_mismatched_inputs_are_refused(tmp_path: Path) -> None:
    a = write_users(tmp_path / "a.users.parquet", [0, 1, 2], [0, 1, 2])
    other = write_users(tmp_path / "b.users.parquet", [0, 1, 2], [0, 1, 2], target=[2, 3, 9])
    with pytest.raises(DataError, match=r"b\.users\.parquet, line 3, column 'target'"):
        compare(a, other, ["full/hr@10"])
    short = write_users(tmp_path / "c.users.parquet", [0, 1], [0, 1])
    with pytest.raises(DataError, match="2 test users, the first file has 3"):
        compare(a, short, ["full/hr@10"])
    pl.DataFrame({"target": [1]}).write_parquet(tmp_path / "d.users.parquet")
    with pytest.raises(DataError, match="column 'history_len'"):
        compare(a, tmp_path / "d.users.parquet", ["full/hr@10"])
    (tmp_path / "text.users.parquet").write_text("target,history_len\n1,2\n")
    with pytest.raises(DataError, match=r"text\.users\.parquet: not a parquet file"):
        compare(a, tmp_path / "text.users.parquet", ["full/hr@10"])
    with pytest.raises(DataError, match="no such file"):
        compare(a, tmp_path / "missing.users.parquet", ["full/hr@10"])
    with pytest.raises(RanklabError, match="unknown metric 'full/ndcg'"):
        compare(a, a, ["full/ndcg"])
    b = write_users(tmp_path / "e.users.parquet", [0, 1, 2], [0, 1, 2])
    (tmp_path / "a.json").write_text(json.dumps({"protocol": PROTOCOL}))
    popularity = {**PROTOCOL, "sampled": {**PROTOCOL["sampled"], "distribution": "popularity"}}
    (tmp_path / "e.json").write_text(json.dumps({"protocol": popularity}))
    with pytest.raises(DataError, match="another protocol: sampled"):
        compare(a, b, ["sampled/ndcg@10"])


def test_cli_prints_and_writes_the_table(tmp_path: Path, capsys) -> None:
    a = write_users(tmp_path / "a.users.parquet", [0, 5, 20, 3], [0, 1, 2, 3])
    b = write_users(tmp_path / "b.users.parquet", [1, 0, 0, 30], [3, 1, 2, 0])
    out = tmp_path / "cmp.csv"
    assert main([str(a), str(b), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| all | sampled/ndcg@10 | 4 |" in printed and "paired t-test" in printed
    assert pl.read_csv(out).height == 4
    assert main([str(a), str(tmp_path / "nope.users.parquet")]) == 2
    assert "nope.users.parquet: no such file" in capsys.readouterr().err
    assert main([str(a), str(b), "--out", str(tmp_path)]) == 2  # a folder: refused up front
    assert "is a folder: give a file name" in capsys.readouterr().err


def test_a_bucket_of_one_user_is_not_tested(tmp_path: Path) -> None:
    """One difference has no spread: no p-value, interval or star (it was p = 0 and a star)."""
    from ranklab.compare import to_markdown

    a = write_users(tmp_path / "a.users.parquet", [0, 5, 20, 3], [0, 1, 2, 3])
    b = write_users(tmp_path / "b.users.parquet", [9, 0, 0, 30], [0, 1, 2, 3])
    t = compare(a, b, ["full/mrr"], length_buckets=[1, 8])
    one = t.filter(pl.col("users") == 1)
    assert one.height == 1
    row = one.row(0, named=True)
    assert row["diff"] == pytest.approx(1 / 10 - 1)
    assert all(math.isnan(row[k]) for k in ("p_value", "ci_low", "ci_high"))
    line = next(x for x in to_markdown(one).splitlines() if x.startswith(f"| {row['bucket']} "))
    assert "]*" not in line and line.endswith("| nan |")
