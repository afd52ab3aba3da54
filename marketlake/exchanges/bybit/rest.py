"""Bybit v5 public REST client (aiohttp + msgspec): klines, instruments, recent trades, server time;
the perpetual-futures endpoints are in :mod:`marketlake.exchanges.bybit.rest_perp`.

Every request goes through the same path:

1. wait while the process is banned (:class:`~marketlake.net.ratelimit.BanLatch`), then take a slot
   of the machine-wide :class:`~marketlake.net.ratelimit.RateBudget`;
2. send; map the answer onto the error tree:

   ========================================  ==============================================
   answer                                    outcome
   ========================================  ==============================================
   retCode 0                                 decoded result
   retCode 10001 (and 10002/10017/10029)     :class:`ExchangeRequestError`, never retried
   retCode 10006/10018, HTTP 429             :class:`RateLimitedError` (``retry_at`` from
                                             ``X-Bapi-Limit-Reset-Timestamp``), retried
   retCode 10000/10016/10429, HTTP 5xx,      :class:`TransientExchangeError`, retried
   timeout, dropped connection,
   truncated / non-JSON body
   HTTP 403                                  the ban latch trips for the whole process (and
                                             the shared budget blocks other processes);
                                             :class:`ExchangeBannedError` is raised once
   valid JSON of the wrong shape             :class:`ExchangeProtocolError`, not retried
   ========================================  ==============================================

3. retry with capped exponential backoff and full jitter (:class:`~marketlake.net.backoff.Backoff`),
   never before the server's reset time; after ``max_attempts`` a :class:`TransientExchangeError`.

Market time always comes from the server (the envelope's ``time``, or ``/v5/market/time``): the
forming candle is the row whose period has not ended at the *server's* time, so a client with a
wrong local clock, or a sped-up emulator, still stores only closed candles.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Final, Self

import aiohttp
import numpy as np
import polars as pl

from marketlake.clock import get_clock
from marketlake.core.symbols import validate_symbol
from marketlake.core.timeframes import Timeframe, parse_timeframe
from marketlake.errors import (
    DataValidationError,
    ExchangeBannedError,
    ExchangeProtocolError,
    ExchangeRequestError,
    InvalidSymbolError,
    InvalidTimeframeError,
    RateLimitedError,
    TransientExchangeError,
)
from marketlake.exchanges.bybit import constants as C
from marketlake.exchanges.bybit.parse import (
    Envelope,
    Instrument,
    KlineBatch,
    MalformedJSONError,
    Trade,
    decode_envelope,
    decode_instruments_result,
    decode_kline_result,
    decode_recent_trades_result,
    decode_server_time_result,
    drop_forming,
    klines_frame,
    parse_rate_limit_headers,
    trades_frame,
)
from marketlake.exchanges.bybit.rest_perp import PerpMarketMixin
from marketlake.net.backoff import Backoff, RetryEvent, RetryObserver, notify_retry
from marketlake.net.ratelimit import BanLatch, RateBudget, process_ban_latch
from marketlake.net.session import HttpSession

__all__ = ["BybitRestClient", "ClientStats", "KlinePage", "kline_windows"]

log = logging.getLogger(__name__)

_MAX_CURSOR_PAGES: Final = 1000
_MSG_CHARS: Final = 200


@dataclass
class ClientStats:
    """What a client has done so far (for progress displays and summaries).

    Attributes:
        requests: HTTP requests sent.
        retries: Requests re-sent after a transient failure.
        rate_limited: 10006/10018/429 answers.
        server_errors: 5xx, 10000/10016/10429 answers.
        transport_errors: Timeouts, dropped connections, truncated bodies.
        bans: Bans surfaced (HTTP 403 starting a ban).
    """

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    server_errors: int = 0
    transport_errors: int = 0
    bans: int = 0


@dataclass(frozen=True, slots=True)
class KlinePage:
    """The closed candles of one kline window.

    Attributes:
        category: Market category.
        symbol: Symbol.
        interval: Interval, Bybit's spelling.
        start_ms: First open time asked for (inclusive).
        end_ms: Last open time asked for (inclusive).
        frame: Closed candles with ``start_ms <= ts <= end_ms``, ascending, unique ts; columns
            ts (Datetime ms UTC), open, high, low, close, volume, turnover.
        server_time_ms: The server's clock when it answered.
        closed_until_ms: Every candle opening before this was closed (and settled) at
            ``server_time_ms``: opens in ``[start_ms, min(end_ms, closed_until_ms - 1)]`` without a
            row are exchange gaps (outage, before listing), not missing data.
    """

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
        """True when every candle of the window is final (none can still appear or change)."""
        return self.end_ms < self.closed_until_ms


def _bybit_timeframe(interval: str | Timeframe) -> Timeframe:
    tf = parse_timeframe(interval)
    if not tf.is_bybit:
        raise InvalidTimeframeError(f"Bybit serves no {tf.name} klines; use one of {', '.join(C.INTERVALS)}")
    return tf


def kline_windows(
    interval: str | Timeframe, start_ms: int, end_ms: int, limit: int = C.KLINE_LIMIT_MAX
) -> list[tuple[int, int]]:
    """Split the open times in ``[start_ms, end_ms]`` into windows of at most ``limit`` candles.

    Returns:
        ``(first_open, last_open)`` pairs, both inclusive and aligned, ascending; empty when no
        candle opens in the range.

    Raises:
        InvalidTimeframeError: not a Bybit interval.
        DataValidationError: ``limit`` outside 1..1000.
    """
    tf = _bybit_timeframe(interval)
    if not 1 <= limit <= C.KLINE_LIMIT_MAX:
        raise DataValidationError(f"kline limit must be 1..{C.KLINE_LIMIT_MAX}, got {limit}")
    if tf.kind == "month":
        opens = tf.opens_between(start_ms, end_ms + 1)
        return [
            (int(c[0]), int(c[-1])) for c in np.array_split(opens, range(limit, opens.size, limit)) if c.size
        ]
    first = tf.floor(start_ms)
    if first < start_ms:
        first += tf.duration_ms
    last = tf.floor(end_ms)
    step = limit * tf.duration_ms
    return [(a, min(a + step - tf.duration_ms, last)) for a in range(first, last + 1, step)]


def _shown(text: str) -> str:
    return repr(text[:_MSG_CHARS] + ("..." if len(text) > _MSG_CHARS else ""))


def _arg(value: object) -> str:
    """A caller's argument, quoted and cut short, for an error message."""
    return repr(str(value)[:40])


def _check_range(start_ms: object, end_ms: object) -> None:
    for name, value in (("start_ms", start_ms), ("end_ms", end_ms)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise DataValidationError(f"{name} must be epoch milliseconds (int), got {_arg(value)}")
    if start_ms > end_ms:  # type: ignore[operator]
        raise DataValidationError(f"kline range start {start_ms} is after end {end_ms}")


class _LateBan(Exception):
    """A 403 for a request sent before the ban was known: wait for the latch and resend."""


class BybitRestClient(PerpMarketMixin):
    """Async client of Bybit's v5 public market endpoints (funding, mark/index/premium klines,
    open interest and instrument snapshots come from
    :class:`~marketlake.exchanges.bybit.rest_perp.PerpMarketMixin`).

    Args:
        base_url: REST base URL (Bybit mainnet by default; the emulator's ``url`` in tests).
        session: An aiohttp session to use (not closed by the client); one is created otherwise.
        budget: The rate budget (share it across clients/processes); default: an in-process
            budget of 500 requests / 5 s.
        backoff: Retry policy; default ``Backoff()`` (8 attempts, 0.5 s base, 30 s cap).
        ban_latch: Ban memory; default the process-wide latch.
        ban_seconds: How long an HTTP 403 ban is assumed to last (Bybit: at least 10 minutes).
        timeout_s: Total timeout of one HTTP request.
        settle_ms: A candle counts as closed only this long after its period ended on the server's
            clock, so that trades still being booked at the boundary are in it.
        on_retry: Told of every retry before its wait, and of the success that ends a run of
            retries (see :class:`~marketlake.net.backoff.RetryEvent`); None: silent.
    """

    def __init__(
        self,
        base_url: str = C.MAINNET_URL,
        *,
        session: aiohttp.ClientSession | None = None,
        budget: RateBudget | None = None,
        backoff: Backoff | None = None,
        ban_latch: BanLatch | None = None,
        ban_seconds: float = C.BAN_DEFAULT_SECONDS,
        timeout_s: float = 10.0,
        settle_ms: int = 2_000,
        on_retry: RetryObserver | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise DataValidationError(f"base_url must be an http(s) URL, got {base_url[:60]!r}")
        if not 0 <= settle_ms <= 3_600_000:
            raise DataValidationError("settle_ms must be within 0..3600000")
        if ban_seconds <= 0 or timeout_s <= 0:
            raise DataValidationError("ban_seconds and timeout_s must be > 0")
        self.base_url = base_url.rstrip("/")
        self._http = HttpSession(session)
        self.budget = budget if budget is not None else RateBudget(C.API_RATE_LIMIT_PER_WINDOW)
        self.backoff = backoff if backoff is not None else Backoff()
        self.ban_latch = ban_latch if ban_latch is not None else process_ban_latch()
        self.ban_seconds = ban_seconds
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.settle_ms = settle_ms
        self.on_retry = on_retry
        self.stats = ClientStats()
        self._server_time_seen = 0

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session if the client created it."""
        await self._http.close()

    def _get_session(self) -> aiohttp.ClientSession:
        return self._http.get()

    # ------------------------------------------------------------------ the request path

    async def _request(self, path: str, params: Mapping[str, str], context: str) -> Envelope:
        clock = get_clock()
        attempt = 0
        while True:
            await self.ban_latch.wait()
            await self.budget.acquire()
            if self.ban_latch.is_banned():
                continue  # a ban began while we waited for the slot
            attempt += 1
            self.stats.requests += 1
            try:
                env = await self._send(path, params, context)
                if attempt > 1:
                    notify_retry(self.on_retry, RetryEvent(context, "", attempt, self.backoff.max_attempts, recovered=True))
                return env
            except _LateBan:
                attempt -= 1  # not this request's fault: wait out the ban and resend
                continue
            except TransientExchangeError as exc:
                if self.backoff.gives_up_after(attempt):
                    raise TransientExchangeError(
                        f"{context}: gave up after {attempt} attempts; last error: {exc}"
                    ) from exc
                floor = 0.0
                if isinstance(exc, RateLimitedError) and exc.retry_at is not None:
                    floor = (exc.retry_at - clock.now_ms()) / 1000.0
                self.stats.retries += 1
                delay = self.backoff.delay(attempt, floor)
                notify_retry(
                    self.on_retry,
                    RetryEvent(
                        context, str(exc), attempt, self.backoff.max_attempts, delay,
                        clock.now_ms() + int(delay * 1000),
                    ),
                )
                await clock.sleep(delay)

    async def _send(self, path: str, params: Mapping[str, str], context: str) -> Envelope:
        clock = get_clock()
        try:
            async with self._get_session().get(
                self.base_url + path, params=dict(params), timeout=self.timeout
            ) as resp:
                body = await resp.read()
                status, headers = resp.status, resp.headers
        except TimeoutError:
            self.stats.transport_errors += 1
            raise TransientExchangeError(f"{context}: no answer within {self.timeout.total:g} s") from None
        except aiohttp.ClientError as exc:
            self.stats.transport_errors += 1
            raise TransientExchangeError(f"{context}: {type(exc).__name__}: {exc}") from None
        if status == 403:
            until = clock.now_ms() + int(self.ban_seconds * 1000)
            self.budget.block_until(until)
            if self.ban_latch.trip(until):
                self.stats.bans += 1
                when = dt.datetime.fromtimestamp(until / 1000, dt.UTC).strftime("%H:%M:%S UTC")
                raise ExchangeBannedError(
                    f"{context}: Bybit banned this IP (HTTP 403, too many requests); "
                    f"no request will be sent before {when}",
                    banned_until=until,
                )
            raise _LateBan
        if status == 429:
            self.stats.rate_limited += 1
            raise RateLimitedError(f"{context}: HTTP 429 (system frequency protection)")
        if status >= 500:
            self.stats.server_errors += 1
            raise TransientExchangeError(f"{context}: HTTP {status}")
        if status == 404:
            raise ExchangeRequestError(f"{context}: HTTP 404: the server has no such endpoint")
        if status != 200:
            raise ExchangeRequestError(f"{context}: HTTP {status}: {_shown(body.decode('utf-8', 'replace'))}")
        try:
            env = decode_envelope(body)
        except MalformedJSONError as exc:
            self.stats.transport_errors += 1
            raise TransientExchangeError(f"{context}: {exc}") from None
        info = parse_rate_limit_headers(headers)
        self.budget.observe(info.remaining, info.reset_ms, env.time_ms)
        if env.time_ms is not None:
            self._server_time_seen = max(self._server_time_seen, env.time_ms)
        rc = env.ret_code
        if rc == C.RetCode.OK:
            return env
        what = f"{context}: Bybit retCode {rc} {_shown(env.ret_msg)}"
        if rc in C.RATE_LIMIT_RET_CODES:
            self.stats.rate_limited += 1
            retry_at = None
            if info.reset_ms is not None and env.time_ms is not None and info.reset_ms > env.time_ms:
                retry_at = clock.now_ms() + min(info.reset_ms - env.time_ms, 15 * 60 * 1000)
                self.budget.block_until(retry_at)
            raise RateLimitedError(what, retry_at=retry_at)
        if rc in C.RETRYABLE_RET_CODES:
            self.stats.server_errors += 1
            raise TransientExchangeError(what)
        raise ExchangeRequestError(what)

    # ------------------------------------------------------------------ endpoints

    async def get_server_time(self) -> int:
        """The server's clock, epoch ms (``/v5/market/time``)."""
        reply = await self._request(C.PATH_SERVER_TIME, {}, "GET /v5/market/time")
        return decode_server_time_result(reply.result)

    async def fetch_kline_page(
        self, category: str, symbol: str, interval: str, start_ms: int, end_ms: int
    ) -> KlinePage:
        """Fetch one window of at most 1000 candles: the closed candles opening in
        ``[start_ms, end_ms]``.

        Raises:
            DataValidationError: bad category/symbol/interval, ``start_ms > end_ms``, or a window
                of more than 1000 candles (split it with :func:`kline_windows`).
            ExchangeRequestError: Bybit refused the request (e.g. an unknown symbol).
            ExchangeProtocolError: a malformed answer (a row outside the grid of the interval).
            ExchangeBannedError, TransientExchangeError: see the module docstring.
        """
        tf = self._check_series(category, symbol, interval)
        _check_range(start_ms, end_ms)
        count = tf.count_between(start_ms, end_ms + 1)
        if count > C.KLINE_LIMIT_MAX:
            raise DataValidationError(
                f"kline window of {count} candles exceeds {C.KLINE_LIMIT_MAX}; use kline_windows()"
            )
        context = f"GET /v5/market/kline {category} {symbol} interval {tf.name} [{start_ms}, {end_ms}]"
        params = {
            "category": category,
            "symbol": symbol,
            "interval": tf.name,
            "start": str(start_ms),
            "end": str(end_ms),
            "limit": str(max(1, count)),
        }
        reply = await self._request(C.PATH_KLINE, params, context)
        batch = decode_kline_result(reply.result)
        server_time = reply.time_ms
        if server_time is None:
            server_time = await self.get_server_time()
        batch = self._clean_batch(batch, tf, start_ms, end_ms, context)
        settled = server_time - self.settle_ms
        closed = drop_forming(batch, tf.name, settled)
        return KlinePage(
            category=category,
            symbol=symbol,
            interval=tf.name,
            start_ms=start_ms,
            end_ms=end_ms,
            frame=klines_frame(closed),
            server_time_ms=server_time,
            closed_until_ms=tf.floor(settled),
        )

    @staticmethod
    def _clean_batch(
        batch: KlineBatch, tf: Timeframe, start_ms: int, end_ms: int, context: str
    ) -> KlineBatch:
        if not len(batch):
            return batch
        aligned = tf.floor_array(batch.ts) == batch.ts
        if not aligned.all():
            bad = int(batch.ts[~aligned][0])
            raise ExchangeProtocolError(f"{context}: row startTime {bad} is not on the {tf.name} grid")
        # Bybit has been seen returning one row before `start` (spot); keep only what was asked.
        return batch.select((batch.ts >= start_ms) & (batch.ts <= end_ms))

    def _check_series(self, category: str, symbol: str, interval: str) -> Timeframe:
        if category not in C.KLINE_CATEGORIES:
            raise InvalidSymbolError(
                f"invalid kline category {_arg(category)}: use one of {', '.join(C.KLINE_CATEGORIES)}"
            )
        validate_symbol(symbol)
        return _bybit_timeframe(interval)

    async def iter_kline_pages(
        self, category: str, symbol: str, interval: str, start_ms: int, end_ms: int
    ) -> AsyncIterator[KlinePage]:
        """Yield the pages of ``[start_ms, end_ms]`` in order, one request each; stop after the
        page that reaches the server's present (later windows cannot hold closed candles)."""
        self._check_series(category, symbol, interval)
        _check_range(start_ms, end_ms)
        for a, b in kline_windows(interval, start_ms, end_ms):
            page = await self.fetch_kline_page(category, symbol, interval, a, b)
            yield page
            if not page.complete:
                return

    async def get_klines(
        self,
        category: str,
        symbol: str,
        interval: str,
        start_ms: int,
        end_ms: int,
        *,
        concurrency: int = 4,
    ) -> pl.DataFrame:
        """All closed candles with ``start_ms <= ts <= end_ms``, ascending, unique ts.

        Windows of at most 1000 candles are fetched ``concurrency`` at a time (the rate budget
        still bounds the request rate); windows that start after the server's present are skipped.

        Raises:
            DataValidationError: bad arguments (see :meth:`fetch_kline_page`).
            ExchangeError: see the module docstring.
        """
        self._check_series(category, symbol, interval)
        _check_range(start_ms, end_ms)
        if concurrency < 1:
            raise DataValidationError("concurrency must be >= 1")
        windows = kline_windows(interval, start_ms, end_ms)
        gate = asyncio.Semaphore(concurrency)
        frames: list[pl.DataFrame | None] = [None] * len(windows)

        async def one(i: int, a: int, b: int) -> None:
            async with gate:
                if i and self._server_time_seen and a >= self._server_time_seen:
                    return  # opens after the server's present: nothing closed there yet
                page = await self.fetch_kline_page(category, symbol, interval, a, b)
                frames[i] = page.frame

        if windows:
            # The first page alone tells the server's time; later windows opening after it
            # cannot hold a closed candle and are not requested at all.
            await one(0, *windows[0])
        tasks = [asyncio.ensure_future(one(i, a, b)) for i, (a, b) in enumerate(windows) if i]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        parts = [f for f in frames if f is not None and f.height]
        if not parts:
            return klines_frame(decode_kline_result(b'{"list":[]}'))
        return pl.concat(parts).unique("ts", keep="first", maintain_order=True).sort("ts")

    async def get_instruments(
        self,
        category: str,
        status: str | None = "Trading",
        *,
        symbol: str | None = None,
        limit: int = C.INSTRUMENTS_LIMIT_MAX,
    ) -> list[Instrument]:
        """Every instrument of a category (following ``nextPageCursor``), sorted by symbol.

        Args:
            category: ``linear``, ``inverse``, ``spot`` or ``option``.
            status: ``Trading`` (Bybit's default), ``PreLaunch``, ``Delivering``, ``Closed``; None
                sends no filter.
            symbol: Ask for one symbol only.
            limit: Page size, 1..1000 (spot ignores it: no pagination).

        Instruments whose symbol fails validation are skipped with a warning: one odd name must
        not stop an ``--all-symbols`` ingest.
        """
        if category not in C.CATEGORIES:
            raise InvalidSymbolError(
                f"invalid category {_arg(category)}: use one of {', '.join(C.CATEGORIES)}"
            )
        if status is not None and status not in C.INSTRUMENT_STATUSES:
            raise DataValidationError(
                f"invalid status {_arg(status)}: use one of {', '.join(C.INSTRUMENT_STATUSES)}"
            )
        if not 1 <= limit <= C.INSTRUMENTS_LIMIT_MAX:
            raise DataValidationError(f"limit must be 1..{C.INSTRUMENTS_LIMIT_MAX}")
        base = {"category": category}
        if status is not None:
            base["status"] = status
        if symbol is not None:
            base["symbol"] = validate_symbol(symbol)
        if category != "spot":
            base["limit"] = str(limit)
        found: dict[str, Instrument] = {}
        cursor, seen = "", set()
        for _ in range(_MAX_CURSOR_PAGES):
            params = dict(base, cursor=cursor) if cursor else base
            reply = await self._request(
                C.PATH_INSTRUMENTS, params, f"GET /v5/market/instruments-info {category}"
            )
            page = decode_instruments_result(reply.result, category)
            for inst in page.instruments:
                try:
                    validate_symbol(inst.symbol)
                except InvalidSymbolError:
                    log.warning("skipping Bybit %s instrument with odd symbol %r", category, inst.symbol[:40])
                    continue
                found.setdefault(inst.symbol, inst)
            cursor = page.next_cursor
            if not cursor or category == "spot":
                return sorted(found.values(), key=lambda i: i.symbol)
            if cursor in seen:
                raise ExchangeProtocolError(
                    f"bybit instruments-info {category}: cursor {cursor[:60]!r} repeats"
                )
            seen.add(cursor)
        raise ExchangeProtocolError(
            f"bybit instruments-info {category}: more than {_MAX_CURSOR_PAGES} pages; giving up"
        )

    async def get_recent_trades(self, category: str, symbol: str, limit: int | None = None) -> pl.DataFrame:
        """The latest public trades (``/v5/market/recent-trade``) in the stored trade schema,
        ascending by time.

        Args:
            category: ``spot``, ``linear`` or ``inverse``.
            symbol: Symbol.
            limit: How many (spot 1..60, derivatives 1..1000); Bybit's default when None.
        """
        return trades_frame(await self.recent_trades(category, symbol, limit))

    async def recent_trades(self, category: str, symbol: str, limit: int | None = None) -> list[Trade]:
        """:meth:`get_recent_trades` as decoded records (with ``seq``), oldest first."""
        if category not in ("spot", "linear", "inverse"):
            raise InvalidSymbolError(f"invalid category {_arg(category)} for recent trades")
        validate_symbol(symbol)
        params = {"category": category, "symbol": symbol}
        if limit is not None:
            most = C.TRADE_LIMITS[category][1]
            if not 1 <= limit <= most:
                raise DataValidationError(f"recent-trade limit for {category} must be 1..{most}")
            params["limit"] = str(limit)
        reply = await self._request(
            C.PATH_RECENT_TRADE, params, f"GET /v5/market/recent-trade {category} {symbol}"
        )
        return decode_recent_trades_result(reply.result)
