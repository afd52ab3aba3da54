"""Memory: what the machine has, what the process uses, and what a request will need.

A request's size is estimated before anything is read, from the Parquet footers of the files the
request would open (row counts and first/last ``ts``, cached by the store in
``_meta/filestats.sqlite``) times the in-memory width of a candle row. For a file only partly
inside the requested range, the rows are capped by how many candle periods of the timeframe the
overlap spans, which is exact for dense data and an upper bound otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import polars as pl

from marketlake.core.schemas import CANDLE_SCHEMA
from marketlake.store.reader import PartitionFiles

__all__ = [
    "LABEL_BYTES",
    "ROW_BYTES",
    "SystemMemory",
    "estimate_rows",
    "system_memory",
]

_NULLABLE: Final = frozenset({"turnover", "trades", "buy_volume"})


_WIDTH: Final[dict[type[pl.DataType], float]] = {
    pl.Datetime: 8, pl.Float64: 8, pl.Int64: 8, pl.Boolean: 1 / 8,  # booleans are bit-packed
}


def _row_bytes(schema: dict[str, pl.DataType]) -> float:
    """Bytes one row takes in a Polars frame of ``schema`` (values plus validity bitmaps)."""
    total = 0.0
    for name, dtype in schema.items():
        total += _WIDTH[dtype.base_type()]
        if name in _NULLABLE:
            total += 1 / 8  # validity bitmap
    return total


#: In-memory bytes of one stored candle row (ts, 6 floats, trades, buy_volume, filled): ~72.5.
ROW_BYTES: Final[float] = _row_bytes(CANDLE_SCHEMA)
#: Extra bytes per row of the ``symbol`` and ``timeframe`` String columns of multi-series frames
#: (Polars string views: 16 bytes each, short names inline).
LABEL_BYTES: Final = 32


@dataclass(frozen=True, slots=True)
class SystemMemory:
    """A snapshot of memory figures, bytes (``percent``: share of total in use, 0-100)."""

    total: int
    available: int
    percent: float
    rss: int


def system_memory() -> SystemMemory:
    """Total/available system memory and this process's RSS.

    Uses psutil when it is installed; otherwise reads ``/proc`` (Linux), so the feeder works
    without it.
    """
    try:
        import psutil
    except ImportError:
        return _proc_memory()
    vm = psutil.virtual_memory()
    return SystemMemory(int(vm.total), int(vm.available), float(vm.percent), int(psutil.Process().memory_info().rss))


def _proc_memory() -> SystemMemory:
    info: dict[str, int] = {}
    with open("/proc/meminfo") as fh:
        for line in fh:
            name, _, rest = line.partition(":")
            info[name] = int(rest.split()[0]) * 1024
    total = info["MemTotal"]
    available = info.get("MemAvailable", info.get("MemFree", 0))
    rss = 0
    with open("/proc/self/statm") as fh:
        rss = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return SystemMemory(total, available, 100.0 * (total - available) / total, rss)


def estimate_rows(
    parts: Iterable[PartitionFiles], lo: int | None, hi: int | None
) -> dict[PartitionFiles, int]:
    """Rows each partition contributes to ``[lo, hi)``, from the log's statistics (no file is read)."""
    parts = list(parts)
    out: dict[PartitionFiles, int] = {}
    for part in parts:
        tf = part.series.timeframe
        n = 0
        for rows, first, last in zip(part.rows, part.first_ms, part.last_ms):
            if rows == 0:
                continue
            if first is None or last is None or tf is None:
                n += rows
                continue
            a = first if lo is None else max(lo, first)
            b = last + 1 if hi is None else min(hi, last + 1)
            if a == first and b == last + 1:
                n += rows  # the whole file is inside the range
            elif b > a:
                # Keys are unique candle open times: a span holds at most one row per period.
                n += min(rows, tf.count_between(a, b))
        out[part] = n
    return out
