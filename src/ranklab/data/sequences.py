"""Behaviour sequences built from interaction logs, without leakage.

For every scored event the history holds the same user's earlier events only (strictly before
it in time), most recent last at position L-1, left-padded with 0, truncated to ``max_len``.
Histories are gathered with index arithmetic over the log sorted by (user, time): one
``searchsorted`` gives where each event's strictly-earlier events end, and a (N, L) index
matrix picks them; no Python loop over rows.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ranklab.data.dataset import CACHE_FORMAT, GROUP_KEY, DataSource, EncodedData
from ranklab.data.preprocess import (
    FeatureSpec,
    TabularEncoder,
    fail_at_first,
    parse_feature_specs,
    parse_time,
)
from ranklab.data.readers import first_data_line, read_table
from ranklab.data.schema import FIRST_ID, Feature, LabelSpec, Schema
from ranklab.data.sources import _plain
from ranklab.errors import ConfigError, DataError
from ranklab.utils import hash_files, hash_object

log = logging.getLogger(__name__)


def dense_rank(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Values -> 0-based dense ranks (equal values, equal rank), and the number of ranks."""
    uniq, inv = np.unique(values, return_inverse=True)
    return inv.astype(np.int64), len(uniq)


def gather_histories(
    hist_user: np.ndarray,
    hist_time: np.ndarray,
    hist_columns: Mapping[str, np.ndarray],
    query_user: np.ndarray,
    query_time: np.ndarray,
    max_len: int,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Each query's history: the same user's events with time strictly before the query's.

    Args:
        hist_user, hist_time: (H,) the events histories are drawn from (any order).
        hist_columns: name -> (H,) int64 ids to gather (0 is reserved for padding).
        query_user, query_time: (N,) the scored events.
        max_len: L.

    Returns:
        name -> (N, L) int64, most recent event at L-1, left-padded with 0; and the (N, L)
        int64 index into the history events (-1 where padded), for side computations.
    """
    if max_len < 1:
        raise ConfigError("data.source.history.max_len", f"must be >= 1, got {max_len}")
    # one key orders (user, time) lexicographically: user * n_times + time rank
    times, n_times = dense_rank(np.concatenate([hist_time, query_time]))
    h_key = hist_user.astype(np.int64) * n_times + times[: len(hist_time)]
    q_key = query_user.astype(np.int64) * n_times + times[len(hist_time) :]
    order = np.argsort(h_key, kind="stable")
    h_sorted = h_key[order]
    end = np.searchsorted(h_sorted, q_key, side="left")  # first event at or after the query
    start = np.searchsorted(h_sorted, query_user.astype(np.int64) * n_times, side="left")
    idx = end[:, None] - max_len + np.arange(max_len)[None, :]  # (N, L) positions in sorted log
    valid = idx >= start[:, None]
    src = (
        np.where(valid, order[np.clip(idx, 0, max(len(order) - 1, 0))], -1)
        if len(order)
        else np.full(idx.shape, -1)
    )
    out = {
        name: np.where(valid, col[np.clip(src, 0, None)], 0).astype(np.int64)
        for name, col in hist_columns.items()
    }
    return out, src


def gap_buckets(
    query_time: np.ndarray, event_time: np.ndarray, valid: np.ndarray, unit: float
) -> np.ndarray:
    """Time gaps as categorical ids: 2 + floor(log2(1 + gap / unit)); 0 where padded."""
    gap = np.maximum(query_time[:, None] - event_time, 0) / unit
    return np.where(valid, 2 + np.floor(np.log2(1 + gap)).astype(np.int64), 0)


def read_side_table(table: Mapping[str, Any]) -> pl.DataFrame:
    """Read ``{path, format, ...reader options}`` (``key`` is the join key, not an option)."""
    return read_table(table["path"], table.get("format", "csv"), **_reader_options(table))


def _reader_options(table: Mapping[str, Any]) -> dict[str, Any]:
    """A table's reader options: all but ``path``, ``format`` and the join ``key``."""
    return {k: v for k, v in table.items() if k not in ("path", "format", "key")}


def located_nowhere(table: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A table's options without its ``path``: the fingerprint takes the file's name and
    contents (``hash_files``), so the same files reached by another path (``../shared/data``
    or its absolute form, another mount) are the same data, in the cache and in reports."""
    return None if table is None else {k: v for k, v in table.items() if k != "path"}


def first_line(events: Mapping[str, Any]) -> int:
    """The file line of the log's first event (after a header, where its format has one)."""
    return first_data_line(events["path"], events.get("format", "csv"), **_reader_options(events))


def read_log(events: Mapping[str, Any], user: str, item: str, time: str) -> pl.DataFrame:
    """An interaction log with its time parsed into ``__time__`` and its line order in
    ``__row__`` (the tie-breaker for events with equal times)."""
    path = str(events["path"])
    df = read_side_table(events)
    for col, key in (
        (user, "data.source.user"),
        (item, "data.source.item"),
        (time, "data.source.time"),
    ):
        if col not in df.columns:
            raise DataError(
                f"column '{col}' (config key {key}) not in the log (columns: {df.columns})",
                path=path,
            )
    parsed = parse_time(df, time, path, line_offset=first_line(events))
    return df.with_columns(parsed.alias("__time__"), pl.int_range(pl.len()).alias("__row__"))


def split_events(
    df: pl.DataFrame, method: str, val: float, test: float, user: str, time: str
) -> pl.Series:
    """Assign each event to train/val/test.

    ``time``: the global timeline is cut at the (1 - val - test) and (1 - test) quantiles of the
    events, so every test event happens after every training event. ``leave_last_out``: per
    user, the last event is test, the one before it val, the rest train (users with fewer than 3
    events keep everything in train).
    """
    if method == "time":
        if not 0 <= val < 1 or not 0 < test < 1 or val + test >= 1:
            raise ConfigError(
                "data.source.split",
                f"val ({val}) and test ({test}) must be fractions summing below 1",
            )
        rank = df[time].rank("ordinal") - 1
        n = df.height
        cut_val, cut_test = round(n * (1 - val - test)), round(n * (1 - test))
        return pl.Series(
            "split",
            np.where(
                rank.to_numpy() >= cut_test,
                "test",
                np.where(rank.to_numpy() >= cut_val, "val", "train"),
            ),
        )
    if method == "leave_last_out":
        pos = df.select(
            (pl.int_range(pl.len()).sort_by(pl.col(time), maintain_order=True).over(user)).alias(
                "r"
            ),
            pl.len().over(user).alias("n"),
        )
        from_end = (pos["n"] - 1 - pos["r"]).to_numpy()
        enough = pos["n"].to_numpy() >= 3
        return pl.Series(
            "split",
            np.where(
                enough & (from_end == 0), "test", np.where(enough & (from_end == 1), "val", "train")
            ),
        )
    raise ConfigError(
        "data.source.split.method", f"must be 'time' or 'leave_last_out', got '{method}'"
    )


class SequenceLog(DataSource):
    """Ranking samples with behaviour histories, from an interaction log (+ user/item tables).

    Every event of the log is one sample (label from a column); its history is the same user's
    earlier events (optionally only the positive ones), strictly before it in time.

    Args:
        events: ``{path, format, ...reader options}`` of the log (``recbole``, ``interactions``,
            ``csv``).
        user, item, time: column names in the log; ``time`` must be numeric or a date-time.
        label: ``{column, min}``: label = column >= min (e.g. rating >= 4 is a click); with
            ``min`` null the column must already hold 0/1.
        users, items: optional side tables ``{path, format, key}`` joined on ``key``.
        features: feature specs of a sample (see ``parse_feature_specs``); a list-valued column
            used as categorical contributes its first token.
        history: ``{max_len, positives_only, fields: {hist_name: feature_name}, time_gap_unit,
            action: column}``: each history field shares the table of the feature it names;
            ``time_gap_unit`` (seconds) adds ``hist_gap`` (log2 buckets of the gap to the scored
            event); ``action`` adds ``hist_action`` from that log column.
        split: ``{method: time | leave_last_out, val, test}``.
        group: column for grouped AUC (default: the user).
    """

    def __init__(
        self,
        events: Mapping[str, Any],
        user: str,
        item: str,
        time: str,
        label: Mapping[str, Any],
        features: Mapping[str, Any],
        history: Mapping[str, Any],
        split: Mapping[str, Any],
        users: Mapping[str, Any] | None = None,
        items: Mapping[str, Any] | None = None,
        group: str | None = None,
        name: str = "sequence_log",
    ) -> None:
        self.events, self.users, self.items = dict(_plain(events)), _plain(users), _plain(items)
        self.user, self.item, self.time = user, item, time
        self.label = dict(_plain(label))
        self.features_cfg = _plain(features)
        self.specs = parse_feature_specs(self.features_cfg)
        self.history = dict(_plain(history))
        self.split = dict(_plain(split))
        self.group = group or user
        self.name = name
        max_len = self.history.get("max_len", 0)
        if not isinstance(max_len, int) or max_len < 1:
            raise ConfigError(
                "data.source.history.max_len", f"must be an integer >= 1, got {max_len!r}"
            )
        spec_names = {s.name for s in self.specs}
        for hist_name, feat in (self.history.get("fields") or {}).items():
            if feat not in spec_names:
                raise ConfigError(
                    f"data.source.history.fields.{hist_name}",
                    f"names '{feat}', which is not a feature (features: {sorted(spec_names)})",
                )

    def _files(self) -> list[Path]:
        files = [Path(self.events["path"])]
        files += [Path(t["path"]) for t in (self.users, self.items) if t]
        for f in files:
            if not f.is_file():
                raise DataError(
                    "file not found (set paths.data_dir to the directory holding the dataset)",
                    path=str(f),
                )
        return files

    def fingerprint(self) -> str:
        opts = [
            CACHE_FORMAT,
            located_nowhere(self.events),
            located_nowhere(self.users),
            located_nowhere(self.items),
            self.user,
            self.item,
            self.time,
            self.label,
            self.features_cfg,
            self.history,
            self.split,
            self.group,
        ]
        return hash_object([opts, hash_files(self._files())])[:16]

    def _load_frame(self) -> pl.DataFrame:
        df = read_log(self.events, self.user, self.item, self.time)
        for table, what in ((self.users, "users"), (self.items, "items")):
            if table:
                side = read_side_table(table)
                key = table["key"]
                if key not in side.columns:
                    raise DataError(
                        f"key column '{key}' (data.source.{what}.key) not found", path=table["path"]
                    )
                df = df.join(
                    side.unique(key, keep="first"), on=key, how="left", maintain_order="left"
                )
        # list-valued columns used as categorical features contribute their first token
        firsts = [
            s.column
            for s in self.specs
            if s.kind == "categorical" and isinstance(df.schema.get(s.column), pl.List)
        ]
        df = df.with_columns([pl.col(c).list.first() for c in firsts])
        return df.sort([self.user, "__time__", "__row__"])

    def build(self) -> EncodedData:
        df = self._load_frame()
        path = str(self.events["path"])
        col, threshold = self.label.get("column"), self.label.get("min")
        if col not in df.columns:
            raise DataError(f"label column '{col}' (data.source.label.column) not found", path=path)
        # errors name the file's line: the frame is sorted by user and time, __row__ is the
        # event's row in the file
        first, rows = first_line(self.events), df["__row__"]
        raw = df[col]
        y = raw.cast(pl.Float64, strict=False)
        if threshold is None:
            bad, why = y.is_null() | ~y.is_in([0.0, 1.0]), "label must be 0 or 1"
        else:
            bad = y.is_null() | ~y.is_finite()
            why = f"label column must be a number (data.source.label.min: {threshold})"
        fail_at_first(bad, lambda i: f"{why}, found {raw[i]!r}", path, first, col, rows=rows)
        if threshold is not None:
            y = (y >= float(threshold)).cast(pl.Float64)
        df = df.with_columns(y.cast(pl.Float32).alias("__label__"))
        # the features' values checked in file order, so that an error names its line
        TabularEncoder(self.specs).check(df.sort("__row__"), path, first)
        split = split_events(
            df,
            self.split.get("method", "time"),
            float(self.split.get("val", 0.1)),
            float(self.split.get("test", 0.1)),
            self.user,
            "__time__",
        )
        df = df.with_columns(split)
        encoder = TabularEncoder(self.specs).fit(df.filter(pl.col("split") == "train"), path)
        enc = encoder.transform(df, path)
        # groups (users) as dense ids over the whole log
        users = df[self.user].cast(pl.String)
        user_ids = users.rank("dense").cast(pl.Int64).to_numpy()
        group_ids = df[self.group].cast(pl.String).rank("dense").cast(pl.Int64).to_numpy()
        times = df["__time__"].to_numpy()
        # the history pool: positives only, or every event
        pool = (
            df["__label__"].to_numpy() > 0.5
            if self.history.get("positives_only", False)
            else np.ones(df.height, bool)
        )
        max_len = int(self.history["max_len"])
        fields = dict(self.history.get("fields") or {})
        cols = {h: enc[f][pool] for h, f in fields.items()}
        action_col = self.history.get("action")
        action_vocab, action_enc = None, None
        if action_col:
            if action_col not in df.columns:
                raise DataError(
                    f"action column '{action_col}' (data.source.history.action) not found",
                    path=path,
                )
            action_spec = FeatureSpec("hist_action", column=action_col)
            action_enc = TabularEncoder([action_spec]).fit(df.filter(pl.col("split") == "train"))
            cols["hist_action"] = action_enc.transform(df)["hist_action"][pool]
            action_vocab = action_enc.vocabs["hist_action"].size
        hist, src = gather_histories(user_ids[pool], times[pool], cols, user_ids, times, max_len)
        valid = src >= 0
        gap_unit = self.history.get("time_gap_unit")
        if gap_unit:
            pool_times = times[pool]
            hist["hist_gap"] = gap_buckets(
                times,
                pool_times[np.clip(src, 0, None)] if pool.any() else np.zeros_like(src, float),
                valid,
                float(gap_unit),
            )
        split_arr = df["split"].to_numpy()
        splits: dict[str, dict[str, np.ndarray]] = {}
        for s in ("train", "val", "test"):
            m = split_arr == s
            arrays = {k: v[m] for k, v in enc.items()}
            arrays.update({k: v[m] for k, v in hist.items()})
            arrays["label"] = df["__label__"].to_numpy()[m]
            arrays[GROUP_KEY] = group_ids[m]
            arrays["__time__"] = times[m]
            splits[s] = arrays
        base = encoder.schema((LabelSpec("label"),), group=self.group)
        first_hist = next(iter(fields), None)
        extra = []
        for h, f in fields.items():
            ref = base[f]
            extra.append(
                Feature(
                    h,
                    "sequence",
                    vocab_size=ref.vocab_size,
                    table=ref.table,
                    max_len=max_len,
                    role="user",
                    sequence=None if h == first_hist else first_hist,
                )
            )
        if action_vocab:
            extra.append(
                Feature(
                    "hist_action",
                    "sequence",
                    vocab_size=action_vocab,
                    table="action",
                    max_len=max_len,
                    role="user",
                    sequence=first_hist,
                )
            )
        if gap_unit:
            extra.append(
                Feature(
                    "hist_gap",
                    "sequence",
                    vocab_size=int(hist["hist_gap"].max()) + 2,
                    table="time_gap",
                    max_len=max_len,
                    role="user",
                    sequence=first_hist,
                )
            )
        meta = {
            "source": self.name,
            "rows": {s: len(a["label"]) for s, a in splits.items()},
            "base_rate": {
                s: float(a["label"].mean()) if len(a["label"]) else None for s, a in splits.items()
            },
            "mean_history_length": {
                s: float((splits[s][first_hist] > 0).sum(1).mean())
                if first_hist and len(splits[s]["label"])
                else 0.0
                for s in splits
            },
            "split": self.split,
            "vocabularies": {
                **encoder.vocabulary_hashes(),
                **(action_enc.vocabulary_hashes() if action_enc is not None else {}),
            },
        }
        schema = Schema(tuple(base.features) + tuple(extra), group=self.group, meta=meta)
        return EncodedData(schema, splits, meta)


class UserSequences(DataSource):
    """Next-item retrieval data by leave-one-out: per user, the last item is the test target,
    the one before it the validation target, and the rest is training data.

    Every split has, per user: ``history`` (U, L) the items before the target (left-padded,
    most recent at L-1), ``target`` (U,), ``seen`` (U, S) every item the user had before the
    target (for excluding them from the candidates), and ``neg_uniform`` / ``neg_popularity``
    (U, n_eval_negatives): fixed negatives for sampled evaluation, drawn uniformly or by
    training popularity among items the user never interacted with (as in the SASRec paper).
    The training split's target is the last training item; the retrieval task also trains on
    every earlier position (the next item of each history prefix).

    ``catalog="all"`` (default) gives every item of the log an id, the published protocol of
    SASRec/BERT4Rec (the candidate set is the whole catalogue, including items that occur only
    as a held-out target); ``catalog="train"`` fits item ids on training events only (with
    ``min_count``), so such targets become OOV (counted in the metadata). Users with fewer than
    3 events are dropped (they have no validation and test target).
    """

    def __init__(
        self,
        events: Mapping[str, Any],
        user: str,
        item: str,
        time: str,
        max_len: int = 50,
        min_count: int = 1,
        n_eval_negatives: int = 100,
        catalog: str = "all",
        label: Mapping[str, Any] | None = None,
        seed: int = 0,
        name: str = "user_sequences",
    ) -> None:
        if catalog not in ("all", "train"):
            raise ConfigError("data.source.catalog", f"must be 'all' or 'train', got '{catalog}'")
        self.catalog = catalog
        if not isinstance(max_len, int) or max_len < 1:
            raise ConfigError("data.source.max_len", f"must be an integer >= 1, got {max_len!r}")
        if n_eval_negatives < 1:
            raise ConfigError(
                "data.source.n_eval_negatives", f"must be >= 1, got {n_eval_negatives}"
            )
        self.events = dict(_plain(events))
        self.user, self.item, self.time = user, item, time
        self.max_len, self.min_count, self.n_neg = max_len, min_count, n_eval_negatives
        self.label = dict(_plain(label)) if label else None
        self.seed, self.name = seed, name

    def fingerprint(self) -> str:
        path = Path(self.events["path"])
        if not path.is_file():
            raise DataError(
                "file not found (set paths.data_dir to the directory holding the dataset)",
                path=str(path),
            )
        opts = [
            CACHE_FORMAT,
            located_nowhere(self.events),
            self.user,
            self.item,
            self.time,
            self.max_len,
            self.min_count,
            self.n_neg,
            self.catalog,
            self.label,
            self.seed,
        ]
        return hash_object([opts, hash_files([path])])[:16]

    def build(self) -> EncodedData:
        self.fingerprint()  # checks the file exists
        path = str(self.events["path"])
        df = read_log(self.events, self.user, self.item, self.time)
        if self.label:  # keep positive events only (e.g. rating >= 4)
            df = df.filter(
                pl.col(self.label["column"]).cast(pl.Float64) >= float(self.label["min"])
            )
        df = df.sort([self.user, "__time__", "__row__"])
        n_all = df.height
        items_all = df[self.item].n_unique()
        n_per_user = df.group_by(self.user, maintain_order=True).len()
        df = df.join(
            n_per_user.filter(pl.col("len") >= 3).select(self.user),
            on=self.user,
            how="semi",
            maintain_order="left",
        )
        if df.height == 0:
            raise DataError("no user has 3 or more events", path=path)
        # what leave-one-out cannot use: users without a validation and a test target, and
        # the items that only they had (they leave the catalogue with them)
        dropped = {
            "users": int((n_per_user["len"] < 3).sum()),
            "events": n_all - df.height,
            "items": items_all - df[self.item].n_unique(),
        }
        if dropped["users"]:
            log.warning(
                "%s: dropped %d users with fewer than 3 events (%d events; %d items occur only "
                "in them and leave the catalogue)",
                path,
                dropped["users"],
                dropped["events"],
                dropped["items"],
            )
        n_per_user = n_per_user.filter(pl.col("len") >= 3)
        df = df.with_columns(
            (pl.len().over(self.user) - 1 - pl.int_range(pl.len()).over(self.user)).alias(
                "__from_end__"
            )
        )
        vocab = TabularEncoder([FeatureSpec("item", column=self.item, min_count=self.min_count)])
        vocab.fit(df if self.catalog == "all" else df.filter(pl.col("__from_end__") >= 2), path)
        items = vocab.transform(df, path)["item"]
        n_items = vocab.vocabs["item"].size
        user_idx = df[self.user].rank("dense").cast(pl.Int64).to_numpy() - 1
        n_users = int(user_idx.max()) + 1
        from_end = df["__from_end__"].to_numpy()
        pos = np.arange(df.height)
        last = pos[from_end == 0]  # each user's last event, users in order
        L = self.max_len
        # training popularity (ids seen in training events) for popularity-sampled negatives
        train_counts = np.bincount(items[from_end >= 2], minlength=n_items).astype(np.float64)
        train_counts[:FIRST_ID] = 0
        rng = np.random.default_rng(self.seed)
        splits: dict[str, dict[str, np.ndarray]] = {}
        user_start = last - (n_per_user["len"].to_numpy() - 1)  # (U,)
        for split, back in (("train", 2), ("val", 1), ("test", 0)):
            target_pos = last - back  # (U,)
            hist_idx = target_pos[:, None] - L + np.arange(L)[None, :]  # (U, L)
            valid = hist_idx >= user_start[:, None]
            history = np.where(valid, items[np.clip(hist_idx, 0, None)], 0)
            # every item the user had before the target, ragged: (E,) values, (U+1,) offsets
            seen_values, seen_offsets = ragged_ranges(items, user_start, target_pos)
            target = items[target_pos]
            arrays = {"history": history, "target": target}
            arrays["seen.values"], arrays["seen.offsets"] = seen_values, seen_offsets
            # never the user's items: the seen ones and the target
            excl_values, excl_offsets = ragged_ranges(items, user_start, target_pos + 1)
            for name, weights in (
                ("neg_uniform", np.ones(n_items)),
                ("neg_popularity", train_counts),
            ):
                arrays[name] = sample_negatives(rng, weights, excl_values, excl_offsets, self.n_neg)
            arrays[GROUP_KEY] = np.arange(n_users)
            splits[split] = arrays
        feats = (
            Feature(
                "history", "sequence", vocab_size=n_items, table="item", max_len=L, role="user"
            ),
            Feature("target", "categorical", vocab_size=n_items, table="item", role="item"),
        )
        evaluation = (
            Feature("seen", "ragged", vocab_size=n_items, table="item", role="user"),
            *(
                Feature(n, "sequence", vocab_size=n_items, table="item", max_len=self.n_neg)
                for n in ("neg_uniform", "neg_popularity")
            ),
        )
        meta = {
            "source": self.name,
            "users": n_users,
            "items": n_items - FIRST_ID,
            "events": int(df.height),
            "dropped": dropped,
            "eval_negatives": self.n_neg,
            "oov_targets": {s: int((a["target"] == 1).sum()) for s, a in splits.items()},
            "item_counts": train_counts.astype(np.int64).tolist(),
            "vocabularies": vocab.vocabulary_hashes(),
        }
        schema = Schema(feats, labels=(), group=None, evaluation=evaluation, meta=meta)
        return EncodedData(schema, splits, {k: v for k, v in meta.items() if k != "item_counts"})


def ragged_ranges(
    values: np.ndarray, starts: np.ndarray, stops: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Row r = ``values[starts[r]:stops[r]]``, as flat (E,) values and (R+1,) offsets."""
    lengths = stops - starts
    offsets = np.zeros(len(starts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    within = np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths)
    return values[np.repeat(starts, lengths) + within].astype(np.int64), offsets


def row_isin(
    values: np.ndarray, set_values: np.ndarray, set_offsets: np.ndarray, n_ids: int
) -> np.ndarray:
    """values (R, M); row r's set = ``set_values[set_offsets[r]:set_offsets[r+1]]``, ids < n_ids
    -> (R, M) bool: values[r, j] in row r's set.

    Offsetting each row's ids by r * n_ids turns R membership tests into one searchsorted.
    """
    rows = np.repeat(np.arange(len(values), dtype=np.int64), np.diff(set_offsets))
    keys = np.sort(set_values + rows * n_ids)
    q = (values + np.arange(len(values), dtype=np.int64)[:, None] * n_ids).ravel()
    if not len(keys):
        return np.zeros(values.shape, dtype=bool)
    pos = np.clip(np.searchsorted(keys, q), 0, len(keys) - 1)
    return (keys[pos] == q).reshape(values.shape)


def sample_negatives(
    rng: np.random.Generator,
    weights: np.ndarray,
    exclude_values: np.ndarray,
    exclude_offsets: np.ndarray,
    n: int,
) -> np.ndarray:
    """(U, n) item ids drawn with probability proportional to ``weights`` (ids 0 and 1 never),
    without the row's excluded ids (ragged: ``exclude_values[exclude_offsets[u]:...[u+1]]``)
    and without repeats within a row.

    Successive sampling without replacement, vectorised: draw a surplus per row, keep each id's
    first admissible occurrence in draw order, take the first n; rows that come up short
    (rare) are drawn again.
    """
    w = weights.astype(np.float64).copy()
    w[:FIRST_ID] = 0
    p = w / w.sum()
    n_avail = int((w > 0).sum())
    lengths = np.diff(exclude_offsets)
    if n_avail - (int(lengths.max()) if len(lengths) else 0) < n:
        raise ConfigError(
            "data.source.n_eval_negatives", f"{n} negatives, but only {n_avail} items exist"
        )
    n_rows = len(exclude_offsets) - 1
    out = np.zeros((n_rows, n), dtype=np.int64)
    todo = np.arange(n_rows)
    while len(todo):
        m = 3 * n + 10
        draw = rng.choice(len(p), size=(len(todo), m), p=p)  # (R, M)
        sub_values, sub_offsets = ragged_ranges(
            exclude_values, exclude_offsets[todo], exclude_offsets[todo + 1]
        )
        ok = ~row_isin(draw, sub_values, sub_offsets, len(p))  # not one of the user's items
        order = np.argsort(draw, axis=1, kind="stable")  # by id, then draw position
        sorted_ids = np.take_along_axis(draw, order, 1)
        first = np.ones_like(sorted_ids, dtype=bool)
        first[:, 1:] = sorted_ids[:, 1:] != sorted_ids[:, :-1]
        is_first = np.empty_like(first)
        np.put_along_axis(is_first, order, first, 1)  # back to draw order
        keep = ok & is_first
        rank = np.cumsum(keep, 1)
        enough = rank[:, -1] >= n
        rows, cols = np.nonzero(keep & (rank <= n) & enough[:, None])
        out[todo[rows], rank[rows, cols] - 1] = draw[rows, cols]
        todo = todo[~enough]
    return out
