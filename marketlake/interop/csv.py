"""CSV import and export in the old per-symbol format (``{SYMBOL}_{TF}.csv``).

The old files have a header and the columns ``timestamp`` (epoch ms), ``datetime``
(``YYYY-MM-DD HH:MM:SS`` UTC), ``open``, ``high``, ``low``, ``close``, ``volume`` and optionally
``turnover``, in any order. Import is all-or-nothing per file: a malformed file is rejected with
its path and the first bad line named, nothing of it is stored, and the other files still import.
Spreadsheet habits (a UTF-8 BOM, CRLF line ends, blank lines) are accepted.

Export writes the same format back, chronological, one file per symbol/timeframe, with Python's
shortest round-trip float formatting, so export → import reproduces the lake exactly.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
import csv as _csv_module
import io
import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import polars as pl

from marketlake.core.symbols import validate_symbol
from marketlake.core.timeframes import Timeframe, parse_timeframe
from marketlake.core.timeutil import TimeLike
from marketlake.errors import DataValidationError, ImportRejectedError
from marketlake.store import Lake, WriteResult

__all__ = [
    "CsvImport",
    "ImportReport",
    "export_csv",
    "import_csv",
    "parse_old_csv",
    "series_from_filename",
]

_PRICE_COLUMNS: Final = ("open", "high", "low", "close", "volume")
_OPTIONAL_COLUMNS: Final = ("turnover",)
_MAX_FIELD_BYTES: Final = 64  # the longest legitimate field is a 26-char datetime
_MAX_FILE_BYTES: Final = 4 << 30
_IMPORT_THREADS: Final = max(1, min(4, os.cpu_count() or 1))
# Epoch ms of 1990-01-01 / 2200-01-01: plausible candle times; seconds fall far below.
_MS_LO: Final = 631_152_000_000
_MS_HI: Final = 7_258_118_400_000
_S_LO: Final = _MS_LO // 1000
_S_HI: Final = _MS_HI // 1000
_DATETIME_FORMATS: Final = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f")


@dataclass(frozen=True, slots=True)
class CsvImport:
    """One imported file."""

    path: str
    symbol: str
    timeframe: str
    rows: int
    duplicates: int
    result: WriteResult


@dataclass(slots=True)
class ImportReport:
    """What :func:`import_csv` did: files imported and files rejected (with why)."""

    imported: list[CsvImport] = field(default_factory=list)
    rejected: list[ImportRejectedError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no file was rejected."""
        return not self.rejected

    def to_dict(self) -> dict:
        """Plain data for ``--json``."""
        return {
            "imported": [
                {
                    "path": i.path,
                    "symbol": i.symbol,
                    "timeframe": i.timeframe,
                    "rows": i.rows,
                    "duplicates_in_file": i.duplicates,
                    "rows_new": i.result.rows_new,
                    "rows_replaced": i.result.rows_replaced,
                    "rows_unchanged": i.result.rows_unchanged,
                }
                for i in self.imported
            ],
            "rejected": [
                {"path": r.path, "line": r.line, "reason": r.reason} for r in self.rejected
            ],
        }


def series_from_filename(path: str | Path) -> tuple[str, Timeframe]:
    """``BTCUSDT_5.csv`` → (``BTCUSDT``, 5m).

    Raises:
        ImportRejectedError: the name is not ``{SYMBOL}_{TF}.csv`` with a valid symbol/timeframe.
    """
    p = Path(path)
    stem, sep, tf = p.stem.rpartition("_")
    if p.suffix.lower() != ".csv" or not sep:
        raise ImportRejectedError(
            p, "file name is not {SYMBOL}_{TIMEFRAME}.csv (or pass symbol/timeframe)"
        )
    try:
        return validate_symbol(stem), parse_timeframe(tf)
    except DataValidationError as exc:
        raise ImportRejectedError(p, f"file name: {exc}") from None


class _Rows:
    """Maps positions in the parsed frame (blank lines dropped) back to the file's line numbers."""

    def __init__(self, path: Path, original_rows: pl.Series) -> None:
        self.path = path
        self._rows = original_rows

    def line(self, i: int) -> int:
        return int(self._rows[i]) + 2  # 1-based, after the header

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


def _parse_times(at: _Rows, df: pl.DataFrame) -> pl.Series:
    """Epoch ms from ``timestamp`` (ms, or an ISO datetime string) and/or ``datetime`` (UTC)."""
    stamp = df.get_column("timestamp").str.strip_chars() if "timestamp" in df.columns else None
    text = df.get_column("datetime").str.strip_chars() if "datetime" in df.columns else None
    ms: pl.Series | None = None
    if stamp is not None:
        numeric = stamp.cast(pl.Float64, strict=False)
        if numeric.is_null().all() and stamp.is_not_null().any():
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
                if is_s.any() and is_ms.any():
                    first_ms = _first(is_ms)
                    raise at.reject(
                        f"mixed time units: line {at.line(row)} has seconds ({stamp[row]}) "
                        f"while line {at.line(first_ms)} has milliseconds",
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
                    f"datetime {text[row]!r} disagrees with timestamp {stamp[row] if stamp is not None else ''} "
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


def _read_input(p: Path, data: bytes | None) -> bytes:
    if data is not None:
        return data
    try:
        if p.stat().st_size > _MAX_FILE_BYTES:
            raise ImportRejectedError(p, f"file is larger than {_MAX_FILE_BYTES >> 30} GiB")
        return p.read_bytes()
    except OSError as exc:
        raise ImportRejectedError(p, f"cannot read: {exc.strerror or exc}") from None


def _check_header(p: Path, data: bytes) -> list[str]:
    """Reject what is wrong with the file as a whole; return the header names as written."""
    nul = data.find(b"\x00")
    if nul >= 0:
        raise ImportRejectedError(
            p, "contains a NUL byte (binary or corrupt file)", data.count(b"\n", 0, nul) + 1
        )
    if not data or data.isspace():  # (no copy of a large buffer, unlike data.strip())
        raise ImportRejectedError(p, "file is empty (a header line is required)")
    raw = _raw_header(data)
    names = [n.strip().lower() for n in raw]
    # Polars renames repeated header names (``open_duplicated_0``): check them ourselves.
    if len(set(names)) != len(names):
        raise ImportRejectedError(p, f"duplicate column names in header {names}", 1)
    if [c for c in names if c.replace(".", "", 1).lstrip("-").isdigit()]:
        raise ImportRejectedError(p, "the first line is data, not a header (a header line is required)", 1)
    missing = [c for c in _PRICE_COLUMNS if c not in names]
    if "timestamp" not in names and "datetime" not in names:
        missing.insert(0, "timestamp")
    if missing:
        raise ImportRejectedError(
            p, f"missing column(s) {', '.join(missing)}; header is {', '.join(names)}", 1
        )
    return raw


def parse_old_csv(path: str | Path, data: bytes | None = None) -> pl.DataFrame:
    """Parse one old-format CSV file into a candle frame (``ts`` epoch ms, open ... turnover).

    A typed read handles a clean file in one pass; anything unexpected sends the file through a
    second, string-by-string read whose only job is to name the first bad line precisely.

    Args:
        path: The file (named in errors; read unless ``data`` is given).
        data: The file's bytes, if already read.

    Raises:
        ImportRejectedError: anything malformed, naming the line.
    """
    p = Path(path)
    data = _read_input(p, data)
    raw = _check_header(p, data)
    fast = _parse_typed(data, raw)
    return fast if fast is not None else _parse_checked(p, data)


def _parse_typed(data: bytes, raw: list[str]) -> pl.DataFrame | None:
    """The common case: a clean file read with its final types. None when anything is off."""
    wanted = {"timestamp": pl.Int64(), "datetime": pl.String()}
    wanted.update({c: pl.Float64() for c in (*_PRICE_COLUMNS, *_OPTIONAL_COLUMNS)})
    overrides = {name: wanted.get(name.strip().lower(), pl.String()) for name in raw}
    try:
        df = pl.read_csv(
            io.BytesIO(data), has_header=True, schema=overrides, encoding="utf8", infer_schema=False
        )
    except Exception:  # any failure at all: let the checked path explain it
        return None
    df = df.rename({c: c.strip().lower() for c in df.columns})
    df = df.filter(~pl.all_horizontal(pl.all().is_null()))  # blank lines
    numbers = [c for c in (*_PRICE_COLUMNS, *_OPTIONAL_COLUMNS) if c in df.columns]
    if df.select(pl.any_horizontal(pl.col(*_PRICE_COLUMNS).is_null().any())).item():
        return None
    # A field thousands of digits long parses as inf: non-finite values (rare in clean files)
    # go through the checked path, which rejects absurd fields and keeps a literal "inf".
    if not df.select(pl.all_horizontal(pl.col(*numbers).is_finite().all())).item():
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
    out = {"ts": ms, **{c: df.get_column(c) for c in _PRICE_COLUMNS}}
    if "turnover" in df.columns:
        out["turnover"] = df.get_column("turnover")
    return pl.DataFrame(out)


def _parse_checked(p: Path, data: bytes) -> pl.DataFrame:
    """Read every field as text and check it, naming the first bad line; slow but exact."""
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
    lengths = df.select(pl.exclude("__row").str.len_bytes().max()).row(0)
    for name, longest in zip([c for c in df.columns if c != "__row"], lengths):
        if longest is not None and longest > _MAX_FIELD_BYTES:
            i = _first(df.get_column(name).str.len_bytes() > _MAX_FIELD_BYTES)
            raise _Rows(p, rows).reject(
                f"column '{name}' holds a field of {longest} bytes (corrupt file?)", i
            )
    at = _Rows(p, rows)
    out = {"ts": _parse_times(at, df)}
    for name in _PRICE_COLUMNS:
        out[name] = _parse_numbers(at, df, name, required=True)
    if "turnover" in df.columns:
        out["turnover"] = _parse_numbers(at, df, "turnover", required=False)
    return pl.DataFrame(out)


def _csv_files(paths: Iterable[str | Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        p = Path(path)
        if p.is_dir():
            files.extend(
                sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() == ".csv")
            )
        else:
            files.append(p)
    return files


def import_csv(
    lake: Lake,
    paths: Iterable[str | Path],
    *,
    symbol: str | None = None,
    timeframe: str | None = None,
    exchange: str | None = None,
    category: str | None = None,
) -> ImportReport:
    """Import old-format CSV files (or every ``*.csv`` of the directories given) into ``lake``.

    Symbol and timeframe come from each file name (``BTCUSDT_5.csv``) unless given. Within a file,
    a repeated timestamp keeps its last row (the count is reported). Re-importing changes nothing.

    Returns:
        An :class:`ImportReport`; rejected files are listed there (nothing of them is stored).
    """
    report = ImportReport()
    # Files of one series import in the order given (the later file wins a shared timestamp);
    # different series import in parallel: parsing and Parquet encoding both release the GIL.
    groups: dict[tuple[str, str], list[Path]] = {}
    outcome: dict[Path, CsvImport | ImportRejectedError] = {}
    files = _csv_files(paths)
    for path in files:
        try:
            if symbol is not None and timeframe is not None:
                sym, tf = validate_symbol(symbol), parse_timeframe(timeframe)
            else:
                sym, tf = series_from_filename(path)
        except ImportRejectedError as exc:
            outcome[path] = exc
            continue
        except DataValidationError as exc:
            outcome[path] = ImportRejectedError(path, str(exc))
            continue
        groups.setdefault((sym, tf.name), []).append(path)

    def import_group(key: tuple[str, str]) -> None:
        sym, tf = key
        for path in groups[key]:
            outcome[path] = _import_one(lake, path, sym, tf, exchange, category)

    with ThreadPoolExecutor(max_workers=max(1, min(len(groups), _IMPORT_THREADS))) as pool:
        list(pool.map(import_group, groups))
    for path in files:
        done = outcome[path]
        if isinstance(done, ImportRejectedError):
            report.rejected.append(done)
        else:
            report.imported.append(done)
    return report


def _import_one(
    lake: Lake, path: Path, sym: str, tf: str, exchange: str | None, category: str | None
) -> CsvImport | ImportRejectedError:
    try:
        frame = parse_old_csv(path)
        dups = frame.height - frame.get_column("ts").n_unique()
        result = lake.write_candles(frame, symbol=sym, timeframe=tf, exchange=exchange, category=category)
    except ImportRejectedError as exc:
        return exc
    except DataValidationError as exc:
        return ImportRejectedError(path, str(exc))
    return CsvImport(str(path), sym, tf, frame.height, dups, result)


def _format(frame: pl.DataFrame, with_turnover: bool) -> pl.DataFrame:
    cols = [
        pl.col("ts").dt.epoch("ms").alias("timestamp"),
        pl.col("ts").dt.strftime("%Y-%m-%d %H:%M:%S").alias("datetime"),
        *(pl.col(c) for c in _PRICE_COLUMNS),
    ]
    if with_turnover:
        cols.append(pl.col("turnover"))
    return frame.select(cols)


def export_csv(
    lake: Lake,
    directory: str | Path,
    *,
    symbols: str | Sequence[str] | None = None,
    timeframes: str | Sequence[str] | None = None,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    exchange: str | None = None,
    category: str | None = None,
) -> list[Path]:
    """Write ``{SYMBOL}_{TF}.csv`` files of the lake's candles into ``directory``.

    Each file is chronological, with ``turnover`` when the series has any. Files are written
    atomically (temp file + rename), replacing existing ones of the same name.

    Returns:
        The files written.
    """
    out_dir = Path(directory)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = lake.read_candles(symbols, timeframes, start, end, exchange=exchange, category=category)
    written: list[Path] = []
    for (sym, tf), part in frame.group_by(["symbol", "timeframe"], maintain_order=True):
        part = part.sort("ts")
        with_turnover = part.get_column("turnover").null_count() < part.height
        target = out_dir / f"{sym}_{tf}.csv"
        tmp = out_dir / f".{target.name}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            _format(part, with_turnover).write_csv(tmp, float_scientific=None)
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        written.append(target)
    return written
