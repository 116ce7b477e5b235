"""``ranklab-criteo-synth``: Criteo-format files with a planted click probability, read by the
real Criteo reader, and ``CSVSplits(truth=...)`` reporting each split's Bayes-optimal ceiling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ranklab.data import CSVSplits
from ranklab.data.readers import CRITEO_COLUMNS, read_table
from ranklab.data.synthetic_criteo import CriteoSynth, _hex_ids, main, write_criteo
from ranklab.errors import ConfigError, DataError
from ranklab.metrics import bayes_metrics
from ranklab.train import train

ROWS = 3000


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data") / "criteo_synthetic"
    write_criteo(out, ROWS, CriteoSynth(seed=3, max_vocab=300))
    return out


def test_the_file_is_criteo_and_its_truth_is_consistent(synth: Path) -> None:
    df = read_table(synth / "train.txt", "criteo")
    assert df.columns == CRITEO_COLUMNS and df.height == ROWS
    assert not any(p.name.startswith(".") for p in synth.iterdir())  # no partial files left
    truth = np.load(synth / "train.txt.truth.npy")
    info = json.loads((synth / "train.txt.bayes.json").read_text())
    label = df["label"].cast(pl.Int64).to_numpy()
    assert truth.shape == (ROWS,) and info["rows"] == ROWS
    assert info["bayes"] == pytest.approx(bayes_metrics(truth, label))
    assert 0.6 < info["bayes"]["auc"] < 0.95
    # labels are Bernoulli(truth): their mean agrees with the truth's (3 standard errors)
    assert abs(label.mean() - truth.mean()) < 3 * np.sqrt(truth.mean() * (1 - truth.mean()) / ROWS)
    # missing values are empty fields, as in Criteo's file (C22 is often missing there)
    assert df["C22"].null_count() > 0.5 * ROWS and df["I2"].null_count() == 0
    assert (df["I2"].cast(pl.Int64) == -1).any()  # a -1 count is a value, as in Criteo's I2


def test_same_seed_same_bytes_other_seed_other_bytes(synth: Path, tmp_path: Path) -> None:
    write_criteo(tmp_path / "a", ROWS, CriteoSynth(seed=3, max_vocab=300))
    write_criteo(tmp_path / "b", ROWS, CriteoSynth(seed=4, max_vocab=300))
    same = (synth / "train.txt").read_bytes()
    assert (tmp_path / "a" / "train.txt").read_bytes() == same
    assert (tmp_path / "b" / "train.txt").read_bytes() != same


def test_hex_ids_match_a_naive_hash() -> None:
    ids = np.array([0, 1, 2, 5, -1, 123456, 2**31 - 1])

    def naive(i: int, field_no: int) -> str | None:
        if i < 0:
            return None
        m = 0xFFFFFFFF
        h = ((i + (field_no << 24)) * 2654435761) & m
        h ^= h >> 15
        h = (h * 2246822519) & m
        h ^= h >> 13
        return f"{h:08x}"

    for f in (0, 7, 25):
        assert _hex_ids(ids, f).to_list() == [naive(int(i), f) for i in ids]
    assert len(set(_hex_ids(np.arange(1000), 0).to_list())) == 1000  # distinct ids stay distinct


def test_training_reports_each_splits_ceiling(synth: Path, make_cfg) -> None:
    cfg = make_cfg(
        "data=criteo_synthetic",
        f"paths.data_dir={synth.parent}",
        "data.source.features.min_count=1",
        "data.batch_size=256",
        "model=lr",
        "trainer.max_epochs=1",
        "efficiency=false",
        tiny=False,
    )
    m = train(cfg)
    # the naive reference: the same seeded permutation cut, recomputed here
    truth = np.load(synth / "train.txt.truth.npy")
    label = read_table(synth / "train.txt", "criteo")["label"].cast(pl.Int64).to_numpy()
    order = np.random.default_rng(0).permutation(ROWS)
    test_rows = np.sort(order[: round(ROWS * 0.1)])
    assert m["bayes"]["test"] == pytest.approx(bayes_metrics(truth[test_rows], label[test_rows]))
    assert m["test"]["auc"] < m["bayes"]["test"]["auc"]


def test_truth_errors_name_the_file_or_key(synth: Path, tmp_path: Path) -> None:
    features = {"categorical": ["C1"]}
    short = tmp_path / "short.npy"
    np.save(short, np.full(ROWS - 1, 0.5))
    src = CSVSplits(
        dir=str(synth), files={"all": "train.txt"}, split={"method": "random"},
        format="criteo", label="label", features=features, truth=str(short),
    )  # fmt: skip
    with pytest.raises(DataError, match=r"short\.npy.*\(2999,\) probabilities for 3000 data rows"):
        src.build()
    np.save(short, np.full(ROWS, 1.5))
    with pytest.raises(DataError, match=r"short\.npy.*outside \[0, 1\]"):
        src.build()
    with pytest.raises(ConfigError, match=r"data\.source\.truth"):
        CSVSplits(
            dir=str(synth), files={"train": "a", "val": "b", "test": "c"}, label="label",
            features=features, truth="t.npy",
        )  # fmt: skip


def test_cli_rejects_bad_sizes_with_status_2(tmp_path: Path, capsys) -> None:
    assert main(["--rows", "0", "--out", str(tmp_path)]) == 2
    assert "--rows" in capsys.readouterr().err
    assert main(["--rows", "10", "--out", str(tmp_path / "x"), "--max-vocab", "50"]) == 0
    assert pl.read_csv(tmp_path / "x" / "train.txt", separator="\t", has_header=False).height == 10
