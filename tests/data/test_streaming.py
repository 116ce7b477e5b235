"""Streaming preprocessing (``data.memory_budget``): a source larger than the budget is encoded
in chunks and must equal the in-memory encoding (the same ids, scalers up to rounding), for
every layout (one file cut at random, by time or by a column; three files; several files a
split), compressed or parquet input, and name the source file's own line in its errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ranklab.data import CSVSplits
from ranklab.data.dataset import GROUP_KEY, EncodedData, load_or_build
from ranklab.data.streaming import chunk_bytes
from ranklab.data.synthetic_criteo import CriteoSynth, write_criteo
from ranklab.errors import DataError

BUDGET = 1 << 20  # chunks of 64 KiB: the files below stream in 5-20 chunks
CRITEO = {
    "numeric": [],
    "categorical": [
        *({"name": f"I{i}", "transform": "criteo_log"} for i in range(1, 4)),
        {"name": "I4", "transform": "quantile", "buckets": 5},
        *({"name": f"C{i}", "min_count": 2} for i in range(1, 27)),
    ],
}


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data") / "criteo_synthetic"
    write_criteo(out, 4000, CriteoSynth(seed=5, max_vocab=400))
    return out


def _same(a: EncodedData, b: EncodedData, groups: bool = False) -> None:
    assert b.meta["streamed"]["chunk_bytes"] == chunk_bytes(BUDGET)
    assert a.schema.features == b.schema.features and a.schema.labels == b.schema.labels
    for key in ("rows", "base_rate", "labels", "bayes", "files"):
        assert a.meta.get(key) == b.meta.get(key), key
    for split, arrays in a.splits.items():
        assert set(arrays) == set(b.splits[split])
        for key, x in arrays.items():
            y = np.asarray(b.splits[split][key])
            assert x.shape == y.shape and x.dtype == y.dtype, key
            if key == GROUP_KEY:  # distinct ids, in another order: the same partition
                assert groups
                pairs = set(zip(x.tolist(), y.tolist(), strict=True))
                assert len(pairs) == len(set(x.tolist())) == len(set(y.tolist()))
            elif x.dtype.kind == "f":
                np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=key)
            else:
                np.testing.assert_array_equal(x, y, err_msg=key)


def _both(tmp_path: Path, **kw) -> tuple[EncodedData, EncodedData]:
    source = CSVSplits(**kw)
    assert source.streams(BUDGET)
    memory = load_or_build(source, tmp_path / "memory")
    streamed = load_or_build(source, tmp_path / "streamed", memory_budget=BUDGET)
    return memory, streamed


@pytest.mark.parametrize(
    "split",
    [
        {"method": "random", "val": 0.1, "test": 0.2, "seed": 3},
        {"method": "time", "column": "I2", "val": 0.1, "test": 0.1},
    ],
    ids=["random", "time"],
)
def test_a_cut_criteo_file_streams_to_the_same_encoding(
    synth: Path, tmp_path: Path, split: dict
) -> None:
    truth = "train.txt.truth.npy" if split["method"] == "random" else None
    kw = {"label": "label", "format": "criteo", "features": CRITEO, "truth": truth}
    memory, streamed = _both(
        tmp_path, dir=str(synth), files={"all": "train.txt"}, split=split, **kw
    )
    _same(memory, streamed)
    if truth:  # the Bayes ceiling gathered chunk by chunk
        assert streamed.meta["bayes"]["test"]["auc"] == memory.meta["bayes"]["test"]["auc"]
    # the cache holds only complete .npy files (no scratch chunks left)
    cache = next((tmp_path / "streamed").iterdir())
    assert sorted(p.name for p in cache.iterdir()) == [
        "meta.json",
        "schema.json",
        "test",
        "train",
        "val",
    ]
    if truth is None:  # the Kaggle CSV layout, gzipped: its header seen through the gzip
        kaggle = tmp_path / "kaggle"
        kaggle.mkdir()
        raw = pl.read_csv(synth / "train.txt", separator="\t", has_header=False)
        with gzip.open(kaggle / "train.csv.gz", "wb") as f:
            raw.write_csv(f, include_header=True)
        header = ",".join(["Id", "Label", *(f"I{i}" for i in range(1, 14))])
        header += "," + ",".join(f"C{i}" for i in range(1, 27))
        text = gzip.decompress((kaggle / "train.csv.gz").read_bytes()).decode()
        ids = "\n".join(f"{i},{row}" for i, row in enumerate(text.splitlines()[1:]))
        (kaggle / "train.csv.gz").write_bytes(gzip.compress(f"{header}\n{ids}\n".encode()))
        memory, streamed = _both(
            tmp_path / "k", dir=str(kaggle), files={"all": "train.csv.gz"}, split=split, **kw
        )
        _same(memory, streamed)


def _csv(synth: Path, out: Path) -> pl.DataFrame:
    """The synthetic rows as a headed CSV with a numeric column, a user and a split column."""
    df = pl.read_csv(
        synth / "train.txt", separator="\t", has_header=False, infer_schema=False
    ).rename(lambda c: f"f{c.removeprefix('column_')}")
    df = df.with_columns(
        pl.col("f2").cast(pl.Float64).fill_null(0.0).alias("count"),
        (pl.int_range(pl.len()) % 97).cast(pl.String).alias("user"),
        pl.when(pl.int_range(pl.len()) % 10 == 0)
        .then(pl.lit("va"))
        .when(pl.int_range(pl.len()) % 10 == 1)
        .then(pl.lit("te"))
        .otherwise(pl.lit("tr"))
        .alias("part"),
    )
    out.mkdir(exist_ok=True)
    return df


TABLE = {
    "numeric": [{"name": "count", "transform": "log"}, {"name": "f3", "fill_na": 0}],
    "categorical": [f"f{i}" for i in range(14, 40)],
    "bag": [{"name": "f15_bag", "column": "f15", "separator": "f", "pooling": "mean"}],
}


def test_a_split_column_and_a_gzip_file_stream_to_the_same_encoding(
    synth: Path, tmp_path: Path
) -> None:
    df = _csv(synth, tmp_path / "d")
    # a missing group value is a group of its own on both paths (streamed: NaN ids, a crash)
    missing = pl.int_range(pl.len()) % 13 == 0
    df = df.with_columns(pl.when(missing).then(None).otherwise(pl.col("user")).alias("user"))
    with gzip.open(tmp_path / "d" / "all.csv.gz", "wb") as f:
        df.write_csv(f)
    split = {
        "method": "column",
        "column": "part",
        "values": {"train": "tr", "val": "va", "test": "te"},
    }
    memory, streamed = _both(
        tmp_path,
        dir=str(tmp_path / "d"),
        files={"all": "all.csv.gz"},
        split=split,
        label="f0",
        group="user",
        features=TABLE,
    )
    _same(memory, streamed, groups=True)


def test_quoted_newlines_stream_to_the_same_encoding_and_a_cut_gzip_names_its_file(
    synth: Path, tmp_path: Path
) -> None:
    """A chunk ends only where no quote is open (it was cut inside a record: "an unclosed
    quote"); a truncated gzip file is one line naming it (it was an EOFError traceback)."""
    df = _csv(synth, tmp_path / "d")
    # every row's f14 spans two lines, as a quoted field may
    df = df.with_columns(pl.concat_str(pl.col("f14"), pl.lit("\nx")).alias("f14"))
    df.write_csv(tmp_path / "d" / "all.csv")
    kw = {"label": "f0", "group": "user", "features": TABLE, "split": {"seed": 2}}
    memory, streamed = _both(tmp_path, dir=str(tmp_path / "d"), files={"all": "all.csv"}, **kw)
    _same(memory, streamed, groups=True)
    whole = gzip.compress((tmp_path / "d" / "all.csv").read_bytes())
    (tmp_path / "d" / "cut.csv.gz").write_bytes(whole[: len(whole) // 2])
    source = CSVSplits(dir=str(tmp_path / "d"), files={"all": "cut.csv.gz"}, **kw)
    with pytest.raises(DataError, match="cannot read: Compressed file ended") as err:
        load_or_build(source, tmp_path / "cut", memory_budget=BUDGET)
    assert err.value.path == str(tmp_path / "d" / "cut.csv.gz") and err.value.line > 1
    # an unclosed quote is named at its line, not read to the end of the file as one record
    _csv(synth, tmp_path / "d").write_csv(tmp_path / "d" / "plain.csv")
    lines = (tmp_path / "d" / "plain.csv").read_text().split("\n")
    lines[1] = lines[1].replace(",", ',"', 1)
    (tmp_path / "d" / "open.csv").write_text("\n".join(lines))
    source = CSVSplits(dir=str(tmp_path / "d"), files={"all": "open.csv"}, **kw)
    with pytest.raises(DataError, match=r"open\.csv, line 2: an unclosed quote"):
        load_or_build(source, tmp_path / "open", memory_budget=BUDGET)


def test_three_files_and_a_split_of_several_files_stream_to_the_same_encoding(
    synth: Path, tmp_path: Path
) -> None:
    df = _csv(synth, tmp_path / "d")
    df[:1500].write_csv(tmp_path / "d" / "day_1.csv")
    df[1500:3000].write_csv(tmp_path / "d" / "day_2.csv")
    df[3000:3500].write_csv(tmp_path / "d" / "val.csv")
    df[3500:].write_parquet(tmp_path / "d" / "test.parquet")
    files = {"train": "day_*.csv", "val": "val.csv", "test": "test.csv"}
    df[3500:].write_csv(tmp_path / "d" / "test.csv")
    memory, streamed = _both(
        tmp_path, dir=str(tmp_path / "d"), files=files, label="f0", features=TABLE
    )
    _same(memory, streamed)
    # parquet: the same rows, read by row ranges
    shards = tmp_path / "p"
    shards.mkdir()
    df[:2000].write_parquet(shards / "a.parquet")
    df[2000:].write_parquet(shards / "b.parquet")
    kw = {"label": "f0", "features": TABLE, "format": "parquet", "split": {"seed": 1}}
    memory, streamed = _both(tmp_path / "pq", dir=str(tmp_path), files={"all": "p"}, **kw)
    _same(memory, streamed)


def test_parquet_shards_of_other_types_orders_and_columns_read_as_one_table(
    synth: Path, tmp_path: Path
) -> None:
    """Shards written by different jobs: a column Int64 in one, Int32 in another, Float64 in a
    third, the columns in another order, a column only one shard has. Both paths read them
    by name into one schema (the in-memory reader failed; streaming gave 7 and 7.0 two ids)."""
    df = _csv(synth, tmp_path / "d").with_columns(pl.col("user").cast(pl.Int64))
    shards = tmp_path / "p"
    shards.mkdir()
    df[:1500].write_parquet(shards / "a.parquet")
    b = df[1500:3000].with_columns(pl.col("user").cast(pl.Int32), pl.lit("x").alias("note"))
    b.select(list(reversed(b.columns))).write_parquet(shards / "b.parquet")
    df[3000:].with_columns(pl.col("user").cast(pl.Float64)).write_parquet(shards / "c.parquet")
    table = {**TABLE, "categorical": [*TABLE["categorical"], "user", "note"]}
    kw = {"label": "f0", "features": table, "format": "parquet", "split": {"seed": 1}}
    memory, streamed = _both(tmp_path, dir=str(tmp_path), files={"all": "p"}, **kw)
    _same(memory, streamed)
    seen = df.filter(pl.int_range(pl.len()) < 4000)["user"].n_unique()  # at most 97 users
    assert memory.schema["user"].vocab_size <= seen + 2  # one id per user, not one per type
    # 'x' in one shard, missing where the others lack the column: two ids
    assert len(np.unique(memory.splits["train"]["note"])) == 2


@pytest.mark.parametrize("header", [True, False])
def test_an_error_deep_in_the_file_names_its_own_line(
    synth: Path, tmp_path: Path, header: bool
) -> None:
    lines = (synth / "train.txt").read_text().splitlines()
    bad = 3210  # 0-based data row, far beyond the first chunk
    fields = lines[bad].split("\t")
    fields[0] = "7"  # not a 0/1 label
    lines[bad] = "\t".join(fields)
    head = [
        "\t".join(["label", *(f"I{i}" for i in range(1, 14)), *(f"C{i}" for i in range(1, 27))])
    ]
    (tmp_path / "x.tsv").write_text("\n".join((head if header else []) + lines) + "\n")
    cols = (
        None
        if header
        else ["label", *(f"I{i}" for i in range(1, 14)), *(f"C{i}" for i in range(1, 27))]
    )
    source = CSVSplits(
        dir=str(tmp_path),
        files={"all": "x.tsv"},
        split={"seed": 0},
        label="label",
        features=CRITEO,
        read_options={"separator": "\t", "has_header": header, "columns": cols},
    )
    with pytest.raises(DataError) as err:
        load_or_build(source, tmp_path / "cache", memory_budget=BUDGET)
    assert err.value.path == str(tmp_path / "x.tsv")
    assert err.value.line == bad + 1 + header
    assert not any((tmp_path / "cache").iterdir())  # nothing half-written
    with pytest.raises(DataError) as whole:  # the in-memory build names the same line
        load_or_build(source, tmp_path / "cache")
    assert whole.value.line == err.value.line


def test_under_the_budget_nothing_changes(synth: Path, tmp_path: Path) -> None:
    source = CSVSplits(
        dir=str(synth),
        files={"all": "train.txt"},
        split={"seed": 0},
        label="label",
        format="criteo",
        features=CRITEO,
    )
    assert not source.streams(1 << 40)
    data = load_or_build(source, tmp_path, memory_budget=1 << 40)
    assert "streamed" not in data.meta
    meta = json.loads(next(tmp_path.iterdir()).joinpath("meta.json").read_text())
    assert "streamed" not in meta


@pytest.mark.parametrize(
    "split",
    [{"method": "random", "val": 0.15, "seed": 4}, {"method": "time", "column": "f2", "val": 0.2}],
    ids=["random", "time"],
)
def test_validation_cut_from_training_files_beside_a_test_file(
    synth: Path, tmp_path: Path, split: dict
) -> None:
    """``files: {train: ..., test: ...}`` with a split: validation is cut from the training
    files (stacked in order), the test file is read as it is; streamed as in memory, and equal
    to three files holding the same rows (the naive reference)."""
    df = _csv(synth, tmp_path / "d").with_columns(pl.col("f2").cast(pl.Int64).fill_null(0))
    df[:1800].write_csv(tmp_path / "d" / "day_1.csv")
    df[1800:3400].write_csv(tmp_path / "d" / "day_2.csv")
    df[3400:].drop("f2").write_csv(tmp_path / "d" / "test.csv")  # no split column needed
    kw = {"dir": str(tmp_path / "d"), "label": "f0", "features": TABLE}
    files = {"train": "day_*.csv", "test": "test.csv"}
    # skip mode checks the split's column on the files it cuts only, as fail mode does
    skip = {"on_bad_rows": "skip"} if split["method"] == "time" else {}
    memory, streamed = _both(tmp_path, files=files, split=split, **kw, **skip)
    _same(memory, streamed)
    train = df[:3400]
    n_val = round(3400 * split["val"])
    if split["method"] == "random":  # the same seeded permutation as a one-file cut
        val_rows = np.random.default_rng(split["seed"]).permutation(3400)[:n_val]
        which = np.isin(np.arange(3400), val_rows)
    else:  # the latest training rows, cut at a timestamp (its ties all go to validation)
        t = train["f2"].to_numpy()
        which = t >= np.sort(t, kind="stable")[3400 - n_val]
    rows = {"train": int((~which).sum()), "val": int(which.sum()), "test": 600}
    assert memory.meta["rows"] == rows and rows["val"] >= n_val
    train.filter(pl.Series(~which)).write_csv(tmp_path / "d" / "r_train.csv")
    train.filter(pl.Series(which)).write_csv(tmp_path / "d" / "r_val.csv")
    reference = load_or_build(
        CSVSplits(files={"train": "r_train.csv", "val": "r_val.csv", "test": "test.csv"}, **kw),
        tmp_path / "reference",
    )
    for s in ("train", "val", "test"):
        for key, x in reference.splits[s].items():
            np.testing.assert_array_equal(x, np.asarray(memory.splits[s][key]), err_msg=key)
