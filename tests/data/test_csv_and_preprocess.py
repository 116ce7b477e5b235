"""Readers, preprocessing fit on train only, the cache, and the errors bad input must give."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ranklab.data import CSVSplits, load_or_build
from ranklab.data.preprocess import FeatureSpec, TabularEncoder, pad_left, parse_feature_specs
from ranklab.data.readers import read_table
from ranklab.data.schema import OOV, PAD, LabelSpec
from ranklab.errors import ConfigError, DataError


def write(path: Path, lines: list[str], eol: str = "\n") -> Path:
    path.write_text(eol.join(lines) + eol)
    return path


def make_splits(d: Path, eol: str = "\n") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    write(
        d / "train.csv",
        ["label,user,item,price", "1,u1,a,1.0", "0,u1,b,2.0", "1,u2,a,3.0", "0,u3,c,"],
        eol,
    )
    write(d / "valid.csv", ["label,user,item,price", "1,u1,a,1.5", "0,u9,z,2.5"], eol)
    write(d / "test.csv", ["label,user,item,price", "0,u2,b,0.5", "1,u1,q,1.0"], eol)
    return d


def source(d: Path, **kw) -> CSVSplits:
    features = kw.pop(
        "features", {"categorical": ["user", "item"], "numeric": ["price"], "min_count": 1}
    )
    return CSVSplits(
        dir=str(d),
        files={"train": "train.csv", "val": "valid.csv", "test": "test.csv"},
        label="label",
        features=features,
        group="user",
        **kw,
    )


@pytest.mark.parametrize("eol", ["\n", "\r\n"])
def test_vocab_fit_on_train_only_and_unseen_values_are_oov(tmp_path: Path, eol: str) -> None:
    data = load_or_build(source(make_splits(tmp_path / "d", eol)), tmp_path / "cache")
    s = data.schema
    assert s["user"].vocab_size == 3 + 2 and s["item"].vocab_size == 3 + 2
    # train counts: user u1 x2 -> id 2; items: a x2 -> id 2
    assert data.splits["train"]["user"].tolist() == [2, 2, 3, 4]
    assert data.splits["train"]["item"].tolist() == [2, 3, 2, 4]
    assert data.splits["val"]["user"].tolist() == [2, OOV]  # u9 unseen in train
    assert data.splits["test"]["item"].tolist() == [3, OOV]
    # numeric standardised with the train mean/std; the missing value becomes 0 (the mean)
    price = data.splits["train"]["price"]
    assert price[3] == 0.0 and abs(price[:3].mean()) < 1e-6
    assert data.splits["val"]["label"].dtype == np.float32


def test_min_count_maps_rare_values_to_oov(tmp_path: Path) -> None:
    d = make_splits(tmp_path / "d")
    data = load_or_build(
        source(d, features={"categorical": ["user", "item"], "min_count": 2}), None
    )
    assert data.splits["train"]["user"].tolist() == [2, 2, OOV, OOV]


def test_cache_hit_and_fingerprint_changes_with_content(tmp_path: Path) -> None:
    d = make_splits(tmp_path / "d")
    src = source(d)
    load_or_build(src, tmp_path / "cache")
    dirs = list((tmp_path / "cache").iterdir())
    assert len(dirs) == 1 and (dirs[0] / "meta.json").is_file()
    fp = src.fingerprint()
    write(d / "train.csv", ["label,user,item,price", "1,u1,a,1.0", "0,u2,b,2.0"])
    assert source(d).fingerprint() != fp
    assert source(d, features={"categorical": ["user"]}).fingerprint() != source(d).fingerprint()


@pytest.mark.parametrize("damage", ["truncated", "json", "missing", "float_groups"])
def test_a_damaged_cache_is_built_again(tmp_path: Path, damage: str, caplog) -> None:
    d = make_splits(tmp_path / "d")
    first = load_or_build(source(d), tmp_path / "cache")
    (cache,) = (tmp_path / "cache").iterdir()
    column = cache / "train" / "user.npy"
    if damage == "truncated":
        column.write_bytes(column.read_bytes()[:-5])
    elif damage == "json":
        (cache / "schema.json").write_text("{not json")
    elif damage == "float_groups":  # as streamed before missing group values had an id
        groups = cache / "train" / "__group__.npy"
        np.save(groups, np.load(groups).astype(np.float64))
    else:
        column.unlink()
    with caplog.at_level("WARNING", logger="ranklab"):
        again = load_or_build(source(d), tmp_path / "cache")
    assert f"data: cache {cache} is damaged" in caplog.text and "building it again" in caplog.text
    for split, arrays in first.splits.items():
        assert arrays.keys() == again.splits[split].keys()
        assert all(np.array_equal(arrays[k], again.splits[split][k]) for k in arrays)
    assert load_or_build(source(d), tmp_path / "cache").splits.keys() == first.splits.keys()


def test_interrupted_build_leaves_no_trusted_cache(tmp_path: Path, monkeypatch) -> None:
    import ranklab.data.dataset as ds

    d = make_splits(tmp_path / "d")

    def boom(data, directory):  # dies half-way through writing
        (directory / "train").mkdir()
        np.save(directory / "train" / "user.npy", np.zeros(3))
        raise KeyboardInterrupt

    monkeypatch.setattr(ds, "save_encoded", boom)
    with pytest.raises(KeyboardInterrupt):
        load_or_build(source(d), tmp_path / "cache")
    assert not [p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]
    assert not list((tmp_path / "cache").iterdir())  # the temporary is removed too
    monkeypatch.undo()
    data = load_or_build(source(d), tmp_path / "cache")
    assert data.rows("train") == 4


def test_a_control_byte_in_a_value_is_read_as_text(tmp_path: Path) -> None:
    """Lines are read whole with 0x1f as a stand-in separator: a file holding that byte takes
    another (it was a polars "found more fields" traceback)."""
    d = make_splits(tmp_path / "d")
    plain = load_or_build(source(d), tmp_path / "plain")
    text = (d / "train.csv").read_text().replace("u1,a,1.0", "u1,a\x1fb,1.0")
    (d / "train.csv").write_text(text)
    data = load_or_build(source(d), tmp_path / "cache")
    assert data.schema["item"].vocab_size == plain.schema["item"].vocab_size + 1
    # gzip: the stand-in byte is looked for in the text, not in the compressed bytes
    (d / "train.csv.gz").write_bytes(gzip.compress(text.encode() * 2000))
    assert read_table(d / "train.csv.gz", "csv").height == 2000 * 5 - 1
    (d / "train.csv").write_text(text.replace("2.0", "abc"))  # and errors still name the line
    with pytest.raises(DataError, match=r"train.csv, line 3, column 'price'"):
        load_or_build(source(d), tmp_path / "bad")


def test_a_quoted_field_over_three_lines_is_one_value(tmp_path: Path) -> None:
    """RFC 4180 lets a quoted field hold newlines; its middle line holds no quote, and the
    field count check took it for a row ("expected 4 fields, found 1: 'line two'")."""
    d = make_splits(tmp_path / "d")
    text = (d / "train.csv").read_text().replace("u1,a,1.0", 'u1,"a\nline two\nthree",1.0', 1)
    (d / "train.csv").write_text(text)
    data = load_or_build(source(d), tmp_path / "cache")
    assert data.rows("train") == 4 and data.schema["item"].vocab_size == 3 + 2 + 1
    (d / "train.csv").write_text(text + "1,u2\n")  # a short row after it is still named
    with pytest.raises(DataError, match=r"train\.csv, line 8: expected 4 fields, found 2"):
        load_or_build(source(d), tmp_path / "bad")


def test_ragged_row_names_file_and_line(tmp_path: Path) -> None:
    d = make_splits(tmp_path / "d")
    write(d / "valid.csv", ["label,user,item,price", "1,u1,a,1.5", "0,u9,z", "1,u1,a,1.0"])
    with pytest.raises(DataError, match=r"valid\.csv, line 3: expected 4 fields, found 3"):
        load_or_build(source(d), None)
    write(d / "valid.csv", ["label,user,item,price", "1,u1,a,1.5,9"])
    with pytest.raises(DataError, match=r"valid\.csv, line 2: expected 4 fields, found 5"):
        load_or_build(source(d), None)


def test_a_ragged_row_with_a_quoted_field_is_named_not_shifted(tmp_path: Path) -> None:
    """A row holding a quoted field with a comma is counted as a CSV reader splits it: short,
    it was padded with nulls by polars and read with its values in the next columns; long,
    it failed in polars' words without a line."""
    d = make_splits(tmp_path / "d")
    good = ["label,user,item,price", '1,u1,"a, b",1.5', '0,"u ""9"", x",z,2.5']
    write(d / "valid.csv", good)
    data = load_or_build(source(d), None)
    assert data.rows("val") == 2
    write(d / "valid.csv", [*good, '1,"a, b",1.0'])
    with pytest.raises(DataError, match=r"valid\.csv, line 4: expected 4 fields, found 3"):
        load_or_build(source(d), None)
    write(d / "valid.csv", [*good, '1,u1,"a, b",1.0,9'])
    with pytest.raises(DataError, match=r"valid\.csv, line 4: expected 4 fields, found 5"):
        load_or_build(source(d), None)


def test_label_outside_01_names_file_line_column(tmp_path: Path) -> None:
    d = make_splits(tmp_path / "d")
    write(d / "test.csv", ["label,user,item,price", "0,u2,b,0.5", "2,u1,q,1.0"])
    with pytest.raises(
        DataError, match=r"test\.csv, line 3, column 'label': label must be 0 or 1, found '2'"
    ):
        load_or_build(source(d), None)


def test_missing_file_and_missing_column(tmp_path: Path) -> None:
    d = make_splits(tmp_path / "d")
    (d / "test.csv").unlink()
    with pytest.raises(DataError, match=r"test\.csv: test file not found; set paths.data_dir"):
        load_or_build(source(d), None)
    (d / "test.csv").mkdir()  # a folder where the file should be
    with pytest.raises(DataError, match=r"test\.csv: is a folder, not a csv file"):
        load_or_build(source(d), None)
    with pytest.raises(DataError, match=r"test\.csv: is a folder, not a csv file"):
        read_table(d / "test.csv")
    (d / "test.csv").rmdir()
    make_splits(d)
    with pytest.raises(DataError, match=r"columns \['nope'\] named by config key"):
        load_or_build(source(d, features={"categorical": ["nope"]}), None)


def test_unparsable_numeric_names_line(tmp_path: Path) -> None:
    d = make_splits(tmp_path / "d")
    write(d / "train.csv", ["label,user,item,price", "1,u1,a,1.0", "0,u1,b,abc"])
    with pytest.raises(DataError, match=r"train\.csv, line 3, column 'price'.*'abc'"):
        load_or_build(source(d), None)


def test_feature_spec_typos_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"data.source.features.categorical\[0\].mincount"):
        parse_feature_specs({"categorical": [{"name": "a", "mincount": 2}]})
    # a string where a list of features is read (it was read letter by letter), and counts that
    # are not whole numbers (a fraction was truncated, a word was a traceback)
    with pytest.raises(ConfigError, match=r"features.categorical': must be a list .* \[user\]"):
        parse_feature_specs({"categorical": "user"})
    for option, value in (("min_count", 1.7), ("min_count", "abc"), ("hash_buckets", "x")):
        with pytest.raises(ConfigError, match=rf"{option}': must be a whole number"):
            parse_feature_specs({"categorical": [{"name": "a", option: value}]})
    with pytest.raises(ConfigError, match=r"sequence\[0\].max_len': must be a whole number >= 1"):
        parse_feature_specs({"sequence": [{"name": "h", "max_len": "ten"}]})
    with pytest.raises(ConfigError, match=r"sequence\[0\].max_len.*>= 1"):
        parse_feature_specs({"sequence": [{"name": "h", "max_len": 0}]})


def test_shared_table_vocab_and_left_padding() -> None:
    train = pl.DataFrame({"item": ["a", "b", "a"], "hist": ["b^c", "", "a^b^c^d"]})
    specs = [
        FeatureSpec("item"),
        FeatureSpec("hist", kind="sequence", table="item", max_len=3, separator="^"),
    ]
    enc = TabularEncoder(specs).fit(train)
    out = enc.transform(train)
    vocab = enc.vocabs["item"].values  # union of item and history values, by count
    assert set(vocab) == {"a", "b", "c", "d"}
    ids = {v: i + 2 for i, v in enumerate(vocab)}
    assert out["hist"].tolist() == [
        [PAD, ids["b"], ids["c"]],
        [PAD, PAD, PAD],
        [ids["b"], ids["c"], ids["d"]],  # the most recent max_len items, last at L-1
    ]
    assert (
        enc.schema((LabelSpec("label"),), None)["hist"].vocab_size
        == enc.schema((LabelSpec("label"),), None)["item"].vocab_size
    )


def test_pad_left_matches_loop() -> None:
    lists = pl.Series("h", [["x", "y"], [], ["z"], ["x", "y", "z", "x"]])
    enc_vocab = TabularEncoder([FeatureSpec("h", kind="sequence", max_len=3)]).fit(
        pl.DataFrame({"h": lists})
    )
    v = enc_vocab.vocabs["h"]
    got = pad_left(lists, 3, v)
    mapping = dict(zip(v.values, range(2, 2 + len(v.values))))
    for row, items in zip(got.tolist(), lists.to_list()):
        tail = items[-3:]
        assert row == [0] * (3 - len(tail)) + [mapping[x] for x in tail]


def test_read_table_unknown_format(tmp_path: Path) -> None:
    p = write(tmp_path / "a.csv", ["a"])
    with pytest.raises(DataError, match="unknown format 'parquetx'"):
        read_table(p, "parquetx")


def test_a_multi_character_separator_is_split_literally(tmp_path: Path) -> None:
    path = tmp_path / "ratings.dat"  # MovieLens 1M's layout
    path.write_text("1::10::5::978300760\n1::11::3::978302109\n2::10::4::978301968\n")
    names = ["user", "item", "rating", "ts"]
    df = read_table(path, "csv", separator="::", has_header=False, columns=names)
    assert df.columns == names and df["item"].to_list() == ["10", "11", "10"]
    path.write_text("1::10::5::978300760\n1::11::3\n")
    with pytest.raises(
        DataError, match=r"ratings.dat, line 2: expected 4 fields separated by '::'"
    ):
        read_table(path, "csv", separator="::", has_header=False, columns=names)


def test_header_less_errors_name_the_bad_line_itself(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    good = ["0,a,1.5", "1,b,2.5", "0,c,0.5", "1,a,1.0"]
    for name in ("train.csv", "valid.csv", "test.csv"):
        (d / name).write_text("\n".join(good) + "\n")
    (d / "valid.csv").write_text("\n".join(["0,a,1.5", "1,b,2.5", "7,c,0.5"]) + "\n")
    src = CSVSplits(
        dir=str(d),
        files={"train": "train.csv", "val": "valid.csv", "test": "test.csv"},
        label="y",
        features={"categorical": ["c"], "numeric": ["x"]},
        read_options={"has_header": False, "columns": ["y", "c", "x"]},
    )
    with pytest.raises(DataError, match=r"valid.csv, line 3, column 'y'"):
        src.build()
    (d / "valid.csv").write_text("\n".join(["0,a,1.5", "1,b,oops"]) + "\n")
    with pytest.raises(DataError, match=r"valid.csv, line 2, column 'x'"):
        src.build()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"train\.csv: empty file \(no header line\)"),
        (b"label,user,item,price\n", r"train\.csv: the train file has no data rows"),
        (
            b"label,user,item,price\n1,u1,a,1.0\n0,\xff\xfe,b,2.0\n",
            r"train\.csv, line 3: not UTF-8 text \(byte 0xff\)",
        ),
        (
            b"label,user,item,price\n1,u1,a,1.0\n0,u1,b,inf\n",
            r"train\.csv, line 3, column 'price'.*not finite \('inf'\)",
        ),
        (
            b"label\tuser\titem\tprice\n1\tu1\ta\t1.0\n",
            r"columns .* not in the file .* looks tab-separated: set read_options.separator",
        ),
        # polars reads a blank line as a row of nulls: "label ... found None" before
        (
            b"label,user,item,price\n1,u1,a,1.0\n\n0,u1,b,2.0\n",
            r"train\.csv, line 3: a blank line, where 4 fields are expected: remove it$",
        ),
        (
            b"label,user,item,price\r\n1,u1,a,1.0\r\n0,u1,b,2.0\r\n\r\n",
            r"train\.csv, line 4: a blank line, where 4 fields are expected",
        ),
        (  # it said "found None"
            b"label,user,item,price\n1,u1,a,1.0\n,u1,b,2.0\n",
            r"train\.csv, line 3, column 'label': label must be 0 or 1, found an empty field$",
        ),
    ],
    ids=[
        "empty",
        "header-only",
        "not-utf8",
        "inf",
        "tab-with-comma-config",
        "blank",
        "crlf-blank",
        "empty-label",
    ],
)
def test_bad_files_fail_in_one_line_naming_the_place(
    tmp_path: Path, content: bytes, message: str
) -> None:
    d = make_splits(tmp_path / "d")
    (d / "train.csv").write_bytes(content)
    with pytest.raises(DataError, match=message):
        load_or_build(source(d), None)


def test_utf8_check_names_the_line_across_chunks(tmp_path: Path) -> None:
    from ranklab.data.readers import _check_utf8

    path = tmp_path / "a.csv"
    path.write_bytes(b"ab\n" * 1000 + "é\n".encode() * 10 + b"x\xe9y\n")
    for chunk in (7, 64, 1 << 20):
        with pytest.raises(DataError, match="line 1011: not UTF-8"):
            _check_utf8(path, chunk=chunk)
    path.write_bytes(b"ab\n" * 100 + "é".encode() * 50)  # a 2-byte char split by any chunk
    for chunk in (3, 5, 64):
        _check_utf8(path, chunk=chunk)
    assert read_table(path, "csv", has_header=False, columns=["a"], encoding="utf8-lossy").height


def test_an_unreadable_file_is_a_data_error(tmp_path: Path, monkeypatch) -> None:
    from ranklab.data import readers

    p = write(tmp_path / "a.csv", ["a", "1"])

    def denied(path: Path, **_: object) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setitem(readers.READERS, "csv", denied)
    with pytest.raises(DataError, match=r"a\.csv: cannot read: Permission denied"):
        read_table(p, "csv")


def _one_file(d: Path, rows: list[str], **split) -> CSVSplits:
    d.mkdir(parents=True, exist_ok=True)
    write(d / "all.csv", ["label,user,ts,part", *rows])
    return CSVSplits(
        dir=str(d),
        files={"all": "all.csv"},
        split=split,
        label="label",
        features={"categorical": ["user"]},
    )


def test_a_time_split_keeps_every_later_row_out_of_training(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ts = rng.integers(0, 50, 400)  # many ties
    rows = [f"{i % 2},u{i % 7},{t},{i}" for i, t in enumerate(ts)]  # part: the row number
    src = _one_file(tmp_path / "d", rows, method="time", column="ts", val=0.1, test=0.2)
    frames = src._frames(src.paths())
    times = {s: frames[s]["ts"].cast(pl.Int64) for s in ("train", "val", "test")}
    assert times["train"].max() < times["val"].min() <= times["val"].max() < times["test"].min()
    assert sum(len(t) for t in times.values()) == 400
    # the naive reference: thresholds at the sorted timestamps
    s = np.sort(ts)
    assert times["test"].min() == s[400 - 80] and times["val"].min() == s[400 - 80 - 40]
    for name in ("train", "val", "test"):  # rows keep the file's order
        row = frames[name]["part"].cast(pl.Int64)
        assert row.is_sorted()
    bad = _one_file(
        tmp_path / "e", ["1,u1,5,x", "0,u2,noon,x", *rows[:50]], method="time", column="ts"
    )
    with pytest.raises(DataError, match=r"all.csv, line 3, column 'ts': timestamp 'noon'"):
        load_or_build(bad, None)
    # US dates: day/month order is the format's to say (inferred from '01/02/2024 ...', the
    # 13th of a month failed as unparsable); both paths cut by the same times
    us = [f"{i % 2},u{i % 7},{1 + i % 12:02d}/{1 + i % 28:02d}/2024 10:00,{i}" for i in range(400)]
    given = {"method": "time", "column": "ts", "val": 0.1, "test": 0.2}
    with pytest.raises(DataError, match=r"missing or unparsable \(give its format: data.source"):
        load_or_build(_one_file(tmp_path / "us0", us, **given), None)
    src = _one_file(tmp_path / "us", us, format="%m/%d/%Y %H:%M", **given)
    frames = src._frames(src.paths())
    stamp = {k: v["ts"].str.to_datetime("%m/%d/%Y %H:%M") for k, v in frames.items()}
    assert stamp["train"].max() < stamp["val"].min() and stamp["val"].max() < stamp["test"].min()
    with pytest.raises(DataError, match=r"timestamp '5' is missing or unparsable as '%m/%d/%Y"):
        load_or_build(
            _one_file(tmp_path / "us2", ["1,u1,5,x", *us], format="%m/%d/%Y %H:%M", **given), None
        )


def test_a_split_column_names_each_rows_split(tmp_path: Path) -> None:
    parts = ["tr", "tr", "va", "tr", "te", "va", "tr", "te"]
    rows = [f"{i % 2},u{i},{i},{p}" for i, p in enumerate(parts)]
    values = {"train": "tr", "val": "va", "test": "te"}
    src = _one_file(tmp_path / "d", rows, method="column", column="part", values=values)
    frames = src._frames(src.paths())
    assert frames["val"]["user"].to_list() == ["u2", "u5"]
    assert frames["test"]["user"].to_list() == ["u4", "u7"]
    assert frames["train"].height == 4
    rows[5] = "1,u5,5,dev"
    src = _one_file(tmp_path / "e", rows, method="column", column="part", values=values)
    with pytest.raises(
        DataError, match=r"all.csv, line 7, column 'part': split column holds 'dev'"
    ):
        load_or_build(src, None)


@pytest.mark.parametrize(
    ("split", "key"),
    [
        ({"method": "weekly"}, "data.source.split.method"),
        ({"method": "time"}, "data.source.split.column"),
        ({"method": "time", "column": "ts", "seed": 1}, "data.source.split.seed"),
        ({"method": "column", "column": "p", "values": {"dev": "d"}}, "data.source.split.values"),
        ({"val": "abc"}, "data.source.split.val"),  # not float()'s ValueError through Hydra
        ({"test": [0.1]}, "data.source.split.test"),
        ({"seed": 1.5}, "data.source.split.seed"),
    ],
)
def test_split_config_mistakes_name_their_key(tmp_path: Path, split: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"config key '{key}'"):
        _one_file(tmp_path / "d", ["1,u,1,tr"], **split)


def test_too_few_rows_to_cut_is_a_data_error(tmp_path: Path) -> None:
    src = _one_file(
        tmp_path / "d", ["1,u,1,tr", "0,v,2,tr", "1,w,3,tr"], method="time", column="ts"
    )
    with pytest.raises(DataError, match="3 rows are too few to cut"):
        load_or_build(src, None)


def test_quantile_buckets_match_a_naive_reference() -> None:
    """Edges at the training split's quantiles; a value's bucket is the number of edges at or
    below it; ties merge edges; missing values get their own id; other splits use train's."""
    train = pl.DataFrame({"x": [str(v) for v in range(1, 101)] + ["", "7", "7", "7"]})
    enc = TabularEncoder([FeatureSpec("x", transform="quantile", buckets=4)]).fit(train)
    values = np.array([float(v) for v in train["x"] if v != ""])
    edges = sorted(set(np.quantile(values, [0.25, 0.5, 0.75]).tolist()))
    assert enc.edges["x"] == edges
    test = pl.DataFrame({"x": ["-5", "26", "1000", "", "50.5"]})
    want = [str(sum(e <= float(v) for e in edges)) if v else None for v in test["x"]]
    got = enc._categorical(test, enc.specs[0], "t.csv")
    assert got.to_list() == want
    ids = enc.transform(test)["x"]
    assert len(set(ids.tolist())) == 5 and ids.min() >= 2  # 4 buckets and missing, no OOV
    with pytest.raises(ConfigError, match=r"features\.categorical\[0\]\.buckets'.*>= 2"):
        parse_feature_specs({"categorical": [{"name": "x", "transform": "quantile", "buckets": 1}]})
    with pytest.raises(DataError, match=r"t\.csv, line 3.*transform quantile.*'inf'"):
        enc.transform(pl.DataFrame({"x": ["1", "inf"]}), "t.csv", 2)


def test_day_partitioned_files_encode_as_their_concatenation(tmp_path: Path) -> None:
    """A split of several files (a glob or a list) is those files stacked in order: the same
    arrays as one file holding their rows; an error names the file and its own line."""
    rng = np.random.default_rng(0)
    days = tmp_path / "days"
    days.mkdir()
    rows = {}
    for d in range(1, 6):
        rows[d] = [
            f"{int(rng.random() < 0.3)},u{rng.integers(9)},{rng.normal():.3f}" for _ in range(40)
        ]
        (days / f"day_{d:02d}.csv").write_text("label,user,x\n" + "\n".join(rows[d]) + "\n")
    (tmp_path / "one").mkdir()
    for name, ds in (("train.csv", [1, 2, 3]), ("val.csv", [4]), ("test.csv", [5])):
        lines = [r for d in ds for r in rows[d]]
        (tmp_path / "one" / name).write_text("label,user,x\n" + "\n".join(lines) + "\n")
    feats = {"categorical": ["user"], "numeric": ["x"]}
    globbed = CSVSplits(
        dir=str(days), label="label", features=feats,
        files={"train": "day_0[1-3].csv", "val": ["day_04.csv"], "test": "day_05.csv"},
    )  # fmt: skip
    one = CSVSplits(
        dir=str(tmp_path / "one"), label="label", features=feats,
        files={"train": "train.csv", "val": "val.csv", "test": "test.csv"},
    )  # fmt: skip
    a, b = globbed.build(), one.build()
    for split in ("train", "val", "test"):
        assert a.splits[split].keys() == b.splits[split].keys()
        for k in a.splits[split]:
            np.testing.assert_array_equal(a.splits[split][k], b.splits[split][k])
    assert a.meta["files"]["train"] == [str(days / f"day_0{d}.csv") for d in (1, 2, 3)]
    # one cut source of several files (time split over all days)
    cut = CSVSplits(
        dir=str(days), files={"all": "day_*.csv"}, split={"method": "random", "seed": 1},
        label="label", features=feats,
    ).build()  # fmt: skip
    assert sum(cut.rows(s) for s in ("train", "val", "test")) == 200
    # errors: a bad value in the second file names that file and its line
    lines = (days / "day_02.csv").read_text().splitlines()
    lines[2] = "1,u1,oops"
    (days / "day_02.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"day_02\.csv, line 3, column 'x'.*'oops'"):
        globbed.build()
    # a day file with its columns in another order is read by name; one with other columns fails
    lines[0], lines[2] = "x,label,user", "0.5,1,u1"
    (days / "day_02.csv").write_text(
        "\n".join([lines[0]] + [",".join((r.split(",")[2], *r.split(",")[:2])) for r in rows[2]])
        + "\n"
    )
    c = globbed.build()
    for k in a.splits["train"]:
        np.testing.assert_array_equal(a.splits["train"][k], c.splits["train"][k])
    (days / "day_02.csv").write_text("label,user,x,extra\n1,u1,0.5,7\n")
    with pytest.raises(
        DataError, match=r"day_02\.csv: has the columns \[.*'extra'\], where day_01"
    ):
        globbed.build()
    with pytest.raises(DataError, match=r"no train file matches 'week_\*\.csv'"):
        CSVSplits(
            dir=str(days), files={"train": "week_*.csv", "val": "day_04.csv", "test": "day_05.csv"},
            label="label", features=feats,
        ).build()  # fmt: skip


def test_a_tab_separated_file_read_with_commas_says_so(tmp_path: Path) -> None:
    (tmp_path / "t.tsv").write_text("label\ta\tx\n1\tu\t0.5\n0\tv\t0.1\n")
    src = CSVSplits(
        dir=str(tmp_path), label="label", features={"categorical": ["a"]},
        files={"all": "t.tsv"}, split={"method": "random"},
    )  # fmt: skip
    with pytest.raises(DataError, match=r"the header looks tab-separated: set read_options\.sep"):
        src.build()
    # without a header, the first line whose fields another separator would count right
    (tmp_path / "t.tsv").write_text("1\tu\t0.5\n0\tv\t0.1\n")
    src.read_options = {"has_header": False, "columns": ["label", "a", "x"]}
    with pytest.raises(
        DataError,
        match=r"t\.tsv, line 1: expected 3 fields, found 1: '1\\tu\\t0\.5'; it has 3 "
        r"tab-separated fields: set read_options\.separator$",
    ):
        src.build()


def test_a_header_only_file_to_cut_has_no_data_rows(tmp_path: Path) -> None:
    (tmp_path / "h.csv").write_text("label,a\n")
    src = CSVSplits(
        dir=str(tmp_path), label="label", features={"categorical": ["a"]},
        files={"all": "h.csv"}, split={"method": "random"},
    )  # fmt: skip
    with pytest.raises(DataError, match=r"h\.csv: the file has no data rows"):
        src.build()


@pytest.mark.parametrize(
    ("text", "has_header", "message"),
    [
        ("", False, r"x\.csv: empty file \(no data lines\)"),
        ("\n\n  \n", False, r"x\.csv: empty file \(no data lines\)"),
        ('a,b\n1,2\n"3,4\n5,6\n', True, r"x\.csv, line 3: an unclosed quote"),
    ],
)
def test_unparsable_files_are_named_with_their_line(
    tmp_path: Path, text: str, has_header: bool, message: str
) -> None:
    (tmp_path / "x.csv").write_text(text)
    options = {} if has_header else {"has_header": False, "columns": ["a", "b"]}
    with pytest.raises(DataError, match=message):
        read_table(tmp_path / "x.csv", "csv", **options)


def test_a_repeated_header_name_or_columns_beside_a_header_are_named(tmp_path: Path) -> None:
    path = tmp_path / "dup.csv"
    write(path, ["label,user,item,user", "1,u1,a,u2"])
    with pytest.raises(
        DataError,
        match=r"dup\.csv, line 1: the header names column 'user' twice \(fields 2 and 4\)",
    ):
        read_table(path)
    write(path, ["label,user", "1,u1"])
    with pytest.raises(DataError, match=r"read_options.columns names the fields of a file without"):
        read_table(path, columns=["label", "user"])
    assert read_table(path, columns=["label", "user"], has_header=False).height == 2


def test_a_blank_line_of_a_one_column_file_is_an_empty_value(tmp_path: Path) -> None:
    from ranklab.data.readers import read_table

    (tmp_path / "one.csv").write_text("x\na\n\nb\n")
    assert read_table(tmp_path / "one.csv", "csv")["x"].to_list() == ["a", None, "b"]


@pytest.mark.parametrize(
    ("features", "labels", "message"),
    [
        (
            {"categorical": ["user", "label"]},
            None,
            r"'data.source.features.categorical\[1\]': feature 'label' reads column 'label', "
            r"the column of label 'label' \(data.source.label\): a model would see its own target",
        ),
        (
            {"numeric": [{"name": "x", "column": "clk"}]},
            [{"name": "click", "column": "clk"}],
            r"'data.source.features.numeric\[0\]': feature 'x' reads column 'clk', the column of "
            r"label 'click' \(data.source.labels\[0\].column\)",
        ),
        (
            {"categorical": [{"name": "click", "column": "user"}]},
            [{"name": "click", "column": "clk"}],
            r"'data.source.features.categorical\[0\]': feature 'click' has the name of label "
            r"'click' \(data.source.labels\[0\].column\): rename one",
        ),
    ],
    ids=["the-label", "its-column-renamed", "its-name"],
)
def test_a_label_cannot_be_a_feature(features: dict, labels: list | None, message: str) -> None:
    """It crashed in the embedding (a float label read as ids), or silently leaked the target."""
    kw = {"label": "label"} if labels is None else {"labels": labels}
    with pytest.raises(ConfigError, match=message):
        CSVSplits(
            dir=".", files={s: "x.csv" for s in ("train", "val", "test")}, features=features, **kw
        )


@pytest.mark.parametrize(
    ("files", "split", "key", "message"),
    [
        ({"train": "a", "test": "b"}, {"val": 0.1, "test": 0.1}, "split.test", "its own file"),
        ({"train": "a", "test": "b"}, {"method": "column", "column": "p"}, "split.method", "{all"),
        ({"train": "a", "val": "v", "test": "b"}, {"val": 0.1}, "files", "to cut validation"),
        ({"train": "a", "test": "b"}, {"val": 1.0}, "split", "leave no training rows"),
    ],
    ids=["a-test-share", "a-column", "three-files", "no-training-rows"],
)
def test_a_split_beside_a_test_file_cuts_validation_only(
    files: dict, split: dict, key: str, message: str
) -> None:
    with pytest.raises(
        ConfigError, match=rf"config key 'data.source.{key}': .*{re.escape(message)}"
    ):
        CSVSplits(dir=".", files=files, split=split, label="y", features={"categorical": ["u"]})


def test_too_few_training_rows_to_cut_validation_from_names_the_file(tmp_path: Path) -> None:
    write(tmp_path / "tr.csv", ["y,u", "1,a", "0,b"])
    write(tmp_path / "te.csv", ["y,u", "1,a"])
    src = CSVSplits(
        dir=str(tmp_path), files={"train": "tr.csv", "test": "te.csv"}, split={"val": 0.1},
        label="y", features={"categorical": ["u"]},
    )  # fmt: skip
    with pytest.raises(DataError, match=r"tr\.csv: 2 rows are too few to cut val 0\.1 from"):
        src.build()


@pytest.mark.parametrize("transform", ["standard", "log", "none"])
def test_fill_na_fills_a_missing_number_before_the_transform_and_the_scaler(
    tmp_path: Path, transform: str
) -> None:
    d = make_splits(tmp_path / "d")  # train's prices: 1.0, 2.0, 3.0 and one missing
    (d / "valid.csv").write_text("label,user,item,price\n1,u1,a,\n0,u9,z,nan\n")
    features = {
        "categorical": ["user"],
        "numeric": [{"name": "price", "transform": transform, "fill_na": -1}],
    }
    data = load_or_build(source(d, features=features, read_options={"null_values": ["nan"]}), None)
    raw = np.array([1.0, 2.0, 3.0, -1.0])  # the naive reference: fill, transform, scale
    x = np.log1p(np.clip(raw, 0, None)) if transform == "log" else raw
    mean, std = (x.mean(), x.std(ddof=1)) if transform != "none" else (0.0, 1.0)
    np.testing.assert_allclose(data.splits["train"]["price"], (x - mean) / std, rtol=1e-6)
    filled = ((np.log1p(0.0) if transform == "log" else -1.0) - mean) / std
    np.testing.assert_allclose(data.splits["val"]["price"], [filled, filled], rtol=1e-6)
    # without fill_na a missing value is the training mean (0 after standardising), as before
    plain = load_or_build(source(d, read_options={"null_values": ["nan"]}), None)
    assert plain.splits["val"]["price"].tolist() == [0.0, 0.0]


@pytest.mark.parametrize(
    ("features", "key", "message"),
    [
        ({"categorical": [{"name": "user", "fill_na": 0}]}, "categorical[0].fill_na", "numeric"),
        ({"numeric": [{"name": "price", "fill_na": "x"}]}, "numeric[0].fill_na", "a number"),
        ({"numeric": ["price"], "fill_na": float("inf")}, "fill_na", "finite"),
    ],
)
def test_fill_na_mistakes_name_their_key(features: dict, key: str, message: str) -> None:
    with pytest.raises(
        ConfigError, match=rf"'data\.source\.features\.{re.escape(key)}': .*{message}"
    ):
        parse_feature_specs(features)


def test_a_default_fill_na_is_the_numeric_features_own() -> None:
    specs = parse_feature_specs({"categorical": ["u"], "numeric": ["x"], "fill_na": 0})
    assert [(s.name, s.fill_na) for s in specs] == [("u", None), ("x", 0)]


def test_a_huge_field_in_an_error_is_cut_to_one_readable_line(tmp_path: Path) -> None:
    d = make_splits(tmp_path / "d")
    (d / "train.csv").write_text(f"label,user,item,price\n1,u1,a,1.0\n{'7' * 2_000_000},u,b,2\n")
    with pytest.raises(DataError) as e:
        load_or_build(source(d), None)
    message = str(e.value)
    head = f"{d}/train.csv, line 3, column 'label': label must be 0 or 1, found '77"
    assert message.startswith(head)
    assert message.endswith("7…' (2,000,000 characters)") and len(message) < 300
