"""Readers: one small interface that every on-disk format joins.

A reader turns one file into a polars DataFrame with the file's own column names, and fails
with a :class:`DataError` naming the file, line and column when the file is malformed.
Register a new format with ``@register("name")``; ``read_table(path, format=...)`` looks it up.
"""

from __future__ import annotations

import inspect
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import polars as pl

from ranklab.data import badrows
from ranklab.data.preprocess import fail_at_first
from ranklab.errors import ConfigError, DataError

Reader = Callable[..., pl.DataFrame]
READERS: dict[str, Reader] = {}


def register(name: str) -> Callable[[Reader], Reader]:
    def deco(fn: Reader) -> Reader:
        READERS[name] = fn
        return fn

    return deco


def check_read_options(
    format: str, options: dict[str, Any], key: str = "data.source.read_options"
) -> None:
    """Fail naming ``<key>.<option>`` when the ``format`` reader takes no such option (a typo
    would otherwise end in a TypeError from the reader, after the files were found)."""
    if format not in READERS:
        raise ConfigError(
            "data.source.format", f"unknown format '{format}' (known: {sorted(READERS)})"
        )
    params = inspect.signature(READERS[format]).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    takes = [k for k in params if k != "path"]
    for k in options:
        if k not in takes:
            raise ConfigError(
                f"{key}.{k}", f"the {format} reader takes no option '{k}' (it takes {takes})"
            )


def read_table(path: str | Path, format: str = "csv", **options: Any) -> pl.DataFrame:
    """Read ``path`` with the reader registered as ``format``."""
    path = Path(path)
    if format not in READERS:
        raise DataError(f"unknown format '{format}' (known: {sorted(READERS)})", path=str(path))
    if path.is_dir() and format != "parquet":
        raise DataError(f"is a folder, not a {format} file", path=str(path))
    if not (path.is_file() or (format == "parquet" and path.is_dir())):
        raise DataError(
            "file not found (set paths.data_dir=/dir/holding/the/dataset, "
            "or check the data config's file names)",
            path=str(path),
        )
    try:
        return READERS[format](path, **options)
    except OSError as e:  # unreadable (permissions, a vanished mount): the user's to fix
        raise DataError(f"cannot read: {e.strerror or e}", path=str(path)) from e


def is_gzip(path: str | Path) -> bool:
    """Whether the file is gzip-compressed, by its magic bytes (whatever its name)."""
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def open_bytes(path: str | Path) -> IO[bytes]:
    """The file's bytes, decompressed where it is gzip (as polars reads it)."""
    import gzip

    return gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")  # type: ignore[return-value]


def first_data_line(path: str | Path, format: str = "csv", **options: Any) -> int:
    """The file line of a frame's first row as ``format`` reads it (1 without a header), so
    errors found in the frame name the file's own line; parquet rows count from 1."""
    if format == "csv":
        return 2 if options.get("has_header", True) else 1
    if format == "criteo":  # the raw TSV has no header; the CSV layouts have one
        with open_bytes(path) as f:
            head = f.readline()
        return 1 if b"\t" in head or not head.lower().startswith((b"id,", b"label,")) else 2
    return 1 if format in ("parquet", "interactions", "libfm", "libsvm", "ffm") else 2


def check_field_counts(
    path: Path,
    separator: str,
    expected: int,
    has_header: bool,
    quote_char: str | None = '"',
    encoding: str = "utf8",
) -> pl.DataFrame | None:
    """Raise DataError at the first line whose number of fields differs from ``expected``;
    under ``on_bad_rows: skip`` (an active :mod:`ranklab.data.badrows` collector) record every
    such line instead and return the other lines (``lineno``, ``line``) to parse.

    Lines are read whole (one string column) and counted with a vectorised polars expression,
    so this costs one extra pass over the bytes, not a Python loop. A line's quoted fields
    (a quote at the field's start to the closing one, doubled quotes inside) count as one field
    whatever separators they hold; a line that still holds a quote after that, or inside a
    quoted field that spans lines, is skipped (its newline would be miscounted) and left to
    the CSV parser. (polars pads a short row with nulls, so a short row with a quoted text
    field would otherwise be read with its values shifted into the next columns.)
    """
    import re

    lines = _lines(path, encoding).with_row_index("lineno", offset=1)
    collector = badrows.active()
    text = pl.col("line").fill_null("")
    # a blank line is a null line here (polars)
    blank = text.str.strip_chars_end("\r").str.len_bytes() == 0
    rows = lines.lazy()
    if quote_char:
        quotes = text.str.count_matches(quote_char, literal=True)
        # inside a quoted field that spans lines: an odd number of quote characters before it
        rows = rows.with_columns(quotes=quotes, inside=(quotes.cum_sum() - quotes) % 2 == 1)
    else:
        rows = rows.with_columns(quotes=pl.lit(0), inside=pl.lit(False))
    rows = rows.filter(~pl.col("inside") & (pl.col("lineno") > int(has_header)))
    plain = rows.filter(
        (pl.col("quotes") == 0)
        & (
            # polars reads a blank line as a row of nulls ("label ... found None"); with one
            # column it is that column's empty field
            (blank & pl.lit(expected > 1))
            | (~blank & (text.str.count_matches(separator, literal=True) != expected - 1))
        )
    )
    query = plain
    if quote_char:  # the few lines with quotes: each quoted field becomes a placeholder
        q, sep = re.escape(quote_char), re.escape(separator)
        fields = text.str.replace_all(f"(^|{sep}){q}(?:[^{q}]|{q}{q})*{q}", "${1}_")
        quoted = (
            rows.filter(pl.col("quotes") > 0)
            .with_columns(fields=fields)
            # a quote still there opens no field (or a field spanning lines): polars' to read
            .filter(
                ~pl.col("fields").str.contains(quote_char, literal=True)
                & (pl.col("fields").str.count_matches(separator, literal=True) != expected - 1)
            )
            .drop("fields")
        )
        query = pl.concat([plain, quoted]).sort("lineno")
    bad = (query if collector is not None else query.head(1)).collect()
    errors = []
    for lineno, line in zip(bad["lineno"], bad["line"], strict=True):
        line = (line or "").rstrip("\r")
        if not line:
            msg = f"a blank line, where {expected} fields are expected: remove it"
        else:
            found = _count_fields(line, separator, quote_char)
            msg = f"expected {expected} fields, found {found}: {line[:120]!r}"
            msg += _line_separator_hint(line, separator, expected)
        errors.append(DataError(msg, path=str(path), line=lineno))
    if not errors:
        return None
    if collector is None:
        raise errors[0]
    kept = lines.filter(~pl.col("lineno").is_in(bad["lineno"]))
    data_lines = kept.filter(pl.col("lineno") > int(has_header))["lineno"].to_numpy()
    collector.drop_lines(errors, data_lines)
    return kept


def _count_fields(line: str, separator: str, quote_char: str | None) -> int:
    """The fields of one line as a CSV reader splits it (quoted separators inside a field)."""
    import csv

    if not quote_char or len(separator) != 1:
        return line.count(separator) + 1
    return len(next(csv.reader([line], delimiter=separator, quotechar=quote_char), [""]))


def _check_header(header: list[str], path: Path) -> None:
    """A header naming a column twice fails naming the fields (polars would rename the second
    silently, and a feature would read the first)."""
    seen: dict[str, int] = {}
    for i, name in enumerate(header, 1):
        if name in seen:
            raise DataError(
                f"the header names column {name!r} twice (fields {seen[name]} and {i}): rename one",
                path=str(path),
                line=1,
            )
        seen[name] = i


@register("csv")
def read_csv(
    path: Path,
    separator: str = ",",
    has_header: bool = True,
    columns: list[str] | None = None,
    dtypes: dict[str, str] | None = None,
    null_values: list[str] | None = None,
    quote_char: str | None = '"',
    strip: bool = False,
    encoding: str = "utf8",
) -> pl.DataFrame:
    """Delimited text with a header row (or ``columns`` naming the fields when there is none).

    Every column is read as a string unless ``dtypes`` says otherwise ("int", "float", "str"),
    so ids keep their exact spelling ("05db9164", "007") and typing is the preprocessor's job.
    ``strip`` removes spaces around string values (UCI files separate fields by ", ");
    ``null_values`` are then compared with the stripped values. Gzip files are read as they are.
    A separator of several characters (MovieLens' ``::``) is split literally, without quoting.
    Text must be UTF-8 (a bad byte fails naming its line); ``encoding: utf8-lossy`` replaces
    bad bytes with U+FFFD instead.
    """
    if not separator:
        raise DataError("the separator (read_options.separator) is empty", path=str(path))
    if encoding not in ("utf8", "utf8-lossy"):
        raise DataError(
            f"read_options.encoding must be utf8 or utf8-lossy, not {encoding!r}", path=str(path)
        )
    if encoding == "utf8":
        _check_utf8(path)
    if len(separator.encode()) > 1:
        df = _read_split_lines(path, separator, has_header, columns, encoding)
        types = {"int": pl.Int64, "float": pl.Float64}
        casts = [pl.col(c).cast(types[t]) for c, t in (dtypes or {}).items() if t in types]
        df = df.with_columns(casts) if casts else df
        return _clean(df, strip, null_values)
    if has_header:
        if columns:
            raise DataError(
                "read_options.columns names the fields of a file without a header, and this "
                "one has a header (has_header: true): set has_header: false to name them",
                path=str(path),
            )
        try:  # the header as a row: polars would rename a repeated name (a_duplicated_0)
            first = pl.read_csv(
                path,
                n_rows=1,
                has_header=False,
                separator=separator,
                quote_char=quote_char,
                encoding=encoding,
                infer_schema_length=1,  # the header line's own fields, whatever follows
                truncate_ragged_lines=True,
            )
        except pl.exceptions.NoDataError:
            first = pl.DataFrame()
        except pl.exceptions.PolarsError as e:  # polars reads past the header's line
            raise _parse_error(path, quote_char, encoding, e) from e
        header = [str(v or "").strip() for v in first.row(0)] if first.height else []
        if not header:
            raise DataError("empty file (no header line)", path=str(path))
        _check_header(header, path)
    else:
        if not columns:
            raise DataError("a header-less file needs `columns`", path=str(path))
        header = list(columns)
    if not has_header and _blank(path):
        raise DataError("empty file (no data lines)", path=str(path))
    kept = check_field_counts(path, separator, len(header), has_header, quote_char, encoding)
    source: Path | io.BytesIO = path
    if kept is not None:  # on_bad_rows: skip dropped lines: parse the others
        source = io.BytesIO(("\n".join(kept["line"].fill_null("")) + "\n").encode())
    types = {"int": pl.Int64, "float": pl.Float64, "str": pl.String}
    schema = {c: types[(dtypes or {}).get(c, "str")] for c in header}
    try:
        df = pl.read_csv(
            source,
            has_header=has_header,
            new_columns=header if not has_header else None,
            separator=separator,
            schema=schema if has_header else None,
            schema_overrides=None if has_header else schema,
            null_values=None if strip else null_values,
            quote_char=quote_char,
            truncate_ragged_lines=False,
            encoding=encoding,
        )
    except pl.exceptions.PolarsError as e:  # quoted lines that the field count skipped
        if has_header and (hint := header_hint(header)):
            # polars' own words here (names "not specified in schema") say nothing useful
            raise DataError(f"cannot read the rows under this header{hint}", path=str(path)) from e
        raise _parse_error(path, quote_char, encoding, e) from e
    df.columns = header
    # CRLF files: polars keeps the '\r' on the last field when it is read as a string
    last = header[-1]
    if df.schema[last] == pl.String:
        df = df.with_columns(pl.col(last).str.strip_chars_end("\r"))
    return _clean(df, strip, null_values) if strip else df


def _check_utf8(path: Path, chunk: int = 1 << 24) -> None:
    """Fail naming the line of the first byte sequence that is not UTF-8 (polars only says
    "invalid utf-8 sequence"). One pass in chunks cut at line ends; gzip is left to the parser."""
    if is_gzip(path):  # left to the parser (polars decompresses it, whatever its name)
        return
    lines_before, carry = 0, b""
    with open(path, "rb") as f:
        if f.read(4) == b"PAR1":  # parquet's magic number: the format, not the encoding
            raise DataError(
                "a parquet file, read as text: set the source's format (data.source.format: "
                "parquet; +data.source.format=parquet on the command line)",
                path=str(path),
            )
        f.seek(0)
        while True:
            block = f.read(chunk)
            data = carry + block
            # a chunk ends at its last newline, so no character is cut in two
            cut = len(data) if not block else data.rfind(b"\n") + 1
            head, carry = data[:cut], data[cut:]
            try:
                head.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(
                    f"not UTF-8 text (byte {head[e.start]:#04x}); re-encode the file, "
                    "e.g. iconv -f latin1 -t utf-8",
                    path=str(path),
                    line=lines_before + head.count(b"\n", 0, e.start) + 1,
                ) from None
            lines_before += head.count(b"\n")
            if not block:
                return


def _clean(df: pl.DataFrame, strip: bool, null_values: list[str] | None) -> pl.DataFrame:
    """Spaces stripped around string values (``strip``), then ``null_values`` made null."""
    text = [c for c, t in df.schema.items() if t == pl.String]
    if strip:
        df = df.with_columns(pl.col(text).str.strip_chars())
    if null_values:
        df = df.with_columns(
            pl.when(pl.col(c).is_in(null_values)).then(None).otherwise(pl.col(c)).alias(c)
            for c in text
        )
    return df


# control bytes no text file should hold, tried in turn as the "separator" that reads lines whole
_LINE_SEPARATORS = ("\x1f", "\x1e", "\x1d", "\x1c", "\x07", "\x01")


def _lines(
    path: Path, encoding: str = "utf8", separator: str = _LINE_SEPARATORS[0]
) -> pl.DataFrame:
    """The file's lines as one string column ``line`` (none for an empty file)."""
    try:
        return pl.read_csv(
            path,
            has_header=False,
            separator=separator,
            quote_char=None,
            schema={"line": pl.String},
            comment_prefix=None,
            encoding=encoding,
        )
    except pl.exceptions.NoDataError:
        return pl.DataFrame(schema={"line": pl.String})
    except pl.exceptions.ComputeError as e:
        if "more fields" in str(e):  # the file holds the stand-in byte: take one it lacks
            with open_bytes(path) as f:  # the text polars reads
                data = f.read()
            tried = _LINE_SEPARATORS[: _LINE_SEPARATORS.index(separator) + 1]
            free = [c for c in _LINE_SEPARATORS if c not in tried and c.encode() not in data]
            if not free:
                raise DataError(
                    "holds the control bytes 0x1f, 0x1e, 0x1d, 0x1c, 0x07 and 0x01: is it text?",
                    path=str(path),
                ) from None
            return _lines(path, encoding, free[0])
        if "utf-8" not in str(e).lower():
            raise
        _check_utf8(path)  # names the line (checked only on failure: no second pass otherwise)
        raise DataError(
            "not UTF-8 text; re-encode the file, e.g. iconv -f latin1 -t utf-8", path=str(path)
        ) from None


def _read_split_lines(
    path: Path, separator: str, has_header: bool, columns: list[str] | None, encoding: str
) -> pl.DataFrame:
    """Lines split on a literal multi-character separator, every field a string; a line with
    another number of fields fails naming it."""
    lines = _lines(path, encoding).with_columns(pl.col("line").str.strip_chars_end("\r"))
    if lines.height == 0:
        raise DataError("empty file", path=str(path))
    if has_header:
        header = [h.strip() for h in lines["line"][0].split(separator)]
        lines = lines.slice(1)
    elif columns:
        header = list(columns)
    else:
        raise DataError("a header-less file needs `columns`", path=str(path))
    first = 2 if has_header else 1
    parts = lines.with_row_index("lineno", offset=first).with_columns(
        pl.col("line").str.split(separator)
    )
    counts = parts["line"].list.len()
    bad = (counts != len(header)) & (parts["line"].list.join("").str.len_bytes() > 0)
    if bool(bad.any()):
        i = int(bad.arg_true()[0])
        raise DataError(
            f"expected {len(header)} fields separated by {separator!r}, found {counts[i]}",
            path=str(path),
            line=int(parts["lineno"][i]),
        )
    keep = parts.filter(counts == len(header))
    return keep.select(pl.col("line").list.get(i).alias(c) for i, c in enumerate(header))


def _blank(path: Path) -> bool:
    """True when the file holds nothing but whitespace (read until its first other byte)."""
    with open_bytes(path) as f:
        while chunk := f.read(1 << 16):
            if chunk.strip():
                return False
    return True


def _parse_error(
    path: Path, quote_char: str | None, encoding: str, e: pl.exceptions.PolarsError
) -> DataError:
    """What polars could not parse, in one line: the first line with an unclosed quote, or
    polars' own first line."""
    line = _unbalanced_quote(path, quote_char, encoding)
    if line is not None:
        return DataError(
            f"an unclosed quote ({quote_char}) starts here; close it, or read quotes as "
            f"text with read_options.quote_char: null",
            path=str(path),
            line=line,
        )
    return DataError(f"cannot parse: {str(e).splitlines()[0]}", path=str(path))


def _unbalanced_quote(path: Path, quote_char: str | None, encoding: str) -> int | None:
    """The first line (1-based) holding an odd number of quote characters, or None."""
    if not quote_char:
        return None
    lines = _lines(path, encoding)["line"]
    odd = (lines.str.count_matches(quote_char, literal=True) % 2 == 1).arg_true()
    return int(odd[0]) + 1 if len(odd) else None


def require_columns(df: pl.DataFrame, columns: list[str], path: str | Path, key: str) -> None:
    """Fail naming the config key when the file lacks a column the config asks for."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(
            f"columns {missing} named by config key '{key}' are not in the file "
            f"(it has {df.columns}){separator_hint(df.columns)}{header_hint(df.columns)}"
            f"{ffm_hint(missing)}",
            path=str(path),
        )


def ffm_hint(missing: Sequence[str]) -> str:
    """``; an FFM file has a column per field its lines use ...`` where the missing columns
    look like FFM fields (``f7``, ``f7.value``)."""
    import re

    if not missing or not all(re.fullmatch(r"f\d+(\.value)?", c) for c in missing):
        return ""
    return (
        "; an FFM file has a column per field its lines use: list every field in "
        "read_options.fields (e.g. [0, 2, 7]) to read a field this file does not use as empty"
    )


def header_hint(names: list[str]) -> str:
    """``; its header ... looks like data`` where a column name read from the first line is a
    number: a file without a header line read as if it had one."""
    numbers = [n for n in names if _is_number(str(n))]
    if not numbers:
        return ""
    return (
        f"; its first line, read as the header, looks like data ('{numbers[0]}' is a number): a "
        f"file without a header line needs read_options: {{has_header: false, columns: [...]}}"
    )


def _is_number(text: str) -> bool:
    try:
        float(text.strip())
    except ValueError:
        return False
    return bool(text.strip())


# the delimiters a file read with the wrong one is suspected of having
SEPARATORS = (("\t", "tab"), (";", "';'"), ("|", "'|'"), (",", "','"))


def _line_separator_hint(line: str, separator: str, expected: int) -> str:
    """``; it has 4 tab-separated fields: ...`` when another delimiter splits a data line into
    the expected number of fields (a header-less file read with the wrong separator)."""
    for other, name in SEPARATORS:
        if other != separator and other in line and line.count(other) + 1 == expected:
            return f"; it has {expected} {name}-separated fields: set read_options.separator"
    return ""


def separator_hint(columns: list[str]) -> str:
    """``; the header looks tab-separated: ...`` when a file read as one column holds another
    delimiter in its header (the file was read with the wrong separator), else ``""``."""
    if len(columns) == 1:
        for sep, name in SEPARATORS:
            if sep in columns[0]:
                return f"; the header looks {name}-separated: set read_options.separator"
    return ""


RECBOLE_TYPES = {
    "token": pl.String,
    "float": pl.Float64,
    "token_seq": pl.List(pl.String),
    "float_seq": pl.List(pl.Float64),
}


@register("recbole")
def read_recbole(path: Path, separator: str = "\t") -> pl.DataFrame:
    """RecBole atomic file (.inter/.user/.item): tab-separated, header ``name:type``.

    Types: ``token`` -> string, ``float`` -> float64, ``token_seq`` / ``float_seq`` -> lists
    (space-separated in the file). Columns are named without the type suffix.
    """
    header = pl.read_csv(path, n_rows=0, separator=separator, quote_char=None).columns
    names, types = [], []
    for col, h in enumerate(header, start=1):
        name, sep, typ = h.strip().rpartition(":")
        if not sep or typ not in RECBOLE_TYPES:
            raise DataError(
                f"header field {col} is {h!r}; RecBole headers are name:type with type in "
                f"{sorted(RECBOLE_TYPES)}",
                path=str(path),
                line=1,
            )
        names.append(name)
        types.append(typ)
    df = read_csv(path, separator=separator, quote_char=None)
    df.columns = names
    out = []
    for name, typ in zip(names, types):
        col = pl.col(name).str.strip_chars()
        if typ == "float":
            bad = df.select(
                (
                    col.cast(pl.Float64, strict=False).is_null() & col.is_not_null() & (col != "")
                ).arg_true()
            )
            if bad.height:
                i = int(bad[0, 0])
                raise DataError(
                    f"cannot parse {df[name][i]!r} as float",
                    path=str(path),
                    line=i + 2,
                    column=name,
                )
            out.append(col.cast(pl.Float64, strict=False))
        elif typ.endswith("_seq"):
            inner = RECBOLE_TYPES[typ].inner
            out.append(
                col.fill_null("")
                .str.split(" ")
                .list.eval(pl.element().filter(pl.element() != ""))
                .cast(pl.List(inner))
            )
        else:
            out.append(col)
    return df.select(out)


@register("interactions")
def read_interactions(path: Path, columns: list[str] | None = None) -> pl.DataFrame:
    """Whitespace-separated ``user item [timestamp]`` lines, no header (e.g. BERT4Rec's files).

    Without a timestamp column the line order within each user is the time order: a
    ``timestamp`` column is added holding each line's position in the file.
    """
    lines = pl.read_csv(
        path, has_header=False, separator="\x1f", quote_char=None, schema={"line": pl.String}
    )
    parts = lines.with_row_index("lineno", offset=1).with_columns(_words())
    counts = parts["line"].list.len()
    expected = len(columns) if columns else None
    n = int(counts[0]) if len(counts) else 0
    bad = (counts != (expected or n)) | (counts < 2) | (counts > 3)
    if bool(bad.any()):
        i = int(bad.arg_true()[0])
        raise DataError(
            f"expected {expected or 'user item [timestamp]'} fields, found {counts[i]}",
            path=str(path),
            line=i + 1,
        )
    names = list(columns) if columns else ["user", "item", "timestamp"][:n]
    df = parts.select([pl.col("line").list.get(i).alias(c) for i, c in enumerate(names)])
    if "timestamp" not in names:
        df = df.with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("timestamp"))
    return df


def _words() -> pl.Expr:
    """The ``line`` column split on runs of whitespace (ends stripped)."""
    return pl.col("line").str.strip_chars().str.replace_all(r"\s+", " ").str.split(" ")


def _fail_at(mask: pl.Series, rows: pl.Series, path: Path, message: Callable[[int], str]) -> None:
    """DataError at the first True of ``mask``, naming the file line of ``rows`` there (0-based
    row + 1); ``message(i)`` describes entry ``i``."""
    fail_at_first(mask, message, str(path), line_offset=1, rows=rows)


@register("libfm")
@register("libsvm")
@register("ffm")
def read_libfm(
    path: Path,
    field_map: str | None = None,
    bag: str = "features",
    encoding: str = "utf8",
    fields: list[int | str] | None = None,
) -> pl.DataFrame:
    """libFM / libSVM / FFM lines: ``label token token ...``, whitespace-separated, any number
    of tokens per line (none is an all-zero row). A token is ``index:value`` (libFM, libSVM;
    a bare ``index`` means value 1) or ``field:index:value`` (FFM). Values are kept.

    Columns: ``label`` as written (map ``-1``/``+1`` with a label's ``positive`` values), and
    for each field a list column of the line's indices, ``<field>``, and of their values,
    ``<field>.value``: a ``bag`` feature with ``weights: <field>.value``. The fields are:

    * FFM tokens' own (columns ``f<field>``, in numeric order): those the file's lines use, or
      with ``fields`` (``[0, 2, 7]``) exactly those, a field no line of this file (or of this
      chunk, when streamed) uses read as empty bags, and a token of another field failing
      naming its line. Give ``fields`` when the files, or the parts of a large file, may not
      all use every field;
    * else, with ``field_map`` (a path), a featindex file: ``<field>:<value> <index>`` lines
      (the field is the key before its last ``:``; a key without one is its own field), in
      the order the fields first appear there; an index it lacks fails naming the line;
    * else one bag of every token, named ``bag``.

    A line fails, naming it, on a missing label, a token with another number of parts, an
    empty index, or a value that is not a finite number.
    """
    lines = _lines(path, encoding).with_row_index("row")  # (row: the file's line, 0-based)
    if lines.height == 0:
        raise DataError("empty file", path=str(path))
    # SVMlight's comments: "# ..." to the end of a line, and lines that are only a comment
    comment = pl.col("line").str.strip_chars_start().str.starts_with("#").fill_null(False)
    lines = lines.filter(~comment).with_columns(pl.col("line").str.replace(r"#.*", ""))
    parts = lines.select("row", _words())
    label = parts["line"].list.first()
    _fail_at(label.is_null() | (label == ""), parts["row"], path, lambda i: "empty line")
    tokens = (
        parts.select("row", pl.col("line").list.slice(1).alias("tok"))
        .explode("tok")
        .drop_nulls("tok")
        .with_columns(pl.col("tok").str.split(":").alias("p"))
    )
    n = tokens["p"].list.len()
    # the format is the first token's: a stray token of the other kind is named on its own line;
    # ``fields`` is FFM's, so a file or streamed chunk without any token is read as FFM under it
    ffm = bool(n[0] == 3) if len(n) else fields is not None
    if fields is not None and not ffm:
        raise DataError(
            f"read_options.fields is for FFM files (field:index:value tokens), and this file's "
            f"first token is {tokens['tok'][0]!r}: remove it (a libFM/libSVM file's fields come "
            "from read_options.field_map)",
            path=str(path),
            line=int(tokens["row"][0]) + 1,
        )
    _fail_at(
        (n != 3) if ffm else (n > 2),
        tokens["row"],
        path,
        lambda i: (
            f"token {tokens['tok'][i]!r}: expected "
            + ("field:index:value (FFM: every token names its field)" if ffm else "index:value")
        ),
    )
    k = 1 if ffm else 0
    tokens = tokens.with_columns(
        pl.col("p").list.get(k).alias("index"),
        pl.col("p").list.get(k + 1, null_on_oob=True).fill_null("1").alias("raw_value"),
        (pl.lit("f") + pl.col("p").list.get(0)).alias("field")
        if ffm
        else pl.lit(bag).alias("field"),
    ).with_columns(pl.col("raw_value").cast(pl.Float64, strict=False).alias("value"))
    _fail_at(
        tokens["index"] == "",
        tokens["row"],
        path,
        lambda i: f"token {tokens['tok'][i]!r}: no index",
    )
    _fail_at(
        tokens["value"].is_null() | ~tokens["value"].is_finite(),
        tokens["row"],
        path,
        lambda i: f"token {tokens['tok'][i]!r}: the value is not a finite number",
    )
    if ffm and fields is not None:
        order = [f if f.startswith("f") else f"f{f}" for f in map(str, fields)]
        _fail_at(
            ~tokens["field"].is_in(order),
            tokens["row"],
            path,
            lambda i: (
                f"token {tokens['tok'][i]!r}: its field is not in read_options.fields ({order})"
            ),
        )
    elif ffm:
        order = sorted(tokens["field"].unique().to_list(), key=lambda f: (len(f), f))
    elif field_map is not None:
        fields = _read_field_map(Path(field_map), encoding)
        tokens = tokens.drop("field").join(fields, on="index", how="left", maintain_order="left")
        _fail_at(
            tokens["field"].is_null(),
            tokens["row"],
            path,
            lambda i: f"index {tokens['index'][i]!r} is not in the field map {field_map}",
        )
        order = fields["field"].unique(maintain_order=True).to_list()
    else:
        order = [bag]
    grouped = tokens.group_by(["row", "field"], maintain_order=True).agg("index", "value")
    out = parts.select("row", label.alias("label"))
    for f in order:
        sub = grouped.filter(pl.col("field") == f).select(
            "row", pl.col("index").alias(f), pl.col("value").alias(f"{f}.value")
        )
        # (a listed field no line uses joins an empty frame: its columns, all missing)
        out = out.join(sub, on="row", how="left", maintain_order="left")
    empty = {c: pl.col(c).fill_null(pl.lit([], dtype=out.schema[c])) for c in out.columns[2:]}
    return out.with_columns(**empty).drop("row")


def _read_field_map(path: Path, encoding: str = "utf8") -> pl.DataFrame:
    """A featindex file (``<field>:<value> <index>`` per line) -> frame ``index``, ``field``."""
    if not path.is_file():
        raise DataError("field map not found (data.source.read_options.field_map)", path=str(path))
    lines = _lines(path, encoding).with_row_index("row")
    parts = lines.select("row", _words()).filter(
        pl.col("line").list.len() > 0, pl.col("line").list.first() != ""
    )
    _fail_at(
        parts["line"].list.len() != 2,
        parts["row"],
        path,
        lambda i: "expected '<field>:<value> <index>'",
    )
    key = parts["line"].list.first()
    field = pl.when(key.str.contains(":")).then(key.str.replace(r":[^:]*$", "")).otherwise(key)
    return parts.select(
        pl.col("line").list.last().alias("index"), pl.select(field).to_series().alias("field")
    ).unique("index", keep="first", maintain_order=True)


CRITEO_COLUMNS = ["label", *(f"I{i}" for i in range(1, 14)), *(f"C{i}" for i in range(1, 27))]


@register("criteo")
def read_criteo(path: Path, encoding: str = "utf8") -> pl.DataFrame:
    """Criteo display-advertising rows in any of their published layouts, as columns
    ``label, I1..I13, C1..C26`` (strings; empty fields are null):

    - the raw files (``train.txt``, the 1TB ``day_N``): tab-separated, no header, 40 fields; the
      unlabelled ``test.txt`` has 39 (no ``label`` column then);
    - the Kaggle CSV, ``Id,Label,I1..I13,C1..C26`` (``Id`` dropped);
    - a CSV with the header ``label,I1..`` (BARS' Criteo_x1 files).
    """
    first = _lines(path, encoding).head(1)
    if first.height == 0:
        raise DataError("empty file", path=str(path))
    head = first["line"][0].rstrip("\r")
    if "\t" in head or not head.lower().startswith(("id,", "label,")):
        n = head.count("\t") + 1
        if n not in (39, 40):
            raise DataError(
                f"a raw Criteo file has 40 tab-separated fields (39 unlabelled), line 1 has {n}",
                path=str(path),
                line=1,
            )
        columns = CRITEO_COLUMNS[40 - n :]
        df = read_csv(
            path,
            separator="\t",
            has_header=False,
            columns=columns,
            quote_char=None,
            null_values=[""],
            encoding=encoding,
        )
        return df
    df = read_csv(path, null_values=[""], encoding=encoding)
    df.columns = [{"Id": "id", "Label": "label"}.get(c, c) for c in df.columns]
    df = df.drop("id", strict=False)
    want = [c for c in CRITEO_COLUMNS if c != "label" or "label" in df.columns]
    if df.columns != want:
        raise DataError(
            f"a Criteo CSV has the header [Id,]Label,I1..I13,C1..C26; this one has {df.columns}",
            path=str(path),
            line=1,
        )
    return df


@register("avazu")
def read_avazu(path: Path, encoding: str = "utf8") -> pl.DataFrame:
    """Avazu's raw CSV (``id,click,hour,C1,banner_pos,...,C21``): ``hour`` (YYMMDDHH) becomes
    ``hour`` (hour of day, 00-23) and ``weekday`` (0 = Monday), ``id`` is dropped; every other
    column is kept as a string. The unlabelled test file has no ``click``."""
    df = read_csv(path, encoding=encoding)
    if "hour" not in df.columns:
        raise DataError(f"an Avazu file has an 'hour' column (it has {df.columns})", path=str(path))
    raw = pl.col("hour").str.strip_chars()
    day = raw.str.slice(0, 6).str.to_date("%y%m%d", strict=False)
    hour = raw.str.slice(6, 2).cast(pl.Int32, strict=False)
    ok = (raw.str.len_chars() == 8) & day.is_not_null() & hour.is_between(0, 23)
    bad = df.select((~ok.fill_null(False) & pl.col("hour").is_not_null()).arg_true())
    if bad.height:
        i = int(bad[0, 0])
        raise DataError(
            f"hour {df['hour'][i]!r} is not YYMMDDHH", path=str(path), line=i + 2, column="hour"
        )
    return df.drop("id", strict=False).with_columns(
        (day.dt.weekday() - 1).cast(pl.String).alias("weekday"),
        raw.str.slice(6, 2).alias("hour"),
    )


def parquet_shards(path: Path) -> list[Path]:
    """A parquet file, or a folder's ``*.parquet`` shards in name order."""
    if not path.is_dir():
        return [path]
    shards = sorted(path.glob("*.parquet"))
    if not shards:
        raise DataError("folder holds no *.parquet files", path=str(path))
    return shards


def parquet_schema(shards: list[Path]) -> tuple[dict[str, pl.DataType], list[set[str]]]:
    """One schema for all ``shards``, and each shard's own columns: their columns by name (the
    first shard's order, then any column a later one adds) and each column's common type (Int32
    and Int64 -> Int64, an integer and a float -> Float64), as Spark's merged schema reads a
    partitioned table. Every shard is read to it (:func:`read_shard`), in memory and streamed
    alike, so a value has one spelling, and one id, whichever shard holds it."""
    try:
        each = [pl.read_parquet_schema(s) for s in shards]
        empty = [pl.DataFrame(schema=schema) for schema in each]
        merged = dict(pl.concat(empty, how="diagonal_relaxed").schema)
    except pl.exceptions.PolarsError as e:
        where = shards[0].parent if len(shards) > 1 else shards[0]
        raise DataError(
            f"cannot read the shards as one table: {str(e).splitlines()[0]}", path=str(where)
        ) from e
    return merged, [set(schema) for schema in each]


def read_shard(
    shard: Path,
    has: set[str],
    schema: dict[str, pl.DataType],
    columns: list[str],
    rows: tuple[int, int] | None = None,
) -> pl.DataFrame:
    """A shard's ``columns`` (``rows``: offset and length, else all) in the common ``schema``:
    cast to its types, a column the shard lacks (``has``: its own) as nulls, one a row (also
    where it lacks them all: selecting none of its columns would read no rows)."""
    lazy = pl.scan_parquet(shard)
    lazy = lazy.slice(*rows) if rows else lazy
    missing = lambda c: pl.repeat(None, pl.len(), dtype=schema[c]).alias(c)  # noqa: E731
    return lazy.select(
        pl.col(c).cast(schema[c]) if c in has else missing(c) for c in columns
    ).collect()


@register("parquet")
def read_parquet(path: Path, columns: list[str] | None = None) -> pl.DataFrame:
    """One parquet file, or a folder of shards (``*.parquet``, read in name order) read by
    column name into one schema (:func:`parquet_schema`). Column types are otherwise kept as
    written (typing is the preprocessor's job)."""
    shards = parquet_shards(path)
    schema, has = parquet_schema(shards)
    wanted = list(columns) if columns else list(schema)
    unknown = [c for c in wanted if c not in schema]
    if unknown:
        raise DataError(f"no column {unknown} in any shard (it has {list(schema)})", path=str(path))
    frames = []
    for shard, own in zip(shards, has, strict=True):
        try:
            frames.append(read_shard(shard, own, schema, wanted))
        except pl.exceptions.PolarsError as e:
            msg = f"cannot read parquet: {str(e).splitlines()[0]}"
            raise DataError(msg, path=str(shard)) from e
    return pl.concat(frames, how="vertical")
