"""The bookkeeping of one live series, pure (no I/O): what is complete, what is missing, what to write.

**Candles** (:class:`KlineTrack`). The *frontier* is an open time such that every candle opening
before it is either accepted (to be written) or verified absent at the exchange. A
``confirm: true`` push opening exactly at the frontier is accepted and moves it on; one opening
later waits in ``pending`` (there is a *hole* before it); one opening earlier is a duplicate. A
forming (``confirm: false``) push opening after the frontier also reveals a hole: candles closed
that no push confirmed (they closed while the socket was down). Holes are filled from REST
(:meth:`KlineTrack.fill`), then the pending candles follow in order. So candles are accepted in
strictly increasing open time, each exactly once, and the frontier never passes a candle that
is neither stored nor verified absent: no gap, no duplicate, whatever order pushes arrive in.

**Trades** (:class:`TradeTrack`). The frontier is a time such that every trade before it is in
hand. Pushes arrive in time order, so while the stream is *synced* the newest trade time seen is
the frontier. A disconnect un-syncs it; the REST list of recent trades fetched after the next
subscription is acknowledged re-syncs it when it reaches back to the frontier (otherwise the
missing span is a recorded gap). Trades are deduplicated by id, and written (and aggregated into
candles) only once ``lateness`` behind the frontier, when no earlier trade can still arrive.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from marketlake.core.candles import candles_from_trades
from marketlake.core.intervals import Interval, merge, subtract
from marketlake.core.timeframes import Timeframe
from marketlake.ingest.live_types import LiveCandle, LiveTrade, trades_frame

__all__ = ["FlushBatch", "KlineTrack", "TradeCandles", "TradeTrack", "absent_runs", "ceil_open"]


@dataclass(slots=True)
class FlushBatch:
    """What a series has for the lake since its last flush.

    Attributes:
        rows: Candles (or trades) to write, in order.
        span: ``[start, end)`` the batch completes (ledger coverage once written).
        empty: Sub-ranges verified empty at the exchange.
        failed: Sub-ranges that could not be fetched (a recorded gap).
    """

    rows: list
    span: Interval
    empty: list[Interval] = field(default_factory=list)
    failed: list[Interval] = field(default_factory=list)

    @property
    def present(self) -> list[Interval]:
        """The span minus the empty and failed ranges."""
        return subtract([self.span], [*self.empty, *self.failed])


def absent_runs(tf: Timeframe, start: int, end: int, have: Iterable[int]) -> list[Interval]:
    """``[a, b)`` runs of bucket opens in ``[start, end)`` missing from ``have``."""
    opens = tf.opens_between(start, end)
    if opens.size == 0:
        return []
    got = np.isin(opens, np.fromiter(have, dtype=np.int64))
    missing = np.flatnonzero(~got)
    if missing.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(missing) != 1) + 1
    return [(int(opens[r[0]]), tf.next_open(int(opens[r[-1]]))) for r in np.split(missing, breaks)]


class KlineTrack:
    """One kline series of the stream.

    Args:
        symbol: Symbol.
        tf: A Bybit timeframe.
        frontier: Where coverage resumes (None: at the first push seen).
        max_pending: Confirmed candles held behind a hole at most (older ones are dropped; the
            hole's REST fill fetches them instead).
    """

    def __init__(
        self, symbol: str, tf: Timeframe, frontier: int | None, *, max_pending: int = 10_000
    ) -> None:
        self.symbol = symbol
        self.tf = tf
        self.frontier = frontier
        self.committed = frontier
        self.pending: dict[int, LiveCandle] = {}
        self.forming: LiveCandle | None = None
        self.last_closed: LiveCandle | None = None
        self.resync = True  # a hole is filled at once (start, reconnect), not after the grace
        self.hole_since: float | None = None
        self.max_pending = max_pending
        self.duplicates = 0
        self._rows: list[LiveCandle] = []
        self._empty: list[Interval] = []
        self._failed: list[Interval] = []

    # ------------------------------------------------------------------ pushes

    def check(self, start: int, end: int, interval: str) -> str | None:
        """Why a pushed candle cannot belong to this series (None when it can)."""
        if interval != self.tf.name:
            return f"interval {interval[:8]!r} in a kline.{self.tf.name} push"
        if not self.tf.is_aligned(start) or end != self.tf.next_open(start) - 1:
            return f"start {start} / end {end} not on the {self.tf.name} grid"
        return None

    def on_push(self, candle: LiveCandle, now: float) -> list[LiveCandle]:
        """Take one pushed candle; return the candles accepted by it, oldest first."""
        start = candle.ts_ms
        if self.frontier is None:
            self.frontier = self.committed = start
            self.resync = False
        if not candle.confirm:
            if self.forming is None or start >= self.forming.ts_ms:
                self.forming = candle
            self._note_hole(now)
            return []
        if start < self.frontier or start in self.pending:
            self.duplicates += 1
            return []
        if start > self.frontier:
            self.pending[start] = candle
            if len(self.pending) > self.max_pending:
                del self.pending[min(self.pending)]
            self._note_hole(now)
            return []
        out = self._accept(candle)
        out += self._drain()
        self._note_hole(now)
        return out

    def _note_hole(self, now: float) -> None:
        if self.hole() is None:
            self.hole_since = None
        elif self.hole_since is None:
            self.hole_since = now

    def hole(self) -> Interval | None:
        """``[frontier, end)``: opens known to be closed but neither accepted nor verified absent."""
        if self.frontier is None:
            return None
        ends = [min(self.pending)] if self.pending else []
        if self.forming is not None and self.forming.ts_ms > self.frontier:
            ends.append(self.forming.ts_ms)
        end = min(ends) if ends else None
        return (self.frontier, end) if end is not None and end > self.frontier else None

    def hole_due(self, now: float, grace_s: float) -> bool:
        """True when a hole should be filled now (at once after a reconnect, else after grace)."""
        if self.hole() is None:
            return False
        return self.resync or (self.hole_since is not None and now - self.hole_since >= grace_s)

    # ------------------------------------------------------------------ REST

    def fill(self, start: int, end: int, candles: Sequence[LiveCandle]) -> list[LiveCandle]:
        """Apply a REST answer that is final for opens in ``[start, end)``: its candles are
        accepted, opens without one are verified empty; return the accepted candles (REST ones
        and pending ones released behind them), oldest first."""
        if self.frontier is None or end <= self.frontier or start > self.frontier:
            return []
        lo = self.frontier
        got = sorted((c for c in candles if lo <= c.ts_ms < end), key=lambda c: c.ts_ms)
        self._empty += absent_runs(self.tf, lo, end, (c.ts_ms for c in got))
        out: list[LiveCandle] = []
        for c in got:
            out += self._accept(c, advance=False)
        self.frontier = end
        out += self._drain()
        self.resync = False
        self.hole_since = None
        return out

    def fail(self, start: int, end: int) -> list[LiveCandle]:
        """Give up on ``[start, end)`` (REST refused it): recorded as failed, the frontier moves on."""
        if self.frontier is None or end <= self.frontier:
            return []
        self._failed.append((max(start, self.frontier), end))
        self.frontier = end
        self.resync = False
        self.hole_since = None
        return self._drain()

    # ------------------------------------------------------------------ internals

    def _accept(self, candle: LiveCandle, *, advance: bool = True) -> list[LiveCandle]:
        self._rows.append(candle)
        if self.last_closed is None or candle.ts_ms > self.last_closed.ts_ms:
            self.last_closed = candle
        if advance:
            self.frontier = self.tf.next_open(candle.ts_ms)
        return [candle]

    def _drain(self) -> list[LiveCandle]:
        out: list[LiveCandle] = []
        assert self.frontier is not None
        for start in sorted(self.pending):
            if start < self.frontier:
                del self.pending[start]
                self.duplicates += 1
            elif start == self.frontier:
                out += self._accept(self.pending.pop(start))
            else:
                break
        return out

    def take(self) -> FlushBatch | None:
        """What to write since the last take (None when nothing completed)."""
        if self.frontier is None or self.committed is None or self.frontier <= self.committed:
            return None
        batch = FlushBatch(
            self._rows, (self.committed, self.frontier), merge(self._empty), merge(self._failed)
        )
        self._rows, self._empty, self._failed = [], [], []
        self.committed = self.frontier
        return batch

    def latest(self) -> LiveCandle | None:
        """The forming candle, or the newest closed one when nothing newer is forming."""
        if self.forming is not None and (
            self.last_closed is None or self.forming.ts_ms > self.last_closed.ts_ms
        ):
            return self.forming
        return self.last_closed


class TradeTrack:
    """The trades of one symbol.

    Args:
        symbol: Symbol.
        frontier: Where coverage resumes (the end of the ledger's trade coverage), or None.
        lateness_ms: How far behind the frontier trades become final.
    """

    def __init__(self, symbol: str, frontier: int | None, lateness_ms: int) -> None:
        self.symbol = symbol
        self.frontier = frontier
        self.committed = frontier
        self.floor = frontier if frontier is not None else -(2**62)  # older trades are stored already
        self.lateness_ms = lateness_ms
        self.synced = False
        self.seen: dict[str, int] = {}
        self.duplicates = 0
        self.last: LiveTrade | None = None
        self._buffer: list[LiveTrade] = []
        self._gaps: list[Interval] = []
        self._unsynced_max: int | None = None

    def _take_new(self, trades: Iterable[LiveTrade]) -> list[LiveTrade]:
        floor = self.floor if self.frontier is None else max(self.floor, self.frontier - self.lateness_ms)
        out = []
        for t in trades:
            if t.trade_id in self.seen or t.ts_ms < floor:
                self.duplicates += 1
                continue
            self.seen[t.trade_id] = t.ts_ms
            out.append(t)
        if out:
            self._buffer += out
            newest = out[0] if len(out) == 1 else max(out, key=lambda t: (t.ts_ms, t.seq or 0))
            if self.last is None or (newest.ts_ms, newest.seq or 0) >= (self.last.ts_ms, self.last.seq or 0):
                self.last = newest
        return out

    def on_push(self, trades: Sequence[LiveTrade]) -> list[LiveTrade]:
        """Take pushed trades; return the new ones (duplicates dropped), as pushed."""
        out = self._take_new(trades)
        if trades:
            newest = max(t.ts_ms for t in trades)
            if self.synced and self.frontier is not None:
                self.frontier = max(self.frontier, newest)
            elif self.synced:  # first trades after a sync that found none: coverage starts here
                self.frontier = newest
                self.committed = min(t.ts_ms for t in trades)
            else:
                self._unsynced_max = max(self._unsynced_max or newest, newest)
        return out

    def desync(self) -> None:
        """The socket dropped: the frontier waits for the next REST re-sync."""
        self.synced = False
        self._unsynced_max = None

    def on_rest(self, trades: Sequence[LiveTrade], full: bool) -> tuple[list[LiveTrade], Interval | None]:
        """Re-sync from the REST list of recent trades (oldest first; ``full``: as long as the
        limit, so older trades may exist that it does not show). Return the new trades and the
        gap it could not close, if any."""
        gap: Interval | None = None
        if trades:
            oldest = trades[0].ts_ms
            # Trades sharing the oldest millisecond may be cut off a full list: start after it.
            start = oldest + 1 if full else oldest
            if self.frontier is None:
                self.frontier = self.committed = start
            elif full and oldest >= self.frontier:
                gap = (self.frontier, start)
                self._gaps.append(gap)
                self.frontier = start
        out = self._take_new(trades)
        newest = max(
            [t.ts_ms for t in trades] + ([self._unsynced_max] if self._unsynced_max is not None else []),
            default=None,
        )
        if newest is not None:
            if self.frontier is None:
                self.frontier = self.committed = newest  # nothing older known: cover from the first push on
            self.frontier = max(self.frontier, newest)
        self.synced = True
        self._unsynced_max = None
        return out, gap

    def buffered(self) -> list[LiveTrade]:
        """Trades taken but not yet final (not written)."""
        return list(self._buffer)

    def cut(self, final: bool) -> int | None:
        """Trades before this time are final (everything in hand at the end of a run)."""
        if self.frontier is None:
            return None
        return self.frontier if final else self.frontier - self.lateness_ms

    def take(self, final: bool = False) -> FlushBatch | None:
        """Final trades to write since the last take, and the gaps met."""
        cut = self.cut(final)
        if cut is None or self.committed is None or cut <= self.committed:
            return None
        ready = [t for t in self._buffer if t.ts_ms < cut]
        if final:
            ready = self._buffer  # trades at or after the frontier are written too (not claimed)
        keep = [t for t in self._buffer if t.ts_ms >= cut] if not final else []
        self._buffer = keep
        ready.sort(key=lambda t: (t.ts_ms, t.seq if t.seq is not None else 0))
        failed = [
            (max(a, self.committed), min(b, cut)) for a, b in self._gaps if b > self.committed and a < cut
        ]
        self._gaps = [(a, b) for a, b in self._gaps if b > cut]
        batch = FlushBatch(ready, (self.committed, cut), [], merge(failed))
        self.committed = cut
        # Ids older than anything still accepted can go: a repeat would be dropped as too old.
        floor = max(self.floor, cut - self.lateness_ms)
        self.seen = {k: v for k, v in self.seen.items() if v >= floor} if len(self.seen) > 4096 else self.seen
        return batch


def ceil_open(tf: Timeframe, t: int) -> int:
    """The first bucket open at or after ``t``."""
    first = tf.floor(t)
    return first if first >= t else tf.next_open(first)


class TradeCandles:
    """Candles of one timeframe built from a symbol's final trades (sub-minute ones included).

    A bucket is built once every trade before its end is final; buckets that overlap a trade gap
    are not built but recorded as failed, so a candle from incomplete trades is never stored.

    Args:
        symbol: Symbol.
        tf: Any timeframe.
        frontier: First bucket open still to build (None: set by :meth:`start_at`).
    """

    def __init__(self, symbol: str, tf: Timeframe, frontier: int | None) -> None:
        self.symbol = symbol
        self.tf = tf
        self.frontier = frontier
        self._buf: list[LiveTrade] = []
        self._failed: list[Interval] = []

    def pending_trades(self) -> list[LiveTrade]:
        """Final trades of buckets not built yet."""
        return list(self._buf)

    def start_at(self, t: int) -> None:
        """Begin with the first whole bucket at or after ``t`` (when not begun yet)."""
        if self.frontier is None:
            self.frontier = ceil_open(self.tf, t)

    def feed(self, trades: Sequence[LiveTrade], failed: Sequence[Interval] = ()) -> None:
        """Final trades (sorted) and trade gaps met since the last feed."""
        lo = self.frontier if self.frontier is not None else -(2**62)
        self._buf += [t for t in trades if t.ts_ms >= lo]
        self._failed += list(failed)

    def build(self, cut: int) -> FlushBatch | None:
        """Build every bucket that ends at or before ``cut`` (trades before ``cut`` are final)."""
        if self.frontier is None:
            return None
        lo, hi = self.frontier, self.tf.floor(cut)
        if hi <= lo:
            return None
        bad = merge(
            (max(lo, self.tf.floor(a)), min(hi, ceil_open(self.tf, b)))
            for a, b in self._failed
            if b > lo and a < hi
        )
        use = [t for t in self._buf if lo <= t.ts_ms < hi and not any(a <= t.ts_ms < b for a, b in bad)]
        use.sort(key=lambda t: (t.ts_ms, t.seq if t.seq is not None else 0))
        rows: list[LiveCandle] = []
        if use:
            df = candles_from_trades(trades_frame(use), self.tf)
            name = self.tf.name
            for r in df.with_columns(pl.col("ts").dt.epoch("ms")).iter_rows(named=True):
                rows.append(
                    LiveCandle(
                        symbol=self.symbol,
                        timeframe=name,
                        ts_ms=r["ts"],
                        open=r["open"],
                        high=r["high"],
                        low=r["low"],
                        close=r["close"],
                        volume=r["volume"],
                        turnover=r["turnover"],
                        trades=r["trades"],
                        buy_volume=r["buy_volume"],
                        source="trades",
                    )
                )
        empty = subtract(absent_runs(self.tf, lo, hi, (c.ts_ms for c in rows)), bad)
        self.frontier = hi
        self._buf = [t for t in self._buf if t.ts_ms >= hi]
        self._failed = [(a, b) for a, b in self._failed if b > hi]
        return FlushBatch(rows, (lo, hi), empty, bad)
