"""Client of Bybit's daily public trade archives (``public.bybit.com``).

The archive is a static file host: an HTML index per symbol and one gzip'd CSV per UTC day,
published after the day ends. It has no envelope and no rate-limit headers, so the client keeps
it simple and polite: few concurrent downloads (the caller bounds them), retries of passing
failures (connection drops, timeouts, HTTP 429/5xx, a body cut short in transit) with capped
full-jitter backoff, and typed errors for the rest:

* HTTP 404 on a symbol's index: :class:`ExchangeRequestError` (the archive has no such symbol);
* HTTP 404 on a day file: ``None`` from :meth:`BybitArchiveClient.fetch_day`;
* HTTP 429 (:class:`RateLimitedError`, honouring ``Retry-After``), 5xx, timeouts, dropped
  connections, gzip that does not verify (:class:`DamagedPayloadError`): retried; after
  ``backoff.max_attempts`` a :class:`TransientExchangeError` with the last cause;
* other 4xx: :class:`ExchangeRequestError`, not retried;
* a body over ``max_bytes``, or not gzip at all: :class:`ExchangeProtocolError`, not retried.

Decompression runs in a worker thread (ISA-L and zlib release the GIL), never on the event loop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Self, TypeVar

import aiohttp

from marketlake.clock import get_clock
from marketlake.core.symbols import validate_symbol
from marketlake.errors import (
    DataValidationError,
    ExchangeProtocolError,
    ExchangeRequestError,
    RateLimitedError,
    TransientExchangeError,
)
from marketlake.exchanges.bybit import constants as C
from marketlake.exchanges.bybit.parse_archive import (
    ARCHIVE_MAX_BYTES,
    archive_file_name,
    gunzip_bounded,
    parse_archive_index,
)
from marketlake.net.backoff import Backoff, RetryEvent, RetryObserver, notify_retry
from marketlake.net.session import HttpSession

__all__ = ["ArchiveStats", "BybitArchiveClient"]

T = TypeVar("T")

#: An index page lists one link per day (BTCUSDT's since 2020: ~200 kB); anything near this is
#: not an index.
_INDEX_MAX_BYTES = 64 << 20


@dataclass(slots=True)
class ArchiveStats:
    """What the client sent and received."""

    requests: int = 0
    retries: int = 0
    bytes_downloaded: int = 0
    not_found: int = 0


class BybitArchiveClient:
    """Downloads archive indexes and day files.

    Args:
        base_url: The archive host (default ``https://public.bybit.com``; tests pass the
            emulator's URL, which serves the same paths).
        session: An aiohttp session to use (the client closes only one it created).
        backoff: Retry policy for passing failures.
        timeout_s: Total time allowed for one download (a busy day's file is tens of MB).
        max_bytes: Largest accepted file, compressed or decompressed.
        on_retry: Told of every retry before its wait, and of the success that ends a run of
            retries (see :class:`~marketlake.net.backoff.RetryEvent`); None: silent.
    """

    def __init__(
        self,
        base_url: str = C.ARCHIVE_URL,
        *,
        session: aiohttp.ClientSession | None = None,
        backoff: Backoff | None = None,
        timeout_s: float = 300.0,
        max_bytes: int = ARCHIVE_MAX_BYTES,
        on_retry: RetryObserver | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise DataValidationError(f"archive base_url must be an http(s) URL, got {base_url[:60]!r}")
        if timeout_s <= 0 or max_bytes <= 0:
            raise DataValidationError("timeout_s and max_bytes must be > 0")
        self.base_url = base_url.rstrip("/")
        self._http = HttpSession(session, limit=16, auto_decompress=False)
        self.backoff = backoff if backoff is not None else Backoff(base=1.0, cap=60.0, max_attempts=6)
        self.timeout = aiohttp.ClientTimeout(total=timeout_s, sock_read=min(timeout_s, 60.0))
        self.max_bytes = max_bytes
        self.on_retry = on_retry
        self.stats = ArchiveStats()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session if the client created it."""
        await self._http.close()

    def _get_session(self) -> aiohttp.ClientSession:
        return self._http.get()

    # ------------------------------------------------------------------ URLs

    def index_url(self, symbol: str, category: str) -> str:
        """URL of ``symbol``'s index page."""
        return f"{self.base_url}/{_dir(category)}/{validate_symbol(symbol)}/"

    def day_url(self, symbol: str, category: str, day: dt.date) -> str:
        """URL of ``symbol``'s file for ``day``."""
        return self.index_url(symbol, category) + archive_file_name(symbol, category, day)

    # ------------------------------------------------------------------ calls

    async def days(self, symbol: str, category: str) -> list[dt.date]:
        """The days the archive lists for ``symbol``, ascending.

        Raises:
            ExchangeRequestError: the archive has no directory for ``symbol`` (HTTP 404).
            TransientExchangeError: retries exhausted.
            ExchangeProtocolError: the index is not a readable listing.
        """
        url = self.index_url(symbol, category)
        context = f"bybit archive index {symbol} ({category})"
        body = await self._retrying(context, lambda: self._send(url, context, _INDEX_MAX_BYTES))
        if body is None:
            raise ExchangeRequestError(
                f"{context}: HTTP 404: the archive has no trades of {symbol} in {category} ({url})"
            )
        return parse_archive_index(body, symbol, category)

    async def fetch_day(self, symbol: str, category: str, day: dt.date) -> bytes | None:
        """The decompressed CSV of ``symbol``'s trades on ``day``; ``None`` if there is no file.

        A body cut short or corrupt in transit (the gzip stream does not verify) is fetched
        again, like any passing failure.

        Raises:
            TransientExchangeError: retries exhausted.
            ExchangeProtocolError: the file is larger than ``max_bytes`` or not gzip at all.
            ExchangeRequestError: an HTTP error that retrying will not fix.
        """
        url = self.day_url(symbol, category, day)
        context = f"bybit archive {archive_file_name(symbol, category, day)}"

        async def attempt() -> bytes | None:
            body = await self._send(url, context, self.max_bytes)
            if body is None:
                return None
            return await asyncio.to_thread(gunzip_bounded, body, what=context, max_bytes=self.max_bytes)

        data = await self._retrying(context, attempt)
        if data is None:
            self.stats.not_found += 1
        return data

    # ------------------------------------------------------------------ transport

    async def _retrying(self, context: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """``attempt()`` until it succeeds; passing failures wait a backoff delay (never less
        than a server's ``Retry-After``) and are retried up to ``backoff.max_attempts``."""
        clock = get_clock()
        n = 0
        while True:
            n += 1
            try:
                got = await attempt()
                if n > 1:
                    notify_retry(self.on_retry, RetryEvent(context, "", n, self.backoff.max_attempts, recovered=True))
                return got
            except TransientExchangeError as exc:
                if self.backoff.gives_up_after(n):
                    raise TransientExchangeError(f"{context}: gave up after {n} attempts; last error: {exc}") from exc
                self.stats.retries += 1
                floor = 0.0
                if isinstance(exc, RateLimitedError) and exc.retry_at is not None:
                    floor = (exc.retry_at - clock.now_ms()) / 1000.0
                delay = self.backoff.delay(n, floor)
                notify_retry(
                    self.on_retry,
                    RetryEvent(context, str(exc), n, self.backoff.max_attempts, delay, clock.now_ms() + int(delay * 1000)),
                )
                await clock.sleep(delay)

    async def _send(self, url: str, context: str, limit: int) -> bytes | None:
        """One GET: the body of a 200 (at most ``limit`` bytes), ``None`` for a 404, else a typed
        error."""
        self.stats.requests += 1
        try:
            async with self._get_session().get(url, timeout=self.timeout) as resp:
                status = resp.status
                if status == 200:
                    if (resp.content_length or 0) > limit:
                        raise ExchangeProtocolError(
                            f"{context}: {resp.content_length:,} bytes is over the {limit:,} limit"
                        )
                    body = await _read_bounded(resp, limit, context)
                    self.stats.bytes_downloaded += len(body)
                    return body
                detail = (await resp.content.read(200)).decode("utf-8", "replace")
                retry_after = resp.headers.get("Retry-After", "")
        except TimeoutError:
            raise TransientExchangeError(f"{context}: no complete answer within {self.timeout.total:g} s") from None
        except aiohttp.ClientError as exc:
            raise TransientExchangeError(f"{context}: {type(exc).__name__}: {exc}") from None
        if status == 404:
            return None
        if status == 429:
            wait_ms = int(retry_after) * 1000 if retry_after.isdigit() else None
            retry_at = None if wait_ms is None else get_clock().now_ms() + wait_ms
            raise RateLimitedError(f"{context}: HTTP 429", retry_at=retry_at)
        if status >= 500:
            raise TransientExchangeError(f"{context}: HTTP {status}")
        raise ExchangeRequestError(f"{context}: HTTP {status}: {' '.join(detail.split())[:120]!r}")


async def _read_bounded(resp: aiohttp.ClientResponse, max_bytes: int, context: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(1 << 20):
        size += len(chunk)
        if size > max_bytes:
            raise ExchangeProtocolError(f"{context}: body over the {max_bytes:,}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _dir(category: str) -> str:
    try:
        return C.ARCHIVE_DIRS[category]
    except KeyError:
        raise DataValidationError(
            f"bybit publishes trade archives for {', '.join(C.ARCHIVE_CATEGORIES)}, not {category!r}"
        ) from None
