"""Where things live in the lake: series identity, partition periods, partition paths.

Each dataset is one Delta table (``store/table.py``) whose partitions keep the hive layout::

    <root>/candles/_delta_log/...          the table's transaction log
    <root>/candles/exchange=bybit/category=linear/symbol=BTCUSDT/timeframe=1/date=2024-01/part-<uuid>.parquet
    <root>/trades/exchange=bybit/category=linear/symbol=BTCUSDT/date=2024-01-01/part-<uuid>.parquet
    <root>/_meta/...                       marketlake's bookkeeping (ledger, snapshots, quarantine)

Which files make up a partition is said by the log, never by a directory listing.
Everything here is pure path arithmetic; names are validated before any path is built.
"""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Final

import numpy as np

from marketlake.core.symbols import validate_category, validate_exchange, validate_symbol
from marketlake.core.timeframes import Timeframe, parse_timeframe
from marketlake.errors import DataValidationError, LakeError

__all__ = [
    "CANDLES",
    "DATASETS",
    "TRADES",
    "Period",
    "SeriesId",
    "data_file_name",
    "partition_columns",
    "partition_period",
]

from marketlake.store.datasets import CANDLES, DATASETS, TRADES, spec  # noqa: E402  (re-exported)

META_DIR: Final = "_meta"

def partition_columns(dataset: str) -> tuple[str, ...]:
    """The hive/Delta partition columns of ``dataset``, outermost first."""
    return spec(dataset).hive


@functools.lru_cache(maxsize=65536)
def _bounds(period: Period, key: str) -> tuple[int, int]:
    # Planning a read computes the bounds of every partition of a series: remember them.
    return period._bounds(key)


class Period(Enum):
    """How much time one ``date=`` partition covers."""

    DAY = "day"
    MONTH = "month"
    YEAR = "year"

    def key(self, ts_ms: int) -> str:
        """The partition key (``2024-01-31``, ``2024-01`` or ``2024``) holding ``ts_ms``."""
        d = dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=int(ts_ms))
        if self is Period.DAY:
            return f"{d.year:04d}-{d.month:02d}-{d.day:02d}"
        if self is Period.MONTH:
            return f"{d.year:04d}-{d.month:02d}"
        return f"{d.year:04d}"

    def keys(self, ts_ms: np.ndarray) -> np.ndarray:
        """Vectorised :meth:`key`: the partition key of every element (numpy str array)."""
        unit = {Period.DAY: "D", Period.MONTH: "M", Period.YEAR: "Y"}[self]
        return np.datetime_as_string(np.asarray(ts_ms, dtype="datetime64[ms]"), unit=unit)

    def bounds(self, key: str) -> tuple[int, int]:
        """``[start, end)`` in epoch ms of the partition named ``key``.

        Raises:
            DataValidationError: ``key`` is not a key of this period.
        """
        return _bounds(self, key)

    def _bounds(self, key: str) -> tuple[int, int]:
        unit = {Period.DAY: "D", Period.MONTH: "M", Period.YEAR: "Y"}[self]
        width = {Period.DAY: 10, Period.MONTH: 7, Period.YEAR: 4}[self]
        if len(key) != width:
            raise DataValidationError(f"{key!r} is not a {self.value} partition key")
        try:
            start = np.datetime64(key, unit)
        except ValueError:
            raise DataValidationError(f"{key!r} is not a {self.value} partition key") from None
        lo = int(start.astype("datetime64[ms]").astype(np.int64))
        hi = int((start + 1).astype("datetime64[ms]").astype(np.int64))
        return lo, hi

    def keys_between(self, start_ms: int, end_ms: int) -> list[str]:
        """Keys of every partition that overlaps ``[start_ms, end_ms)``, in time order."""
        if end_ms <= start_ms:
            return []
        unit = {Period.DAY: "D", Period.MONTH: "M", Period.YEAR: "Y"}[self]
        first = np.datetime64(int(start_ms), "ms").astype(f"datetime64[{unit}]")
        last = np.datetime64(int(end_ms) - 1, "ms").astype(f"datetime64[{unit}]")
        return [str(x) for x in np.arange(first, last + 1)]


# One partition should hold tens of thousands to a few hundred thousand rows: big enough that a
# scan is not dominated by opening files, small enough that a rewrite stays cheap. Measured in
# benchmarks/bench_partitioning.py; the table and the figures are in docs/architecture.md.
_CANDLE_PERIODS: Final[dict[str, Period]] = {
    "1s": Period.DAY,      # 86,400 rows a day
    "5s": Period.DAY,      # 17,280
    "15s": Period.MONTH,   # ~178,000 a month
    "1": Period.MONTH,     # ~44,600
    "3": Period.MONTH,     # ~14,900
}
_TRADES_PERIOD: Final = Period.DAY  # liquid symbols trade millions of times a day


def partition_period(dataset: str, timeframe: Timeframe | None) -> Period:
    """The partition period of a dataset / timeframe (candles of 5m and longer: one per year)."""
    if dataset == TRADES:
        return _TRADES_PERIOD
    if spec(dataset).year_periods:
        return Period.YEAR
    assert timeframe is not None
    return _CANDLE_PERIODS.get(timeframe.name, Period.YEAR)


@dataclass(frozen=True, slots=True)
class SeriesId:
    """Identity of one stored series; every name is validated at construction.

    Attributes:
        dataset: ``candles`` or ``trades``.
        exchange: e.g. ``bybit``.
        category: ``linear``, ``spot``, ``inverse`` or ``option``.
        symbol: e.g. ``BTCUSDT``.
        timeframe: The candle timeframe; ``None`` for trades.
    """

    dataset: str
    exchange: str
    category: str
    symbol: str
    timeframe: Timeframe | None = None

    @classmethod
    def of(
        cls,
        dataset: str,
        *,
        exchange: str,
        category: str,
        symbol: str,
        timeframe: str | int | Timeframe | None = None,
    ) -> SeriesId:
        """Validate every part and build the id (the only way paths get their names)."""
        if dataset not in DATASETS:
            raise DataValidationError(f"unknown dataset {dataset!r}; use one of {', '.join(DATASETS)}")
        tf = None
        if spec(dataset).has_timeframe:
            if timeframe is None:
                raise DataValidationError(f"{dataset} need a timeframe")
            tf = parse_timeframe(timeframe)
        return cls(
            dataset=dataset,
            exchange=validate_exchange(exchange),
            category=validate_category(category),
            symbol=validate_symbol(symbol),
            timeframe=tf,
        )

    @property
    def period(self) -> Period:
        """How much time each of this series' partitions covers."""
        return partition_period(self.dataset, self.timeframe)

    @property
    def parts(self) -> tuple[str, ...]:
        """The hive directory names from the dataset root down to the series directory."""
        base = (f"exchange={self.exchange}", f"category={self.category}", f"symbol={self.symbol}")
        if self.timeframe is not None:
            return (*base, f"timeframe={self.timeframe.name}")
        return base

    def directory(self, root: Path) -> Path:
        """The series directory under ``root``; guaranteed to stay inside ``root``."""
        path = root.joinpath(self.dataset, *self.parts)
        _check_inside(root, path)
        return path

    def partition_dir(self, root: Path, key: str) -> Path:
        """The directory of partition ``key`` (validated against this series' period)."""
        self.period.bounds(key)  # raises on a malformed key
        return self.directory(root) / f"date={key}"

    def partition_path(self, key: str) -> str:
        """Partition ``key``'s directory relative to the dataset's table root."""
        self.period.bounds(key)
        return "/".join((*self.parts, f"date={key}"))

    def label(self) -> str:
        """Short human name, e.g. ``bybit/linear/BTCUSDT/1``."""
        tf = f"/{self.timeframe.name}" if self.timeframe else ""
        return f"{self.exchange}/{self.category}/{self.symbol}{tf}"


def _check_inside(root: Path, path: Path) -> None:
    # Validation already makes escaping impossible; this is the belt to those braces.
    root_abs = root.resolve()
    if not path.resolve().is_relative_to(root_abs):
        raise LakeError(f"refusing to touch {path}: outside the lake root {root_abs}")


def data_file_name() -> str:
    """A new data file's name: unique, so a name is never reused (caches keyed by path stay true)."""
    return f"part-{uuid.uuid4().hex}.parquet"
