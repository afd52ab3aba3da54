"""Parsing and validation of old-format CSV text, one chunk at a time (see :mod:`marketlake.interop.csv`).

A chunk is the header line followed by whole data lines starting at a known file line, so the
same checks serve a whole file (:func:`marketlake.interop.csv.parse_old_csv`) and a streamed one;
:class:`FileState` carries what a chunk must know of the chunks before it.
"""

from __future__ import annotations

import csv as _csv_module
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import polars as pl

from marketlake.errors import ImportRejectedError
from marketlake.interop._csv_stream import open_regular

__all__ = [
    "PRICE_COLUMNS", "FileState", "check_header", "check_nul", "parse_checked", "parse_chunk", "read_input",
]

PRICE_COLUMNS: Final = ("open", "high", "low", "close", "volume")
_OPTIONAL_COLUMNS: Final = ("turnover",)
_MAX_FIELD_BYTES: Final = 64  # the longest legitimate field is a 26-char datetime
_MAX_FILE_BYTES: Final = 4 << 30  # for parse_old_csv, which holds a whole file (import streams)
# Epoch ms of 1990-01-01 / 2200-01-01: plausible candle times; seconds fall far below.
_MS_LO: Final = 631_152_000_000
_MS_HI: Final = 7_258_118_400_000
_S_LO: Final = _MS_LO // 1000
_S_HI: Final = _MS_HI // 1000
_DATETIME_FORMATS: Final = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f")


@dataclass(slots=True)
class FileState:
    """What one chunk's checks must know of the chunks before it in the same file.

    Attributes:
        symbol: The series' symbol a ``symbol`` column must repeat (None: not checked).
        timestamp_text: Whether ``timestamp`` holds datetime text (decided by the first chunk
            with data, so a later chunk cannot switch layouts).
        first_ms_line: The first line with a millisecond timestamp, to name a later line in
            seconds as a mix of units rather than as a file in seconds.
    """

    symbol: str | None = None
    timestamp_text: bool | None = None
    first_ms_line: int | None = None


class _Rows:
    """Maps positions in the parsed frame (blank lines dropped) back to the file's line numbers."""

    def __init__(self, path: Path, original_rows: pl.Series, first_line: int = 2) -> None:
        self.path = path
        self._rows = original_rows
        self._first = first_line

    def line(self, i: int) -> int:
        return int(self._rows[i]) + self._first  # 1-based; row 0 is the chunk's first data line

    def reject(self, reason: str, i: int | None = None) -> ImportRejectedError:
        return ImportRejectedError(self.path, reason, None if i is None else self.line(i))


def _first(mask: pl.Series) -> int:
    return int(mask.arg_true()[0])


def _parse_numbers(at: _Rows, df: pl.DataFrame, name: str, required: bool) -> pl.Series:
    raw = df.get_column(name).str.strip_chars()
    values = raw.cast(pl.Float64, strict=False)
    bad = values.is_null() & raw.is_not_null() & (raw != "")
    if bad.any():
        row = _first(bad)
        raise at.reject(f"column '{name}': {raw[row]!r} is not a number", row)
    if required:
        empty = values.is_null()
        if empty.any():
            raise at.reject(f"column '{name}' is empty", _first(empty))
    return values


def _parse_datetime(raw: pl.Series) -> pl.Series:
    out = pl.Series([None] * raw.len(), dtype=pl.Datetime("us"))
    for fmt in _DATETIME_FORMATS:
        out = out.fill_null(raw.str.strptime(pl.Datetime("us"), fmt, strict=False))
    return out.dt.epoch("ms")


def _parse_times(at: _Rows, df: pl.DataFrame, state: FileState) -> pl.Series:
    """Epoch ms from ``timestamp`` (ms, or an ISO datetime string) and/or ``datetime`` (UTC)."""
    stamp = df.get_column("timestamp").str.strip_chars() if "timestamp" in df.columns else None
    text = df.get_column("datetime").str.strip_chars() if "datetime" in df.columns else None
    ms: pl.Series | None = None
    if stamp is not None:
        numeric = stamp.cast(pl.Float64, strict=False)
        if state.timestamp_text is None:
            state.timestamp_text = bool(numeric.is_null().all() and stamp.is_not_null().any())
        if state.timestamp_text:
            # A foreign layout: ``timestamp`` holds datetime text.
            ms = _parse_datetime(stamp)
            bad = ms.is_null()
            if bad.any():
                row = _first(bad)
                raise at.reject(f"column 'timestamp': cannot read {stamp[row]!r} as a time", row)
        else:
            bad = numeric.is_null() | (numeric != numeric.floor())
            if bad.any():
                row = _first(bad)
                raise at.reject(
                    f"column 'timestamp': {stamp[row]!r} is not integer milliseconds", row
                )
            # Range checks on the floats first: a huge value must not overflow the int cast.
            is_ms = (numeric >= _MS_LO) & (numeric <= _MS_HI)
            is_s = (numeric >= _S_LO) & (numeric <= _S_HI)
            if (~is_ms).any():
                row = _first(~is_ms)
                ms_line = at.line(_first(is_ms)) if is_ms.any() else None
                if state.first_ms_line is not None:  # an earlier chunk had milliseconds
                    ms_line = state.first_ms_line
                if is_s[row] and ms_line is not None:
                    raise at.reject(
                        f"mixed time units: line {at.line(row)} has seconds ({stamp[row]}) "
                        f"while line {ms_line} has milliseconds",
                        row,
                    )
                if is_s[row]:
                    raise at.reject(
                        f"timestamps are in seconds ({stamp[row]}); the format is epoch milliseconds",
                        row,
                    )
                raise at.reject(
                    f"timestamp {stamp[row]} is not epoch milliseconds between 1990 and 2200", row
                )
            ms = numeric.cast(pl.Int64)
            if state.first_ms_line is None and ms.len():
                state.first_ms_line = at.line(0)
    if text is not None:
        from_text = _parse_datetime(text)
        bad = from_text.is_null()
        if bad.any():
            row = _first(bad)
            raise at.reject(
                f"column 'datetime': cannot read {text[row]!r} as YYYY-MM-DD HH:MM:SS", row
            )
        if ms is None:
            ms = from_text
        else:
            # The old writer derived datetime from timestamp (to the second, UTC); disagreement
            # means a unit or time-zone mix-up, which must not be imported silently.
            off = (ms - ms % 1000) != (from_text - from_text % 1000)
            if off.any():
                row = _first(off)
                raise at.reject(
                    f"datetime {text[row]!r} disagrees with timestamp "
                    f"{stamp[row] if stamp is not None else ''} "
                    "(datetime must be the UTC time of timestamp)",
                    row,
                )
    if ms is None:
        raise at.reject("missing column: timestamp (or datetime)")
    return ms


def _raw_header(data: bytes) -> list[str]:
    """The header's names as written (BOM removed), read with the csv module."""
    first = data.split(b"\n", 1)[0].decode("utf-8", errors="replace").lstrip("\ufeff")
    return next(_csv_module.reader([first.rstrip("\r")]), [])


def read_input(p: Path, data: bytes | None) -> bytes:
    if data is not None:
        return data
    with open_regular(p) as fh:  # a FIFO or device is refused, never read
        try:
            if os.fstat(fh.fileno()).st_size > _MAX_FILE_BYTES:
                raise ImportRejectedError(p, f"file is larger than {_MAX_FILE_BYTES >> 30} GiB")
            return fh.read()
        except OSError as exc:
            raise ImportRejectedError(p, f"cannot read: {exc.strerror or exc}") from None


def check_nul(p: Path, data: bytes, first_line: int) -> None:
    nul = data.find(b"\x00")
    if nul >= 0:  # data starts with the header line, line first_line - 1
        raise ImportRejectedError(
            p, "contains a NUL byte (binary or corrupt file)", first_line - 1 + data.count(b"\n", 0, nul)
        )


def check_header(p: Path, data: bytes) -> list[str]:
    """Reject what is wrong with the start of the file; return the header names as written.

    Args:
        p: The file, for errors.
        data: The file's first chunk (the header line and what follows), NUL-checked.
    """
    if not data or data.isspace():  # (no copy of a large buffer, unlike data.strip())
        raise ImportRejectedError(p, "file is empty (a header line is required)")
    raw = _raw_header(data)
    names = [n.strip().lower() for n in raw]
    # Polars renames repeated header names (``open_duplicated_0``): check them ourselves.
    if len(set(names)) != len(names):
        raise ImportRejectedError(p, f"duplicate column names in header {names}", 1)
    if [c for c in names if c.replace(".", "", 1).lstrip("-").isdigit()]:
        raise ImportRejectedError(p, "the first line is data, not a header (a header line is required)", 1)
    missing = [c for c in PRICE_COLUMNS if c not in names]
    if "timestamp" not in names and "datetime" not in names:
        missing.insert(0, "timestamp")
    if missing:
        raise ImportRejectedError(
            p, f"missing column(s) {', '.join(missing)}; header is {', '.join(names)}", 1
        )
    return raw


def parse_chunk(p: Path, data: bytes, raw: list[str], first_line: int, state: FileState) -> pl.DataFrame:
    """Parse and validate one chunk (the header line + whole data lines starting at file line
    ``first_line``), NUL-checked by the caller.

    A typed read handles a clean chunk in one pass; anything unexpected sends the chunk through a
    second, string-by-string read whose only job is to name the first bad line precisely.
    """
    fast = _parse_typed(data, raw, first_line, state)
    return fast if fast is not None else parse_checked(p, data, first_line, state)


def _parse_typed(data: bytes, raw: list[str], first_line: int, state: FileState) -> pl.DataFrame | None:
    """The common case: a clean chunk read with its final types. None when anything is off."""
    wanted = {"timestamp": pl.Int64(), "datetime": pl.String()}
    wanted.update({c: pl.Float64() for c in (*PRICE_COLUMNS, *_OPTIONAL_COLUMNS)})
    overrides = {name: wanted.get(name.strip().lower(), pl.String()) for name in raw}
    if state.timestamp_text:  # the foreign layout: only the checked read parses it
        return None
    try:
        df = pl.read_csv(data, has_header=True, schema=overrides, encoding="utf8", infer_schema=False)
    except Exception:  # any failure at all: let the checked path explain it
        return None
    df = df.rename({c: c.strip().lower() for c in df.columns})
    blank = df.select(pl.all_horizontal(pl.all().is_null())).to_series()
    first_row = _first(~blank) if blank.any() and not blank.all() else 0  # for first_ms_line
    if blank.any():
        df = df.filter(~blank)
    if df.is_empty():
        return _empty_frame("turnover" in df.columns)
    numbers = [c for c in (*PRICE_COLUMNS, *_OPTIONAL_COLUMNS) if c in df.columns]
    if df.select(pl.any_horizontal(pl.col(*PRICE_COLUMNS).is_null().any())).item():
        return None
    # A field thousands of digits long parses as inf: non-finite values (rare in clean files)
    # go through the checked path, which rejects absurd fields and keeps a literal "inf".
    if not df.select(pl.all_horizontal(pl.col(*numbers).is_finite().all())).item():
        return None
    if state.symbol is not None and "symbol" in df.columns and _symbol_mismatch(df, state.symbol).any():
        return None
    ms: pl.Series | None = None
    if "timestamp" in df.columns:
        ms = df.get_column("timestamp")
        if ms.null_count() or ((ms < _MS_LO) | (ms > _MS_HI)).any():
            return None
    if "datetime" in df.columns:
        text = df.get_column("datetime").str.strip_chars()
        parsed = text.str.strptime(pl.Datetime("ms"), _DATETIME_FORMATS[0], strict=False)
        if parsed.null_count():
            return None
        from_text = parsed.dt.epoch("ms")
        if ms is None:
            ms = from_text
        elif ((ms - ms % 1000) != from_text).any():
            return None
    assert ms is not None
    if "timestamp" in df.columns:
        state.timestamp_text = False
        if state.first_ms_line is None:
            state.first_ms_line = first_line + first_row
    out = {"ts": ms, **{c: df.get_column(c) for c in PRICE_COLUMNS}}
    if "turnover" in df.columns:
        out["turnover"] = df.get_column("turnover")
    return pl.DataFrame(out)


def _empty_frame(with_turnover: bool) -> pl.DataFrame:
    cols = ["ts", *PRICE_COLUMNS, *(["turnover"] if with_turnover else [])]
    return pl.DataFrame(schema={c: pl.Int64 if c == "ts" else pl.Float64 for c in cols})


def _symbol_mismatch(df: pl.DataFrame, symbol: str) -> pl.Series:
    # Case-insensitive: a lower-case name from another tool is still the same market.
    return df.get_column("symbol").str.strip_chars().str.to_uppercase().ne_missing(symbol)


def parse_checked(p: Path, data: bytes, first_line: int = 2, state: FileState | None = None) -> pl.DataFrame:
    """Read every field as text and check it, naming the first bad line; slow but exact."""
    state = state if state is not None else FileState()
    try:
        df = pl.read_csv(io.BytesIO(data), infer_schema=False, has_header=True, encoding="utf8")
    except (
        pl.exceptions.ComputeError,
        pl.exceptions.NoDataError,
        pl.exceptions.DuplicateError,
    ) as exc:
        raise ImportRejectedError(p, f"not a well-formed CSV: {str(exc).splitlines()[0]}") from None
    df = df.rename({c: c.strip().lower() for c in df.columns})
    # Blank lines (common at the end of spreadsheet exports) read as all-null rows.
    df = df.with_row_index("__row").filter(~pl.all_horizontal(pl.exclude("__row").is_null()))
    rows = df.get_column("__row")
    at = _Rows(p, rows, first_line)
    lengths = df.select(pl.exclude("__row").str.len_bytes().max()).row(0)
    for name, longest in zip([c for c in df.columns if c != "__row"], lengths):
        if longest is not None and longest > _MAX_FIELD_BYTES:
            i = _first(df.get_column(name).str.len_bytes() > _MAX_FIELD_BYTES)
            raise at.reject(f"column '{name}' holds a field of {longest} bytes (corrupt file?)", i)
    if state.symbol is not None and "symbol" in df.columns:
        bad = _symbol_mismatch(df, state.symbol)
        if bad.any():
            i = _first(bad)
            raise at.reject(
                f"column 'symbol' says {df.get_column('symbol')[i]!r} but the file is for {state.symbol} "
                "(one file holds one symbol: split it, or pass the right --symbol)",
                i,
            )
    # (an empty chunk must not decide the file's timestamp layout)
    out = {"ts": _parse_times(at, df, state)} if df.height else {"ts": pl.Series("ts", [], pl.Int64)}
    for name in PRICE_COLUMNS:
        out[name] = _parse_numbers(at, df, name, required=True)
    if "turnover" in df.columns:
        out["turnover"] = _parse_numbers(at, df, "turnover", required=False)
    return pl.DataFrame(out)


