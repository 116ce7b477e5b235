"""The field's file formats behind ``read_table``: Criteo (raw TSV, Kaggle CSV, BARS CSV),
Avazu, parquet (file or shards), and the Criteo count bucketing, each against a naive
reference; the sample configs train from config alone."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ranklab.config import compose
from ranklab.data import CSVSplits, load_or_build
from ranklab.data.preprocess import FeatureSpec, TabularEncoder, parse_feature_specs
from ranklab.data.readers import CRITEO_COLUMNS, first_data_line, read_table
from ranklab.errors import ConfigError, DataError
from ranklab.train import train


@pytest.fixture
def kaggle(shared_data: Path) -> Path:
    return shared_data / "criteo_sample" / "kaggle_train_2k.csv"


def test_criteo_layouts_read_to_the_same_frame(kaggle: Path, tmp_path: Path) -> None:
    df = read_table(kaggle, "criteo")
    assert df.columns == CRITEO_COLUMNS and df.height == 1999
    assert df["C1"][0] == "68fd1e64" and df["I12"][0] is None  # empty field -> missing
    raw = tmp_path / "train.txt"  # the raw release: tab-separated, no header, '' for missing
    df.write_csv(raw, separator="\t", include_header=False)
    assert read_table(raw, "criteo").equals(df)
    assert first_data_line(raw, "criteo") == 1 and first_data_line(kaggle, "criteo") == 2
    unlabelled = tmp_path / "test.txt"
    df.drop("label").write_csv(unlabelled, separator="\t", include_header=False)
    assert read_table(unlabelled, "criteo").equals(df.drop("label"))
    bars = tmp_path / "bars.csv"
    df.write_csv(bars)
    assert read_table(bars, "criteo").equals(df)
    # gzip, whatever the name: the header is seen through the compression (it was not: errors
    # named the line before, and streaming read the header as a raw TSV row)
    import gzip

    for name in ("kaggle.csv.gz", "kaggle.csv.gzip"):
        packed = tmp_path / name
        packed.write_bytes(gzip.compress(kaggle.read_bytes()))
        assert first_data_line(packed, "criteo") == 2
        assert read_table(packed, "criteo").equals(df)


def test_criteo_errors_name_the_line(kaggle: Path, tmp_path: Path) -> None:
    lines = kaggle.read_text().splitlines()
    raw = tmp_path / "train.txt"
    rows = [line.split(",", 1)[1].replace(",", "\t") for line in lines[1:6]]
    rows[3] = rows[3].rsplit("\t", 1)[0]  # line 4 lost its last field
    raw.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"train.txt, line 4: expected 40 fields, found 39"):
        read_table(raw, "criteo")
    raw.write_text("1\t2\t3\n")
    with pytest.raises(DataError, match=r"40 tab-separated fields .* line 1 has 3"):
        read_table(raw, "criteo")
    other = tmp_path / "other.csv"
    other.write_text("Id,Label,I1\n1,0,3\n")
    with pytest.raises(DataError, match=r"other.csv, line 1: a Criteo CSV has the header"):
        read_table(other, "criteo")


def test_avazu_hour_becomes_hour_of_day_and_weekday(shared_data: Path, tmp_path: Path) -> None:
    path = shared_data / "avazu_sample" / "avazu_sample_100.csv"
    df = read_table(path, "avazu")
    raw = pl.read_csv(path, infer_schema=False)
    assert "id" not in df.columns and df.height == raw.height
    for stamp, hour, weekday in zip(raw["hour"], df["hour"], df["weekday"]):
        from datetime import datetime

        t = datetime.strptime(stamp, "%y%m%d%H")  # the naive reference
        assert (hour, weekday) == (f"{t.hour:02d}", str(t.weekday()))
    bad = tmp_path / "bad.csv"
    bad.write_text("id,click,hour,C1\n1,0,14102100,5\n2,1,14102125,5\n")
    with pytest.raises(DataError, match=r"bad.csv, line 3, column 'hour': hour '14102125'"):
        read_table(bad, "avazu")


def test_parquet_file_and_folder_of_shards(tmp_path: Path) -> None:
    df = pl.DataFrame({"label": [0, 1, 0, 1, 1], "a": ["x", "y", "x", "z", "y"]})
    df.write_parquet(tmp_path / "one.parquet")
    assert read_table(tmp_path / "one.parquet", "parquet").equals(df)
    shards = tmp_path / "shards"
    shards.mkdir()
    df[:2].write_parquet(shards / "part-000.parquet")
    df[2:].write_parquet(shards / "part-001.parquet")
    assert read_table(shards, "parquet").equals(df)
    # a shard without any of the columns read keeps its rows, as missing values
    df[:2].select("label").write_parquet(shards / "part-002.parquet")
    got = read_table(shards, "parquet", columns=["a"])
    assert got["a"].to_list() == [*df["a"].to_list(), None, None]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="folder holds no"):
        read_table(tmp_path / "empty", "parquet")


def test_parquet_source_with_a_random_split_builds(tmp_path: Path) -> None:
    n = 200
    df = pl.DataFrame(
        {
            "y": [i % 3 == 0 for i in range(n)],
            "c": [f"v{i % 7}" for i in range(n)],
            "x": [float(i) for i in range(n)],
        }
    ).with_columns(pl.col("y").cast(pl.Int64))
    df.write_parquet(tmp_path / "all.parquet")
    kw = {
        "dir": str(tmp_path),
        "files": {"all": "all.parquet"},
        "split": {"val": 0.1, "test": 0.1},
        "format": "parquet",
        "label": "y",
    }
    src = CSVSplits(**kw, features={"categorical": ["c"], "numeric": ["x"]})
    data = load_or_build(src, None)
    assert sum(data.rows(s) for s in ("train", "val", "test")) == n
    df.with_columns(
        pl.when(pl.col("x") == 7).then(5).otherwise(pl.col("y")).alias("y")
    ).write_parquet(tmp_path / "all.parquet")
    with pytest.raises(DataError, match=r"all.parquet, line 8, column 'y'"):  # row 8
        load_or_build(src, None)
    # lists or structs where one value a row is read: one line naming the column (they were a
    # polars "cannot cast List type" traceback), cut or not, in memory or streamed
    nested = {
        "x": pl.col("x").map_elements(lambda v: [v], return_dtype=pl.List(pl.Float64)),
        "c": pl.struct("c", "x"),
        "y": pl.col("y").map_elements(lambda v: [v], return_dtype=pl.List(pl.Int64)),
    }
    for col, expr in nested.items():
        df.with_columns(expr.alias(col)).write_parquet(tmp_path / "all.parquet")
        key = "label" if col == "y" else "features"
        for budget in (None, 1 << 10):
            with pytest.raises(
                DataError,
                match=rf"column '{col}': holds (List|Struct).*'data.source.{key}' reads one value",
            ):
                load_or_build(src, tmp_path / f"cache-{col}-{budget}", memory_budget=budget)
    lists = df.with_columns(
        pl.col("c").map_elements(lambda v: [v, "w"], return_dtype=pl.List(pl.String))
    )
    lists.write_parquet(tmp_path / "all.parquet")  # a list is what a bag feature reads
    bag = {"categorical": [], "numeric": ["x"], "bag": [{"name": "c", "pooling": "mean"}]}
    assert load_or_build(CSVSplits(**kw, features=bag), None).rows("train")
    # a missing list is an empty bag and a missing item is dropped, as an empty CSV field is
    # (a traceback; a null item was counted, then dropped, shifting every later row's ids)
    holes = [["v1", None, "w"] if i == 3 else None if i == 5 else [f"v{i % 7}"] for i in range(n)]
    weighted = {**bag, "bag": [{"name": "c", "pooling": "mean", "weights": "cw"}]}
    cw = [[1.0, 2.0] if i == 3 else None if i == 5 else [0.5] for i in range(n)]
    df.with_columns(pl.Series("c", holes), pl.Series("cw", cw)).write_parquet(
        tmp_path / "all.parquet"
    )
    for features in (bag, weighted):
        src = CSVSplits(**{**kw, "split": {"val": 0.1, "test": 0.1, "seed": 0}}, features=features)
        data = load_or_build(src, None)
        rows = {s: data.rows(s) for s in ("train", "val", "test")}
        assert sum(rows.values()) == n
        vocab = data.schema["c"]
        ids = np.concatenate([data.splits[s]["c"] for s in ("train", "val", "test")])
        # every row holds at most two items; only row 3's has two, and one row's has none
        counts = (ids > 0).sum(axis=1)
        assert sorted(counts.tolist()) == [0] + [1] * (n - 2) + [2] and vocab.vocab_size > 2


def test_criteo_log_buckets_match_the_naive_rule() -> None:
    values = ["260.0", "-1", "0", "1", "2", "3", "2.5", "1.5", "1e6", None, ""]

    def naive(v: str | None) -> str | None:
        if v is None or v == "":
            return None if v is None else ""
        x = float(v)
        return str(math.floor(math.log(x) ** 2) if x > 2 else int(x))

    enc = TabularEncoder([FeatureSpec("I", transform="criteo_log")])
    got = enc._categorical(pl.DataFrame({"I": values}), enc.specs[0], "f").to_list()
    assert got == [naive(v) if v != "" else None for v in values]
    with pytest.raises(
        DataError, match=r"f, line 3, column 'I'.*needs a finite number, found 'abc'"
    ):
        enc._categorical(pl.DataFrame({"I": ["1", "abc"]}), enc.specs[0], "f")


def test_a_transform_the_kind_does_not_have_names_its_key() -> None:
    with pytest.raises(ConfigError, match=r"features.categorical\[1\].transform'.*criteo_log"):
        parse_feature_specs({"categorical": ["a", {"name": "b", "transform": "log"}]})
    with pytest.raises(ConfigError, match=r"features.numeric\[0\].transform'"):
        parse_feature_specs({"numeric": [{"name": "b", "transform": "criteo_log"}]})


@pytest.mark.parametrize("data", ["criteo_sample", "avazu_sample"])
def test_sample_configs_train_from_config_alone(
    data: str, shared_data: Path, make_cfg, tmp_path: Path
) -> None:
    cfg = make_cfg(
        f"data={data}",
        f"paths.data_dir={shared_data}",
        "model=deepfm",
        "trainer.max_epochs=1",
        "efficiency=false",
        tiny=False,
    )
    m = train(cfg)
    assert math.isfinite(m["test"]["logloss"])
    expected = {"criteo_sample": 39, "avazu_sample": 23}[data]
    assert len(compose([f"data={data}"]).data.source.features.categorical) == expected


def test_the_readme_own_table_config_trains(tmp_path: Path, monkeypatch) -> None:
    """The README's header-less ';' example, as written there, on a file of that shape."""
    import gzip
    import re
    import shutil

    import numpy as np

    from ranklab.config import CONF_DIR

    block = re.search(
        r"```yaml\n(# conf/data/my_log.yaml\n.*?)```",
        (CONF_DIR.parent / "README.md").read_text(),
        re.S,
    )
    assert block, "README lost its own-table example"
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    (conf / "data" / "my_log.yaml").write_text(block.group(1))
    monkeypatch.setenv("RANKLAB_CONF", str(conf))
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(3000):
        user, ad, hour = rng.integers(50), rng.integers(30), rng.integers(24)
        clk = int(rng.random() < (0.6 if ad < 10 else 0.1))
        rows.append(f"{clk};u{user};a{ad};{rng.gamma(2.0):.2f};{hour}")
    (tmp_path / "data" / "my_log").mkdir(parents=True)
    with gzip.open(tmp_path / "data" / "my_log" / "impressions.csv.gz", "wt") as f:
        f.write("\n".join(rows) + "\n")
    cfg = compose(
        [
            "data=my_log",
            "model=deepfm",
            f"paths.data_dir={tmp_path / 'data'}",
            f"paths.cache_dir={tmp_path / 'cache'}",
            f"paths.output_dir={tmp_path / 'run'}",
            "data.batch_size=128",
            "trainer.max_epochs=3",
            "efficiency=false",
            "print_summary=false",
        ]
    )
    m = train(cfg)
    assert m["test"]["auc"] > 0.7  # ad < 10 clicks 60%, the rest 10%


@pytest.mark.parametrize("data", ["criteo_x1", "avazu_x1"])
@pytest.mark.parametrize("model", ["deepfm", "dcnv2"])
def test_bars_x1_layouts_train_with_their_tuned_values(
    data: str, model: str, tmp_path: Path, make_cfg
) -> None:
    """Files in the BARS layout (header, three splits) train from config alone, with the values
    of the BARS expid the tuned file names (reczoo/BARS, FuxiCTR 1.1.0)."""
    import numpy as np

    rng = np.random.default_rng(0)
    cols = (
        CRITEO_COLUMNS if data == "criteo_x1" else ["label", *(f"feat_{i}" for i in range(1, 23))]
    )
    (tmp_path / data).mkdir()
    for split, n in (("train", 600), ("valid", 200), ("test", 200)):
        values = {c: rng.integers(0, 30, n) for c in cols[1:]}
        label = (values[cols[1]] + rng.integers(0, 30, n) > 30).astype(int)
        pl.DataFrame({"label": label, **values}).write_csv(tmp_path / data / f"{split}.csv")
    cfg = make_cfg(
        f"data={data}", f"model={model}", f"paths.data_dir={tmp_path}", "data.batch_size=128",
        "trainer.max_epochs=1", "efficiency=false", tiny=False,
    )  # fmt: skip
    expected = {
        ("criteo_x1", "dcnv2"): (1e-05, 0.1, False, [500, 500, 500]),
        ("criteo_x1", "deepfm"): (1e-05, 0.1, True, [400, 400, 400]),
        ("avazu_x1", "dcnv2"): (0.05, 0.2, True, [400, 400, 400]),
        ("avazu_x1", "deepfm"): (0.1, 0.3, True, [400, 400, 400]),
    }[(data, model)]
    m = cfg.model
    assert (
        cfg.task.embedding_regularizer,
        m.dropout,
        m.batch_norm,
        list(m.hidden_units),
    ) == expected
    if model == "dcnv2":
        assert (m.structure, m.num_cross_layers, m.low_rank) == (
            "parallel", 3 if data == "criteo_x1" else 5, 0,
        )  # fmt: skip
    out = train(cfg)
    assert math.isfinite(out["test"]["logloss"]) and out["data"] == data


def test_a_file_without_its_header_line_read_with_one_says_so(tmp_path: Path) -> None:
    """The commonest CSV mistake: polars' own message (names "not specified in schema",
    ``extra_columns='ignore'``) named nothing a user can set."""
    from ranklab.data.readers import require_columns
    from ranklab.errors import DataError

    rows = ["1,u24,a6,0.040", "0,u12,a4,0.968", "1,u18,a3,0.505"]
    path = tmp_path / "all.csv"
    path.write_text("\n".join(rows) + "\n")
    hint = "looks like data ('1' is a number): a file without a header line needs read_options"
    with pytest.raises(DataError, match=re.escape(hint)) as err:
        read_table(path)
    assert "schema" not in str(err.value)
    # read (other rows), the columns the config names are missing: the same hint
    df = pl.DataFrame({"1": ["0"], "u24": ["u12"]})
    with pytest.raises(DataError, match=re.escape(hint)):
        require_columns(df, ["clk"], path, "data.source.label")
    # a header of names draws no hint
    (tmp_path / "h.csv").write_text("clk,user,ad,price\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError) as err:
        require_columns(read_table(tmp_path / "h.csv"), ["click"], path, "data.source.label")
    assert "looks like data" not in str(err.value)


def test_a_parquet_file_read_as_csv_names_the_format(tmp_path: Path) -> None:
    from ranklab.errors import DataError

    path = tmp_path / "x.parquet"
    pl.DataFrame({"clk": [0, 1], "user": ["a", "b"]}).write_parquet(path)
    with pytest.raises(DataError, match=r"x\.parquet: a parquet file, read as text: set the "):
        read_table(path)  # csv, the default format
