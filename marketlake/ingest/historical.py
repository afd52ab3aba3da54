"""The historical ingest runner: fetch a plan's kline windows, write them, record coverage.

Concurrency is bounded by the rate budget, not by batches with sleeps: ``concurrency`` workers
pull windows from one queue (series by series, oldest first) and every request waits for a slot of
the machine-wide budget, so the request rate sits at the budget whatever the latency.

Pages are buffered per series and written in large batches (a whole series, or ``flush_rows``
rows), off the event loop, so the lake write is never the bottleneck. Coverage is recorded in the
ledger only *after* the rows are committed: a crash or Ctrl-C loses at most buffered pages, which
the ledger does not claim, so the next run fetches exactly those again and nothing twice.

What a page found goes to the ledger precisely: runs of candles as ``present``, runs of open times
without a candle (the exchange's own outages) as verified ``empty``, failed windows as ``failed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from marketlake.core.timeframes import Timeframe
from marketlake.errors import (
    ExchangeBannedError,
    ExchangeError,
    ExchangeRequestError,
)
from marketlake.exchanges.bybit.rest import BybitRestClient, KlinePage
from marketlake.ingest.heartbeat import keep_alive
from marketlake.ingest.planner import Plan, SeriesPlan
from marketlake.store import Lake
from marketlake.store.ledger import Status

__all__ = ["HistoricalIngest", "IngestStats", "coverage_runs"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class IngestStats:
    """Figures of one ingest run (also the progress snapshot)."""

    series: int = 0
    series_done: int = 0
    series_failed: int = 0
    requests_planned: int = 0
    pages: int = 0
    candles_planned: int = 0
    rows_fetched: int = 0
    rows_new: int = 0
    rows_replaced: int = 0
    rows_unchanged: int = 0
    empty_candles: int = 0
    failed_windows: int = 0
    bans: int = 0
    retries: int = 0
    requests: int = 0
    write_seconds: float = 0.0
    elapsed: float = 0.0
    failures: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    interrupted: bool = False

    @property
    def requests_per_s(self) -> float:
        """Pages fetched per second so far."""
        return self.pages / self.elapsed if self.elapsed > 0 else 0.0

    def to_dict(self) -> dict:
        """Plain data (for ``--json`` and the ledger's run record)."""
        out = {name: getattr(self, name) for name in self.__slots__}  # type: ignore[attr-defined]
        out["requests_per_s"] = round(self.requests_per_s, 2)
        return out


def _members(values: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """``values[i] in keys`` for every i, by binary search: on a 1000-candle page 5x cheaper
    than ``np.isin`` (which hashes both arrays), and this runs on the event loop for every page."""
    if keys.size == 0:
        return np.zeros(values.size, dtype=bool)
    keys = np.sort(keys)  # a page is ascending already: nearly free
    at = np.minimum(np.searchsorted(keys, values), keys.size - 1)
    return keys[at] == values


def coverage_runs(page: KlinePage, tf: Timeframe) -> list[tuple[int, int, Status]]:
    """Split a page's final part into ``[start, end)`` runs of present and missing candles.

    Only opens that were closed at the server's time count; a window reaching into the present is
    covered up to the forming candle.
    """
    last_open = min(page.end_ms, page.closed_until_ms - 1)
    if last_open < page.start_ms:
        return []
    opens = tf.opens_between(page.start_ms, last_open + 1)
    if opens.size == 0:
        return []
    have = _members(opens, page.frame.get_column("ts").dt.epoch("ms").to_numpy())
    cuts = np.flatnonzero(have[1:] != have[:-1]) + 1
    starts = np.concatenate(([0], cuts))
    stops = np.concatenate((cuts, [opens.size]))
    out = []
    for a, b in zip(starts, stops, strict=True):
        end = tf.next_open(int(opens[b - 1]))
        out.append((int(opens[a]), end, Status.PRESENT if have[a] else Status.EMPTY))
    return out


@dataclass(slots=True)
class _Series:
    plan: SeriesPlan
    pending: int
    pages: list[KlinePage] = field(default_factory=list)
    buffered: int = 0
    failed: bool = False


class HistoricalIngest:
    """Runs a :class:`~marketlake.ingest.planner.Plan` against Bybit into a lake.

    Args:
        lake: Where rows go; its ledger records coverage.
        client: The REST client (its rate budget bounds the request rate).
        concurrency: Requests in flight at most (the budget decides the rate).
        flush_rows: Write a series' buffered pages once they hold this many rows.
        on_progress: Called with the running :class:`IngestStats` after every page.
        run_args: Recorded with the run in the ledger.
    """

    def __init__(
        self,
        lake: Lake,
        client: BybitRestClient,
        *,
        concurrency: int = 32,
        flush_rows: int = 200_000,
        on_progress: Callable[[IngestStats], None] | None = None,
        run_args: dict | None = None,
    ) -> None:
        self.lake = lake
        self.client = client
        self.concurrency = max(1, concurrency)
        self.flush_rows = max(1, flush_rows)
        self.on_progress = on_progress
        self.run_args = run_args or {}
        self.stats = IngestStats()
        self._started = 0.0

    async def run(self, plan: Plan) -> IngestStats:
        """Fetch every window of ``plan``; return the run's figures.

        Cancellation (Ctrl-C, SIGTERM) writes what was fetched before it re-raises.
        """
        ledger = self.lake.ledger
        run_id = ledger.start_run("ingest", self.run_args)
        self._started = time.perf_counter()
        st = self.stats
        st.series = len(plan.series)
        st.requests_planned = plan.requests
        st.candles_planned = plan.candles
        states = [_Series(sp, len(sp.windows)) for sp in plan.series]
        queue: asyncio.Queue[tuple[_Series, int, int]] = asyncio.Queue()
        for s in states:
            if s.plan.before_listing is not None:
                a, b = s.plan.before_listing
                ledger.record(s.plan.sid, a, b, Status.EMPTY, detail="before listing", run_id=run_id)
            if not s.plan.windows:
                st.series_done += 1
            for a, b in s.plan.windows:
                queue.put_nowait((s, a, b))
        requests_before = self.client.stats.requests
        retries_before = self.client.stats.retries
        workers = [asyncio.create_task(self._worker(queue, run_id)) for _ in range(self.concurrency)]
        beat = asyncio.create_task(keep_alive(ledger, run_id))
        status = "ok"
        try:
            await asyncio.gather(*workers)
        except BaseException:
            status = "interrupted"
            st.interrupted = True
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            raise
        finally:
            beat.cancel()
            # Whatever was fetched is written, also on cancellation (shielded from it).
            with contextlib.suppress(BaseException):
                await asyncio.shield(self._flush_all(states, run_id))
            st.requests = self.client.stats.requests - requests_before
            st.retries = self.client.stats.retries - retries_before
            st.elapsed = time.perf_counter() - self._started
            if st.failures and status == "ok":
                status = "failed"
            ledger.finish_run(run_id, status, st.to_dict())
        return st

    async def _worker(self, queue: asyncio.Queue[tuple[_Series, int, int]], run_id: str) -> None:
        while True:
            try:
                s, a, b = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            if s.failed:
                continue
            sid = s.plan.sid
            tf = sid.timeframe
            assert tf is not None
            try:
                page = await self.client.fetch_kline_page(sid.category, sid.symbol, tf.name, a, b)
            except ExchangeBannedError as exc:
                # Surfaced once by the client; the run goes on after the ban lifts.
                self.stats.bans += 1
                log.warning("%s", exc)
                self.stats.notices.append(str(exc))
                queue.put_nowait((s, a, b))  # the client waits out the ban before sending again
                continue
            except ExchangeRequestError as exc:
                # The request itself is wrong (e.g. an unknown symbol): the other windows of this
                # series would fail the same way; the other series go on.
                s.failed = True
                self.stats.series_failed += 1
                self._fail_note(f"{sid.label()}: {exc}")
                self.lake.ledger.record(
                    sid, a, tf.next_open(b), Status.FAILED, detail=str(exc)[:300], run_id=run_id
                )
                continue
            except ExchangeError as exc:
                self.stats.failed_windows += 1
                self._fail_note(f"{sid.label()}: {exc}")
                self.lake.ledger.record(
                    sid, a, tf.next_open(b), Status.FAILED, detail=str(exc)[:300], run_id=run_id
                )
                s.pending -= 1
                if s.pending == 0:
                    await self._flush(s, run_id)
                continue
            self.stats.pages += 1
            self.stats.rows_fetched += page.frame.height
            s.pages.append(page)
            s.buffered += page.frame.height
            s.pending -= 1
            if s.pending == 0 or s.buffered >= self.flush_rows:
                await self._flush(s, run_id)
            self._progress()

    def _fail_note(self, text: str) -> None:
        if len(self.stats.failures) < 100:
            self.stats.failures.append(text)

    def _progress(self) -> None:
        if self.on_progress is not None:
            self.stats.elapsed = time.perf_counter() - self._started
            self.on_progress(self.stats)

    async def _flush_all(self, states: list[_Series], run_id: str) -> None:
        for s in states:
            if s.pages:
                await self._flush(s, run_id)

    async def _flush(self, s: _Series, run_id: str) -> None:
        pages, s.pages, s.buffered = s.pages, [], 0
        sid = s.plan.sid
        tf = sid.timeframe
        assert tf is not None
        frames = [p.frame for p in pages if p.frame.height]
        if frames:
            t0 = time.perf_counter()
            frame = pl.concat(frames, how="vertical") if len(frames) > 1 else frames[0]
            result = await asyncio.to_thread(
                self.lake.write_candles,
                frame,
                symbol=sid.symbol,
                timeframe=tf,
                exchange=sid.exchange,
                category=sid.category,
            )
            self.stats.write_seconds += time.perf_counter() - t0
            self.stats.rows_new += result.rows_new
            self.stats.rows_replaced += result.rows_replaced
            self.stats.rows_unchanged += result.rows_unchanged
        # Only now, with the rows committed, may the ledger say they are there.
        for page in pages:
            for start, end, status in coverage_runs(page, tf):
                if status is Status.EMPTY:
                    self.stats.empty_candles += tf.count_between(start, end)
                self.lake.ledger.record(
                    sid,
                    start,
                    end,
                    status,
                    run_id=run_id,
                    detail="no candles at the exchange" if status is Status.EMPTY else None,
                )
        if s.pending == 0 and not s.pages:
            self.stats.series_done += 1
