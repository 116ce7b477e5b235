"""Tabular sources read from files: BARS-style train/valid/test files, or one file cut by a
declared split (random, time, a column)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ranklab.data import badrows
from ranklab.data.dataset import CACHE_FORMAT, GROUP_KEY, DataSource, EncodedData
from ranklab.data.labels import encode_labels, label_meta, parse_labels
from ranklab.data.preprocess import (
    TabularEncoder,
    fail_at_first,
    parse_feature_specs,
    parse_time,
    require_scalar,
)
from ranklab.data.readers import (
    check_read_options,
    first_data_line,
    is_gzip,
    read_table,
    require_columns,
)
from ranklab.errors import ConfigError, DataError
from ranklab.metrics import bayes_metrics
from ranklab.utils import hash_files, hash_object

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
TRUTH = "__ranklab_truth__"  # the planted probability, carried through the cut


def _plain(obj: Any) -> Any:
    """OmegaConf containers -> plain Python, so options hash and serialise the same way."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(obj, DictConfig | ListConfig):
            return OmegaConf.to_container(obj, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return obj


class CSVSplits(DataSource):
    """Pre-split files (train/val/test) in one directory, as BARS publishes them, or one file
    split at random.

    Args:
        dir: directory holding the files (usually ``${paths.data_dir}/<dataset>``).
        files: split -> file; splits are ``train``, ``val`` and ``test``; or ``{all: file}``
            with ``split``. A file may be a list of files or a glob (``day_*.tsv``, sorted by
            name): a split of several files, e.g. day-partitioned logs, stacked in order, each
            file checked whole first so that errors name its own lines.
        split: for one file, ``{method: random, val: 0.1, test: 0.1, seed: 0}``: a seeded
            permutation cut into train / val / test; ``{method: time, column: ts, val: 0.1,
            test: 0.1}``: the latest rows are test, the ones before validation (cut at
            timestamps); ``{method: column, column: split}``: a column names each row's split
            (``values: {train: tr, val: va, test: te}`` if it spells them otherwise). With
            ``files: {train: ..., test: ...}`` (a test file of its own, as Kaggle's releases),
            the split cuts validation from the training files: ``{method: random, val: 0.1}``
            or ``{method: time, column: ts, val: 0.1}`` (the latest training rows).
        label: the label column (one binary label, values 0 or 1); or
        labels: several labels (:mod:`ranklab.data.labels`: name, column, kind, weight,
            condition, joint, positive values).
        features: ``{categorical: [...], numeric: [...], sequence: [...], min_count: 1}``;
            see :func:`ranklab.data.preprocess.parse_feature_specs`.
        group: column whose values define groups for grouped AUC (e.g. the user), or None.
        format: reader name (``csv``); ``read_options`` are passed to it.
        on_bad_rows: ``fail`` (default): the first malformed row (wrong number of fields, a
            label outside its kind, a value that does not parse or is not finite, an unknown
            split value or timestamp) stops the run naming its file, line and column; ``skip``:
            every such row is dropped and counted, the count and the first few, with file and
            line, in the cache's meta (``bad_rows``), the log and ``metrics.json``.
        truth: for one file, a ``.npy`` in ``dir`` holding each data row's true probability of
            the (first) label, as synthetic writers plant it (``ranklab-criteo-synth``): each
            split then reports its Bayes-optimal AUC and log loss (``meta["bayes"]``), which
            runs print beside their own.
    """

    def __init__(
        self,
        dir: str,
        files: Mapping[str, str | Sequence[str]],
        features: Mapping[str, Any],
        label: str | None = None,
        labels: Sequence[Any] | None = None,
        group: str | None = None,
        format: str = "csv",
        read_options: Mapping[str, Any] | None = None,
        split: Mapping[str, Any] | None = None,
        truth: str | None = None,
        on_bad_rows: str = "fail",
        name: str = "csv",
    ) -> None:
        if on_bad_rows not in ("fail", "skip"):
            msg = f"must be fail or skip, not {on_bad_rows!r}"
            raise ConfigError("data.source.on_bad_rows", msg)
        self.on_bad_rows = on_bad_rows
        self.bad_rows: dict[str, dict] = {}  # file -> skipped rows report (of the last build)
        self.dir = Path(dir)
        self.files = dict(_plain(files))
        self.split = dict(_plain(split) or {})
        if self.split:
            self._check_split()
        else:
            missing = [s for s in SPLITS if s not in self.files]
            if missing:
                raise ConfigError(
                    "data.source.files",
                    f"needs a file for each of {SPLITS} (or {{all: file}} and a split), "
                    f"missing {missing}",
                )
            unknown = [s for s in self.files if s not in SPLITS]
            if unknown:
                raise ConfigError(
                    "data.source.files", f"unknown split {unknown} (splits: {SPLITS})"
                )
        self.labels_cfg = _plain(labels) if labels is not None else None
        self.label_columns = parse_labels(label, self.labels_cfg)
        self.label, self.group, self.format, self.name = label, group, format, name
        self.features_cfg = _plain(features)
        labels = {c.spec.name: (c.column, c.key) for c in self.label_columns}
        self.specs = parse_feature_specs(self.features_cfg, labels=labels)
        self.read_options = dict(_plain(read_options) or {})
        check_read_options(self.format, self.read_options)
        self.truth = truth
        if truth is not None and self.cut_from != "all":
            raise ConfigError(
                "data.source.truth", "needs the one-file layout ({all: <file>} and a split)"
            )

    def _split_share(self, key: str) -> float:
        """The share of rows ``split.<key>`` asks for: a number (a fraction of the rows)."""
        value = self.split.get(key, 0.1)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(
                f"data.source.split.{key}", f"must be a number in (0, 1), got {value!r}"
            )
        return float(value)

    def _shares(self) -> tuple[float, float]:
        """The (val, test) shares of the rows the split cuts; no test share when validation is
        cut from training beside a test file of its own."""
        test = self._split_share("test") if self.cut_from == "all" else 0.0
        return self._split_share("val"), test

    @property
    def cut_from(self) -> str | None:
        """What ``split`` cuts: ``all`` (one source into train/val/test), ``train`` (validation
        cut from the training files, beside test files of their own), or None (three)."""
        if not self.split:
            return None
        return "all" if "all" in self.files else "train"

    def _check_split(self) -> None:
        if set(self.files) not in ({"all"}, {"train", "test"}):
            raise ConfigError(
                "data.source.files",
                "with a split, give one source to cut, {all: <file>}, or the training and test "
                "files, {train: <file>, test: <file>}, to cut validation from training",
            )
        method = self.split.get("method", "random")
        known = {
            "random": {"method", "val", "test", "seed"},
            "time": {"method", "column", "val", "test", "format"},
            "column": {"method", "column", "values"},
        }
        if method not in known:
            raise ConfigError("data.source.split.method", f"must be one of {list(known)}")
        unknown = sorted(set(self.split) - known[method])
        if unknown:
            raise ConfigError(
                f"data.source.split.{unknown[0]}",
                f"not an option of method {method} (options: {sorted(known[method])})",
            )
        if self.cut_from == "train" and method == "column":
            raise ConfigError(
                "data.source.split.method",
                "cuts validation from the training files at random or by time; a column naming "
                "each row's split needs the one-source layout, {all: <file>}",
            )
        if self.cut_from == "train" and "test" in self.split:
            raise ConfigError(
                "data.source.split.test",
                "the test split is its own file (data.source.files.test): give val only",
            )
        if method in ("time", "column") and not self.split.get("column"):
            raise ConfigError("data.source.split.column", f"method {method} needs a column")
        if method == "column":
            values = dict(self.split.get("values") or {})
            if set(values) - set(SPLITS):
                raise ConfigError(
                    "data.source.split.values", f"maps the splits {SPLITS} to the column's values"
                )
            return
        val, test = self._shares()
        seed = self.split.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError("data.source.split.seed", f"must be a whole number, got {seed!r}")
        if not (val > 0 and (test > 0 or self.cut_from == "train") and val + test < 1):
            raise ConfigError(
                "data.source.split", f"val {val} and test {test} leave no training rows"
            )

    def _frames(self, paths: dict[str, list[Path]]) -> dict[str, pl.DataFrame]:
        """Each split's rows: its file(s), or a cut of the one source (rows keep the files'
        order)."""
        if self.cut_from is None:
            return {s: self._read(paths[s]) for s in SPLITS}
        frames = self._cut_frames(paths)
        if self.cut_from == "train":  # the test files as they are
            frames["test"] = self._read(paths["test"])
        return frames

    def _cut_frames(self, paths: dict[str, list[Path]]) -> dict[str, pl.DataFrame]:
        cut = str(self.cut_from)
        df = self._read(paths[cut], cut=True)
        path = self._where(paths, cut)
        first_line = first_data_line(paths[cut][0], self.format, **self.read_options)
        if self.truth is not None:
            df = df.with_columns(pl.Series(TRUTH, self._read_truth(df.height)))
        method = self.split.get("method", "random")
        if method == "column":
            return self._cut_by_column(df, str(path), first_line)
        if method == "time":
            which = self.cut_by_time(self.split_times(df, str(path), first_line), str(path))
        else:
            which = self.cut_at_random(df.height, str(path))
        # a mask keeps the file's order and copies 4x faster than a sorted gather
        return {s: df.filter(pl.Series(which == k)) for k, s in enumerate(SPLITS)}

    def _cut_sizes(self, rows: int, path: str) -> tuple[int, int]:
        if rows == 0:
            raise DataError("the file has no data rows", path=path)
        val, test = self._shares()
        n_val, n_test = round(rows * val), round(rows * test)
        if n_val < 1 or (n_test < 1 and self.cut_from == "all") or n_val + n_test >= rows:
            cut_test = f" and test {self.split.get('test', 0.1)}" if self.cut_from == "all" else ""
            raise DataError(
                f"{rows} rows are too few to cut val {self.split.get('val', 0.1)}{cut_test} from "
                "(data.source.split)",
                path=path,
            )
        return n_val, n_test

    def cut_at_random(self, rows: int, path: str) -> np.ndarray:
        """(rows,) int8 split of each row (0 train, 1 val, 2 test): a seeded permutation cut."""
        n_val, n_test = self._cut_sizes(rows, path)
        rng = np.random.default_rng(int(self.split.get("seed", 0)))
        order = rng.permutation(rows)
        which = np.zeros(rows, dtype=np.int8)
        which[order[n_test : n_test + n_val]], which[order[:n_test]] = 1, 2
        return which

    def cut_by_time(self, t: np.ndarray, path: str) -> np.ndarray:
        """(rows,) int8 split of each row from its time ``t``: the latest ``test`` share of rows
        is test, the ``val`` share before it validation, cut at timestamps, so rows of one
        timestamp stay together and every test row is later than every validation row, which
        is later than every training row."""
        n_val, n_test = self._cut_sizes(len(t), path)
        ordered = np.sort(t, kind="stable")
        t_val = ordered[len(t) - n_test - n_val]
        t_test = ordered[len(t) - n_test] if n_test else np.inf  # (val cut from train: no test)
        return ((t >= t_val).astype(np.int8) + (t >= t_test)).astype(np.int8)

    def _read_truth(self, rows: int, mapped: bool = False) -> np.ndarray:
        """(rows,) float64 true probabilities from the ``truth`` file, one per data row (with
        ``mapped``: the file's read-only map, checked block by block)."""
        path = self.dir / str(self.truth)
        try:
            p = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as e:
            msg = f"cannot read the truth file ({e}) (data.source.truth)"
            raise DataError(msg, path=str(path)) from None
        if p.ndim != 1 or len(p) != rows:
            raise DataError(
                f"holds {p.shape} probabilities for {rows} data rows (data.source.truth)",
                path=str(path),
            )
        block = 1 << 22 if mapped else max(1, rows)
        for lo in range(0, rows, block):
            part = np.asarray(p[lo : lo + block], dtype=np.float64)
            if not np.all((part >= 0) & (part <= 1)):
                msg = "holds values outside [0, 1] (data.source.truth)"
                raise DataError(msg, path=str(path))
        return p if mapped else np.asarray(p, dtype=np.float64)

    def split_times(self, df: pl.DataFrame, path: str, first_line: int) -> np.ndarray:
        """The time split's column as float seconds (in ``split.format`` where given), failing
        at a missing column or the first unparsable value, naming its line."""
        column = str(self.split["column"])
        require_columns(df, [column], path, "data.source.split.column")
        return parse_time(df, column, path, first_line, self.split.get("format")).to_numpy()

    def _cut_by_column(
        self, df: pl.DataFrame, path: str, first_line: int
    ) -> dict[str, pl.DataFrame]:
        """Rows go to the split their column names (``values`` maps split -> the column's value,
        by default ``train``/``val``/``test``); any other value fails naming its line."""
        column = str(self.split["column"])
        require_columns(df, [column], path, "data.source.split.column")
        values = {s: s for s in SPLITS} | {
            k: str(v) for k, v in (self.split.get("values") or {}).items()
        }
        col = df[column].cast(pl.String).str.strip_chars()
        fail_at_first(
            ~col.is_in(list(values.values())).fill_null(False),
            lambda i: (
                f"split column holds {df[column][i]!r}, not one of {list(values.values())} "
                "(data.source.split.values maps the splits to its values)"
            ),
            path,
            first_line,
            column,
        )
        return {s: df.filter(col == v) for s, v in values.items()}

    def paths(self) -> dict[str, list[Path]]:
        """Each split's files, in order: a name, a list of names, or a glob (``day_*.tsv``,
        matches sorted by name), relative to ``dir``."""
        out: dict[str, list[Path]] = {}
        for split, spec in self.files.items():
            names = [spec] if isinstance(spec, str) else list(spec)
            files: list[Path] = []
            for name in names:
                if any(c in str(name) for c in "*?["):
                    matched = sorted(p for p in self.dir.glob(str(name)) if p.is_file())
                    if not matched:
                        raise DataError(
                            f"no {split} file matches {name!r} (config key data.source.files)",
                            path=str(self.dir / str(name)),
                        )
                    files += matched
                    continue
                p = self.dir / str(name)
                if p.is_dir() and self.format != "parquet":
                    raise DataError(
                        f"is a folder, not a {self.format} file (config key data.source.files)",
                        path=str(p),
                    )
                if not (p.is_file() or (self.format == "parquet" and p.is_dir())):
                    raise DataError(
                        f"{'' if split == 'all' else split + ' '}file not found; set "
                        f"paths.data_dir to the directory holding "
                        f"'{self.dir.name}/' (config key data.source.dir = {self.dir})",
                        path=str(p),
                    )
                files.append(p)
            if not files:
                raise ConfigError(f"data.source.files.{split}", "names no file")
            out[split] = files
        return out

    def _where(self, paths: dict[str, list[Path]], split: str) -> str:
        """How errors name a split's data: its file, or its files' pattern."""
        source = split if split in paths else (self.cut_from or "all")
        files = paths.get(source, [])
        if len(files) == 1:
            return str(files[0])
        spec = self.files.get(source)
        return str(self.dir / (spec if isinstance(spec, str) else "{" + ",".join(spec) + "}"))

    def _read(self, files: list[Path], cut: bool = False) -> pl.DataFrame:
        """The files read and stacked in order. Several files, or the ones a split cuts
        (``cut``), are each checked whole first (labels, feature values; the split's column too
        on the files it cuts), so that an error names the file's own line."""
        frames = []
        for path in files:
            first_line = first_data_line(path, self.format, **self.read_options)
            df, report = self.read_clean(
                lambda path=path: read_table(path, self.format, **self.read_options),
                str(path),
                first_line,
                cut=cut,
            )
            if report:
                self.bad_rows[str(path)] = report
            if cut or len(files) > 1:
                encode_labels(df, self.label_columns, str(path), line_offset=first_line)
                TabularEncoder(self.specs).check(df, str(path), line_offset=first_line)
                method = self.split.get("method") if len(files) > 1 and cut else None
                if method == "time":  # the split's column, while lines are the file's own
                    self.split_times(df, str(path), first_line)
                elif method == "column":
                    self._cut_by_column(df, str(path), first_line)
            if frames and df.columns != frames[0].columns:
                if set(df.columns) != set(frames[0].columns):
                    raise DataError(
                        f"has the columns {df.columns}, where {files[0].name} has "
                        f"{frames[0].columns}: files stacked into one split need the same "
                        f"columns",
                        path=str(path),
                    )
                df = df.select(frames[0].columns)  # the same columns in another order
            frames.append(df)
        return frames[0] if len(frames) == 1 else pl.concat(frames, how="vertical_relaxed")

    def read_clean(
        self,
        read: Callable[[], pl.DataFrame],
        path: str,
        first_line: int,
        warn: bool = True,
        cut: bool = True,
    ) -> tuple[pl.DataFrame, dict | None]:
        """``read()``'s frame; under ``on_bad_rows: skip`` without its malformed rows (every
        check a row can fail, run with a :mod:`ranklab.data.badrows` collector), and the
        report of what was dropped (logged as a warning unless ``warn`` is false)."""
        if self.on_bad_rows == "fail":
            return read(), None
        with badrows.collecting() as bad:
            df = read()
            bad.start(df.height)
            encode_labels(df, self.label_columns, path, line_offset=first_line)
            TabularEncoder(self.specs).check(df, path, line_offset=first_line)
            method = self.split.get("method") if self.split and cut else None
            if method == "time":
                self.split_times(df, path, first_line)
            elif method == "column":
                self._cut_by_column(df, path, first_line)
        if not bad.count:
            return df, None
        report = bad.report()
        if warn:
            badrows.warn_skipped(path, report)
        return df.filter(~pl.Series(bad.mask)), report

    def fingerprint(self) -> str:
        paths = self.paths()
        options = {
            "format": CACHE_FORMAT,
            "reader": self.format,
            # a field map counts by its name and contents (below), not the path it is reached by
            "read_options": {
                k: Path(str(v)).name if k == "field_map" and v else v
                for k, v in (self.read_options or {}).items()
            }
            if self.read_options
            else self.read_options,
            "label": self.label,
            **({"labels": self.labels_cfg} if self.labels_cfg is not None else {}),
            "group": self.group,
            "features": self.features_cfg,
            "split": self.split,
            **({"on_bad_rows": "skip"} if self.on_bad_rows == "skip" else {}),
        }
        files = [p for ps in paths.values() for p in ps]  # the order hashed before: same keys
        field_map = (self.read_options or {}).get("field_map")
        if field_map and Path(field_map).is_file():  # its contents decide the fields too
            files.append(Path(field_map))
        if self.truth is not None:
            truth = self.dir / str(self.truth)
            if not truth.is_file():
                raise DataError("truth file not found (config key data.source.truth)", str(truth))
            files.append(truth)
            options["truth"] = self.truth
        return hash_object([options, hash_files(files)])[:16]

    def streams(self, memory_budget: int) -> bool:
        """True when the files' text, as parsed and encoded in memory (about
        ``streaming.EXPANSION`` times its size; gzip counted at 5x its size), exceeds the
        budget."""
        from ranklab.data.streaming import EXPANSION

        size = 0
        for p in (p for ps in self.paths().values() for p in ps):
            files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
            size += sum(q.stat().st_size * (5 if is_gzip(q) else 1) for q in files)
        return size * EXPANSION > memory_budget

    def build_streaming(self, directory: Path, memory_budget: int) -> dict:
        from ranklab.data.streaming import build_streaming

        return build_streaming(self, directory, memory_budget)

    def build(self) -> EncodedData:
        self.bad_rows = {}
        paths = self.paths()
        frames = self._frames(paths)
        where = {s: self._where(paths, s) for s in SPLITS}
        for split, df in frames.items():
            if df.height == 0:
                what = "file has no data rows" if split in paths else "cut has no rows"
                raise DataError(f"the {split} {what}", path=where[split])
            cols = [s.column for s in self.specs] + [s.weights for s in self.specs if s.weights]
            cols += [self.group] if self.group else []
            require_columns(df, cols, where[split], "data.source.features")
            require_scalar(
                df, [self.group] if self.group else [], where[split], "data.source.group"
            )
        # the file line of a split's first row, for errors (a cut source and several files
        # were checked file by file first)
        first = {
            s: first_data_line(
                (paths.get(s) or paths[str(self.cut_from)])[0], self.format, **self.read_options
            )
            for s in SPLITS
        }
        encoder = TabularEncoder(self.specs).fit(frames["train"], where["train"], first["train"])
        splits: dict[str, dict[str, np.ndarray]] = {}
        group_vocab = None
        for split, df in frames.items():
            arrays = encoder.transform(df, where[split], first[split])
            arrays.update(encode_labels(df, self.label_columns, where[split], first[split]))
            if self.group:
                # groups only need to be distinct ids; fit over all splits (no learned state)
                if group_vocab is None:
                    group_vocab = pl.concat(
                        [f[self.group].cast(pl.String) for f in frames.values()]
                    ).unique(maintain_order=True)
                arrays[GROUP_KEY] = (
                    df[self.group]
                    .cast(pl.String)
                    .replace_strict(group_vocab, range(len(group_vocab)), return_dtype=pl.Int64)
                    .to_numpy()
                )
            splits[split] = arrays
        meta = {
            "source": self.name,
            "files": {
                s: [str(p) for p in ps] if len(ps) > 1 else str(ps[0]) for s, ps in paths.items()
            },
            "rows": {s: df.height for s, df in frames.items()},
            "base_rate": {
                s: float(a[self.label_columns[0].spec.name].mean()) for s, a in splits.items()
            },
            "labels": {s: label_meta(a, self.label_columns) for s, a in splits.items()},
        }
        if self.bad_rows:
            meta["bad_rows"] = dict(self.bad_rows)
        if self.truth is not None:
            first_label = self.label_columns[0].spec.name
            meta["bayes"] = {
                s: bayes_metrics(df[TRUTH].to_numpy(), splits[s][first_label])
                for s, df in frames.items()
            }
        labels = tuple(c.spec for c in self.label_columns)
        meta["vocabularies"] = encoder.vocabulary_hashes()
        schema = encoder.schema(labels, self.group, meta)
        schema.check_conditions()
        return EncodedData(schema, splits, meta)
