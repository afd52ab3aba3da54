"""What a perpetual backtest needs besides candles: funding, mark/index/premium price candles,
open interest, and the point-in-time instrument universe (issue 13), on the lake's tables.

The time-series datasets go through the same write path as candles (one Delta transaction per
write, merge by ``ts``, the later row winning; :mod:`marketlake.store.datasets`). The instrument
history (:mod:`marketlake.core.instruments`) is a small Delta table ``instruments`` partitioned by
exchange: folding a snapshot in rewrites that exchange's history in one optimistic commit (a
concurrent fold makes it re-read and fold again), so no observation is lost.
"""

from __future__ import annotations

import random
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import polars as pl

from marketlake.core.instruments import apply_snapshot, empty_instrument_history, universe_at
from marketlake.core.schemas_perp import INSTRUMENT_ARROW_SCHEMA, INSTRUMENT_SCHEMA
from marketlake.core.symbols import validate_category, validate_exchange
from marketlake.core.timeframes import Timeframe
from marketlake.core.timeutil import TimeLike, to_ms
from marketlake.errors import DataValidationError, LakeError, LakeWriteError
from marketlake.store.datasets import DATASETS, FUNDING, OPEN_INTEREST, PRICE_CANDLE_DATASETS, spec
from marketlake.store.layout import SeriesId
from marketlake.store.writer import WriteResult

if TYPE_CHECKING:
    from marketlake.store.lake import Lake

__all__ = ["INSTRUMENTS", "OI_INTERVALS", "PerpLakeMixin"]

INSTRUMENTS: Final = "instruments"
#: Bybit's ``intervalTime`` → the lake's timeframe name of an open-interest series.
OI_INTERVALS: Final[dict[str, str]] = {"5min": "5", "15min": "15", "30min": "30", "1h": "60", "4h": "240", "1d": "D"}
_PRICE_KINDS: Final = {"mark": "mark_candles", "index": "index_candles", "premium": "premium_candles"}


def price_dataset(kind: str) -> str:
    """``mark``/``index``/``premium`` (or the dataset name itself) → the dataset name.

    Raises:
        DataValidationError: another kind.
    """
    if kind in PRICE_CANDLE_DATASETS:
        return kind
    try:
        return _PRICE_KINDS[kind]
    except KeyError:
        raise DataValidationError(f"price kind {kind!r}: use mark, index or premium") from None


def oi_timeframe(interval: str) -> str:
    """An open-interest interval (``5min`` ... ``1d``, or a lake timeframe name) → timeframe name."""
    if interval in OI_INTERVALS:
        return OI_INTERVALS[interval]
    if interval in OI_INTERVALS.values():
        return interval
    raise DataValidationError(f"open-interest interval {interval!r}: use one of {', '.join(OI_INTERVALS)}")


def _read_as_of(path: str, when: Any, options: dict[str, str] | None = None) -> pl.DataFrame | None:
    """The instrument history table as of ``when`` (None: it did not exist yet)."""
    import deltalake

    table = deltalake.DeltaTable(path, storage_options=options)
    try:
        table.load_as_version(when)
    except Exception:
        return None  # created after ``when``
    return pl.from_arrow(table.to_pyarrow_table())  # type: ignore[return-value]


class PerpLakeMixin:
    """Lake methods for the perpetual-futures datasets (mixed into :class:`Lake`)."""

    # ------------------------------------------------------------------ generic series access

    def write(
        self: Lake,
        dataset: str,
        frame: pl.DataFrame | Any,
        *,
        symbol: str,
        timeframe: str | int | Timeframe | None = None,
        exchange: str | None = None,
        category: str | None = None,
    ) -> WriteResult:
        """Merge rows into a series of any time-series dataset (by its key; the incoming row wins).

        Raises:
            DataValidationError: an unknown dataset, a bad name, or a frame of the wrong shape.
            LakeWriteError: the write could not be committed (the lake is unchanged).
        """
        sid = self._series_id(dataset, symbol, timeframe, exchange, category)
        return self._write(sid, spec(dataset).normalize(frame), spec(dataset).key)

    def scan(
        self: Lake,
        dataset: str,
        symbols: str | Sequence[str] | None = None,
        timeframes: Any = None,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        *,
        exchange: str | None = None,
        category: str | None = None,
    ) -> pl.LazyFrame:
        """A LazyFrame over a dataset's series (``symbol`` and, where the dataset has one,
        ``timeframe`` columns first), only the partitions that can match opened."""
        from marketlake.store.reader import scan_files

        if dataset not in DATASETS:
            raise DataValidationError(f"unknown dataset {dataset!r}; use one of {', '.join(DATASETS)}")
        tfs = timeframes if spec(dataset).has_timeframe else None
        sids, lo, hi = self._request(dataset, symbols, tfs, start, end, exchange, category)
        return scan_files(dataset, self.plan_files(dataset, sids, lo, hi), lo, hi)

    def read(self: Lake, dataset: str, *args: Any, **kwargs: Any) -> pl.DataFrame:
        """:meth:`scan`, collected."""
        return self._collect_retrying(lambda: self.scan(dataset, *args, **kwargs))

    def _series_id(
        self: Lake, dataset: str, symbol: str, timeframe: Any, exchange: str | None, category: str | None
    ) -> SeriesId:
        return SeriesId.of(
            dataset,
            exchange=exchange or self.settings.exchange,
            category=category or self.settings.category,
            symbol=symbol,
            timeframe=timeframe if spec(dataset).has_timeframe else None,
        )

    # ------------------------------------------------------------------ named conveniences

    def write_funding(self: Lake, frame: Any, *, symbol: str, exchange: str | None = None,
                      category: str | None = None) -> WriteResult:
        """Merge funding settlements (``ts`` = settlement time, ``rate``, ``interval_minutes``)."""
        return self.write(FUNDING, frame, symbol=symbol, exchange=exchange, category=category)

    def read_funding(self: Lake, symbols: Any = None, start: TimeLike | None = None,
                     end: TimeLike | None = None, **where: Any) -> pl.DataFrame:
        """Stored funding settlements: symbol, ts, rate, interval_minutes."""
        return self.read(FUNDING, symbols, None, start, end, **where)

    def write_price_candles(self: Lake, kind: str, frame: Any, *, symbol: str,
                            timeframe: str | int | Timeframe, exchange: str | None = None,
                            category: str | None = None) -> WriteResult:
        """Merge mark / index / premium-index candles (``ts open high low close``, no volume)."""
        return self.write(price_dataset(kind), frame, symbol=symbol, timeframe=timeframe,
                          exchange=exchange, category=category)

    def read_price_candles(self: Lake, kind: str, symbols: Any = None, timeframes: Any = None,
                           start: TimeLike | None = None, end: TimeLike | None = None,
                           **where: Any) -> pl.DataFrame:
        """Stored mark / index / premium-index candles."""
        return self.read(price_dataset(kind), symbols, timeframes, start, end, **where)

    def write_open_interest(self: Lake, frame: Any, *, symbol: str, interval: str,
                            exchange: str | None = None, category: str | None = None) -> WriteResult:
        """Merge open interest (``ts``, ``open_interest``) of one interval (``5min`` ... ``1d``)."""
        return self.write(OPEN_INTEREST, frame, symbol=symbol, timeframe=oi_timeframe(interval),
                          exchange=exchange, category=category)

    def read_open_interest(self: Lake, symbols: Any = None, interval: str | None = None,
                           start: TimeLike | None = None, end: TimeLike | None = None,
                           **where: Any) -> pl.DataFrame:
        """Stored open interest (the ``timeframe`` column holds the interval as a timeframe name)."""
        tfs = None if interval is None else [oi_timeframe(interval)]
        return self.read(OPEN_INTEREST, symbols, tfs, start, end, **where)

    # ------------------------------------------------------------------ the instrument universe

    def _instruments_path(self: Lake) -> str:
        return self.storage.uri(INSTRUMENTS)

    def _instruments_exist(self: Lake) -> bool:
        return self.storage.has_prefix(f"{INSTRUMENTS}/_delta_log")

    def instrument_history(self: Lake, exchange: str | None = None) -> pl.DataFrame:
        """The instrument history (``valid_from``/``valid_to`` per attribute set), every exchange
        or one, with an ``exchange`` column."""
        path = self._instruments_path()
        kept = None
        empty = empty_instrument_history().with_columns(pl.lit(None, dtype=pl.String).alias("exchange"))
        if isinstance(self.as_of, str):
            from marketlake.store.snapshots import snapshot_exists, snapshot_instruments

            if snapshot_exists(self.storage, self.as_of):
                kept = snapshot_instruments(self.storage, self.as_of)
                if kept is None:
                    return empty  # the snapshot was taken before any instrument was recorded
        when = None
        if kept is None and self.as_of is not None:
            from marketlake.store.snapshots import as_of_time

            when = as_of_time(self.storage, self.as_of)  # the history as it was then
        if kept is not None:
            df = kept
        elif not self._instruments_exist():
            return empty
        else:
            try:
                options = self.storage.delta_options()
                df = pl.read_delta(path, storage_options=options) if when is None else _read_as_of(path, when, options)
            except Exception as exc:
                raise LakeError(f"{path}: cannot read the instrument history ({str(exc).splitlines()[0][:160]})") from None
            if df is None:
                return empty
        if exchange is not None:
            df = df.filter(pl.col("exchange") == validate_exchange(exchange))
        return df.select(*INSTRUMENT_SCHEMA, "exchange")

    def record_instruments(
        self: Lake,
        snapshot: pl.DataFrame,
        taken_ms: int,
        *,
        exchange: str | None = None,
        categories: Collection[str] | None = None,
    ) -> int:
        """Fold one instruments-info snapshot into the history (one transaction); return the
        history's row count for the exchange afterwards.

        Args:
            snapshot: Rows in ``INSTRUMENT_SNAPSHOT_SCHEMA``.
            taken_ms: When it was taken (the server's clock).
            exchange: Defaults to ``settings.exchange``.
            categories: Categories listed completely (an absent symbol there counts as gone).
        """
        import deltalake
        from deltalake.exceptions import CommitFailedError

        self._writable()
        ex = validate_exchange(exchange or self.settings.exchange)
        for c in categories or ():
            validate_category(c)
        path = self._instruments_path()
        for attempt in range(50):
            exists = self._instruments_exist()
            options = self.storage.delta_options()
            table = deltalake.DeltaTable(path, storage_options=options) if exists else None
            history = (
                pl.from_arrow(table.to_pyarrow_table(filters=[("exchange", "=", ex)])).drop("exchange")  # type: ignore[union-attr]
                if table is not None else empty_instrument_history()
            )
            new = apply_snapshot(history, int(taken_ms), snapshot, categories=categories)
            arrow = new.select(*INSTRUMENT_SCHEMA).to_arrow().cast(INSTRUMENT_ARROW_SCHEMA)
            arrow = arrow.append_column("exchange", pl.Series([ex] * new.height, dtype=pl.String).to_arrow())
            try:
                deltalake.write_deltalake(
                    table if table is not None else path, arrow, mode="overwrite",
                    storage_options=None if table is not None else options,
                    partition_by=["exchange"], predicate=f"exchange = '{ex}'",
                    commit_properties=deltalake.CommitProperties(
                        max_commit_retries=0, custom_metadata={"marketlake.operation": "record_instruments"}),
                )
            except CommitFailedError:
                time.sleep(random.uniform(0, 0.002 * (attempt + 1)))
                continue
            except Exception as exc:
                if not exists and self._instruments_exist():
                    continue  # another process created the table first: fold into theirs
                raise LakeWriteError(f"cannot write the instrument history: {str(exc).splitlines()[0][:200]}") from None
            return new.height
        raise LakeWriteError("gave up recording instruments after 50 concurrent commits")

    def universe(
        self: Lake,
        at: TimeLike,
        category: str | None = None,
        *,
        exchange: str | None = None,
        statuses: Collection[str] | None = ("Trading",),
    ) -> pl.DataFrame:
        """The instruments listed at ``at``, with the attributes in force then (tick size,
        funding interval, ...): delisted symbols are there before their delivery time and not
        after. No survivorship bias: the answer comes from what was recorded at the time."""
        t = to_ms(at, what="at")
        history = self.instrument_history(exchange or self.settings.exchange).drop("exchange")
        return universe_at(history, t, None if category is None else validate_category(category),
                           statuses=statuses)

