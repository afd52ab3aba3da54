"""Per-file statistics (rows, first/last ts) from Parquet footers, cached in ``_meta/filestats.sqlite``.

Data files are immutable and their names are never reused, so a cached entry keyed by relative
path and size can never go stale. The cache only saves re-reading footers; deleting it is harmless.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from marketlake._sqlite import open_wal
import pyarrow.parquet as pq

from marketlake.store.layout import CANDLES, META_DIR, SeriesId
from marketlake.store.reader import PartitionFiles

__all__ = ["FileStats", "series_table"]


@dataclass(frozen=True, slots=True)
class FileStats:
    """What the footer says about one data file (``first``/``last`` in epoch ms)."""

    size: int
    rows: int
    first: int | None
    last: int | None


def _footer_stats(path: Path, size: int, dataset: str) -> FileStats:
    meta = pq.ParquetFile(path).metadata
    lo: int | None = None
    hi: int | None = None
    for i in range(meta.num_row_groups):
        stats = meta.row_group(i).column(0).statistics
        if stats is not None and stats.has_min_max:
            lo = stats.min_raw if lo is None else min(lo, stats.min_raw)
            hi = stats.max_raw if hi is None else max(hi, stats.max_raw)
    div = 1 if dataset == CANDLES else 1000  # trades store microseconds
    return FileStats(
        size=size,
        rows=meta.num_rows,
        first=None if lo is None else int(lo) // div,
        last=None if hi is None else int(hi) // div,
    )


class _Cache:
    def __init__(self, root: Path) -> None:
        self._db: sqlite3.Connection | None = None
        path = root / META_DIR / "filestats.sqlite"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = open_wal(
                path,
                timeout_s=10,
                script="CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER,"
                " rows INTEGER, first INTEGER, last INTEGER);",
            )
        except (OSError, sqlite3.Error):
            self._db = None  # a read-only lake: work without the cache
        self._known: dict[str, FileStats] = {}
        if self._db is not None:
            for p, size, rows, first, last in self._db.execute("SELECT * FROM files"):
                self._known[p] = FileStats(size, rows, first, last)
        self._fresh: list[tuple[str, FileStats]] = []

    def get(self, rel: str, size: int) -> FileStats | None:
        hit = self._known.get(rel)
        return hit if hit is not None and hit.size == size else None

    def put(self, rel: str, stats: FileStats) -> None:
        self._fresh.append((rel, stats))

    def close(self) -> None:
        if self._db is None:
            return
        with contextlib.suppress(sqlite3.Error):
            with self._db:  # (autocommit connection: this block is one explicit transaction)
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(
                    "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?)",
                    [(p, s.size, s.rows, s.first, s.last) for p, s in self._fresh],
                )
        self._db.close()


def file_stats(root: Path, parts: Iterable[PartitionFiles]) -> dict[Path, FileStats]:
    """Footer statistics of every file of ``parts`` (cached across calls and processes)."""
    cache = _Cache(root)
    out: dict[Path, FileStats] = {}
    try:
        for part in parts:
            for path in part.files:
                try:
                    size = os.stat(path).st_size
                except FileNotFoundError:
                    continue  # moved to the trash by a concurrent writer since the listing
                rel = str(path.relative_to(root))
                stats = cache.get(rel, size)
                if stats is None:
                    stats = _footer_stats(path, size, part.series.dataset)
                    cache.put(rel, stats)
                out[path] = stats
    finally:
        cache.close()
    return out


SERIES_SCHEMA = {
    "dataset": pl.String(),
    "exchange": pl.String(),
    "category": pl.String(),
    "symbol": pl.String(),
    "timeframe": pl.String(),
    "first_ts": pl.Datetime("ms", "UTC"),
    "last_ts": pl.Datetime("ms", "UTC"),
    "rows": pl.Int64(),
    "partitions": pl.Int64(),
    "files": pl.Int64(),
    "bytes": pl.Int64(),
}


def series_table(root: Path, parts: list[PartitionFiles]) -> pl.DataFrame:
    """One row per series in ``parts``: first/last ts, rows, partitions, files and bytes."""
    stats = file_stats(root, parts)
    acc: dict[SeriesId, list] = {}
    for part in parts:
        row = acc.setdefault(part.series, [None, None, 0, 0, 0, 0])
        counted = False
        for path in part.files:
            st = stats.get(path)
            if st is None:
                continue
            counted = True
            if st.first is not None:
                row[0] = st.first if row[0] is None else min(row[0], st.first)
                row[1] = st.last if row[1] is None else max(row[1], st.last)
            row[2] += st.rows
            row[4] += 1
            row[5] += st.size
        row[3] += int(counted)
    records = [
        {
            "dataset": sid.dataset,
            "exchange": sid.exchange,
            "category": sid.category,
            "symbol": sid.symbol,
            "timeframe": sid.timeframe.name if sid.timeframe else None,
            "first_ts": first,
            "last_ts": last,
            "rows": rows,
            "partitions": nparts,
            "files": nfiles,
            "bytes": nbytes,
        }
        for sid, (first, last, rows, nparts, nfiles, nbytes) in acc.items()
    ]
    if not records:
        return pl.DataFrame(schema=SERIES_SCHEMA)
    df = pl.DataFrame(
        records,
        schema_overrides={"first_ts": pl.Int64(), "last_ts": pl.Int64()},
    )
    return df.with_columns(
        pl.col("first_ts").cast(pl.Datetime("ms", "UTC")),
        pl.col("last_ts").cast(pl.Datetime("ms", "UTC")),
    ).select(list(SERIES_SCHEMA))
