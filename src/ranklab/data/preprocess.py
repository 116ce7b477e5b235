"""Preprocessing fit on the training split only: vocabularies, numeric scaling, label checks.

Everything here is a polars expression over whole columns; nothing loops over rows.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ranklab.data import badrows
from ranklab.data.schema import OOV, PAD, POOLINGS, Feature, LabelSpec, Schema, weight_key
from ranklab.errors import ConfigError, DataError, whole_number

FEATURE_KINDS = ("categorical", "numeric", "sequence", "bag")
# per kind, the transforms a feature may name; the first is the default
TRANSFORMS = {
    "numeric": ("standard", "log", "none"),
    "categorical": ("none", "criteo_log", "quantile"),
}


@dataclass
class FeatureSpec:
    """How to build one feature from a raw column (the config's view of a Feature).

    ``min_count``: training-split values seen fewer times map to OOV. ``hash_buckets`` > 0
    replaces the vocabulary by hashing into that many buckets (for huge vocabularies).
    ``transform`` (numeric): ``standard`` (train mean/std, the default), ``log`` (log1p of
    max(x, 0), then standardised) or ``none``; (categorical): ``none`` (the default) or
    ``criteo_log``, a count bucketed as in the Criteo winners' solution: ``floor(ln(x)^2)`` for
    x > 2, else the integer itself; or ``quantile``, a number bucketed at the training split's
    quantiles (``buckets`` equal-frequency buckets; ties merge edges; missing values are their
    own id). ``separator`` (sequence, bag): splits a string column into
    items (a list column is taken as it is). A ``bag`` is a multi-valued field pooled into one
    embedding (``pooling``: ``sum`` or ``mean``); ``weights`` names a column of per-item values
    aligned with its items (libFM's ``index:value``); ``max_len`` keeps a row's last items (0:
    the longest training row). ``fill_na`` (numeric): the raw value a missing (empty or null)
    value takes before the transform and the scaler see it, as FuxiCTR's ``fill_na``; by
    default (None) a missing value is left out of the scaler and encoded as the training mean
    (0 after standardising).
    """

    name: str
    kind: str = "categorical"
    column: str | None = None
    min_count: int = 1
    hash_buckets: int = 0
    table: str | None = None
    role: str = "context"
    max_len: int = 0
    separator: str | None = None
    sequence: str | None = None
    transform: str | None = None
    weights: str | None = None
    pooling: str = "sum"
    buckets: int = 10
    fill_na: float | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.column = self.column or self.name
        allowed = TRANSFORMS.get(self.kind, ("none",))
        self.transform = self.transform or allowed[0]
        if self.transform not in allowed:
            raise ConfigError(
                f"{self.name}.transform",
                f"'{self.transform}' is not a {self.kind} transform (choose from {list(allowed)})",
            )
        if self.transform == "quantile":
            self.buckets = whole_number(self.buckets, f"{self.name}.buckets", 2)
        for option, least in (("min_count", 1), ("hash_buckets", 0), ("max_len", 0)):
            setattr(
                self, option, whole_number(getattr(self, option), f"{self.name}.{option}", least)
            )
        if self.kind != "numeric":
            self.table = self.table or self.name
        if self.fill_na is not None:
            if self.kind != "numeric":
                raise ConfigError(f"{self.name}.fill_na", "only a numeric feature takes fill_na")
            if isinstance(self.fill_na, bool) or not isinstance(self.fill_na, (int, float)):
                raise ConfigError(f"{self.name}.fill_na", f"must be a number, got {self.fill_na!r}")
            if not math.isfinite(self.fill_na):
                raise ConfigError(f"{self.name}.fill_na", f"must be finite, got {self.fill_na}")


def require_scalar(df: pl.DataFrame, columns: Iterable[str], path: str | Path, key: str) -> None:
    """Fail naming the column when it holds nested values (a parquet list or struct) where one
    value a row is read: a categorical or numeric feature, a label, the group."""
    hint = " (ids listed in a row are a bag feature: features.bag)" if "features" in key else ""
    for c in columns:
        if c in df.columns and df.schema[c].is_nested():
            raise DataError(
                f"holds {df.schema[c]} values, where config key '{key}' reads one value a row"
                + hint,
                path=str(path),
                column=c,
            )


def _check_not_a_label(
    entry: Mapping[str, Any], labels: Mapping[str, tuple[str, str]], key: str
) -> None:
    name = str(entry["name"])
    column = str(entry.get("column") or name)
    for label, (label_column, label_key) in labels.items():
        if column == label_column:
            raise ConfigError(
                key,
                f"feature '{name}' reads column '{column}', the column of label '{label}' "
                f"({label_key}): a model would see its own target",
            )
        if name == label:
            raise ConfigError(
                key, f"feature '{name}' has the name of label '{label}' ({label_key}): rename one"
            )


def parse_feature_specs(
    cfg: Mapping[str, Any],
    key: str = "data.source.features",
    labels: Mapping[str, tuple[str, str]] | None = None,
) -> list[FeatureSpec]:
    """Parse ``{categorical: [...], numeric: [...], sequence: [...], bag: [...], min_count: 1}``.

    Entries are a column name or a mapping of FeatureSpec fields. Unknown fields fail with
    the config key that holds them. ``labels`` maps each label's name to its column and config
    key: a feature may neither read a label's column (the model would see its own target) nor
    take a label's name (batches key both by name).
    """
    allowed = {f.name for f in fields(FeatureSpec)}
    defaults = {k: v for k, v in cfg.items() if k not in FEATURE_KINDS}
    bad = set(defaults) - allowed
    if bad:
        raise ConfigError(
            f"{key}.{sorted(bad)[0]}",
            f"unknown option (known: the lists {list(FEATURE_KINDS)}, or a default for every "
            f"feature: {sorted(allowed - {'name', 'kind', 'column', 'extra'})})",
        )
    specs: list[FeatureSpec] = []
    for kind in FEATURE_KINDS:
        if isinstance(cfg.get(kind), str | Mapping):  # iterating "user" would read u, s, e, r
            raise ConfigError(f"{key}.{kind}", f"must be a list of features, e.g. [{cfg[kind]}]")
        for i, entry in enumerate(cfg.get(kind) or []):
            if isinstance(entry, str):
                entry = {"name": entry}
            entry = dict(entry)
            unknown = set(entry) - allowed
            if unknown:
                raise ConfigError(
                    f"{key}.{kind}[{i}].{sorted(unknown)[0]}",
                    f"unknown option (known: {sorted(allowed)})",
                )
            if "name" not in entry:
                raise ConfigError(f"{key}.{kind}[{i}]", "needs a 'name'")
            merged = {k: v for k, v in defaults.items() if k in allowed and k != "kind"}
            if kind != "numeric":  # a default fill_na is the numeric features' own
                merged.pop("fill_na", None)
            merged.update(entry)
            merged["kind"] = kind
            if kind == "sequence":
                whole_number(merged.get("max_len", 0), f"{key}.sequence[{i}].max_len", 1)
            if kind == "bag" and merged.get("pooling", "sum") not in POOLINGS:
                raise ConfigError(f"{key}.bag[{i}].pooling", f"must be one of {POOLINGS}")
            if kind != "bag" and entry.get("weights"):
                raise ConfigError(f"{key}.{kind}[{i}].weights", "only a bag has weights")
            _check_not_a_label(merged, labels or {}, f"{key}.{kind}[{i}]")
            try:
                specs.append(FeatureSpec(**merged))
            except ConfigError as e:  # named by its place in the config
                option = e.key.rsplit(".", 1)[-1]  # transform, buckets, min_count, ...
                where = f"{key}.{option}" if option in defaults and option not in entry else None
                where = where or f"{key}.{kind}[{i}].{option}"  # a default, or the entry's own
                raise ConfigError(where, str(e).split(": ", 1)[1]) from None
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(key, f"duplicate feature names in {names}")
    return specs


def fail_at_first(
    bad: pl.Series,
    message: Callable[[int], str],
    path: str,
    line_offset: int = 2,
    column: str | None = None,
    rows: pl.Series | None = None,
) -> None:
    """Raise DataError at the first True entry ``i`` of ``bad`` (N,), naming its file line
    (``i + line_offset``, or ``rows[i] + line_offset`` where entries are not the file's rows in
    order, e.g. a line's tokens) and column; ``message(i)`` says what is wrong there."""
    hits = bad.arg_true()
    if len(hits):
        i = int(hits[0])
        row = i if rows is None else int(rows[i])
        collector = badrows.active()
        if collector is not None and collector.mask is not None:  # on_bad_rows: skip
            line = collector.line(row, line_offset)
            rejected = hits.to_numpy() if rows is None else rows.to_numpy()[hits.to_numpy()]
            collector.reject(rejected, DataError(message(i), path, line, column))
            return
        raise DataError(message(i), path=path, line=row + line_offset, column=column)


def parse_time(
    df: pl.DataFrame, column: str, path: str, line_offset: int = 2, format: str | None = None
) -> pl.Series:
    """A timestamp column as float seconds: numbers as they are, date-times since the epoch
    (in the strftime ``format`` where given, e.g. ``%m/%d/%Y %H:%M``; else polars infers it
    from the first value, and an ambiguous day/month order may be read the other way).

    Fails at the first missing or unparsable value, naming file, line and column.
    """
    t = df[column]
    if t.dtype == pl.String and format is not None:
        parsed = t.str.to_datetime(format, strict=False).dt.epoch("s").cast(pl.Float64)
    elif t.dtype == pl.String:
        parsed = t.cast(pl.Float64, strict=False)
        if parsed.null_count() == len(t) and t.null_count() < len(t):  # not numbers: date-times?
            # no date-time format fits: keep the failed numbers and report the first bad value
            with contextlib.suppress(pl.exceptions.PolarsError):
                parsed = t.str.to_datetime(strict=False).dt.epoch("s").cast(pl.Float64)
    elif t.dtype.is_temporal():
        parsed = t.dt.epoch("s").cast(pl.Float64)
    else:
        parsed = t.cast(pl.Float64)
    hint = "" if format else " (give its format: data.source.split.format: '%m/%d/%Y %H:%M')"
    fail_at_first(
        parsed.is_null(),
        lambda i: (
            f"timestamp {t[i]!r} is missing or unparsable"
            + (f" as {format!r}" if format else hint if t[i] is not None else "")
        ),
        path,
        line_offset,
        column,
    )
    return parsed


def _as_key(s: pl.Series) -> pl.Series:
    """Categorical values as strings (nulls become the empty string, their own token)."""
    if s.dtype != pl.String:
        s = s.cast(pl.String)
    return s.fill_null("")


def _per_column(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    """``[fn(x) for x in items]``, the columns in parallel threads: polars releases the GIL, and
    one column's work is mostly serial. The first failing item (in order) raises, so an error
    names the same column as a serial loop would."""
    if len(items) < 2:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=min(len(items), pl.thread_pool_size())) as pool:
        return list(pool.map(fn, items))


@dataclass
class Vocabulary:
    """Values of one embedding table, ordered by training count (desc) then value; ids from 2."""

    values: list[str]
    hash_buckets: int = 0

    @property
    def size(self) -> int:
        return (self.hash_buckets or len(self.values)) + 2

    def encode(self, s: pl.Series) -> np.ndarray:
        """(N,) strings -> (N,) int64 ids; unseen values -> OOV."""
        s = _as_key(s)
        if self.hash_buckets:
            return (s.hash(seed=0) % self.hash_buckets + 2).cast(pl.Int64).to_numpy()
        ids = s.replace_strict(
            self.values, list(range(2, len(self.values) + 2)), default=OOV, return_dtype=pl.Int64
        )
        return ids.to_numpy()


def fit_vocabulary(values: pl.Series, min_count: int, hash_buckets: int = 0) -> Vocabulary:
    if hash_buckets:
        return Vocabulary([], hash_buckets)
    counts = (
        _as_key(values)
        .value_counts(name="n")
        .filter(pl.col("n") >= min_count)
        .sort(["n", values.name or ""], descending=[True, False])
    )
    return Vocabulary(counts[:, 0].to_list())


def split_sequence(s: pl.Series, separator: str) -> pl.Series:
    """'a^b^c' -> ['a','b','c']; null or '' -> []."""
    return (
        s.cast(pl.String)
        .fill_null("")
        .str.split(separator)
        .list.eval(pl.element().filter(pl.element() != ""))
    )


def pad_left(lists: pl.Series, max_len: int, vocab: Vocabulary) -> np.ndarray:
    """List column of raw values -> (N, max_len) int64 ids, last max_len items, left-padded."""
    tail = lists.list.tail(max_len)
    flat = vocab.encode(tail.explode(empty_as_null=False).drop_nulls())
    return _pad(tail.list.len().to_numpy().astype(np.int64), flat, max_len)


def _pad(lengths: np.ndarray, flat: np.ndarray, max_len: int) -> np.ndarray:
    """Rows of ``lengths`` items, concatenated in ``flat`` -> (N, max_len), right-aligned,
    zeros in front."""
    out = np.zeros((len(lengths), max_len), dtype=flat.dtype)
    starts = np.cumsum(lengths) - lengths
    pos = np.arange(len(flat)) - np.repeat(starts, lengths)  # index of each item in its row
    rows = np.repeat(np.arange(len(lengths)), lengths)
    out[rows, np.repeat(max_len - lengths, lengths) + pos] = flat  # right-aligned
    return out


class TabularEncoder:
    """Fits vocabularies and scalers on the training frame, then encodes any split.

    Features sharing a table (e.g. ``item`` and the history ``hist_item``) get one vocabulary,
    fit on the union of their training values.
    """

    def __init__(self, specs: Sequence[FeatureSpec]) -> None:
        self.specs = list(specs)
        self.vocabs: dict[str, Vocabulary] = {}
        self.scalers: dict[str, tuple[float, float]] = {}
        self.lengths: dict[str, int] = {}  # a bag's L: its max_len, or the longest train row
        self.edges: dict[str, list[float]] = {}  # quantile buckets' inner edges, from training

    def _column(self, df: pl.DataFrame, spec: FeatureSpec, path: str) -> pl.Series:
        if spec.column not in df.columns:
            from ranklab.data.readers import ffm_hint

            raise DataError(
                f"feature '{spec.name}' reads column '{spec.column}', which is missing "
                f"(columns: {df.columns}){ffm_hint([str(spec.column)])}",
                path=path,
            )
        return df[spec.column]

    def _numeric(
        self, df: pl.DataFrame, spec: FeatureSpec, path: str, line_offset: int = 2
    ) -> pl.Series:
        s = self._column(df, spec, path)
        x = s.cast(pl.Float64, strict=False)
        where = {"path": path, "line_offset": line_offset, "column": spec.column}
        fail_at_first(
            x.is_null() & s.is_not_null() & (s.cast(pl.String) != ""),
            lambda i: f"numeric feature '{spec.name}' cannot parse {s[i]!r}",
            **where,
        )
        # 'inf' and 'nan' parse as floats but would turn the scaler and every loss into NaN
        text = s.dtype == pl.String  # read from text: read_options can make it a missing value
        fail_at_first(
            x.is_not_null() & ~x.is_finite(),
            lambda i: (
                f"numeric feature '{spec.name}' is not finite ({s[i]!r}); "
                + (
                    f"leave the field empty for a missing value, or read {s[i]!r} as one with "
                    f"read_options.null_values: [{s[i]!r}]"
                    if text
                    else "store a missing value as null (the parquet reader takes no null_values)"
                )
            ),
            **where,
        )
        if spec.fill_na is not None:
            x = x.fill_null(float(spec.fill_na))
        if spec.transform == "log":
            x = x.clip(lower_bound=0.0).log1p()
        return x

    def _categorical(
        self, df: pl.DataFrame, spec: FeatureSpec, path: str, line_offset: int = 2
    ) -> pl.Series:
        s = self._column(df, spec, path)
        if spec.transform not in ("criteo_log", "quantile"):
            return s
        x = self._parse_number(s, spec, path, line_offset)
        if spec.transform == "quantile":
            if spec.name not in self.edges:  # fit: the training split's quantiles
                q = np.linspace(0, 1, spec.buckets + 1)[1:-1]
                values = x.drop_nulls().to_numpy()
                self.edges[spec.name] = (
                    sorted(set(np.quantile(values, q).tolist())) if len(values) else []
                )
            ids = np.searchsorted(
                np.asarray(self.edges[spec.name]), x.fill_null(0).to_numpy(), side="right"
            )
            return pl.Series(s.name, ids.astype(str)).set(x.is_null(), None)  # type: ignore[arg-type]
        # x > 2 -> floor(ln(x)^2); else int(x), truncated toward zero as Python's int() does
        bucket = pl.when(x > 2).then((x.log() ** 2).floor()).otherwise(x.cast(pl.Int64))
        return pl.select(bucket.cast(pl.Int64).cast(pl.String)).to_series().alias(s.name)

    @staticmethod
    def _parse_number(s: pl.Series, spec: FeatureSpec, path: str, line_offset: int) -> pl.Series:
        """A categorical feature's numbers (criteo_log, quantile), failing at the first value
        that is not a finite number; empty values are missing (null)."""
        x = s.cast(pl.Float64, strict=False)
        fail_at_first(
            (x.is_null() & s.is_not_null() & (s.cast(pl.String) != "")) | ~x.is_finite(),
            lambda i: (
                f"feature '{spec.name}' (transform {spec.transform}) needs a finite number, "
                f"found {s[i]!r}"
            ),
            path,
            line_offset,
            spec.column,
        )
        return x

    def _scalar(self, df: pl.DataFrame, path: str) -> None:
        scalar = [s.column for s in self.specs if s.kind in ("categorical", "numeric")]
        require_scalar(df, scalar, path, "data.source.features")

    def check(self, df: pl.DataFrame, path: str, line_offset: int = 2) -> None:
        """Fail at the first value a feature cannot parse, before a file is cut or joined to
        others, naming the file's line (``line_offset``: the first data row's line): numbers,
        a categorical's numbers (criteo_log, quantile) and a bag's values."""
        self._scalar(df, path)
        for spec in self.specs:
            if spec.kind == "numeric":
                self._numeric(df, spec, path, line_offset)
            elif spec.transform in ("criteo_log", "quantile"):
                self._parse_number(self._column(df, spec, path), spec, path, line_offset)
            elif spec.kind == "bag" and spec.weights:
                lists = self._as_list(self._column(df, spec, path), spec)
                self._bag_values(df, spec, lists, path, line_offset)

    def fit(self, train: pl.DataFrame, path: str = "train", line_offset: int = 2) -> TabularEncoder:
        self._scalar(train, path)

        def prepare(spec: FeatureSpec) -> pl.Series | tuple[float, float]:
            if spec.kind == "numeric":
                x = self._numeric(train, spec, path, line_offset)
                if spec.transform == "none":
                    return (0.0, 1.0)
                mean, std = x.mean(), x.std()
                return (float(mean or 0.0), float(std) if std is not None and std > 0 else 1.0)
            col = self._categorical(train, spec, path, line_offset)
            if spec.kind in ("sequence", "bag"):
                lists = self._as_list(col, spec)
                if spec.kind == "bag":
                    self.lengths[spec.name] = spec.max_len or max(1, lists.list.len().max() or 0)
                col = lists.explode().drop_nulls()
            return _as_key(col).alias("v")

        by_table: dict[str, list[pl.Series]] = {}
        min_count: dict[str, int] = {}
        hashing: dict[str, int] = {}
        for spec, done in zip(self.specs, _per_column(prepare, self.specs)):
            if spec.kind == "numeric":
                self.scalers[spec.name] = done  # type: ignore[assignment]
                continue
            by_table.setdefault(spec.table, []).append(done)  # type: ignore[arg-type]
            min_count[spec.table] = min(min_count.get(spec.table, spec.min_count), spec.min_count)
            hashing[spec.table] = max(hashing.get(spec.table, 0), spec.hash_buckets)
        tables = list(by_table)
        vocabs = _per_column(
            lambda t: fit_vocabulary(pl.concat(by_table[t]).alias("v"), min_count[t], hashing[t]),
            tables,
        )
        self.vocabs.update(zip(tables, vocabs))
        return self

    @staticmethod
    def _as_list(col: pl.Series, spec: FeatureSpec) -> pl.Series:
        """A bag or sequence column as lists of strings: a list column (parquet) as it is, a
        missing list as an empty one and missing items dropped, as :func:`split_sequence`
        reads an empty field (a null item would be counted, then dropped, shifting every later
        row's ids)."""
        if isinstance(col.dtype, pl.List):
            return col.cast(pl.List(pl.String)).fill_null([]).list.drop_nulls()
        return split_sequence(col, spec.separator or ",")

    def transform(
        self, df: pl.DataFrame, path: str = "", line_offset: int = 2
    ) -> dict[str, np.ndarray]:
        """Encode every feature; ``line_offset`` is the file line of the first row (errors)."""
        self._scalar(df, path)

        def encode(spec: FeatureSpec) -> dict[str, np.ndarray]:
            if spec.kind == "numeric":
                mean, std = self.scalers[spec.name]
                x = (self._numeric(df, spec, path, line_offset) - mean) / std
                return {spec.name: x.fill_null(0.0).fill_nan(0.0).cast(pl.Float32).to_numpy()}
            if spec.kind == "categorical":
                col = self._categorical(df, spec, path, line_offset)
                return {spec.name: self.vocabs[spec.table].encode(col)}
            lists = self._as_list(self._column(df, spec, path), spec)
            if spec.kind == "sequence":
                return {spec.name: pad_left(lists, spec.max_len, self.vocabs[spec.table])}
            length = self.lengths[spec.name]
            out = {spec.name: pad_left(lists, length, self.vocabs[spec.table])}
            if spec.weights:
                out[weight_key(spec.name)] = self._bag_weights(
                    df, spec, lists, length, path, line_offset
                )
            return out

        out: dict[str, np.ndarray] = {}
        for arrays in _per_column(encode, self.specs):
            out.update(arrays)
        return out

    def _bag_values(
        self, df: pl.DataFrame, spec: FeatureSpec, lists: pl.Series, path: str, line_offset: int
    ) -> pl.Series:
        """A bag's per-row values as a List(Float64) column, failing at the first row whose
        values do not parse, are not finite, or do not match its items in number."""
        raw = self._column(df, FeatureSpec(str(spec.weights), column=spec.weights), path)
        values = self._as_list(raw, spec).cast(pl.List(pl.Float64), strict=False)
        where = {"path": path, "line_offset": line_offset, "column": spec.weights}
        fail_at_first(
            (values.list.len() != lists.list.len()).fill_null(True),
            lambda i: (
                f"bag '{spec.name}' has {lists[i].len()} items but {raw[i]!r} gives "
                f"{values[i].len() if values[i] is not None else 0} values"
            ),
            **where,
        )
        bad = values.list.eval(pl.element().is_null() | ~pl.element().is_finite()).list.any()
        fail_at_first(
            bad,
            lambda i: f"bag '{spec.name}': a value in {raw[i]!r} is not a finite number",
            **where,
        )
        return values

    def _bag_weights(
        self,
        df: pl.DataFrame,
        spec: FeatureSpec,
        lists: pl.Series,
        length: int,
        path: str,
        line_offset: int,
    ) -> np.ndarray:
        """A bag's per-item values (N, length) float32, aligned with its ids (0 in padding)."""
        values = self._bag_values(df, spec, lists, path, line_offset)
        tail = values.list.tail(length)
        flat = tail.explode(empty_as_null=False).drop_nulls().cast(pl.Float32).to_numpy()
        return _pad(tail.list.len().to_numpy().astype(np.int64), flat, length)

    def vocabulary_hashes(self) -> dict[str, str]:
        """table -> a hash of its vocabulary (the values in id order, or the hash buckets):
        two encodings give every value of a table the same id exactly where its hashes match
        (a warm start or an evaluation on other data checks them)."""
        from ranklab.utils import hash_object

        return {
            t: hash_object({"values": v.values, "hash_buckets": v.hash_buckets})[:16]
            for t, v in sorted(self.vocabs.items())
        }

    def schema(
        self,
        labels: tuple[LabelSpec, ...],
        group: str | None,
        meta: dict | None = None,
        evaluation: tuple[Feature, ...] = (),
    ) -> Schema:
        feats = []
        for spec in self.specs:
            if spec.kind == "numeric":
                feats.append(Feature(spec.name, "numeric", role=spec.role))
            else:
                feats.append(
                    Feature(
                        spec.name,
                        spec.kind,
                        vocab_size=self.vocabs[spec.table].size,
                        table=spec.table,
                        max_len=self.lengths.get(spec.name, spec.max_len),
                        role=spec.role,
                        sequence=spec.sequence,
                        pooling=spec.pooling,
                        weighted=spec.kind == "bag" and bool(spec.weights),
                    )
                )
        return Schema(
            tuple(feats), labels=labels, group=group, evaluation=evaluation, meta=meta or {}
        )


__all__ = [
    "OOV",
    "PAD",
    "FeatureSpec",
    "TabularEncoder",
    "Vocabulary",
    "fit_vocabulary",
    "parse_feature_specs",
]
