"""Behaviour sequences: leak-free histories (vs a naive loop and end to end), splits, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ranklab.data import SequenceLog, SyntheticSeq, gather_histories, load_or_build
from ranklab.data.dataset import GROUP_KEY
from ranklab.data.sequences import split_events
from ranklab.errors import ConfigError, DataError


def naive_histories(hu, ht, hv, qu, qt, L):
    out = []
    for u, t in zip(qu, qt):
        earlier = sorted(
            (time, i) for i, (uu, time) in enumerate(zip(hu, ht)) if uu == u and time < t
        )
        items = [hv[i] for _, i in earlier][-L:]
        out.append([0] * (L - len(items)) + items)
    return out


def test_gather_histories_matches_naive_loop_with_time_ties() -> None:
    rng = np.random.default_rng(0)
    H, N, L = 300, 120, 6
    hu, ht = rng.integers(0, 8, H), rng.integers(0, 40, H).astype(float)  # many equal times
    hv = rng.integers(2, 50, H)
    qu, qt = rng.integers(0, 9, N), rng.integers(0, 40, N).astype(float)
    got, src = gather_histories(hu, ht, {"h": hv}, qu, qt, L)
    assert got["h"].tolist() == naive_histories(hu, ht, hv, qu, qt, L)
    ok = src >= 0
    assert (hu[src[ok]] == np.broadcast_to(qu[:, None], src.shape)[ok]).all()
    assert (ht[src[ok]] < np.broadcast_to(qt[:, None], src.shape)[ok]).all()  # strictly earlier
    with pytest.raises(ConfigError, match="max_len"):
        gather_histories(hu, ht, {"h": hv}, qu, qt, 0)


def test_time_split_orders_splits_and_leave_last_out_is_per_user() -> None:
    df = pl.DataFrame(
        {"u": ["a"] * 5 + ["b"] * 4 + ["c"] * 2, "t": [5, 1, 3, 9, 7, 2, 8, 4, 6, 1, 2]}
    )
    s = split_events(df, "time", 0.2, 0.2, "u", "t").to_list()
    times = {k: [t for t, x in zip(df["t"], s) if x == k] for k in ("train", "val", "test")}
    assert max(times["train"]) <= min(times["val"]) and max(times["val"]) <= min(times["test"])
    s = split_events(df, "leave_last_out", 0.1, 0.1, "u", "t").to_list()
    assert [x for u, x in zip(df["u"], s) if u == "a"] == ["train", "train", "train", "test", "val"]
    assert [x for u, x in zip(df["u"], s) if u == "c"] == ["train", "train"]  # too short to split
    with pytest.raises(ConfigError, match=r"split\.method"):
        split_events(df, "random", 0.1, 0.1, "u", "t")


def test_ml100k_histories_never_hold_the_target_time_or_later(
    shared_data: Path, tmp_path: Path
) -> None:
    """End to end on the real log: in MovieLens a user rates a movie once, so (user, item)
    identifies an event and its time. Every history entry must be strictly earlier."""
    from hydra.utils import instantiate

    from ranklab.config import compose

    cfg = compose(
        ["data=ml100k_seq", f"paths.data_dir={shared_data}", f"paths.cache_dir={tmp_path}"]
    )
    data = load_or_build(instantiate(cfg.data.source), tmp_path)
    rows = pl.concat(
        pl.DataFrame(
            {"g": a[GROUP_KEY], "item": a["item_id"], "t": a["__time__"], "label": a["label"]}
        )
        for a in data.splits.values()
    )
    known = rows.filter(pl.col("item") >= 2)  # OOV ids (1) are not unique per user
    event_time = dict(zip(zip(known["g"].to_list(), known["item"].to_list()), known["t"].to_list()))
    checked = 0
    for split, a in data.splits.items():
        g, t, hist = a[GROUP_KEY], a["__time__"], a["hist_item"]
        r, c = np.nonzero(hist >= 2)
        for ri, ci in zip(r, c):
            key = (int(g[ri]), int(hist[ri, ci]))
            if key in event_time:
                assert event_time[key] < t[ri], (split, ri, key)
                checked += 1
        # most recent last: history event times increase left to right
    assert checked > 1_000_000
    # the history holds positives only (rating >= 4 is a click)
    pos = rows.filter((pl.col("item") >= 2) & (pl.col("label") == 1))
    positive = set(zip(pos["g"].to_list(), pos["item"].to_list()))
    a = data.splits["test"]
    sample = [
        (int(a[GROUP_KEY][i]), int(x))
        for i in range(0, len(a["label"]), 97)
        for x in a["hist_item"][i]
        if x >= 2
    ]
    assert sample and all(k in positive for k in sample)


def write_recbole(d: Path, inter_lines: list[str]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "x.inter").write_text(
        "\n".join(["user_id:token\titem_id:token\trating:float\ttimestamp:float", *inter_lines])
        + "\n"
    )
    return d / "x.inter"


def seq_source(path: Path, **kw) -> SequenceLog:
    args = dict(
        events={"path": str(path), "format": "recbole"},
        user="user_id",
        item="item_id",
        time="timestamp",
        label={"column": "rating", "min": 4},
        features={"categorical": ["user_id", "item_id"]},
        history={"max_len": 3, "fields": {"hist_item": "item_id"}},
        split={"method": "leave_last_out"},
    )
    args.update(kw)
    return SequenceLog(**args)


def test_sequence_log_errors_name_file_line_or_key(tmp_path: Path) -> None:
    lines = [f"u{u}\ti{i}\t{4 + (i % 2)}\t{100 * i}" for u in range(3) for i in range(5)]
    good = write_recbole(tmp_path / "a", lines)
    data = seq_source(good).build()
    assert data.schema["hist_item"].table == data.schema["item_id"].table
    # the same file reached by another path is the same data (reports split rows by it)
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "x.inter").write_bytes(good.read_bytes())
    assert seq_source(other / "x.inter").fingerprint() == seq_source(good).fingerprint()
    bad_time = write_recbole(tmp_path / "b", [*lines[:4], "u9\ti1\t5\tyesterday", *lines[4:]])
    with pytest.raises(DataError, match=r"x\.inter, line 6, column 'timestamp'.*'yesterday'"):
        seq_source(bad_time).build()
    log = tmp_path / "log.txt"  # an interaction log (no header): line numbers start at 1
    log.write_text("u1 i1 10\nu1 i2 20\nu1 i3 noon\n")
    with pytest.raises(DataError, match=r"log\.txt, line 3, column 'timestamp': timestamp 'noon'"):
        seq_source(
            log,
            events={"path": str(log), "format": "interactions"},
            user="user",
            item="item",
            label={"column": "item", "min": None},
            features={"categorical": ["item"]},
            history={"max_len": 2, "fields": {"hist_item": "item"}},
        ).build()
    with pytest.raises(
        DataError, match=r"column 'ts' \(config key data.source.time\) not in the log"
    ):
        seq_source(good, time="ts").build()
    with pytest.raises(ConfigError, match=r"data.source.history.fields.hist_item.*names 'movie'"):
        seq_source(good, history={"max_len": 3, "fields": {"hist_item": "movie"}})
    with pytest.raises(ConfigError, match=r"data.source.history.max_len"):
        seq_source(good, history={"max_len": 0, "fields": {"hist_item": "item_id"}})
    # the log is sorted by user and time before it is encoded: errors still name file lines
    # (a label that is no number was a traceback; a feature's value was named at its sorted row)
    shuffled = [lines[i] for i in (14, 3, 9, 0, 7, 12, 1, 5, 10, 2, 13, 4, 8, 6, 11)]
    rating = write_recbole(tmp_path / "c", [*shuffled[:6], "u1\ti3\tgood\t300", *shuffled[6:]])
    rating.write_text(rating.read_text().replace("rating:float", "rating:token", 1))  # as text
    with pytest.raises(DataError, match=r"x\.inter, line 8, column 'rating': label column must"):
        seq_source(rating).build()
    ones = [ln.rsplit("\t", 2)[0] + "\t1\t" + ln.rsplit("\t", 1)[1] for ln in shuffled]
    ones[9] = ones[9].replace("\t1\t", "\t2\t")
    with pytest.raises(DataError, match=r"x\.inter, line 11, column 'rating': label must be 0 or"):
        seq_source(
            write_recbole(tmp_path / "d", ones), label={"column": "rating", "min": None}
        ).build()
    price = [ln + f"\t{i}.5" for i, ln in enumerate(shuffled)]
    price[4] = price[4].rsplit("\t", 1)[0] + "\tcheap"
    d = write_recbole(tmp_path / "e", price)
    d.write_text(d.read_text().replace("timestamp:float", "timestamp:float\tprice:token", 1))
    with pytest.raises(DataError, match=r"x\.inter, line 6, column 'price'.*'cheap'"):
        seq_source(
            d, features={"categorical": ["user_id", "item_id"], "numeric": ["price"]}
        ).build()


def test_synthetic_seq_is_deterministic_and_reports_its_ceiling() -> None:
    kw = dict(n_train=500, n_val=100, n_test=100, n_users=50, n_items=40, n_categories=4, max_len=5)
    a, b = SyntheticSeq(**kw).build(), SyntheticSeq(**kw).build()
    for s in a.splits:
        for k in a.splits[s]:
            np.testing.assert_array_equal(a.splits[s][k], b.splits[s][k])
    assert 0.5 < a.meta["bayes"]["test"]["auc"] < 1
    h = a.splits["train"]["hist_item"]
    first = np.argmax(h > 0, axis=1)  # first item column (0 for empty rows)
    cols = np.arange(h.shape[1])[None, :]
    empty = (h == 0).all(1)
    left_padded = empty | ((h > 0) == (cols >= first[:, None])).all(1)
    assert all(left_padded)
    assert (a.splits["train"]["hist_cate"][h == 0] == 0).all()


def test_taobaoad_fixture_reads_caret_sequences_into_the_adgroup_table(
    shared_data: Path, tmp_path: Path
) -> None:
    from hydra.utils import instantiate

    from ranklab.config import compose

    cfg = compose(["data=taobaoad_tiny", f"paths.data_dir={shared_data}"])
    data = load_or_build(instantiate(cfg.data.source), tmp_path)
    s = data.schema
    assert s["click_sequence"].table == s["adgroup_id"].table == "adgroup_id"
    raw = pl.read_csv(shared_data / "taobaoad_tiny" / "train_sample.csv", infer_schema=False)
    first = raw["click_sequence"][0].split("^")
    row = data.splits["train"]["click_sequence"][0]
    assert (row > 0).sum() == len(first[-50:]) and (row[: 50 - len(first)] == 0).all()
    # the same ad group gets the same id as target and in a history
    ad = raw["adgroup_id"].to_list()
    both = [a for a in first if a in ad]
    if both:
        i = ad.index(both[0])
        assert data.splits["train"]["adgroup_id"][i] in row
