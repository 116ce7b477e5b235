"""Streaming preprocessing: a file source whose text would not fit ``data.memory_budget`` is
read in chunks cut at line ends, so peak memory follows the chunk size, not the data.

Each chunk is parsed by the same reader as the in-memory path (the chunk is written to a
scratch file, with the header line for formats that have one), so every format, check and
error message is the same; an error's line is moved back to the source file's own line.

The passes over the files:

1. one file cut into splits: every chunk checked whole (labels, feature values, the split's
   column), its rows counted and, for a time cut, its timestamps kept; the cut is then placed
   exactly as in memory (the same seeded permutation, the same timestamps);
2. the training rows: vocabulary counts merged across chunks, scalers from counts, means and
   squared deviations merged exactly (Chan et al.), quantile values, a bag's longest row;
3. every split, chunk by chunk: encoded with the fitted encoder and appended to the cache's
   ``.npy`` files (written sequentially; the header is written last, and the cache is renamed
   into place only when complete, as the in-memory build's).

The encoding equals the in-memory build's: the same ids, and scalers equal up to float
rounding of the merged moments (``tests/data/test_streaming.py`` compares them). Group ids
(for grouped AUC) are distinct ids in another order, which no metric depends on.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from ranklab.data import badrows
from ranklab.data.dataset import GROUP_KEY
from ranklab.data.labels import encode_labels, label_meta
from ranklab.data.preprocess import (
    FeatureSpec,
    TabularEncoder,
    Vocabulary,
    _as_key,
    require_scalar,
)
from ranklab.data.readers import (
    first_data_line,
    open_bytes,
    parquet_schema,
    parquet_shards,
    read_shard,
    read_table,
    require_columns,
)
from ranklab.errors import DataError
from ranklab.metrics import bayes_metrics

if TYPE_CHECKING:
    from ranklab.data.sources import CSVSplits

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
# Peak memory per byte of raw text while a chunk is parsed, checked and encoded (polars'
# strings, the parsed numbers, the encoded arrays, per-column threads). Measured on the
# Criteo-format file: 1M rows (243 MB of text) peak at 2.2 GB in memory, about 9x.
EXPANSION = 10
HEADER_BYTES = 128  # room reserved for an .npy header, written once the row count is known


def _since(t0: float) -> float:
    return time.perf_counter() - t0


def _peak() -> str:
    """The process' peak resident memory so far (for the log)."""
    import resource

    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB"


def chunk_bytes(budget: int) -> int:
    """Text bytes per chunk for a memory budget: a quarter of the budget for the chunk's
    working set, the rest for vocabularies, statistics and the split assignment."""
    return max(1 << 16, budget // (4 * EXPANSION))


Clean = Callable[[Callable[[], pl.DataFrame], str, int], tuple[pl.DataFrame, dict | None]]


def _no_clean(read: Callable[[], pl.DataFrame], path: str, first: int) -> tuple:
    return read(), None


def iter_chunks(
    path: Path,
    format: str,
    options: dict[str, Any],
    size: int,
    scratch: Path,
    clean: Clean = _no_clean,
) -> Iterator[tuple[pl.DataFrame, int, dict | None]]:
    """(frame, file line of its first row, malformed rows report) for each chunk of ``path``,
    about ``size`` bytes of text each (parquet: as many rows as ``size`` bytes hold on disk),
    in file order. ``clean(read, path, first_line)`` reads a chunk (``CSVSplits.read_clean``:
    without its malformed rows under ``on_bad_rows: skip``)."""
    if format == "parquet":
        for df, first in _parquet_chunks(path, options, size):
            df, report = clean(lambda df=df: df, str(path), first)
            yield df, first, report
        return
    header_lines = first_data_line(path, format, **options) - 1
    suffix = "".join(s for s in path.suffixes if s != ".gz")[-16:] or ".txt"
    scratch_file = scratch / f"chunk{suffix}"
    # a CSV record may hold quoted newlines: a chunk ends only where no quote is open (where
    # the reader honours quotes: a multi-byte separator splits lines, quotes and all)
    separator = str(options.get("separator", ","))
    quote = options.get("quote_char", '"') if format == "csv" else None
    quote_byte = quote.encode() if quote and len(separator.encode()) == 1 else None
    with open_bytes(path) as f:
        lines_before, carry = 0, b""
        with _unreadable_as_data_error(path):
            header = b"".join(f.readline() for _ in range(header_lines))
        while True:
            with _unreadable_as_data_error(path, header_lines + lines_before + 1):
                block = f.read(size)
            data = carry + block
            # a quote open over several chunks is an unclosed one: cut at a line end, and the
            # reader names its line (rather than reading the rest of the file in one chunk)
            honour = quote_byte if len(carry) < 4 * size else None
            cut = len(data) if not block else _record_end(data, honour)
            if block and cut == 0:  # a record longer than a chunk: read on
                carry = data
                continue
            body, carry = data[:cut], data[cut:]
            if body.strip():
                first = header_lines + 1 + lines_before
                delta = first - header_lines - 1  # chunk file line + delta = the file's line
                scratch_file.write_bytes(header + body)

                def read(delta: int = delta) -> pl.DataFrame:
                    df = read_table(scratch_file, format, **options)
                    if (collector := badrows.active()) is not None:
                        collector.relocate(str(scratch_file), str(path), delta)
                    return df

                try:
                    df, report = clean(read, str(path), first)
                except DataError as e:  # name the source file and its own line
                    line = e.line
                    if e.path == str(scratch_file) and line is not None and line > header_lines:
                        line += delta
                    path_named = str(path) if e.path == str(scratch_file) else e.path
                    raise DataError(e.message, path_named, line, e.column) from None
                finally:
                    scratch_file.unlink(missing_ok=True)
                yield df, first, report
            lines_before += body.count(b"\n")
            if not block:
                return


@contextlib.contextmanager
def _unreadable_as_data_error(path: Path, line: int | None = None) -> Iterator[None]:
    """A truncated or corrupt gzip file fails naming the file and, while chunks are read, the
    line after the last one read whole (where the damage is, to the nearest chunk)."""
    try:
        yield
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read: {e}", path=str(path), line=line) from None


def _record_end(data: bytes, quote: bytes | None) -> int:
    """The end of the last whole record in ``data`` (0: none): after its last newline, or with
    a ``quote`` character, after the last newline outside quotes (an even count of quote
    characters before it; a doubled quote inside a field counts twice)."""
    cut = data.rfind(b"\n") + 1
    if quote is None or quote not in data:
        return cut
    inside = data.count(quote, 0, cut) % 2
    while cut and inside:  # step back a line at a time, counting only the quotes passed
        before = data.rfind(b"\n", 0, cut - 1) + 1
        inside ^= data.count(quote, before, cut) % 2
        cut = before
    return cut


def _parquet_chunks(
    path: Path, options: dict[str, Any], size: int
) -> Iterator[tuple[pl.DataFrame, int]]:
    shards = parquet_shards(path)
    # the in-memory reader's schema: the same values, the same ids
    schema, has = parquet_schema(shards)
    wanted = list(options.get("columns") or schema)
    before = 0
    for shard, own in zip(shards, has, strict=True):
        try:
            rows = pl.scan_parquet(shard).select(pl.len()).collect().item()
            step = max(1, size * rows // max(1, shard.stat().st_size)) if rows else 1
            for lo in range(0, rows, step):
                yield read_shard(shard, own, schema, wanted, (lo, step)), before + lo + 1
        except pl.exceptions.PolarsError as e:
            msg = f"cannot read parquet: {str(e).splitlines()[0]}"
            raise DataError(msg, path=str(shard)) from e
        before += rows


@dataclass
class _Moments:
    """Count, mean and sum of squared deviations of a column, merged across chunks."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, x: pl.Series) -> None:
        x = x.drop_nulls()
        n = len(x)
        if n == 0:
            return
        mean = float(x.mean())  # type: ignore[arg-type]
        m2 = float(((x - mean) ** 2).sum())
        total = self.n + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.n * n / total
        self.n = total

    def scaler(self) -> tuple[float, float]:
        """(mean, sample std) as ``TabularEncoder.fit`` makes them; std 1 when undefined."""
        std = math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else 0.0
        return (self.mean if self.n else 0.0, std if std > 0 else 1.0)


@dataclass
class StreamingFit:
    """``TabularEncoder.fit`` over chunks of the training rows."""

    encoder: TabularEncoder
    counts: dict[str, pl.DataFrame] = field(default_factory=dict)  # table -> (v, n)
    pending: dict[str, list[pl.DataFrame]] = field(default_factory=dict)  # not merged yet
    moments: dict[str, _Moments] = field(default_factory=dict)
    quantile: dict[str, list[np.ndarray]] = field(default_factory=dict)
    nulls: dict[str, int] = field(default_factory=dict)

    def _count(self, table: str, keys: pl.Series) -> None:
        c = keys.alias("v").value_counts(name="n").with_columns(pl.col("n").cast(pl.Int64))
        pending = self.pending.setdefault(table, [])
        pending.append(c)
        # merged every 2^18 pending rows: a chunk's counts of a field are merged into the
        # table's in one group-by, not one per chunk, and pending counts stay small
        if sum(p.height for p in pending) > 1 << 18:
            self._merge(table)

    def _merge(self, table: str) -> None:
        parts = ([self.counts[table]] if table in self.counts else []) + self.pending.pop(table, [])
        if parts:
            self.counts[table] = pl.concat(parts).group_by("v").agg(pl.col("n").sum())

    def update(self, df: pl.DataFrame, path: str, first_line: int) -> None:
        enc = self.encoder
        for spec in enc.specs:
            if spec.kind == "numeric":
                x = enc._numeric(df, spec, path, first_line)
                if spec.transform != "none":
                    self.moments.setdefault(spec.name, _Moments()).add(x)
            elif spec.transform == "quantile":  # edges need every value: kept (8 bytes a row)
                x = enc._parse_number(enc._column(df, spec, path), spec, path, first_line)
                self.quantile.setdefault(spec.name, []).append(x.drop_nulls().to_numpy())
                self.nulls[spec.name] = self.nulls.get(spec.name, 0) + x.null_count()
            else:
                col = enc._categorical(df, spec, path, first_line)
                if spec.kind in ("sequence", "bag"):
                    lists = enc._as_list(col, spec)
                    if spec.kind == "bag":
                        longest = spec.max_len or max(1, lists.list.len().max() or 0)  # type: ignore[operator]
                        enc.lengths[spec.name] = max(enc.lengths.get(spec.name, 1), longest)
                    col = lists.explode().drop_nulls()
                if not self._hashed(spec.table):
                    self._count(spec.table, _as_key(col))

    def _hashed(self, table: str) -> bool:
        return any(s.hash_buckets for s in self.encoder.specs if s.table == table)

    def finish(self) -> TabularEncoder:
        enc = self.encoder
        for spec in enc.specs:
            if spec.kind == "numeric":
                moments = self.moments.get(spec.name, _Moments())
                enc.scalers[spec.name] = moments.scaler() if spec.transform != "none" else (0, 1)
            elif spec.transform == "quantile":
                values = np.concatenate(self.quantile.get(spec.name, [np.zeros(0)]))
                q = np.linspace(0, 1, spec.buckets + 1)[1:-1]
                edges = sorted(set(np.quantile(values, q).tolist())) if len(values) else []
                enc.edges[spec.name] = edges
                ids = np.searchsorted(np.asarray(edges), values, side="right").astype(str)
                keys = pl.concat(
                    [pl.Series("v", ids), pl.Series("v", [""] * self.nulls.get(spec.name, 0))]
                )
                self._count(spec.table, keys)
        tables: dict[str, list[FeatureSpec]] = {}
        for spec in enc.specs:
            if spec.kind != "numeric":
                tables.setdefault(spec.table, []).append(spec)
        for table, specs in tables.items():
            self._merge(table)
            buckets = max(s.hash_buckets for s in specs)
            if buckets:
                enc.vocabs[table] = Vocabulary([], buckets)
                continue
            min_count = min(s.min_count for s in specs)
            counts = self.counts.get(table, pl.DataFrame({"v": [], "n": []}))
            kept = counts.filter(pl.col("n") >= min_count)
            enc.vocabs[table] = Vocabulary(
                kept.sort(["n", "v"], descending=[True, False])["v"].to_list()
            )
        return enc


class NpyAppender:
    """An ``.npy`` file written row block by row block: the data go straight to disk, and the
    header (with the final row count) is written on close."""

    def __init__(self, path: Path) -> None:
        self.path, self.rows = path, 0
        self.dtype: np.dtype | None = None
        self.tail: tuple[int, ...] = ()
        self.f = open(path, "wb")  # noqa: SIM115 (closed in close)
        self.f.write(b"\0" * HEADER_BYTES)

    def append(self, a: np.ndarray) -> None:
        if self.dtype is None:
            self.dtype, self.tail = a.dtype, a.shape[1:]
        self.f.write(np.ascontiguousarray(a, dtype=self.dtype).tobytes())
        self.rows += len(a)

    def close(self) -> None:
        header = io.BytesIO()
        shape = (self.rows, *self.tail)
        descr = np.lib.format.dtype_to_descr(self.dtype or np.dtype(np.float32))
        np.lib.format.write_array_header_1_0(
            header, {"descr": descr, "fortran_order": False, "shape": shape}
        )
        if len(header.getvalue()) != HEADER_BYTES:  # pragma: no cover (shapes this long)
            raise RuntimeError(f"npy header of {len(header.getvalue())} bytes")
        self.f.seek(0)
        self.f.write(header.getvalue())
        self.f.close()


class _Writer:
    """One split's arrays, appended chunk by chunk."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.files: dict[str, NpyAppender] = {}

    def append(self, arrays: dict[str, np.ndarray]) -> None:
        for key, a in arrays.items():
            if key not in self.files:
                self.files[key] = NpyAppender(self.directory / f"{key}.npy")
            self.files[key].append(a)

    @property
    def rows(self) -> int:
        return next(iter(self.files.values())).rows if self.files else 0

    def close(self) -> None:
        for f in self.files.values():
            f.close()


class _Groups:
    """Distinct ids for the group column's values, assigned in order of appearance."""

    def __init__(self) -> None:
        self.known = pl.DataFrame(schema={"g": pl.String, "id": pl.Int64})

    def encode(self, s: pl.Series) -> np.ndarray:
        # a missing value is one group of its own, as in memory (joins match nulls only so)
        values = s.cast(pl.String).alias("g")
        new = (
            values.unique(maintain_order=True)
            .to_frame()
            .join(self.known, on="g", how="anti", nulls_equal=True)
        )
        if new.height:
            start = self.known.height
            ids = pl.Series("id", np.arange(start, start + new.height, dtype=np.int64))
            self.known = pl.concat([self.known, new.with_columns(ids)])
        joined = values.to_frame().join(
            self.known, on="g", how="left", maintain_order="left", nulls_equal=True
        )
        return joined["id"].to_numpy()


def build_streaming(source: CSVSplits, out: Path, budget: int) -> dict:
    """Encode ``source`` into the cache directory ``out`` (schema.json, meta.json and one
    ``.npy`` per split and array) in chunks sized for ``budget`` bytes; returns the meta."""
    paths = source.paths()
    where = {s: source._where(paths, s) for s in {*SPLITS, *paths}}
    size = chunk_bytes(budget)
    scratch = out / ".chunks"
    scratch.mkdir()
    fmt, opts = source.format, source.read_options

    reports: dict[tuple[str, int], dict] = {}  # (file, chunk's first line) -> skipped rows

    def chunks(split: str) -> Iterator[tuple[pl.DataFrame, int, str]]:
        cut = split == source.cut_from  # the split's own column is checked where it cuts

        def quiet_clean(read: Any, path: str, first_line: int) -> tuple:
            # every pass reads every chunk: the skipped rows are reported once, per file, below
            return source.read_clean(read, path, first_line, warn=False, cut=cut)

        for p in paths[split]:
            for df, first, report in iter_chunks(p, fmt, opts, size, scratch, quiet_clean):
                if report:  # the same in every pass: kept once
                    reports[(str(p), first)] = report
                yield df, first, str(p)

    which: np.ndarray | None = None  # one file: each row's split
    truth: np.ndarray | None = None
    cut = source.cut_from  # "all", "train" (validation cut from it) or None
    if cut is not None:
        t0 = time.perf_counter()
        which = _place_cut(source, chunks(cut), where[cut])
        log.info(
            "data: streamed pass 1 (the cut): %d rows in %.0fs, peak RSS %s",
            len(which),
            _since(t0),
            _peak(),
        )
        if source.truth is not None:
            truth = source._read_truth(len(which), mapped=True)

    def train_chunks() -> Iterator[tuple[pl.DataFrame, int, str]]:
        """The training rows chunk by chunk (a cut source: each chunk's training rows)."""
        if which is None:
            yield from chunks("train")
            return
        row = 0
        for df, first, path in chunks(str(cut)):
            mask = which[row : row + df.height] == 0
            row += df.height
            yield df.filter(pl.Series(mask)), first, path

    feature_cols = [s.column for s in source.specs] + [s.weights for s in source.specs if s.weights]
    feature_cols += [source.group] if source.group else []

    t0 = time.perf_counter()
    fit = StreamingFit(TabularEncoder(source.specs))
    group = [source.group] if source.group else []
    for df, first, path in train_chunks():
        require_columns(df, feature_cols, path, "data.source.features")
        require_scalar(df, group, path, "data.source.group")
        fit.update(df, path, first)
    encoder = fit.finish()
    del fit

    groups = _Groups() if source.group else None

    def encode(df: pl.DataFrame, first: int, path: str) -> dict[str, np.ndarray]:
        require_columns(df, feature_cols, path, "data.source.features")
        require_scalar(df, group, path, "data.source.group")
        arrays = encoder.transform(df, path, first)
        arrays.update(encode_labels(df, source.label_columns, path, first))
        if groups is not None:
            arrays[GROUP_KEY] = groups.encode(df[str(source.group)])
        return arrays

    log.info("data: streamed pass 2 (vocabularies, scalers): %.0fs, peak %s", _since(t0), _peak())
    t0 = time.perf_counter()
    writers = {s: _Writer(out / s) for s in SPLITS}
    if which is None:
        for split in SPLITS:
            for df, first, path in chunks(split):
                writers[split].append(encode(df, first, path))
    else:  # each chunk encoded whole (errors name its lines), its rows sent to their splits
        row = 0
        for df, first, path in chunks(str(cut)):
            arrays = encode(df, first, path)
            part = which[row : row + df.height]
            for k, split in enumerate(SPLITS):
                mask = part == k
                writers[split].append({key: a[mask] for key, a in arrays.items()})
            row += df.height
        if cut == "train":  # the test files as they are
            for df, first, path in chunks("test"):
                writers["test"].append(encode(df, first, path))
    rows: dict[str, int] = {}
    for split, writer in writers.items():
        writer.close()
        rows[split] = writer.rows
        if rows[split] == 0:
            what = "file has no data rows" if split in paths else "cut has no rows"
            raise DataError(f"the {split} {what}", path=where[split])
    scratch.rmdir()
    msg = "data: streamed pass 3 (encoding): %s rows in %.0fs, peak %s"
    log.info(msg, rows, _since(t0), _peak())

    first_label = source.label_columns[0].spec.name
    labels = {
        s: {
            c.spec.name: np.load(out / s / f"{c.spec.name}.npy", mmap_mode="r")
            for c in source.label_columns
        }
        for s in SPLITS
    }
    meta: dict[str, Any] = {
        "source": source.name,
        "files": {
            s: [str(p) for p in ps] if len(ps) > 1 else str(ps[0]) for s, ps in paths.items()
        },
        "rows": rows,
        "base_rate": {s: float(np.mean(labels[s][first_label])) for s in SPLITS},
        "labels": {s: label_meta(labels[s], source.label_columns) for s in SPLITS},
        "streamed": {"memory_budget": budget, "chunk_bytes": size},
    }
    if reports:
        by_file: dict[str, list[dict]] = {}
        for (file, _), report in sorted(reports.items()):
            by_file.setdefault(file, []).append(report)
        meta["bad_rows"] = {f: badrows.merge_reports(r) for f, r in by_file.items()}
        for file, report in meta["bad_rows"].items():
            badrows.warn_skipped(file, report)
    if truth is not None and which is not None:  # one split at a time: memory
        meta["bayes"] = {}
        for k, s in enumerate(SPLITS):
            p = np.asarray(truth[which == k], dtype=np.float64)
            y = np.array(labels[s][first_label])
            meta["bayes"][s] = bayes_metrics(p, y)
            del p, y
    meta["vocabularies"] = encoder.vocabulary_hashes()
    schema = encoder.schema(tuple(c.spec for c in source.label_columns), source.group, meta)
    schema.check_conditions()
    schema.save(out / "schema.json")
    return meta


def _place_cut(
    source: CSVSplits, chunks: Iterator[tuple[pl.DataFrame, int, str]], where: str
) -> np.ndarray:
    """Pass 1 over a file to be cut: each chunk checked whole (so errors name the file's own
    lines before rows are moved apart), rows counted, timestamps kept for a time cut; returns
    each row's split (0 train, 1 val, 2 test)."""
    method = source.split.get("method", "random")
    checker = TabularEncoder(source.specs)
    heights: list[int] = []
    parts: list[np.ndarray] = []
    for df, first, path in chunks:
        encode_labels(df, source.label_columns, path, first)
        checker.check(df, path, first)
        heights.append(df.height)
        if method == "time":
            parts.append(source.split_times(df, path, first))
        elif method == "column":
            parts.append(_column_split(df, source, path, first))
    rows = sum(heights)
    if rows == 0:
        raise DataError("the file has no data rows", path=where)
    if method == "column":
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int8)
    if method == "time":
        return source.cut_by_time(np.concatenate(parts) if parts else np.zeros(0), where)
    return source.cut_at_random(rows, where)


def _column_split(df: pl.DataFrame, source: CSVSplits, path: str, first: int) -> np.ndarray:
    """(rows,) int8 split of each row from the split column (checked by ``_cut_by_column``)."""
    source._cut_by_column(df, path, first)  # fails naming the first unknown value's line
    values = {s: s for s in SPLITS} | {
        k: str(v) for k, v in (source.split.get("values") or {}).items()
    }
    col = df[str(source.split["column"])].cast(pl.String).str.strip_chars()
    out = np.zeros(df.height, dtype=np.int8)
    for k, s in enumerate(SPLITS):
        out[(col == values[s]).to_numpy()] = k
    return out
