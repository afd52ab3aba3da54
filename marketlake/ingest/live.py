"""The live runner: klines and trades from Bybit's WebSocket into the lake, healed over REST.

How the pieces fit (the bookkeeping itself is :mod:`marketlake.ingest.live_tracks`):

1. **Start.** Each kline series resumes where the ledger's coverage ends (within
   ``resume_max_ms``; else where the lake's last candle is; else at the first push). Trades resume
   at the end of the ledger's trade coverage.
2. **Stream.** :class:`~marketlake.exchanges.bybit.ws.BybitWsClient` delivers pushes. Only
   ``confirm: true`` candles are accepted, in strict open-time order; ``confirm: false`` ones only
   update the in-memory forming candle (:meth:`LiveRunner.latest_candle`).
3. **Heal.** A disconnect marks every series for *resync*. After the resubscription, the first push
   of a series reveals the hole between its frontier and what the socket now sends; REST fills it
   at once (windows of 1000, waiting for the newest candles to settle at the server), and the
   candles held behind the hole follow. Holes that appear without a disconnect (a reordered push)
   get ``hole_grace_s`` to close by themselves first. Trades re-sync from REST recent trades
   fetched after the resubscription is acknowledged, so the REST list overlaps the new stream.
4. **Write.** Every ``flush_interval_s`` the accepted candles and the final trades go to the lake
   in one micro-batch per series (off the event loop); only after the commit does the ledger
   record the span as present (or verified empty, or failed), so a crash loses at most the
   unflushed batch and the next run's start backfills exactly that.
5. **Stop.** :meth:`LiveRunner.stop` (or cancelling :meth:`LiveRunner.run`) closes the socket,
   writes everything in hand and closes the ledger's run record.

The ledger's event log gets ``disconnect``, ``backfill``, ``trade_gap``, ``rejected`` and
``quarantine`` (malformed frames, at most 4 KiB each, at most ``quarantine_max`` per run) events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import polars as pl

from marketlake.core.intervals import subtract
from marketlake.core.timeframes import Timeframe
from marketlake.errors import ExchangeError, ExchangeRequestError
from marketlake.exchanges.bybit import constants as C
from marketlake.exchanges.bybit.rest import BybitRestClient, kline_windows
from marketlake.exchanges.bybit.ws import (
    BybitWsClient,
    Connected,
    Disconnected,
    Malformed,
    Push,
    Subscribed,
    WsEvent,
)
from marketlake.exchanges.bybit.ws_frames import KlinePush, ws_url_for
from marketlake.ingest.callbacks import Callback, CallbackHub
from marketlake.ingest.heartbeat import keep_alive
from marketlake.ingest.live_tracks import FlushBatch, KlineTrack, TradeCandles, TradeTrack
from marketlake.ingest.live_types import (
    LiveCandle,
    LiveConfig,
    LiveStats,
    LiveTrade,
    Overflow,
    TradeBatch,
)
from marketlake.ingest.live_write import BatchWriter, WriteJob
from marketlake.store import Lake
from marketlake.store.layout import CANDLES, TRADES, SeriesId
from marketlake.store.ledger import Status

__all__ = ["LiveRunner"]

log = logging.getLogger(__name__)
_FILL_CONCURRENCY = 8


class LiveRunner:
    """Streams a :class:`LiveConfig` into a lake until stopped.

    Args:
        lake: Where candles and trades go; its ledger records coverage and events.
        rest: REST client for backfills (its rate budget and ban latch apply).
        config: What to stream.
        ws_url: WebSocket URL (default: derived from ``rest.base_url`` and the category).
        ws_options: Extra keyword arguments for :class:`BybitWsClient` (ping interval, backoff ...).
        on_status: Called with the running :class:`LiveStats` every ``status_interval_s``.
        run_args: Recorded with the run in the ledger.
    """

    def __init__(
        self,
        lake: Lake,
        rest: BybitRestClient,
        config: LiveConfig,
        *,
        ws_url: str | None = None,
        ws_options: Mapping[str, Any] | None = None,
        on_status: Callable[[LiveStats], None] | None = None,
        run_args: Mapping[str, Any] | None = None,
    ) -> None:
        self.lake = lake
        self.rest = rest
        self.config = config
        self.ws_url = ws_url or ws_url_for(rest.base_url, config.category)
        self.ws_options = dict(ws_options or {})
        self.on_status = on_status
        self.run_args = dict(run_args or {})
        self.hub = CallbackHub()
        self.stats = LiveStats()
        self.client: BybitWsClient | None = None
        self.writer = BatchWriter(lake, self.stats, self.hub, lambda sym, tf: self._sid(CANDLES, sym, tf))
        self._klines: dict[tuple[str, str], KlineTrack] = {}
        self._trades: dict[str, TradeTrack] = {}
        self._built: dict[str, list[TradeCandles]] = {}
        self._epochs: dict[str, int] = {}
        self._prices: dict[str, tuple[int, float]] = {}
        self._to_sync: set[str] = set()
        self._quarantine: list[tuple[str, bytes, int]] = []
        self._stop: asyncio.Event | None = None
        self._stop_early = False
        self._work: asyncio.Event | None = None
        self._run_id: str | None = None
        self._started = 0.0

    # ------------------------------------------------------------------ public API

    def add_callback(
        self,
        fn: Callable[[Any], Any],
        *,
        candles: bool = True,
        trades: bool = False,
        queue_size: int | None = None,
        overflow: Overflow | None = None,
    ) -> Callback:
        """Call ``fn`` (sync or async) with each closed :class:`LiveCandle` (and, with
        ``trades=True``, each :class:`TradeBatch`); see :mod:`marketlake.ingest.callbacks` for the
        bounded queue and what happens when it is full. Returns the registration (its figures)."""
        return self.hub.add(
            fn,
            candles=candles,
            trades=trades,
            queue_size=queue_size or self.config.callback_queue,
            overflow=overflow or self.config.overflow,
        )

    def latest_candle(self, symbol: str, timeframe: str | Timeframe) -> LiveCandle | None:
        """The forming candle of a series (``confirm=False``), or its newest closed one."""
        name = timeframe.name if isinstance(timeframe, Timeframe) else str(timeframe)
        track = self._klines.get((symbol, name))
        if track is not None:
            return track.latest()
        for built in self._built.get(symbol, []):
            if built.tf.name == name:
                return self._forming_from_trades(symbol, built)
        return None

    def _forming_from_trades(self, symbol: str, built: TradeCandles) -> LiveCandle | None:
        tt = self._trades[symbol]
        if tt.last is None:
            return None
        start = built.tf.floor(tt.last.ts_ms)
        rows = sorted(
            (t for t in (*built.pending_trades(), *tt.buffered()) if t.ts_ms >= start),
            key=lambda t: (t.ts_ms, t.seq if t.seq is not None else 0),
        )
        if not rows:
            return None
        return LiveCandle(
            symbol=symbol,
            timeframe=built.tf.name,
            ts_ms=start,
            open=rows[0].price,
            high=max(t.price for t in rows),
            low=min(t.price for t in rows),
            close=rows[-1].price,
            volume=sum(t.size for t in rows),
            turnover=sum(t.price * t.size for t in rows),
            trades=len(rows),
            buy_volume=sum(t.size for t in rows if t.side == "Buy"),
            confirm=False,
            source="trades",
        )

    def latest_price(self, symbol: str) -> float | None:
        """The newest price seen for ``symbol`` (last trade, or last kline close)."""
        seen = self._prices.get(symbol)
        return seen[1] if seen else None

    def stop(self) -> None:
        """Ask :meth:`run` to flush and return (safe to call from a signal handler on the loop)."""
        self._stop_early = True
        if self._stop is not None:
            self._stop.set()

    async def run(self) -> LiveStats:
        """Stream until :meth:`stop` or cancellation; everything in hand is written before it
        returns (or re-raises the cancellation)."""
        self._stop, self._work = asyncio.Event(), asyncio.Event()
        if self._stop_early:
            self._stop.set()
        self._started = time.monotonic()
        await self._init_tracks()
        run_id = self._run_id = self.writer.run_id = self.lake.ledger.start_run(
            "stream", {**self.run_args, "topics": self.config.topics(), "ws_url": self.ws_url}
        )
        opts = {"category": self.config.category, **self.ws_options}
        self.client = BybitWsClient(self.ws_url, self.config.topics(), **opts)
        self.hub.start()
        tasks = [
            asyncio.create_task(self.client.run(self._on_event), name="ws"),
            asyncio.create_task(self._filler(), name="filler"),
            asyncio.create_task(self._flusher(), name="flusher"),
            asyncio.create_task(self._status(), name="status"),
            asyncio.create_task(keep_alive(self.lake.ledger, run_id), name="heartbeat"),
        ]
        stopper = asyncio.create_task(self._stop.wait())
        status = "ok"
        try:
            done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not stopper and t.exception() is not None:
                    status = "failed"
                    raise t.exception()  # type: ignore[misc]
        except asyncio.CancelledError:
            status = "interrupted"
            raise
        finally:
            stopper.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.shield(self._shutdown(tasks, status))
        return self.stats

    # ------------------------------------------------------------------ start

    def _sid(self, dataset: str, symbol: str, tf: Timeframe | None = None) -> SeriesId:
        return SeriesId.of(
            dataset, exchange=self.config.exchange, category=self.config.category, symbol=symbol, timeframe=tf
        )

    def _ledger_end(self, sid: SeriesId, lo: int, *, first_hole: bool = False) -> int | None:
        """Where coverage of ``sid`` ends (ranges touching ``[lo, ...)``); with ``first_hole``,
        where the first hole inside that coverage begins (refetched: REST can fill it)."""
        done = [
            (r.start_ms, r.end_ms)
            for r in self.lake.ledger.ranges(sid, lo, None)
            if r.status in (Status.PRESENT, Status.EMPTY)
        ]
        if not done:
            return None
        end = max(b for _, b in done)
        if first_hole:
            holes = subtract([(max(lo, min(a for a, _ in done)), end)], done)
            if holes:
                return holes[0][0]
        return end

    async def _init_tracks(self) -> None:
        cfg = self.config
        now = await self.rest.get_server_time()
        lo = now - cfg.resume_max_ms
        for symbol in cfg.symbols:
            for tf in cfg.kline_timeframes:
                sid = self._sid(CANDLES, symbol, tf)
                frontier = self._ledger_end(sid, lo, first_hole=True)
                if frontier is None:
                    last = (
                        self.lake.scan_candles(
                            symbol, tf, start=lo, exchange=cfg.exchange, category=cfg.category
                        )
                        .select(pl.col("ts").max().dt.epoch("ms"))
                        .collect()
                        .item()
                    )
                    frontier = None if last is None else tf.next_open(int(last))
                self._klines[(symbol, tf.name)] = KlineTrack(symbol, tf, frontier)
            if not cfg.trades:
                continue
            traded = self._ledger_end(self._sid(TRADES, symbol), lo)
            self._trades[symbol] = TradeTrack(symbol, traded, cfg.trade_lateness_ms)
            self._epochs[symbol] = 0
            built = []
            for tf in cfg.trade_timeframes:
                end = self._ledger_end(self._sid(CANDLES, symbol, tf), lo)
                resume = end if traded is not None and end is not None and end <= traded else None
                tc = TradeCandles(symbol, tf, resume)
                if resume is not None and traded is not None and resume < traded:
                    # The trades of the unfinished buckets are in the lake, not in memory.
                    tc.feed(self._stored_trades(symbol, resume, traded))
                built.append(tc)
            self._built[symbol] = built

    def _stored_trades(self, symbol: str, start: int, end: int) -> list[LiveTrade]:
        df = self.lake.read_trades(
            symbol, start, end, exchange=self.config.exchange, category=self.config.category
        )
        return [
            LiveTrade(ts, p, s, side, tid, tick, bool(bt))
            for ts, p, s, side, tid, tick, bt in df.select(
                pl.col("ts").dt.epoch("ms"),
                "price",
                "size",
                "side",
                "trade_id",
                "tick_direction",
                "is_block_trade",
            ).iter_rows()
        ]

    # ------------------------------------------------------------------ events (on the loop, never blocking)

    def _on_event(self, ev: WsEvent) -> None:
        if isinstance(ev, Push):
            self._on_push(ev)
        elif isinstance(ev, Malformed):
            if ev.reason == "oversized":
                self.stats.oversized += 1
            else:
                self.stats.malformed += 1
            if len(self._quarantine) + self.stats.quarantined < self.config.quarantine_max:
                self._quarantine.append((ev.reason, ev.data, ev.size))
        elif isinstance(ev, Connected):
            self.stats.connects += 1
        elif isinstance(ev, Subscribed):
            new = {t: m for t, m in ev.rejected.items() if t not in self.stats.rejected_topics}
            self.stats.rejected_topics.update(ev.rejected)
            for topic, message in new.items():
                log.warning("bybit refused topic %s: %s", topic, message)
                self.lake.ledger.event("rejected", detail=f"{topic}: {message}"[:500], run_id=self._run_id)
            for symbol in self._trades:
                if f"publicTrade.{symbol}" in ev.topics:
                    self._to_sync.add(symbol)
            self._wake()
        elif isinstance(ev, Disconnected):
            self.stats.disconnects += 1
            self.stats.silent_detected += int(ev.silent)
            for track in self._klines.values():
                track.resync = True
            for symbol, tt in self._trades.items():
                tt.desync()
                self._epochs[symbol] += 1
            if ev.uptime_s > 0 or self.stats.disconnects == 1:
                # Failed attempts during an outage are counted, not logged one by one.
                detail = f"{ev.reason} (code {ev.code}, up {ev.uptime_s:.1f} s, connection {ev.conn})"
                self.lake.ledger.event("disconnect", detail=detail[:500], run_id=self._run_id)

    def _on_push(self, ev: Push) -> None:
        msg = ev.msg
        st = self.stats
        st.messages += 1
        st.last_push_ms = max(st.last_push_ms, msg.ts_ms)
        st.lag_ms = ev.recv_ns // 1_000_000 - msg.ts_ms
        if isinstance(msg, KlinePush):
            track = self._klines.get((msg.symbol, msg.interval))
            if track is None:
                return  # a topic we did not ask for (never from Bybit): nothing to do
            now = time.monotonic()
            for k in msg.candles:
                bad = track.check(k.start, k.end, k.interval)
                if bad is not None:
                    self._on_event(
                        Malformed(ev.conn, f"{msg.topic}: {bad}".encode(), 0, "inconsistent kline")
                    )
                    continue
                # Positional: the hot path (one per push); fields as LiveCandle declares them.
                candle = LiveCandle(
                    msg.symbol,
                    msg.interval,
                    k.start,
                    k.open,
                    k.high,
                    k.low,
                    k.close,
                    k.volume,
                    k.turnover,
                    None,
                    None,
                    k.confirm,
                )
                if k.confirm:
                    st.candles_confirmed += 1
                else:
                    st.forming_updates += 1
                before = track.duplicates
                self._accepted(track.on_push(candle, now))
                st.duplicates += track.duplicates - before
                self._price(msg.symbol, k.timestamp, k.close)
            if track.hole() is not None:
                self._wake()
            return
        tt = self._trades.get(msg.symbol)
        if tt is None:
            return
        rows = msg.trades  # decoded straight into trade records
        st.trades_received += len(rows)
        before = tt.duplicates
        new = tt.on_push(rows)
        st.trade_duplicates += tt.duplicates - before
        if new:
            self.hub.publish_trades(TradeBatch(msg.symbol, tuple(new)))
            self._price(msg.symbol, new[-1].ts_ms, new[-1].price)

    def _price(self, symbol: str, ts: int, price: float) -> None:
        seen = self._prices.get(symbol)
        if seen is None or ts >= seen[0]:
            self._prices[symbol] = (ts, price)

    def _accepted(self, candles: list[LiveCandle]) -> None:
        for c in candles:
            if c.source == "rest":
                self.stats.candles_backfilled += 1
            self.hub.publish_candle(c)

    def _wake(self) -> None:
        if self._work is not None:
            self._work.set()

    # ------------------------------------------------------------------ healing over REST

    async def _filler(self) -> None:
        assert self._work is not None
        gate = asyncio.Semaphore(_FILL_CONCURRENCY)
        grace = self.config.hole_grace_s
        while True:
            now = time.monotonic()
            due = [t for t in self._klines.values() if t.hole_due(now, grace)]
            syncs, self._to_sync = self._to_sync, set()
            if not due and not syncs:
                self._work.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._work.wait(), timeout=min(0.25, max(grace / 2, 0.01)))
                continue
            await asyncio.gather(
                *(self._sync_trades(s, gate) for s in syncs), *(self._fill(t, gate) for t in due)
            )

    async def _fill(self, track: KlineTrack, gate: asyncio.Semaphore) -> None:
        async with gate:
            hole = track.hole()
            if hole is None:
                return
            lo, hi = hole
            tf, sid = track.tf, self._sid(CANDLES, track.symbol, track.tf)
            reason = "reconnect" if track.resync else "gap"
            got = empty = 0
            for a, b in kline_windows(tf, lo, hi - 1):
                end = tf.next_open(b)
                while track.frontier is not None and track.frontier < end:
                    try:
                        page = await self.rest.fetch_kline_page(
                            self.config.category, track.symbol, tf.name, track.frontier, b
                        )
                    except ExchangeRequestError as exc:
                        self.stats.failed_ranges += 1
                        self._accepted(track.fail(track.frontier, end))
                        self.lake.ledger.event(
                            "backfill_failed",
                            sid=sid,
                            start_ms=a,
                            end_ms=end,
                            detail=str(exc)[:300],
                            run_id=self._run_id,
                        )
                        break
                    except ExchangeError as exc:
                        # Transient trouble or a ban: the hole stays and is tried again shortly.
                        log.warning("backfill of %s deferred: %s", sid.label(), exc)
                        await asyncio.sleep(1.0)
                        return
                    final = min(end, page.closed_until_ms)
                    if final > track.frontier:
                        start = track.frontier
                        accepted = track.fill(start, final, _page_candles(page.frame, track))
                        fetched = sum(1 for c in accepted if c.source == "rest")
                        got += fetched
                        empty += tf.count_between(start, final) - fetched
                        self._accepted(accepted)
                    if final < end:
                        # The newest candles of the hole have not settled at the server yet.
                        wait_ms = end + self.rest.settle_ms - page.server_time_ms
                        await asyncio.sleep(min(1.0, max(0.02, wait_ms / 1000)))
            self.stats.backfills += 1
            self.stats.candles_empty += max(0, empty)
            self.lake.ledger.event(
                "backfill",
                sid=sid,
                start_ms=lo,
                end_ms=track.frontier,
                detail=f"{reason}: {got} candles from REST",
                run_id=self._run_id,
            )

    async def _sync_trades(self, symbol: str, gate: asyncio.Semaphore) -> None:
        async with gate:
            tt, epoch = self._trades[symbol], self._epochs[symbol]
            limit = C.TRADE_LIMITS[self.config.category][1]
            try:
                got = await self.rest.recent_trades(self.config.category, symbol, limit)
            except ExchangeError as exc:
                log.warning("trade re-sync of %s deferred: %s", symbol, exc)
                await asyncio.sleep(1.0)
                self._to_sync.add(symbol)
                return
            rows = [
                LiveTrade(t.ts_ms, t.price, t.size, t.side, t.trade_id, None, t.is_block_trade, t.seq)
                for t in got
            ]
            rows.sort(key=lambda t: (t.ts_ms, t.seq if t.seq is not None else 0))
            if epoch != self._epochs[symbol]:
                return  # the socket dropped meanwhile: the next subscription re-syncs
            new, gap = tt.on_rest(rows, full=len(rows) >= limit)
            sid = self._sid(TRADES, symbol)
            if gap is not None:
                self.stats.trade_gaps += 1
                self.lake.ledger.event(
                    "trade_gap",
                    sid=sid,
                    start_ms=gap[0],
                    end_ms=gap[1],
                    detail=f"REST recent trades ({limit}) do not reach back to the last trade seen",
                    run_id=self._run_id,
                )
            if tt.committed is not None:
                for built in self._built.get(symbol, []):
                    built.start_at(tt.committed)
            if new:
                self.hub.publish_trades(TradeBatch(symbol, tuple(new)))
            self.stats.backfills += 1
            self.lake.ledger.event(
                "backfill", sid=sid, detail=f"re-sync: {len(new)} new trades from REST", run_id=self._run_id
            )

    # ------------------------------------------------------------------ writing

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(self.config.flush_interval_s)
            await self.flush()

    async def flush(self, *, final: bool = False) -> None:
        """Write everything complete (with ``final``: everything in hand) and record it."""
        jobs, self.writer.retry = self.writer.retry, []
        for track in self._klines.values():
            batch = track.take()
            if batch is not None:
                jobs.append(WriteJob(self._sid(CANDLES, track.symbol, track.tf), batch))
        builds: list[tuple[TradeCandles, FlushBatch]] = []
        for symbol, tt in self._trades.items():
            batch = tt.take(final)
            if batch is None:
                continue
            jobs.append(WriteJob(self._sid(TRADES, symbol), batch))
            builds += [(built, batch) for built in self._built.get(symbol, [])]
        if jobs:
            await self.writer.write(jobs, builds)
        quarantine, self._quarantine = self._quarantine, []
        self.writer.quarantine(quarantine)
        self.stats.flushes += 1

    # ------------------------------------------------------------------ status and shutdown

    def snapshot(self) -> LiveStats:
        """The current figures (callback and socket counters folded in)."""
        st = self.stats
        st.callback_delivered, st.callback_dropped, st.callback_errors = (
            self.hub.delivered,
            self.hub.dropped,
            self.hub.errors,
        )
        st.elapsed_s = time.monotonic() - self._started
        return st

    async def _status(self) -> None:
        while True:
            await asyncio.sleep(self.config.status_interval_s)
            if self.on_status is not None:
                self.on_status(self.snapshot())

    async def _shutdown(self, tasks: list[asyncio.Task[Any]], status: str) -> None:
        if self.client is not None:
            await self.client.stop()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await self.flush(final=True)
        finally:
            await self.hub.stop()
            if self.writer.retry:
                status = "failed"
            if self._run_id is not None:
                self.lake.ledger.finish_run(self._run_id, status, self.snapshot().to_dict())


def _page_candles(frame: pl.DataFrame, track: KlineTrack) -> list[LiveCandle]:
    return [
        LiveCandle(
            symbol=track.symbol,
            timeframe=track.tf.name,
            ts_ms=ts,
            open=o,
            high=h,
            low=lw,
            close=c,
            volume=v,
            turnover=t,
            source="rest",
        )
        for ts, o, h, lw, c, v, t in frame.select(
            pl.col("ts").dt.epoch("ms"), "open", "high", "low", "close", "volume", "turnover"
        ).iter_rows()
    ]
