"""Bybit v5 perpetual-futures market endpoints of :class:`~marketlake.exchanges.bybit.rest.BybitRestClient`.

The methods live in :class:`PerpMarketMixin`, a base class of the client, so they share its request
path (rate budget, ban latch, retries, the error tree: see :mod:`marketlake.exchanges.bybit.rest`).

Ranges and paging, per endpoint (all times epoch ms):

==============================  =================  ===========================================
endpoint                        range              paging
==============================  =================  ===========================================
funding history                 ``[start, end)``   newest first, <= 200 rows; the next page asks
                                                   ``endTime = oldest - 1`` (Bybit's bounds are
                                                   inclusive), so no row repeats or is skipped;
                                                   a short page is the last
mark / index / premium klines   ``[start, end]``   exactly like klines (inclusive open times,
                                                   windows of <= 1000 candles from
                                                   :func:`~marketlake.exchanges.bybit.rest.kline_windows`,
                                                   forming candle dropped by the server's clock)
open interest                   ``[start, end)``   newest first, ``nextPageCursor`` pages of <= 200;
                                                   or independent windows of <= ``limit`` rows
                                                   (:func:`open_interest_windows`) for planners
==============================  =================  ===========================================

How the ingest should use them: price klines plan and commit exactly like klines; funding plans one
sequential walk per symbol (:meth:`~PerpMarketMixin.iter_funding_pages`, committing each page and
ledger-covering ``[oldest row, page end)``, clipped to the server's time); open interest plans
:func:`open_interest_windows` and fetches each with :meth:`~PerpMarketMixin.fetch_open_interest_page`
(one request each, so windows run concurrently within the budget); instrument snapshots come from
:meth:`~PerpMarketMixin.get_instrument_snapshot` and go to
:func:`marketlake.core.instruments.apply_snapshot`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import numpy as np
import polars as pl

from marketlake.core.symbols import validate_symbol
from marketlake.core.timeframes import Timeframe, parse_timeframe
from marketlake.errors import DataValidationError, ExchangeProtocolError, InvalidSymbolError, InvalidTimeframeError
from marketlake.exchanges.bybit import constants as C
from marketlake.exchanges.bybit.parse import Envelope, Instrument
from marketlake.exchanges.bybit.parse_perp import (
    FundingBatch,
    PriceKlineBatch,
    decode_funding_result,
    decode_open_interest_result,
    decode_price_kline_result,
    funding_frame,
    instruments_snapshot_frame,
    open_interest_frame,
    price_klines_frame,
)

__all__ = [
    "FundingPage",
    "InstrumentSnapshot",
    "OpenInterestChunk",
    "PerpMarketMixin",
    "PriceKlinePage",
    "open_interest_windows",
]

_MAX_PAGES: Final = 100_000  # a runaway guard only: 100k pages of funding is 2000 years at 1 h


def _ms_arg(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataValidationError(f"{name} must be epoch milliseconds (int), got {str(value)[:40]!r}")
    return value


def _half_open(start_ms: object, end_ms: object) -> tuple[int, int]:
    a, b = _ms_arg("start_ms", start_ms), _ms_arg("end_ms", end_ms)
    if a > b:
        raise DataValidationError(f"range start {a} is after end {b}")
    return a, b


def _check_category(category: str, allowed: Sequence[str], what: str) -> None:
    if category not in allowed:
        raise InvalidSymbolError(
            f"invalid {what} category {str(category)[:40]!r}: use one of {', '.join(allowed)}"
        )


def _oi_step(interval_time: str) -> int:
    step = C.OI_INTERVALS.get(interval_time)
    if step is None:
        raise InvalidTimeframeError(
            f"invalid open-interest intervalTime {str(interval_time)[:20]!r}: use one of {', '.join(C.OI_INTERVALS)}"
        )
    return step


def _check_limit(limit: int, most: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= most:
        raise DataValidationError(f"limit must be 1..{most}, got {str(limit)[:20]!r}")


def open_interest_windows(
    interval_time: str, start_ms: int, end_ms: int, limit: int = C.OI_LIMIT_MAX
) -> list[tuple[int, int]]:
    """Split ``[start_ms, end_ms)`` into half-open windows holding at most ``limit`` grid points
    of ``interval_time`` each (one request each, no cursor needed).

    Returns:
        ``(start, end)`` pairs, ascending, contiguous, covering the range; empty for an empty range.
    """
    step = _oi_step(interval_time)
    a, b = _half_open(start_ms, end_ms)
    _check_limit(limit, C.OI_LIMIT_MAX)
    first = -(-a // step) * step  # first grid point >= a
    out = []
    lo = a
    point = first
    while lo < b:
        hi = min(b, point + limit * step)  # grid points point .. point + (limit-1)*step
        out.append((lo, hi))
        lo, point = hi, point + limit * step
    return out


@dataclass(frozen=True, slots=True)
class FundingPage:
    """One funding-history answer.

    Attributes:
        category: Market category.
        symbol: Symbol.
        start_ms: Range start asked for (inclusive).
        end_ms: Range end asked for (exclusive).
        frame: Settlements with ``start_ms <= ts < end_ms``: columns ts (Datetime ms UTC), rate;
            ascending.
        full: The server sent a full page: older settlements in range may remain.
        oldest_ms: The oldest settlement the server sent (before clipping to the range); None
            for an empty answer.
        server_time_ms: The server's clock when it answered.
    """

    category: str
    symbol: str
    start_ms: int
    end_ms: int
    frame: pl.DataFrame
    full: bool
    oldest_ms: int | None
    server_time_ms: int

    @property
    def covered_from_ms(self) -> int:
        """Every settlement in ``[covered_from_ms, end_ms)`` is in this page: the oldest row's
        time when the page is full, else ``start_ms``."""
        if self.full and self.oldest_ms is not None:
            return min(max(self.start_ms, self.oldest_ms), self.end_ms)
        return self.start_ms


@dataclass(frozen=True, slots=True)
class PriceKlinePage:
    """The closed candles of one mark / index / premium kline window (as
    :class:`~marketlake.exchanges.bybit.rest.KlinePage`, without volume).

    Attributes:
        kind: ``mark``, ``index`` or ``premium``.
        category: Market category.
        symbol: Symbol.
        interval: Interval, Bybit's spelling.
        start_ms: First open time asked for (inclusive).
        end_ms: Last open time asked for (inclusive).
        frame: Closed candles with ``start_ms <= ts <= end_ms``, ascending: ts, open, high, low, close.
        server_time_ms: The server's clock when it answered.
        closed_until_ms: Every candle opening before this was closed at ``server_time_ms``.
    """

    kind: str
    category: str
    symbol: str
    interval: str
    start_ms: int
    end_ms: int
    frame: pl.DataFrame
    server_time_ms: int
    closed_until_ms: int

    @property
    def complete(self) -> bool:
        """True when every candle of the window is final."""
        return self.end_ms < self.closed_until_ms


@dataclass(frozen=True, slots=True)
class OpenInterestChunk:
    """Open interest of one request.

    Attributes:
        interval_time: ``5min`` ... ``1d``.
        start_ms: Range start asked for (inclusive).
        end_ms: Range end asked for (exclusive).
        frame: Rows with ``start_ms <= ts < end_ms``: ts (Datetime ms UTC), open_interest; ascending.
        next_cursor: ``nextPageCursor`` as sent (empty: none).
        full: The server sent ``limit`` rows: older rows in range may remain.
        server_time_ms: The server's clock when it answered.
    """

    interval_time: str
    start_ms: int
    end_ms: int
    frame: pl.DataFrame
    next_cursor: str
    full: bool
    server_time_ms: int


@dataclass(frozen=True, slots=True)
class InstrumentSnapshot:
    """Every instrument of some categories at one moment.

    Attributes:
        taken_ms: The server's clock before the first request (the snapshot's time).
        categories: The categories listed completely.
        instruments: Decoded instruments, sorted by category and symbol.
        frame: The same as an :data:`~marketlake.core.schemas_perp.INSTRUMENT_SNAPSHOT_SCHEMA` frame.
    """

    taken_ms: int
    categories: tuple[str, ...]
    instruments: list[Instrument]
    frame: pl.DataFrame


class PerpMarketMixin:
    """Funding, mark/index/premium klines, open interest and instrument snapshots (see the
    module docstring). Mixed into :class:`~marketlake.exchanges.bybit.rest.BybitRestClient`."""

    settle_ms: int
    _server_time_seen: int

    if TYPE_CHECKING:

        async def _request(self, path: str, params: Mapping[str, str], context: str) -> Envelope: ...
        async def get_server_time(self) -> int: ...
        async def get_instruments(
            self, category: str, status: str | None = "Trading", *, symbol: str | None = None, limit: int = ...
        ) -> list[Instrument]: ...

    async def _server_time(self, reply: Envelope) -> int:
        return reply.time_ms if reply.time_ms is not None else await self.get_server_time()

    # ------------------------------------------------------------------ funding

    async def fetch_funding_page(
        self, category: str, symbol: str, start_ms: int, end_ms: int, limit: int = C.FUNDING_LIMIT_MAX
    ) -> FundingPage:
        """One request of ``/v5/market/funding/history``: the newest ``limit`` settlements with
        ``start_ms <= ts < end_ms``.

        Raises:
            DataValidationError: bad range or limit. InvalidSymbolError: bad category or symbol.
            ExchangeProtocolError: a malformed answer, or rows of another symbol.
            ExchangeError: see :mod:`marketlake.exchanges.bybit.rest`.
        """
        _check_category(category, C.FUNDING_CATEGORIES, "funding")
        validate_symbol(symbol)
        a, b = _half_open(start_ms, end_ms)
        _check_limit(limit, C.FUNDING_LIMIT_MAX)
        context = f"GET {C.PATH_FUNDING_HISTORY} {category} {symbol} [{a}, {b})"
        params = {"category": category, "symbol": symbol, "startTime": str(a), "endTime": str(b - 1), "limit": str(limit)}
        reply = await self._request(C.PATH_FUNDING_HISTORY, params, context)
        batch = decode_funding_result(reply.result)
        if len(batch) and batch.symbol != symbol:
            raise ExchangeProtocolError(f"{context}: answer is for symbol {batch.symbol[:30]!r}")
        kept = batch.select((batch.ts >= a) & (batch.ts < b)) if len(batch) else batch
        oldest = int(batch.ts[0]) if len(batch) else None
        return FundingPage(
            category, symbol, a, b, funding_frame(kept), len(batch) >= limit, oldest, await self._server_time(reply)
        )

    async def iter_funding_pages(
        self, category: str, symbol: str, start_ms: int, end_ms: int, limit: int = C.FUNDING_LIMIT_MAX
    ) -> AsyncIterator[FundingPage]:
        """Walk ``[start_ms, end_ms)`` newest first, one request per page: each next page ends
        where the previous one's oldest row begins, until a page is short or reaches ``start_ms``.

        Raises:
            ExchangeProtocolError: a full page that does not move the end back (the server
                ignores ``endTime``): paging would never finish.
        """
        a, b = _half_open(start_ms, end_ms)
        for _ in range(_MAX_PAGES):
            if a >= b:
                return
            page = await self.fetch_funding_page(category, symbol, a, b, limit)
            yield page
            if not page.full or page.oldest_ms is None or page.oldest_ms <= a:
                return
            if page.oldest_ms >= b:
                raise ExchangeProtocolError(
                    f"funding history {category} {symbol}: endTime {b - 1} was not honoured"
                )
            b = page.oldest_ms  # Bybit's endTime is inclusive: the next page asks up to oldest - 1
        raise ExchangeProtocolError(f"funding history {category} {symbol}: more than {_MAX_PAGES} pages")

    async def get_funding_history(
        self, category: str, symbol: str, start_ms: int, end_ms: int, limit: int = C.FUNDING_LIMIT_MAX
    ) -> pl.DataFrame:
        """Every funding settlement with ``start_ms <= ts < end_ms``: columns ts (Datetime ms UTC),
        rate; ascending, unique ts. (``interval_minutes`` is added by the ingest with
        :func:`marketlake.core.funding.infer_funding_intervals`.)"""
        frames = [p.frame async for p in self.iter_funding_pages(category, symbol, start_ms, end_ms, limit)]
        if not frames:
            return funding_frame(FundingBatch("", "", np.empty(0, np.int64), np.empty(0)))
        return pl.concat(frames).unique("ts", keep="first").sort("ts")

    # ------------------------------------------------------------------ mark / index / premium klines

    def _check_price_series(self, kind: str, category: str, symbol: str, interval: str) -> Timeframe:
        if kind not in C.PRICE_KINDS:
            raise DataValidationError(
                f"invalid price kind {str(kind)[:20]!r}: use one of {', '.join(C.PRICE_KINDS)}"
            )
        _check_category(category, C.PRICE_KLINE_CATEGORIES[kind], f"{kind} price kline")
        validate_symbol(symbol)
        tf = parse_timeframe(interval)
        if not tf.is_bybit:
            raise InvalidTimeframeError(
                f"Bybit serves no {tf.name} klines; use one of {', '.join(C.INTERVALS)}"
            )
        return tf

    async def fetch_price_kline_page(
        self, kind: str, category: str, symbol: str, interval: str, start_ms: int, end_ms: int
    ) -> PriceKlinePage:
        """One window of at most 1000 mark / index / premium candles opening in
        ``[start_ms, end_ms]`` (inclusive, as :meth:`fetch_kline_page`); forming candles dropped.

        Raises:
            DataValidationError: bad arguments or a window of more than 1000 candles.
            ExchangeProtocolError: a malformed answer or a row off the interval's grid.
            ExchangeError: see :mod:`marketlake.exchanges.bybit.rest`.
        """
        tf = self._check_price_series(kind, category, symbol, interval)
        a, b = _half_open(start_ms, end_ms)
        count = tf.count_between(a, b + 1)
        if count > C.KLINE_LIMIT_MAX:
            raise DataValidationError(
                f"kline window of {count} candles exceeds {C.KLINE_LIMIT_MAX}; use kline_windows()"
            )
        path = C.PATH_PRICE_KLINES[kind]
        context = f"GET {path} {category} {symbol} interval {tf.name} [{a}, {b}]"
        params = {
            "category": category, "symbol": symbol, "interval": tf.name,
            "start": str(a), "end": str(b), "limit": str(max(1, count)),
        }
        reply = await self._request(path, params, context)
        batch = decode_price_kline_result(reply.result, kind)
        server_time = await self._server_time(reply)
        batch = _on_grid(batch, tf, context).select((batch.ts >= a) & (batch.ts <= b)) if len(batch) else batch
        settled = server_time - self.settle_ms
        return PriceKlinePage(
            kind, category, symbol, tf.name, a, b,
            price_klines_frame(batch.closed(tf, settled)), server_time, tf.floor(settled),
        )

    async def get_price_klines(
        self, kind: str, category: str, symbol: str, interval: str, start_ms: int, end_ms: int, *, concurrency: int = 4
    ) -> pl.DataFrame:
        """All closed ``kind`` candles with ``start_ms <= ts <= end_ms``, ascending, unique ts;
        windows fetched ``concurrency`` at a time, the first alone (it tells the server's time, and
        windows opening after it are not requested)."""
        from marketlake.exchanges.bybit.rest import kline_windows  # rest imports this module

        self._check_price_series(kind, category, symbol, interval)
        a, b = _half_open(start_ms, end_ms)
        if concurrency < 1:
            raise DataValidationError("concurrency must be >= 1")
        windows = kline_windows(interval, a, b)
        gate = asyncio.Semaphore(concurrency)
        frames: list[pl.DataFrame | None] = [None] * len(windows)

        async def one(i: int, lo: int, hi: int) -> None:
            async with gate:
                if i and self._server_time_seen and lo >= self._server_time_seen:
                    return
                frames[i] = (await self.fetch_price_kline_page(kind, category, symbol, interval, lo, hi)).frame

        if windows:
            await one(0, *windows[0])
        tasks = [asyncio.ensure_future(one(i, lo, hi)) for i, (lo, hi) in enumerate(windows) if i]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        parts = [f for f in frames if f is not None and f.height]
        if not parts:
            return price_klines_frame(decode_price_kline_result(b'{"list":[]}', kind))
        return pl.concat(parts).unique("ts", keep="first").sort("ts")

    async def get_mark_price_klines(
        self, category: str, symbol: str, interval: str, start_ms: int, end_ms: int, *, concurrency: int = 4
    ) -> pl.DataFrame:
        """Closed mark-price candles opening in ``[start_ms, end_ms]`` (see :meth:`get_price_klines`)."""
        return await self.get_price_klines(
            "mark", category, symbol, interval, start_ms, end_ms, concurrency=concurrency
        )

    async def get_index_price_klines(
        self, category: str, symbol: str, interval: str, start_ms: int, end_ms: int, *, concurrency: int = 4
    ) -> pl.DataFrame:
        """Closed index-price candles opening in ``[start_ms, end_ms]`` (see :meth:`get_price_klines`)."""
        return await self.get_price_klines(
            "index", category, symbol, interval, start_ms, end_ms, concurrency=concurrency
        )

    async def get_premium_index_price_klines(
        self, category: str, symbol: str, interval: str, start_ms: int, end_ms: int, *, concurrency: int = 4
    ) -> pl.DataFrame:
        """Closed premium-index candles opening in ``[start_ms, end_ms]`` (linear only; values are
        signed ratios; see :meth:`get_price_klines`)."""
        return await self.get_price_klines(
            "premium", category, symbol, interval, start_ms, end_ms, concurrency=concurrency
        )

    # ------------------------------------------------------------------ open interest

    async def fetch_open_interest_page(
        self,
        category: str,
        symbol: str,
        interval_time: str,
        start_ms: int,
        end_ms: int,
        limit: int = C.OI_LIMIT_MAX,
        cursor: str | None = None,
    ) -> OpenInterestChunk:
        """One request of ``/v5/market/open-interest`` for ``[start_ms, end_ms)`` (newest first;
        ``cursor`` continues a previous answer).

        Raises:
            DataValidationError, InvalidSymbolError, InvalidTimeframeError: bad arguments.
            ExchangeProtocolError: a malformed answer, or a row off the ``interval_time`` grid.
            ExchangeError: see :mod:`marketlake.exchanges.bybit.rest`.
        """
        _check_category(category, C.OI_CATEGORIES, "open-interest")
        validate_symbol(symbol)
        step = _oi_step(interval_time)
        a, b = _half_open(start_ms, end_ms)
        _check_limit(limit, C.OI_LIMIT_MAX)
        context = f"GET {C.PATH_OPEN_INTEREST} {category} {symbol} {interval_time} [{a}, {b})"
        params = {
            "category": category, "symbol": symbol, "intervalTime": interval_time,
            "startTime": str(a), "endTime": str(b - 1), "limit": str(limit),
        }
        if cursor:
            params["cursor"] = cursor
        reply = await self._request(C.PATH_OPEN_INTEREST, params, context)
        page = decode_open_interest_result(reply.result)
        if page.symbol and page.symbol != symbol:
            raise ExchangeProtocolError(f"{context}: answer is for symbol {page.symbol[:30]!r}")
        off = page.ts % step != 0
        if off.any():
            raise ExchangeProtocolError(
                f"{context}: row time {int(page.ts[off][0])} is not on the {interval_time} grid"
            )
        keep = (page.ts >= a) & (page.ts < b)
        return OpenInterestChunk(
            interval_time, a, b, open_interest_frame(page.ts[keep], page.open_interest[keep]),
            page.next_cursor, len(page) >= limit, await self._server_time(reply),
        )

    async def iter_open_interest_pages(
        self,
        category: str,
        symbol: str,
        interval_time: str,
        start_ms: int,
        end_ms: int,
        limit: int = C.OI_LIMIT_MAX,
        cursor: str | None = None,
    ) -> AsyncIterator[OpenInterestChunk]:
        """Walk ``[start_ms, end_ms)`` newest first by ``nextPageCursor``, one request per page,
        until a short page, an empty cursor, or a page reaching ``start_ms``. Rows a page repeats
        from the one before are dropped.

        Raises:
            ExchangeProtocolError: a cursor repeats, or a full page brings nothing older.
        """
        a, b = _half_open(start_ms, end_ms)
        seen: set[str] = set()
        oldest = b
        for _ in range(_MAX_PAGES):
            chunk = await self.fetch_open_interest_page(category, symbol, interval_time, a, b, limit, cursor)
            ts = chunk.frame.get_column("ts").dt.epoch("ms")
            fresh = chunk.frame.filter(ts < oldest)
            if chunk.frame.height and not fresh.height:
                raise ExchangeProtocolError(
                    f"open interest {category} {symbol} {interval_time}: cursor page brought nothing older than {oldest}"
                )
            if fresh.height:
                oldest = int(fresh.get_column("ts").dt.epoch("ms").min())  # type: ignore[arg-type]
            yield OpenInterestChunk(
                chunk.interval_time, chunk.start_ms, chunk.end_ms, fresh,
                chunk.next_cursor, chunk.full, chunk.server_time_ms,
            )
            cursor = chunk.next_cursor
            if not chunk.full or not cursor or not chunk.frame.height or oldest <= a:
                return
            if cursor in seen:
                raise ExchangeProtocolError(
                    f"open interest {category} {symbol}: cursor {cursor[:60]!r} repeats"
                )
            seen.add(cursor)
        raise ExchangeProtocolError(f"open interest {category} {symbol}: more than {_MAX_PAGES} pages")

    async def get_open_interest(
        self,
        category: str,
        symbol: str,
        interval_time: str,
        start_ms: int,
        end_ms: int,
        limit: int = C.OI_LIMIT_MAX,
        cursor: str | None = None,
    ) -> pl.DataFrame:
        """Every open-interest row with ``start_ms <= ts < end_ms``: columns ts (Datetime ms UTC),
        open_interest; ascending, unique ts (cursor pages, see :meth:`iter_open_interest_pages`)."""
        frames = [
            c.frame
            async for c in self.iter_open_interest_pages(category, symbol, interval_time, start_ms, end_ms, limit, cursor)
        ]
        parts = [f for f in frames if f.height]
        if not parts:
            return open_interest_frame(np.empty(0, np.int64), np.empty(0))
        return pl.concat(parts).sort("ts")

    # ------------------------------------------------------------------ instruments

    async def get_instrument_snapshot(
        self, categories: Sequence[str] = ("linear", "inverse", "spot"), *, statuses: Sequence[str] | None = None
    ) -> InstrumentSnapshot:
        """Every instrument of ``categories`` in every status (instruments-info answers only
        ``Trading`` by default, so delisted and pre-launch symbols need their own requests).

        Args:
            categories: Categories to list completely.
            statuses: Statuses to ask for; default all of ``PreLaunch, Trading, Delivering,
                Closed`` (spot: ``Trading`` only, the one status Bybit lists there).
        """
        for cat in categories:
            _check_category(cat, C.CATEGORIES, "instruments")
        taken = await self.get_server_time()
        found: dict[tuple[str, str], Instrument] = {}
        for cat in categories:
            wanted = ("Trading",) if cat == "spot" else tuple(statuses or C.INSTRUMENT_STATUSES)
            for status in wanted:
                for inst in await self.get_instruments(cat, status):
                    found.setdefault((cat, inst.symbol), inst)
        instruments = [found[k] for k in sorted(found)]
        return InstrumentSnapshot(
            taken, tuple(categories), instruments, instruments_snapshot_frame(instruments)
        )


def _on_grid(batch: PriceKlineBatch, tf: Timeframe, context: str) -> PriceKlineBatch:
    aligned = tf.floor_array(batch.ts) == batch.ts
    if not aligned.all():
        raise ExchangeProtocolError(
            f"{context}: row startTime {int(batch.ts[~aligned][0])} is not on the {tf.name} grid"
        )
    return batch
