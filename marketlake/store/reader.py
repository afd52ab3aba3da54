"""Reading the lake: from a request to the exact list of files of one table version, then to
Polars or DuckDB.

Readers never glob and never list directories. A request (symbols, timeframes, time range) is
answered from a :class:`~marketlake.store.table.Snapshot`: the series asked for, then only the
partitions that overlap the range, then the files the log references for each. Files of a
version stay on disk until vacuum (the retention), so a plan stays readable while writers commit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import polars as pl

from marketlake.core.symbols import validate_category, validate_exchange, validate_symbol
from marketlake.core.timeframes import TIMEFRAMES, Timeframe, parse_timeframe
from marketlake.core.timeutil import ms_to_datetime
from marketlake.store.datasets import spec
from marketlake.store.layout import SeriesId

if TYPE_CHECKING:
    from marketlake.store.table import Snapshot

__all__ = ["PartitionFiles", "find_series", "plan_files", "scan_data_files", "scan_files"]

_MIN_MS: Final = -(2**62)
_MAX_MS: Final = 2**62


@dataclass(frozen=True, slots=True)
class PartitionFiles:
    """The files of one partition of one series in one table version.

    Attributes:
        series: The series.
        key: The partition key.
        files: Absolute paths or object URLs, in the order they are to be read.
        rows: Each file's row count (from the log).
        first_ms: Each file's first ``ts`` (epoch ms; None without statistics).
        last_ms: Each file's last ``ts``.
        sizes: Each file's size in bytes.
        storage_options: How Polars reaches the files (object store credentials; None locally).
    """

    series: SeriesId
    key: str
    files: tuple[str, ...]
    rows: tuple[int, ...] = ()
    first_ms: tuple[int | None, ...] = ()
    last_ms: tuple[int | None, ...] = ()
    sizes: tuple[int, ...] = ()
    storage_options: dict[str, str] | None = None


def find_series(
    snapshot: Snapshot,
    *,
    exchange: str | None,
    category: str | None,
    symbols: Sequence[str] | None = None,
    timeframes: Sequence[str | int | Timeframe] | None = None,
) -> list[SeriesId]:
    """The stored series of ``snapshot`` matching a request, in (symbol, timeframe) order.

    Names given are validated (so a bad one raises instead of matching nothing). ``exchange`` or
    ``category`` None matches every stored one.
    """
    if exchange is not None:
        validate_exchange(exchange)
    if category is not None:
        validate_category(category)
    syms = None if symbols is None else {validate_symbol(s) for s in symbols}
    tfs = None if timeframes is None else {parse_timeframe(t).name for t in timeframes}
    order = {name: i for i, name in enumerate(TIMEFRAMES)}
    has_tf = spec(snapshot.dataset).has_timeframe
    if exchange is not None and category is not None and syms is not None and (tfs is not None or not has_tf):
        # Every part named: look the few series up directly instead of listing all of them.
        wanted = [
            SeriesId(snapshot.dataset, exchange, category, sym, TIMEFRAMES[tf] if has_tf else None)
            for sym in sorted(syms) for tf in (sorted(tfs, key=order.__getitem__) if has_tf and tfs else [None])
        ]
        return [sid for sid in wanted if snapshot.partitions(sid)]
    out = [
        sid for sid in snapshot.series_ids()
        if (exchange is None or sid.exchange == exchange)
        and (category is None or sid.category == category)
        and (syms is None or sid.symbol in syms)
        and (tfs is None or sid.timeframe is None or sid.timeframe.name in tfs)
    ]
    return sorted(out, key=lambda s: (s.exchange, s.category, s.symbol,
                                      order.get(s.timeframe.name, 0) if s.timeframe else 0))


def plan_files(
    snapshot: Snapshot, series: Iterable[SeriesId], start_ms: int | None, end_ms: int | None
) -> list[PartitionFiles]:
    """Files of every partition of ``series`` overlapping ``[start_ms, end_ms)``."""
    lo = _MIN_MS if start_ms is None else start_ms
    hi = _MAX_MS if end_ms is None else end_ms
    out: list[PartitionFiles] = []
    if hi <= lo:
        return out
    storage = snapshot.storage
    base = storage.uri(snapshot.dataset)
    options = storage.polars_options()
    for sid in series:
        for key, files in snapshot.partitions(sid).items():
            p_lo, p_hi = sid.period.bounds(key)
            if p_hi <= lo or p_lo >= hi:
                continue
            out.append(PartitionFiles(
                sid, key, tuple(f"{base}/{f.path}" for f in files), tuple(f.rows for f in files),
                tuple(f.first_ms for f in files), tuple(f.last_ms for f in files),
                tuple(f.size for f in files), options,
            ))
    return out


def _labels(dataset: str) -> dict[str, pl.DataType]:
    if spec(dataset).has_timeframe:
        return {"symbol": pl.String(), "timeframe": pl.String()}
    return {"symbol": pl.String()}


def _ts_literal(ms: int, dataset: str) -> pl.Expr:
    # A typed datetime literal (not an epoch expression on the column) keeps the comparison
    # eligible for Parquet row-group pruning by statistics.
    unit = spec(dataset).ts_unit
    return pl.lit(ms_to_datetime(ms), dtype=pl.Datetime(unit, "UTC"))


def scan_data_files(
    dataset: str, files: Sequence[str | Path], storage_options: dict[str, str] | None = None
) -> pl.LazyFrame:
    """Scan data files of one series in the stored schema (``storage_options`` for files on an
    object store).

    Files written before an optional column was added read it as its default (schema evolution
    by addition: new columns are nullable or have a default in the dataset's spec).
    """
    ds = spec(dataset)
    lf = pl.scan_parquet(
        [str(f) for f in files], schema=ds.schema, hive_partitioning=False, glob=False,
        missing_columns="insert", extra_columns="ignore", storage_options=storage_options,
    )
    if ds.defaults:
        lf = lf.with_columns(pl.col(c).fill_null(v) for c, v in ds.defaults.items())
    return lf


def scan_files(
    dataset: str, parts: list[PartitionFiles], start_ms: int | None, end_ms: int | None
) -> pl.LazyFrame:
    """One LazyFrame over the given partitions, with ``symbol`` (and ``timeframe``) columns.

    The file list is one table version's: the files stay readable for the vacuum retention
    after a writer replaces them.
    """
    schema_labels = _labels(dataset)
    if not parts:
        return pl.LazyFrame(schema={**schema_labels, **spec(dataset).schema})
    schema = spec(dataset).schema
    by_series: dict[SeriesId, list[str]] = {}
    for p in parts:
        by_series.setdefault(p.series, []).extend(p.files)
    options = parts[0].storage_options
    frames = []
    for sid, files in by_series.items():
        lf = scan_data_files(dataset, files, options)
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
