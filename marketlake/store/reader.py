"""Reading the lake: from a request to the exact list of live files, then to Polars or DuckDB.

Readers never glob the whole lake. A request (symbols, timeframes, time range) becomes a walk of a
few directories: the series directories asked for, then only the ``date=`` partitions that overlap
the range, then each partition's live files (the highest ``part`` and the deltas after it).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import polars as pl

from marketlake.core.schemas import CANDLE_DEFAULTS, CANDLE_SCHEMA, TRADE_SCHEMA
from marketlake.core.symbols import validate_category, validate_exchange, validate_symbol
from marketlake.core.timeframes import TIMEFRAMES, Timeframe, parse_timeframe
from marketlake.core.timeutil import ms_to_datetime
from marketlake.store.files import list_data_files
from marketlake.store.layout import CANDLES, TRADES, SeriesId, live_files

__all__ = ["PartitionFiles", "find_series", "plan_files", "scan_data_files", "scan_files", "subdir_values"]

_MIN_MS: Final = -(2**62)
_MAX_MS: Final = 2**62


@dataclass(frozen=True, slots=True)
class PartitionFiles:
    """The live files of one partition of one series."""

    series: SeriesId
    key: str
    files: tuple[Path, ...]


def subdir_values(path: Path, prefix: str) -> list[str]:
    """Values of ``prefix=value`` sub-directories of ``path`` (sorted), [] if it does not exist."""
    try:
        with os.scandir(path) as it:
            return sorted(
                e.name[len(prefix) + 1:]
                for e in it
                if e.name.startswith(prefix + "=") and e.is_dir(follow_symlinks=False)
            )
    except (FileNotFoundError, NotADirectoryError):
        return []


def find_series(
    root: Path,
    dataset: str,
    *,
    exchange: str,
    category: str,
    symbols: Sequence[str] | None = None,
    timeframes: Sequence[str | int | Timeframe] | None = None,
) -> list[SeriesId]:
    """The stored series matching a request, in (symbol, timeframe) order.

    Names given are validated (so a bad one raises instead of matching nothing); stored directory
    names that are not valid names are skipped, never turned into paths.
    """
    validate_exchange(exchange)
    validate_category(category)
    base = root / dataset / f"exchange={exchange}" / f"category={category}"
    if symbols is None:
        syms = [s for s in subdir_values(base, "symbol") if _valid_symbol(s)]
    else:
        syms = [validate_symbol(s) for s in symbols]
    wanted_tfs = None if timeframes is None else [parse_timeframe(t) for t in timeframes]
    out: list[SeriesId] = []
    order = {name: i for i, name in enumerate(TIMEFRAMES)}
    for sym in syms:
        if dataset == TRADES:
            if (base / f"symbol={sym}").is_dir():
                out.append(SeriesId(TRADES, exchange, category, sym, None))
            continue
        stored = [t for t in subdir_values(base / f"symbol={sym}", "timeframe") if t in TIMEFRAMES]
        tfs = stored if wanted_tfs is None else [t.name for t in wanted_tfs if t.name in stored]
        for name in sorted(tfs, key=order.__getitem__):
            out.append(SeriesId(CANDLES, exchange, category, sym, TIMEFRAMES[name]))
    return out


def _valid_symbol(name: str) -> bool:
    try:
        validate_symbol(name)
    except ValueError:
        return False
    return True


def plan_files(
    root: Path, series: Iterable[SeriesId], start_ms: int | None, end_ms: int | None
) -> list[PartitionFiles]:
    """Live files of every partition of ``series`` overlapping ``[start_ms, end_ms)``."""
    lo = _MIN_MS if start_ms is None else start_ms
    hi = _MAX_MS if end_ms is None else end_ms
    out: list[PartitionFiles] = []
    if hi <= lo:
        return out
    for sid in series:
        sdir = sid.directory(root)
        for key in subdir_values(sdir, "date"):
            try:
                p_lo, p_hi = sid.period.bounds(key)
            except ValueError:
                continue  # not a partition of ours; fsck reports it
            if p_hi <= lo or p_lo >= hi:
                continue
            live = live_files(list_data_files(sdir / f"date={key}"))
            if live:
                out.append(PartitionFiles(sid, key, tuple(f.path for f in live)))
    return out


def _labels(dataset: str) -> dict[str, pl.DataType]:
    if dataset == CANDLES:
        return {"symbol": pl.String(), "timeframe": pl.String()}
    return {"symbol": pl.String()}


def _ts_literal(ms: int, dataset: str) -> pl.Expr:
    # A typed datetime literal (not an epoch expression on the column) keeps the comparison
    # eligible for Parquet row-group pruning by statistics.
    unit = "ms" if dataset == CANDLES else "us"
    return pl.lit(ms_to_datetime(ms), dtype=pl.Datetime(unit, "UTC"))


def scan_data_files(dataset: str, files: Sequence[Path]) -> pl.LazyFrame:
    """Scan data files of one series in the stored schema.

    Files written before an optional column was added read it as its default (schema evolution
    by addition: new columns are nullable or have a default in ``CANDLE_DEFAULTS``).
    """
    schema = CANDLE_SCHEMA if dataset == CANDLES else TRADE_SCHEMA
    lf = pl.scan_parquet(
        list(files), schema=schema, hive_partitioning=False, glob=False,
        missing_columns="insert", extra_columns="ignore",
    )
    if dataset == CANDLES:
        lf = lf.with_columns(pl.col(c).fill_null(v) for c, v in CANDLE_DEFAULTS.items())
    return lf


def scan_files(
    dataset: str, parts: list[PartitionFiles], start_ms: int | None, end_ms: int | None
) -> pl.LazyFrame:
    """One LazyFrame over the given partitions, with ``symbol`` (and ``timeframe``) columns.

    The file list is fixed here: collect the frame promptly. If a writer rewrites one of these
    partitions in between, collecting raises ``FileNotFoundError`` (never returns wrong rows);
    scan again.
    """
    schema_labels = _labels(dataset)
    if not parts:
        return pl.LazyFrame(schema={**schema_labels, **(CANDLE_SCHEMA if dataset == CANDLES else TRADE_SCHEMA)})
    schema = CANDLE_SCHEMA if dataset == CANDLES else TRADE_SCHEMA
    by_series: dict[SeriesId, list[Path]] = {}
    for p in parts:
        by_series.setdefault(p.series, []).extend(p.files)
    frames = []
    for sid, files in by_series.items():
        lf = scan_data_files(dataset, files)
        label = [pl.lit(sid.symbol, dtype=pl.String).alias("symbol")]
        if sid.timeframe is not None:
            label.append(pl.lit(sid.timeframe.name, dtype=pl.String).alias("timeframe"))
        frames.append(lf.select(*label, *schema))
    lf = pl.concat(frames, how="vertical") if len(frames) > 1 else frames[0]
    if start_ms is not None:
        lf = lf.filter(pl.col("ts") >= _ts_literal(start_ms, dataset))
    if end_ms is not None:
        lf = lf.filter(pl.col("ts") < _ts_literal(end_ms, dataset))
    return lf
