"""Ingest of Bybit's daily public trade archives: whole UTC days of trades, resumable.

The archive is the only source of *complete* trade history: REST ``recent-trade`` reaches back
minutes, the WebSocket only covers the time it was connected. So this runner is also how trade
gaps are recovered: a day the live runner recorded as ``failed`` (trades lost while disconnected,
beyond what REST could return) is simply a day the ledger does not cover, and the next archive
run fetches it.

Per symbol the plan is the days of ``[start, end)`` whose trade coverage in the ledger is not
complete (present or verified empty). The archive's index then decides each day:

* listed: download, verify (gzip), parse, **replace** the day's stored trades with the file's
  (:meth:`~marketlake.store.Lake.replace_trades`: merged by id, streamed rows the file lacks
  dropped), then record the day ``present`` (``empty`` if the file holds no trade);
* before the first listed day: recorded ``empty`` (the symbol was not trading);
* between listed days but not listed: recorded ``empty`` with a detail (the exchange published no
  file: a day without trades, or one it lost) so that ``check`` explains it and runs do not retry
  it forever;
* after the last listed day: not published yet; nothing is recorded, the next run asks again.

With ``candles`` (sub-minute timeframes built from trades), a day whose trades are already
complete in the lake (an earlier archive run, or a stream that lost nothing) is not downloaded
again: its candles are built from the stored trades.

The ledger is written only after the day's rows are committed, so a crash or Ctrl-C never claims
a day that is not stored, and a re-run fetches exactly the days still missing. Downloads run
``concurrency`` at a time; decompression, parsing and writing run in worker threads.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import polars as pl

from marketlake.core.candles import candles_from_trades
from marketlake.core.intervals import merge
from marketlake.core.symbols import validate_symbol
from marketlake.core.timeframes import Timeframe, parse_timeframes
from marketlake.errors import DataValidationError, ExchangeError, LakeError
from marketlake.exchanges.bybit import constants as C
from marketlake.exchanges.bybit.archive import BybitArchiveClient
from marketlake.exchanges.bybit.parse_archive import parse_trade_dump
from marketlake.ingest.heartbeat import keep_alive
from marketlake.net.backoff import RetryObserver
from marketlake.store import Lake
from marketlake.store.layout import CANDLES, TRADES, SeriesId
from marketlake.store.ledger import Status

__all__ = [
    "ArchiveIngest",
    "ArchiveStats",
    "SymbolPlan",
    "candle_timeframes",
    "candles_from_stored",
    "day_bounds",
    "plan_archive",
    "record_built_candles",
    "run_archive_ingest",
]

log = logging.getLogger(__name__)

_DAY_MS = 86_400_000
_EPOCH = dt.date(1970, 1, 1)


def day_bounds(day: dt.date) -> tuple[int, int]:
    """``[start, end)`` of a UTC day in epoch ms."""
    start = (day - _EPOCH).days * _DAY_MS
    return start, start + _DAY_MS


@dataclass(slots=True)
class ArchiveStats:
    """Figures of one archive run (also the progress snapshot)."""

    symbols: int = 0
    days_planned: int = 0
    days_fetched: int = 0
    days_empty: int = 0
    days_unpublished: int = 0
    days_failed: int = 0
    days_rebuilt: int = 0
    trades_new: int = 0
    trades_replaced: int = 0
    trades_unchanged: int = 0
    trades_deleted: int = 0
    candles_written: int = 0
    bytes_downloaded: int = 0
    requests: int = 0
    retries: int = 0
    parse_seconds: float = 0.0
    write_seconds: float = 0.0
    elapsed: float = 0.0
    failures: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    interrupted: bool = False

    @property
    def days_done(self) -> int:
        """Days settled so far (fetched, empty, failed, unpublished, or candles rebuilt)."""
        return self.days_fetched + self.days_empty + self.days_failed + self.days_unpublished + self.days_rebuilt

    def to_dict(self) -> dict:
        """Plain data (for ``--json`` and the ledger's run record)."""
        return {name: getattr(self, name) for name in self.__slots__}  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class SymbolPlan:
    """What one symbol needs.

    Attributes:
        sid: The trades series.
        days: Days to download: their trades are not complete in the lake.
        rebuild: Days whose trades are complete in the lake but whose candles (of the
            ``candles`` timeframes asked for) are not: built from the stored trades, no download.
    """

    sid: SeriesId
    days: tuple[dt.date, ...]
    rebuild: tuple[dt.date, ...] = ()


def candle_timeframes(names: str | Sequence[str] | None) -> tuple[Timeframe, ...]:
    """The timeframes ``--candles`` may build from archive trades: sub-minute ones only.

    Raises:
        DataValidationError: a timeframe Bybit serves as klines (those come from
            ``marketlake ingest``; one series must not mix two sources).
    """
    if not names:
        return ()
    tfs = tuple(parse_timeframes(names if isinstance(names, str) else list(names)))
    served = [t.name for t in tfs if t.is_bybit]
    if served:
        raise DataValidationError(
            f"candles of {', '.join(served)} come from Bybit's klines (marketlake ingest); "
            "archive trades build sub-minute candles only: 1s, 5s, 15s"
        )
    return tfs


def plan_archive(
    lake: Lake,
    symbols: Sequence[str],
    *,
    category: str,
    start: dt.date,
    end: dt.date,
    today: dt.date,
    exchange: str = "bybit",
    candles: Sequence[Timeframe] = (),
) -> list[SymbolPlan]:
    """Per symbol, the days of ``[start, end)`` before ``today`` whose trades are not fully
    covered (to download), and those whose trades are but candles of a ``candles`` timeframe are
    not (to build from the stored trades).

    Raises:
        DataValidationError: an empty range or a category without archives.
        InvalidSymbolError: a malformed symbol (before anything is asked of the exchange).
    """
    if category not in C.ARCHIVE_DIRS:
        raise DataValidationError(
            f"bybit publishes trade archives for {', '.join(C.ARCHIVE_CATEGORIES)}, not {category!r}"
        )
    if end <= start:
        raise DataValidationError(f"archive range is empty: start {start} is not before end {end}")
    last = min(end, today)
    plans = []
    for symbol in symbols:
        sid = SeriesId.of(TRADES, exchange=exchange, category=category, symbol=validate_symbol(symbol))
        candle_sids = [
            SeriesId.of(CANDLES, exchange=exchange, category=category, symbol=symbol, timeframe=tf) for tf in candles
        ]
        lo, hi = day_bounds(start)[0], day_bounds(last)[0]
        # One ledger read per series for the whole range (a 1s series holds thousands of empty
        # runs a day), then a bisection per day over the merged done ranges.
        trades_done, *candles_done = [_done_ranges(lake, s, lo, hi) for s in (sid, *candle_sids)]
        days: list[dt.date] = []
        rebuild: list[dt.date] = []
        day = start
        while day < last:
            a, b = day_bounds(day)
            if not _covers(trades_done, a, b):
                days.append(day)
            elif not all(_covers(d, a, b) for d in candles_done):
                rebuild.append(day)
            day += dt.timedelta(days=1)
        plans.append(SymbolPlan(sid, tuple(days), tuple(rebuild)))
    return plans


def _done_ranges(lake: Lake, sid: SeriesId, lo: int, hi: int) -> list[tuple[int, int]]:
    """Present or verified-empty ranges of ``sid`` over ``[lo, hi)``, merged (sorted, disjoint)."""
    if hi <= lo:
        return []
    return merge((c.start_ms, c.end_ms) for c in lake.ledger.ranges(sid, lo, hi) if c.status is not Status.FAILED)


def _covers(done: list[tuple[int, int]], a: int, b: int) -> bool:
    i = bisect.bisect_right(done, (a, 2**63)) - 1
    return i >= 0 and done[i][0] <= a and done[i][1] >= b


class ArchiveIngest:
    """Runs archive plans into a lake.

    Args:
        lake: The lake to write.
        client: The archive client.
        concurrency: Days downloaded at once (each holds one decompressed file in memory).
        on_progress: Called with the stats after every settled day.
        run_args: Stored with the run in the ledger.
        candles: Sub-minute timeframes to build from each stored day's trades (see
            :func:`candle_timeframes`); a second without a trade is no gap for ``check``.
    """

    def __init__(
        self,
        lake: Lake,
        client: BybitArchiveClient,
        *,
        concurrency: int = 3,
        on_progress: Callable[[ArchiveStats], None] | None = None,
        run_args: dict | None = None,
        candles: Sequence[Timeframe] = (),
    ) -> None:
        if not 1 <= concurrency <= 32:
            raise DataValidationError("archive concurrency must be within 1..32")
        self.lake = lake
        self.client = client
        self.concurrency = concurrency
        self.on_progress = on_progress
        self.run_args = run_args or {}
        self.candles = tuple(candles)
        self.stats = ArchiveStats()
        self.run_id: str | None = None
        self._t0 = time.monotonic()

    async def run(self, plans: Sequence[SymbolPlan]) -> ArchiveStats:
        """Fetch and store every planned day; failures of one symbol or day do not stop others."""
        st = self.stats
        st.symbols = len(plans)
        st.days_planned = sum(len(p.days) + len(p.rebuild) for p in plans)
        t0 = self._t0 = time.monotonic()
        self.run_id = self.lake.ledger.start_run("archive", self.run_args)
        queue: asyncio.Queue[tuple[SeriesId, dt.date, bool]] = asyncio.Queue()
        beat = asyncio.create_task(keep_alive(self.lake.ledger, self.run_id))
        status = "ok"
        try:
            # Workers start first: the first symbol's days download while later indexes are read.
            workers = [asyncio.create_task(self._worker(queue)) for _ in range(self.concurrency)]
            try:
                for plan in plans:
                    # Candles of stored days need no index and no download: queued first.
                    for day in plan.rebuild:
                        queue.put_nowait((plan.sid, day, True))
                    if plan.days:
                        for item in await self.triage(plan):
                            queue.put_nowait((*item, False))
                await queue.join()
            finally:
                for w in workers:
                    w.cancel()
                for w in workers:
                    with contextlib.suppress(asyncio.CancelledError):
                        await w
        except (asyncio.CancelledError, KeyboardInterrupt):
            st.interrupted = True
            status = "interrupted"
            raise
        finally:
            beat.cancel()
            st.elapsed = time.monotonic() - t0
            st.requests, st.retries = self.client.stats.requests, self.client.stats.retries
            st.bytes_downloaded = self.client.stats.bytes_downloaded
            if status == "ok" and (st.failures or st.days_failed):
                status = "partial"
            self.lake.ledger.finish_run(self.run_id, status, st.to_dict())
        return st

    async def triage(self, plan: SymbolPlan) -> list[tuple[SeriesId, dt.date]]:
        """Ask the index once; settle the days it does not list in the ledger (empty, or not
        published yet) and return the listed ones, to download (:meth:`settle`).

        Needs :attr:`run_id` (set by :meth:`run`, or by a caller that dispatches the days
        elsewhere, e.g. to a cluster).
        """
        sid, st, ledger = plan.sid, self.stats, self.lake.ledger
        try:
            listed = await self.client.days(sid.symbol, sid.category)
        except ExchangeError as exc:
            st.failures.append(str(exc))
            st.days_failed += len(plan.days)
            self._progress()
            return []
        listed_set = set(listed)
        unpublished = 0
        todo: list[tuple[SeriesId, dt.date]] = []
        for day in plan.days:
            a, b = day_bounds(day)
            if day in listed_set:
                todo.append((sid, day))
            elif not listed or day < listed[0]:
                ledger.record(sid, a, b, Status.EMPTY, detail="before the archive's first day", run_id=self.run_id)
                st.days_empty += 1
            elif day > listed[-1]:
                unpublished += 1
            else:
                ledger.record(sid, a, b, Status.EMPTY, detail="no file in the archive index", run_id=self.run_id)
                st.days_empty += 1
        if unpublished:
            st.days_unpublished += unpublished
            st.notices.append(
                f"{sid.symbol}: {unpublished} day(s) after {listed[-1]} not published yet; the next run asks again"
            )
        self._progress()
        return todo

    async def _worker(self, queue: asyncio.Queue[tuple[SeriesId, dt.date, bool]]) -> None:
        while True:
            sid, day, from_stored = await queue.get()
            try:
                await self.settle(sid, day, from_stored=from_stored)
            finally:
                queue.task_done()

    async def settle(self, sid: SeriesId, day: dt.date, *, from_stored: bool = False) -> None:
        """Settle one planned day into :attr:`stats`: download, store and record it, or (with
        ``from_stored``) build its candles from the stored trades. Never raises for the day's own
        failure (counted and named in the stats); a Ctrl-C or a cancellation propagates."""
        try:
            if from_stored:
                await self._rebuild_day(sid, day)
            else:
                await self._day(sid, day)
        except Exception as exc:
            log.exception("archive %s %s", sid.label(), day)
            self.stats.days_failed += 1
            self.stats.failures.append(f"{sid.symbol} {day}: {type(exc).__name__}: {str(exc)[:200]}")
        finally:
            self._progress()

    async def _day(self, sid: SeriesId, day: dt.date) -> None:
        st, ledger = self.stats, self.lake.ledger
        a, b = day_bounds(day)
        try:
            data = await self.client.fetch_day(sid.symbol, sid.category, day)
            if data is None:
                raise _ListedButMissing(f"bybit archive lists {sid.symbol} {day} but the file is not there (HTTP 404)")
            t = time.monotonic()
            frame = await asyncio.to_thread(
                parse_trade_dump, data, symbol=sid.symbol, category=sid.category, day=day
            )
            del data
            st.parse_seconds += time.monotonic() - t
            t = time.monotonic()
            outside, built_candles = await asyncio.to_thread(self._write_day, sid, day, frame)
            st.write_seconds += time.monotonic() - t
        except (ExchangeError, LakeError, DataValidationError, _ListedButMissing) as exc:
            st.days_failed += 1
            st.failures.append(str(exc)[:300])
            with contextlib.suppress(LakeError):
                ledger.record(sid, a, b, Status.FAILED, detail=str(exc)[:300], run_id=self.run_id)
            return
        if outside:
            st.notices.append(f"{sid.symbol} {day}: {outside} trade(s) timed outside the day, merged into their own day")
        for tf in built_candles:
            # Seconds without a trade need no ledger entry (thousands a day): `check` explains a
            # hole in a series built from trades by complete trades with none inside it.
            csid = SeriesId.of(CANDLES, exchange=sid.exchange, category=sid.category, symbol=sid.symbol, timeframe=tf)
            ledger.record(csid, a, b, Status.PRESENT, run_id=self.run_id)
        if frame.height:
            ledger.record(sid, a, b, Status.PRESENT, run_id=self.run_id)
            st.days_fetched += 1
        else:
            ledger.record(sid, a, b, Status.EMPTY, detail="archive file without trades", run_id=self.run_id)
            st.days_empty += 1

    def _write_day(self, sid: SeriesId, day: dt.date, frame: pl.DataFrame) -> tuple[int, list[Timeframe]]:
        """Replace the day's trades with ``frame`` (rows outside the day are merged) and write the
        candles built from them; return how many rows were outside the day, and the candle
        timeframes written."""
        a, b = day_bounds(day)
        t = pl.col("ts").dt.epoch("ms")
        inside = frame.filter((t >= a) & (t < b))
        kw = {"symbol": sid.symbol, "exchange": sid.exchange, "category": sid.category}
        res = self.lake.replace_trades(inside, start=a, end=b, **kw)
        outside = frame.height - inside.height
        if outside:
            res += self.lake.write_trades(frame.filter((t < a) | (t >= b)), **kw)
        st = self.stats
        st.trades_new += res.rows_new
        st.trades_replaced += res.rows_replaced
        st.trades_unchanged += res.rows_unchanged
        st.trades_deleted += res.rows_deleted
        for tf in self.candles:
            candles = candles_from_trades(inside, tf)
            if candles.height:
                self.lake.write_candles(candles, timeframe=tf, **kw)
            st.candles_written += candles.height
        return outside, list(self.candles)

    async def _rebuild_day(self, sid: SeriesId, day: dt.date) -> None:
        """Build the day's candles from its stored trades (complete, per the ledger), then record
        them: ``present``, or verified ``empty`` when the day has no trade at all."""
        a, b = day_bounds(day)
        t = time.monotonic()
        trades, written = await asyncio.to_thread(candles_from_stored, self.lake, sid, a, b, self.candles)
        self.stats.write_seconds += time.monotonic() - t
        self.stats.candles_written += written
        # Only now, with the candles committed, may the ledger say they are there (on the loop's
        # thread: the ledger's connection belongs to it).
        record_built_candles(self.lake, sid, a, b, self.candles, trades=trades, run_id=self.run_id)
        self.stats.days_rebuilt += 1

    def _progress(self) -> None:
        if self.on_progress is not None:
            self.stats.elapsed = time.monotonic() - self._t0
            self.stats.requests = self.client.stats.requests
            self.stats.bytes_downloaded = self.client.stats.bytes_downloaded
            self.on_progress(self.stats)


def candles_from_stored(
    lake: Lake, sid: SeriesId, a: int, b: int, timeframes: Sequence[Timeframe]
) -> tuple[int, int]:
    """Build the candles of ``[a, b)`` of each timeframe from the stored trades of ``sid`` (the
    numba kernel) and write them (a re-build of unchanged candles commits nothing).

    Returns:
        ``(trades read, candles written)``.
    """
    where = {"exchange": sid.exchange, "category": sid.category}
    trades = lake.read_trades(sid.symbol, a, b, **where)
    written = 0
    for tf in timeframes:
        candles = candles_from_trades(trades, tf)
        if candles.height:
            lake.write_candles(candles, symbol=sid.symbol, timeframe=tf, **where)
        written += candles.height
    return trades.height, written


def record_built_candles(
    lake: Lake, sid: SeriesId, a: int, b: int, timeframes: Sequence[Timeframe], *, trades: int,
    run_id: str | None = None,
) -> None:
    """Record candles built from the complete trades of ``[a, b)`` in the ledger: ``present``,
    or verified ``empty`` when there was no trade at all. Call only once they are committed."""
    for tf in timeframes:
        csid = SeriesId.of(CANDLES, exchange=sid.exchange, category=sid.category, symbol=sid.symbol, timeframe=tf)
        if trades:
            lake.ledger.record(csid, a, b, Status.PRESENT, run_id=run_id)
        else:
            lake.ledger.record(csid, a, b, Status.EMPTY, detail="no trades that day", run_id=run_id)


class _ListedButMissing(Exception):
    """The index lists a day whose file answers 404 (recorded as failed: asked again next run)."""


async def run_archive_ingest(
    lake: Lake,
    symbols: Sequence[str],
    *,
    category: str,
    start: dt.date,
    end: dt.date,
    base_url: str = C.ARCHIVE_URL,
    concurrency: int = 3,
    today: dt.date | None = None,
    dry_run: bool = False,
    on_plan: Callable[[list[SymbolPlan]], None] | None = None,
    on_progress: Callable[[ArchiveStats], None] | None = None,
    client: BybitArchiveClient | None = None,
    candles: Sequence[Timeframe] = (),
    on_retry: RetryObserver | None = None,
) -> tuple[list[SymbolPlan], ArchiveStats | None]:
    """Plan and (unless ``dry_run``) run an archive ingest; return the plan and the stats.

    ``on_retry`` is given to the archive client this call creates (not to a ``client`` passed in:
    that one carries its own).

    ``today`` defaults to the UTC date of the replaceable clock: the archive publishes only
    completed days, so nothing from today on is planned.
    """
    from marketlake.clock import get_clock

    if today is None:
        today = dt.datetime.fromtimestamp(get_clock().now_ms() / 1000, dt.UTC).date()
    plans = plan_archive(lake, symbols, category=category, start=start, end=end, today=today, candles=candles)
    if on_plan is not None:
        on_plan(plans)
    if dry_run:
        return plans, None
    own = client is None
    client = client if client is not None else BybitArchiveClient(base_url, on_retry=on_retry)
    try:
        runner = ArchiveIngest(
            lake,
            client,
            concurrency=concurrency,
            on_progress=on_progress,
            candles=candles,
            run_args={
                "symbols": list(symbols),
                "candles": [t.name for t in candles],
                "category": category,
                "start": start.isoformat(),
                "end": end.isoformat(),
            },
        )
        stats = await runner.run(plans)
    finally:
        if own:
            await client.close()
    return plans, stats
