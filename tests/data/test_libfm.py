"""libFM / libSVM / FFM files: the reader against a naive parser, errors naming their line, bag
features (multi-valued, weighted) pooled and FM-crossed as libFM does, each against a naive
loop, and every CTR model training on a libFM file from config alone."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from hydra.utils import get_class

from ranklab.config import CONF_DIR, compose
from ranklab.data.readers import read_table
from ranklab.data.schema import Feature, Schema, weight_key
from ranklab.errors import ConfigError, DataError
from ranklab.models import FM
from ranklab.nn import FeatureEmbedding
from ranklab.train import build, train


def write_libfm(path: Path, rows: int, seed: int = 0, vocab: int = 60) -> None:
    """Lines with 0..7 tokens, real values, bare indices and ragged whitespace; label from a
    planted first-order truth."""
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 1.5, vocab)
    lines = []
    for _ in range(rows):
        k = int(rng.integers(0, 8))
        idx = rng.choice(vocab, size=k, replace=False)
        val = rng.uniform(0.1, 2.0, size=k).round(3)
        y = int(rng.random() < 1 / (1 + math.exp(-(w[idx] * val).sum())))
        toks = [f"{i}" if v == 1.0 or rng.random() < 0.1 else f"{i}:{v}" for i, v in zip(idx, val)]
        lines.append((" " if rng.random() < 0.8 else " \t ").join([str(y), *toks]))
    path.write_text("\n".join(lines) + "\n")


def naive_parse(path: Path) -> list[tuple[str, list[str], list[float]]]:
    out = []
    for line in path.read_text().splitlines():
        label, *tokens = line.split()
        idx, val = [], []
        for t in tokens:
            i, _, v = t.partition(":")
            idx.append(i)
            val.append(float(v) if v else 1.0)
        out.append((label, idx, val))
    return out


def test_libfm_reader_matches_a_naive_parser(tmp_path: Path) -> None:
    path = tmp_path / "a.libfm"
    write_libfm(path, 500)
    df = read_table(path, "libfm")
    assert df.columns == ["label", "features", "features.value"]
    expected = naive_parse(path)
    assert df["label"].to_list() == [e[0] for e in expected]
    assert df["features"].to_list() == [e[1] for e in expected]
    assert df["features.value"].to_list() == [e[2] for e in expected]


def test_svmlight_comments_are_not_features(tmp_path: Path) -> None:
    path = tmp_path / "a.libsvm"
    path.write_text("# written by a tool\n+1 3:0.5 7:1 # doc 12\n-1 2:1#x\n  # indented\n0 4\n")
    df = read_table(path, "libsvm")
    assert df["label"].to_list() == ["+1", "-1", "0"]
    assert df["features"].to_list() == [["3", "7"], ["2"], ["4"]]
    assert df["features.value"].to_list() == [[0.5, 1.0], [1.0], [1.0]]


def test_ffm_fields_and_a_featindex_field_map(tmp_path: Path) -> None:
    ffm = tmp_path / "a.ffm"
    ffm.write_text("1 0:3:1 10:7:0.5 1:9:2\n0 0:4:1\n-1\n")
    df = read_table(ffm, "ffm")
    assert df.columns == ["label", "f0", "f0.value", "f1", "f1.value", "f10", "f10.value"]
    assert df["f0"].to_list() == [["3"], ["4"], []]
    assert df["f1.value"].to_list() == [[2.0], [], []]
    # read_options.fields: exactly these fields, one no line uses as empty bags (a file or a
    # streamed chunk without field 7 had no column f7, and the feature reading it failed)
    listed = read_table(ffm, "ffm", fields=[0, 1, 7, 10])
    assert listed.columns[1::2] == ["f0", "f1", "f7", "f10"]
    assert listed["f7"].to_list() == [[], [], []] and listed["f7.value"].dtype == pl.List(
        pl.Float64
    )
    assert listed.drop("f7", "f7.value").equals(df)
    with pytest.raises(DataError, match=r"a\.ffm, line 1: token '10:7:0\.5': its field is not"):
        read_table(ffm, "ffm", fields=[0, 1])
    # a streamed chunk whose lines hold no token still has the listed fields (it was one
    # ``features`` bag), and a libFM file refuses ``fields`` (it was ignored without a word)
    bare = tmp_path / "bare.ffm"
    bare.write_text("1\n0\n")
    assert read_table(bare, "ffm", fields=[0, 7]).columns == [
        "label",
        "f0",
        "f0.value",
        "f7",
        "f7.value",
    ]
    lf = tmp_path / "b.libfm"
    lf.write_text("1\n0 3:1 7:0.5\n")
    with pytest.raises(DataError, match=r"b\.libfm, line 2: read_options\.fields is for FFM files"):
        read_table(lf, "libfm", fields=[0, 1])
    from ranklab.data.readers import require_columns

    with pytest.raises(DataError, match=r"list every field in read_options\.fields"):
        require_columns(df, ["f7", "f7.value"], ffm, "data.source.features")
    fi = tmp_path / "featindex.txt"
    fi.write_text("truncate\t0\nage:20\t3\nage:30\t5\nad:x\t7\n12:ad:y 12\n")
    lf = tmp_path / "a.libfm"
    lf.write_text("1 3:1 7:0.5 12:2\n0 5:1\n")
    df = read_table(lf, "libfm", field_map=str(fi))
    assert df.columns[1::2] == ["truncate", "age", "ad", "12:ad"]
    assert df["age"].to_list() == [["3"], ["5"]]
    assert df["ad.value"].to_list() == [[0.5], []]
    assert df["12:ad"].to_list() == [["12"], []]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("1 3:1\n0 3:x\n", 2, "'3:x': the value is not a finite number"),
        ("1 3:1\n\n0 2:1\n", 2, "empty line"),
        ("1 3:1\n0 4:inf\n", 2, "not a finite number"),
        ("1 3:1:2\n0 4:1\n1 5:1:1\n", 2, "expected field:index:value"),
        ("1 3:1\n1 :1\n", 2, "no index"),
        ("1 1:2:3:4\n", 1, "expected index:value"),
        ("1 3:0.5 4:1\n0 2:1\n1 1:2:3\n", 3, "'1:2:3': expected index:value"),  # as line 1
        ("# a comment\n1 3:1 # qid 2\n0 3:x\n", 3, "'3:x'"),  # comments keep the lines' numbers
    ],
)
def test_bad_lines_are_named(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = tmp_path / "bad.libfm"
    path.write_text(text)
    with pytest.raises(DataError, match=rf"bad\.libfm, line {line}: .*{re.escape(message)}"):
        read_table(path, "libfm")


@pytest.mark.parametrize("bad", ["yes", "2"])
def test_a_label_other_than_1_0_or_minus_1_is_named(tmp_path: Path, bad: str, make_cfg) -> None:
    """data=libfm reads 1/+1 as clicks and 0/-1 as none; any other label fails, naming its
    line, rather than being read as a negative."""
    (tmp_path / "libfm").mkdir()
    lines = ["1 3:1", "-1 2:1", f"{bad} 4:1", *(f"{i % 2} {i % 7}:1" for i in range(40))]
    (tmp_path / "libfm" / "train.libfm").write_text("\n".join(lines) + "\n")
    cfg = make_cfg("data=libfm", f"paths.data_dir={tmp_path}", tiny=False)
    with pytest.raises(
        DataError, match=r"train\.libfm, line 3.*must be one of \['1', '\+1'\] \(1\) or"
    ):
        build(cfg)


@pytest.mark.parametrize(
    ("override", "key", "message"),
    [
        ("+data.source.read_options.sep=x", "data.source.read_options.sep", "takes no option"),
        (
            "+data.source.features.min_count=-1",
            "data.source.features.min_count",
            "must be a whole number >= 1",
        ),
        ("paths.cache_dir=/proc/ranklab-test/cache", "data.cache_dir", "cannot write in"),
        (
            "+data.source.truth=nope.npy",
            "nope.npy",
            "truth file not found .config key data.source.truth",
        ),
    ],
)
def test_source_settings_fail_naming_the_key(
    libfm_dir: Path, override: str, key: str, message: str, make_cfg
) -> None:
    cfg = make_cfg("data=libfm", f"paths.data_dir={libfm_dir}", override, tiny=False)
    with pytest.raises((ConfigError, DataError), match=rf"{re.escape(key)}.*{message}"):
        build(cfg)


def test_an_index_missing_from_the_field_map_is_named(tmp_path: Path) -> None:
    (tmp_path / "fi.txt").write_text("a:1 1\n")
    (tmp_path / "x.libfm").write_text("1 1:1\n0 2:1\n")
    with pytest.raises(DataError, match=r"x\.libfm, line 2: index '2' is not in the field map"):
        read_table(tmp_path / "x.libfm", "libfm", field_map=str(tmp_path / "fi.txt"))


def bag_schema() -> Schema:
    return Schema(
        (
            Feature("c", "categorical", vocab_size=5),
            Feature("b", "bag", vocab_size=9, max_len=4, weighted=True),
            Feature("m", "bag", vocab_size=9, table="b", max_len=4, pooling="mean"),
        )
    )


def bag_batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 9, (6, 4), generator=g)
    ids[0] = 0  # an empty bag
    return {
        "c": torch.randint(0, 5, (6,), generator=g),
        "b": ids,
        weight_key("b"): torch.rand(6, 4, generator=g) * 3,
        "m": torch.randint(0, 9, (6, 4), generator=g),
    }


def test_bag_pooling_matches_a_naive_loop() -> None:
    emb = FeatureEmbedding(bag_schema(), 3, init_std=1.0)
    f = bag_batch()
    out = emb(f)
    assert out.shape == (6, 3, 3)
    table = emb.embedding.weight
    for r in range(6):
        want_b = sum(
            (f[weight_key("b")][r, j] * table[emb.offsets["b"] + f["b"][r, j]]
             for j in range(4) if f["b"][r, j] > 0),
            torch.zeros(3),
        )  # fmt: skip
        items = [table[emb.offsets["b"] + i] for i in f["m"][r] if i > 0]
        want_m = torch.stack(items).mean(0) if items else torch.zeros(3)
        torch.testing.assert_close(out[r, 1], want_b)
        torch.testing.assert_close(out[r, 2], want_m)
        torch.testing.assert_close(out[r, 0], table[emb.offsets["c"] + f["c"][r]])


def test_fm_on_a_bag_is_libfms_fm_over_every_token() -> None:
    """One weighted bag: the model's logit equals Rendle's FM written token by token."""
    schema = Schema((Feature("b", "bag", vocab_size=9, max_len=4, weighted=True),))
    model = FM(schema, embedding_dim=3, init_std=0.5)
    f = bag_batch()
    got = model(f)
    v = model.embedding.embedding.weight
    w1 = model.linear.weights.embedding.weight[:, 0]
    for r in range(6):
        toks = [(int(i), float(x)) for i, x in zip(f["b"][r], f[weight_key("b")][r]) if i > 0]
        want = model.linear.bias[0] + sum(w1[i] * x for i, x in toks)
        for a in range(len(toks)):
            for b in range(a + 1, len(toks)):
                (i, xi), (j, xj) = toks[a], toks[b]
                want = want + xi * xj * (v[i] @ v[j])
        torch.testing.assert_close(got[r], torch.as_tensor(want, dtype=got.dtype))


CTR = sorted(
    p.stem
    for p in (CONF_DIR / "model").glob("*.yaml")
    if getattr(get_class(compose([f"model={p.stem}"]).model._target_), "family", "ctr") == "ctr"
)


@pytest.fixture(scope="module")
def libfm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    (root / "libfm").mkdir()
    write_libfm(root / "libfm" / "train.libfm", 3000)
    return root


@pytest.mark.parametrize("model", CTR)
def test_every_ctr_model_trains_on_a_libfm_file(model: str, libfm_dir: Path, make_cfg) -> None:
    small = {"embedding_dim": 4, "hidden_units": "[16]", "bottom_units": "[8]"}
    # one bag and no numeric field: DLRM's dot product has no pair (refused); cat it is
    small |= {"interaction": "cat"} if model == "dlrm" else {}
    keys = compose([f"model={model}"]).model
    cfg = make_cfg(
        "data=libfm",
        f"paths.data_dir={libfm_dir}",
        f"model={model}",
        *(f"model.{k}={v}" for k, v in small.items() if k in keys),
        "data.batch_size=256",
        "trainer.max_epochs=1",
        "efficiency=false",
        tiny=False,
    )
    m = train(cfg)
    assert math.isfinite(m["test"]["logloss"])
    assert m["test"]["auc"] != 0.5  # not a constant model (DLRM's dot over one vector was)
    if model == "lr":  # a first-order truth: even one epoch of LR finds it
        assert m["test"]["auc"] > 0.7


def test_a_bag_weight_column_must_align(tmp_path: Path) -> None:
    from ranklab.data.preprocess import FeatureSpec, TabularEncoder

    df = pl.DataFrame({"t": ["a,b", "c"], "w": ["1,2", "3,4"]})
    enc = TabularEncoder([FeatureSpec("t", kind="bag", separator=",", weights="w")]).fit(df)
    with pytest.raises(DataError, match=r"f\.csv, line 3.*bag 't' has 1 items but '3,4' gives 2"):
        enc.transform(df, "f.csv", 2)


def test_the_field_maps_contents_are_part_of_the_cache_fingerprint(tmp_path: Path) -> None:
    """Editing the featindex file changes the fields, so it must not hit the old cache."""
    from ranklab.data.sources import CSVSplits

    (tmp_path / "a.libfm").write_text("1 1:1 2:1\n0 2:1\n")
    fi = tmp_path / "fi.txt"
    fi.write_text("site:v1 1\nad:x 2\n")

    def fingerprint() -> str:
        return CSVSplits(
            dir=str(tmp_path),
            files={"all": "a.libfm"},
            label="label",
            format="libfm",
            read_options={"field_map": str(fi)},
            features={"bag": ["site", "ad"]},
            split={"method": "random", "val": 0.1, "test": 0.1},
        ).fingerprint()

    before = fingerprint()
    assert fingerprint() == before
    fi.write_text("weekday:v1 1\nad:x 2\n")
    assert fingerprint() != before


@pytest.mark.parametrize("fmt", ["libfm", "ffm", "criteo", "field_map"])
def test_bytes_that_are_not_utf8_are_named_by_line(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "bad.txt"
    if fmt == "criteo":
        row = "\t".join(["1", *["1"] * 13, *["a"] * 26]).encode()
        path.write_bytes(row + b"\n" + row.replace(b"\ta\t", b"\t\xff\t", 1) + b"\n")
    elif fmt == "field_map":
        path.write_bytes(b"a:1 1\nb:\xfe 2\n")
    else:
        path.write_bytes(b"1 0:3:1\n0 0:\xff:1\n" if fmt == "ffm" else b"1 3:1\n0 \xff:2\n")
    with pytest.raises(DataError, match=r"bad\.txt, line 2: not UTF-8 text \(byte 0x(ff|fe)\)"):
        if fmt == "field_map":
            (tmp_path / "x.libfm").write_text("1 1:1\n")
            read_table(tmp_path / "x.libfm", "libfm", field_map=str(path))
        else:
            read_table(path, fmt)
