"""CSV import and export in the old per-symbol format (``{SYMBOL}_{TF}.csv``).

The old files have a header and the columns ``timestamp`` (epoch ms), ``datetime``
(``YYYY-MM-DD HH:MM:SS`` UTC), ``open``, ``high``, ``low``, ``close``, ``volume`` and optionally
``turnover``, in any order. Import is all-or-nothing per file: a malformed file is rejected with
its path and the first bad line named, nothing of it is stored, and the other files still import.
Spreadsheet habits (a UTF-8 BOM, CRLF line ends, blank lines) are accepted. A ``symbol`` column,
if present, must name the file's symbol on every line (a file holds one series).

Import streams each file in line-aligned chunks (:mod:`marketlake.interop._csv_stream`): a reader
thread parses and validates chunk n+1 while the lake merges chunk n, and the lake commits the file
as one transaction only after the last chunk passed, so memory stays a few chunks for any file size
and a bad last line still stores nothing.

Export writes the same format back, chronological, one file per symbol/timeframe, with Python's
shortest round-trip float formatting, so export → import reproduces the lake exactly.

Export also writes the perpetual datasets (``data``), one chronological file per series with a
header, ``timestamp`` (epoch ms) and ``datetime`` first, values with the same shortest round-trip
formatting:

===========================  ==========================================================
file                         columns after timestamp, datetime
===========================  ==========================================================
``{SYMBOL}_funding.csv``     rate, interval_minutes (``timestamp``: the settlement time)
``{SYMBOL}_{TF}_mark.csv``   open, high, low, close (also ``_index``, ``_premium``)
``{SYMBOL}_oi_{interval}``   open_interest (interval as Bybit names it: ``5min`` ... ``1d``)
===========================  ==========================================================
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import polars as pl

from marketlake.core.symbols import validate_symbol
from marketlake.core.timeframes import Timeframe, parse_timeframe
from marketlake.core.timeutil import TimeLike
from marketlake.errors import DataValidationError, ImportRejectedError
from marketlake.interop._csv_parse import (
    PRICE_COLUMNS,
    FileState,
    check_header,
    check_nul,
    parse_checked,
    parse_chunk,
    read_input,
)
from marketlake.interop._csv_stream import DistinctTimes, background, read_chunks
from marketlake.store import Lake, WriteResult

__all__ = [
    "CsvImport",
    "ImportReport",
    "export_csv",
    "import_csv",
    "parse_old_csv",
    "series_from_filename",
    "perp_file_name",
]

_parse_checked = parse_checked  # the exact (slow) path, compared with the fast one in tests
_IMPORT_THREADS: Final = max(1, min(4, os.cpu_count() or 1))


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


def parse_old_csv(path: str | Path, data: bytes | None = None, *, symbol: str | None = None) -> pl.DataFrame:
    """Parse one old-format CSV file into a candle frame (``ts`` epoch ms, open ... turnover).

    The whole file is held in memory (the old API's contract); :func:`import_csv` streams instead.

    Args:
        path: The file (named in errors; read unless ``data`` is given).
        data: The file's bytes, if already read.
        symbol: If given, a ``symbol`` column must hold it on every line.

    Raises:
        ImportRejectedError: anything malformed, naming the line.
    """
    p = Path(path)
    data = read_input(p, data)
    check_nul(p, data, 2)
    raw = check_header(p, data)
    return parse_chunk(p, data, raw, 2, FileState(symbol=symbol))


def _csv_files(paths: Iterable[str | Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        p = Path(path)
        if p.is_dir():
            files.extend(
                sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() == ".csv")
            )
        else:
            files.append(p)  # a FIFO or device is refused when it is opened (open_regular)
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

    Symbol and timeframe come from each file name (``BTCUSDT_5.csv``) unless given; a ``symbol``
    column in the file must agree with that symbol on every line. Within a file, a repeated
    timestamp keeps its last row (the count is reported). Re-importing changes nothing. Each file
    is streamed in chunks and committed as one transaction: memory does not grow with file size,
    and a file with a bad line anywhere stores nothing.

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


@dataclass(slots=True)
class _Pass:
    """Counts of one pass over a file (the lake may replay the file after a concurrent write)."""

    rows: int = 0
    times: DistinctTimes = field(default_factory=DistinctTimes)


def _frames(path: Path, symbol: str, counts: _Pass) -> Iterator[pl.DataFrame]:
    """The file's rows as validated candle frames, one per chunk; raises at the first bad line,
    before yielding anything of its chunk."""
    state = FileState(symbol=symbol)
    raw: list[str] = []
    for chunk in read_chunks(path):
        check_nul(path, chunk.data, chunk.first_line)
        if chunk.index == 0:
            raw = check_header(path, chunk.data)
        frame = parse_chunk(path, chunk.data, raw, chunk.first_line, state)
        del chunk  # the bytes go before the frame is handed on
        if frame.height:
            counts.rows += frame.height
            counts.times.add(frame.get_column("ts").to_numpy())
            yield frame


def _import_one(
    lake: Lake, path: Path, sym: str, tf: str, exchange: str | None, category: str | None
) -> CsvImport | ImportRejectedError:
    passes: list[_Pass] = []

    def chunks() -> Iterator[pl.DataFrame]:
        # Called again to replay the file if a concurrent writer forced a re-plan: reopen it.
        passes.append(_Pass())
        return background(lambda: _frames(path, sym, passes[-1]))

    try:
        result = lake.write_candles_chunks(
            chunks, symbol=sym, timeframe=tf, exchange=exchange, category=category
        )
    except ImportRejectedError as exc:
        return exc
    except DataValidationError as exc:
        return ImportRejectedError(path, str(exc))
    done = passes[-1] if passes else _Pass()
    return CsvImport(str(path), sym, tf, done.rows, done.times.repeated, result)


def _format(frame: pl.DataFrame, with_turnover: bool) -> pl.DataFrame:
    cols = [
        pl.col("ts").dt.epoch("ms").alias("timestamp"),
        pl.col("ts").dt.strftime("%Y-%m-%d %H:%M:%S").alias("datetime"),
        *(pl.col(c) for c in PRICE_COLUMNS),
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
    data: str | Sequence[str] | None = None,
) -> list[Path]:
    """Write ``{SYMBOL}_{TF}.csv`` files of the lake's candles into ``directory``, and the
    perpetual datasets' files (see the module docstring) for the kinds in ``data``.

    Each file is chronological, with ``turnover`` when the series has any. Files are written
    atomically (temp file + rename), replacing existing ones of the same name.

    Args:
        data: ``klines`` (the default), ``funding``, ``mark``, ``index``, ``premium``, ``oi``,
            comma-separated or a list, or ``all``. ``timeframes`` filters candles and price
            candles (and open interest, by its timeframe name: ``5`` for ``5min``).

    Returns:
        The files written.
    """
    from marketlake.quality.perp import KIND_DATASET, parse_data

    kinds = parse_data(data, allowed=("klines", "funding", "mark", "index", "premium", "oi"), default=("klines",))
    out_dir = Path(directory)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if "klines" in kinds:
        frame = lake.read_candles(symbols, timeframes, start, end, exchange=exchange, category=category)
        for (sym, tf), part in frame.group_by(["symbol", "timeframe"], maintain_order=True):
            part = part.sort("ts")
            with_turnover = part.get_column("turnover").null_count() < part.height
            target = out_dir / f"{sym}_{tf}.csv"
            _write_atomically(_format(part, with_turnover), target)
            written.append(target)
    for kind in kinds:
        if kind == "klines":
            continue
        dataset = KIND_DATASET[kind]
        tfs = timeframes if kind != "funding" else None
        frame = lake.read(dataset, symbols, tfs, start, end, exchange=exchange, category=category)
        keys = ["symbol", "timeframe"] if "timeframe" in frame.columns else ["symbol"]
        for key, part in frame.group_by(keys, maintain_order=True):
            target = out_dir / perp_file_name(kind, str(key[0]), None if len(key) == 1 else str(key[1]))
            values = [c for c in part.columns if c not in ("symbol", "timeframe", "ts")]
            _write_atomically(part.sort("ts").select(
                pl.col("ts").dt.epoch("ms").alias("timestamp"),
                pl.col("ts").dt.strftime("%Y-%m-%d %H:%M:%S").alias("datetime"),
                *values,
            ), target)
            written.append(target)
    return written


def perp_file_name(kind: str, symbol: str, timeframe: str | None) -> str:
    """``BTCUSDT_funding.csv``, ``BTCUSDT_1_mark.csv``, ``BTCUSDT_oi_5min.csv`` ..."""
    from marketlake.store.perp import OI_INTERVALS

    if kind == "funding":
        return f"{symbol}_funding.csv"
    if kind == "oi":
        interval = {v: k for k, v in OI_INTERVALS.items()}[str(timeframe)]
        return f"{symbol}_oi_{interval}.csv"
    return f"{symbol}_{timeframe}_{kind}.csv"


def _write_atomically(frame: pl.DataFrame, target: Path) -> None:
    tmp = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        frame.write_csv(tmp, float_scientific=None)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
