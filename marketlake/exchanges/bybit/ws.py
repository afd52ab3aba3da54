"""Bybit v5 public WebSocket client (aiohttp): subscribe, keep alive, detect silence, reconnect.

One :class:`BybitWsClient` holds one connection to one public stream (``/v5/public/<category>``)
and keeps it alive for as long as :meth:`BybitWsClient.run` runs:

* **Subscribing**: the wanted topics go out in requests within Bybit's per-request limits
  (:func:`~marketlake.exchanges.bybit.ws_frames.subscribe_batches`), each with a ``req_id``. A
  failed ack naming a topic (``error:handler not found,topic:X``) rejects that topic for good and
  re-sends the rest of its request; any other failure splits the request in halves and retries.
  When every request is answered, a :class:`Subscribed` event carries the confirmed set.
* **Keep-alive**: ``{"op": "ping"}`` every ``ping_interval_s`` (Bybit: 20 s). A socket from
  which no frame at all (push, ack or pong) arrived for ``ping_interval_s + pong_timeout_s`` is
  silent: it is closed and replaced. Since pings go out every interval, a live server answers
  well within that bound, and a silent one is detected no later than it.
* **Reconnecting**: after any loss the next attempt waits a jittered delay of
  :class:`~marketlake.net.backoff.Backoff` whose exponent grows with each consecutive connection
  that did not stay up for ``stable_after_s``; and no more than ``connect_limit`` connection
  attempts start in any ``connect_window_s`` (Bybit: 500 per 5 minutes). After a reconnect the
  client subscribes exactly the wanted set again: the requested topics minus those rejected.
* **Frames**: pushes are decoded (typed, :func:`~marketlake.exchanges.bybit.ws_frames.decode_frame`)
  and handed over as :class:`Push` events; frames that do not decode, or exceed
  ``max_frame_bytes``, become :class:`Malformed` events (their first bytes only) and are skipped.

Events go to one synchronous handler, called on the event loop in arrival order; it must not
block (the live runner only updates memory there).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

import aiohttp

from marketlake.clock import get_clock
from marketlake.errors import DataValidationError, ExchangeProtocolError
from marketlake.exchanges.bybit import constants as C
from marketlake.exchanges.bybit.parse_ws import WsCommandResponse
from marketlake.exchanges.bybit.ws_frames import (
    KlinePush,
    TradePush,
    decode_frame,
    ping_frame,
    request_frame,
    subscribe_batches,
)
from marketlake.net.backoff import Backoff

__all__ = [
    "QUARANTINE_BYTES",
    "BybitWsClient",
    "Connected",
    "Disconnected",
    "Malformed",
    "Push",
    "Subscribed",
    "WsEvent",
    "WsStats",
]

#: How much of a bad frame a :class:`Malformed` event keeps (and the runner quarantines).
QUARANTINE_BYTES: Final = 4096
_TOPIC_IN_ERROR: Final = re.compile(r"topic:([^,\s\]]+)")


@dataclass(frozen=True, slots=True)
class Connected:
    """A connection opened (``conn`` counts connections from 1)."""

    conn: int
    url: str


@dataclass(frozen=True, slots=True)
class Subscribed:
    """Every subscribe request of connection ``conn`` was answered.

    Attributes:
        conn: Connection number.
        topics: Topics the server confirmed on this connection.
        rejected: Topics the server refused (ever), with its message.
    """

    conn: int
    topics: frozenset[str]
    rejected: dict[str, str]


@dataclass(frozen=True, slots=True)
class Push:
    """A decoded push; ``recv_ns`` is the wall clock (``time.time_ns``) at receipt."""

    conn: int
    msg: KlinePush | TradePush
    recv_ns: int


@dataclass(frozen=True, slots=True)
class Malformed:
    """A frame that was skipped: ``data`` holds at most :data:`QUARANTINE_BYTES` of its
    ``size`` bytes; ``reason`` says why (``oversized``, a decode error)."""

    conn: int
    data: bytes
    size: int
    reason: str


@dataclass(frozen=True, slots=True)
class Disconnected:
    """Connection ``conn`` ended (or could not be opened: ``uptime_s`` 0).

    Attributes:
        conn: Connection number.
        reason: What happened (``silent``, ``closed by server``, ``connect failed: ...``).
        code: WebSocket close code where known (1006: closed without a close frame).
        uptime_s: How long it was open.
        silent: True when it was closed for silence.
    """

    conn: int
    reason: str
    code: int | None
    uptime_s: float
    silent: bool = False


WsEvent = Connected | Subscribed | Push | Malformed | Disconnected


@dataclass
class WsStats:
    """What a client has done so far."""

    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    silent_detected: int = 0
    throttled_s: float = 0.0
    pings: int = 0
    pongs: int = 0
    frames: int = 0
    bytes: int = 0
    pushes: int = 0
    malformed: int = 0
    oversized: int = 0
    acks_failed: int = 0
    subscribe_requests: int = 0
    #: The confirmed set of each of the last 1,000 connections, oldest first.
    subscribed_sets: deque[frozenset[str]] = field(default_factory=lambda: deque(maxlen=1000))


async def _send_text(ws: aiohttp.ClientWebSocketResponse, frame: bytes) -> None:
    # Bybit reads text frames only; the JSON is ASCII, so it goes out as is.
    await ws.send_frame(frame, aiohttp.WSMsgType.TEXT)


class _Closed(Exception):
    def __init__(self, reason: str, code: int | None, silent: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.code, self.silent = reason, code, silent


@dataclass(eq=False)
class _Session:
    ws: aiohttp.ClientWebSocketResponse
    conn: int
    opened: float
    pending: dict[str, list[str]] = field(default_factory=dict)
    confirmed: set[str] = field(default_factory=set)
    reported: bool = False
    last_rx: float = 0.0
    ack_deadline: float = 0.0
    dead: _Closed | None = None


def _code(ws: aiohttp.ClientWebSocketResponse, default: int) -> int:
    return int(ws.close_code) if ws.close_code is not None else default


class BybitWsClient:
    """A self-healing connection to one Bybit public stream.

    Args:
        url: ``ws(s)://HOST/v5/public/<category>`` (see
            :func:`~marketlake.exchanges.bybit.ws_frames.ws_url_for`).
        topics: Topics to subscribe (``kline.1.BTCUSDT``, ``publicTrade.BTCUSDT`` ...).
        category: Market category (decides the per-request limits); default: the URL's last part.
        ping_interval_s: Seconds between pings (Bybit asks for 20).
        pong_timeout_s: Extra seconds of silence before the socket counts as dead.
        ack_timeout_s: Seconds to wait for the answer to a subscribe request.
        backoff: Reconnect delays (jittered, capped); default 0.5 s base, 30 s cap.
        stable_after_s: A connection open this long resets the backoff exponent.
        connect_limit: Connection attempts allowed per ``connect_window_s``.
        connect_window_s: The window of ``connect_limit``.
        max_frame_bytes: Larger frames are skipped and reported as malformed.
        max_args: Also cap topics per subscribe request (Bybit's own limits always apply).
        session: An aiohttp session to use (not closed by the client).
    """

    def __init__(
        self,
        url: str,
        topics: Iterable[str],
        *,
        category: str | None = None,
        ping_interval_s: float = C.WS_PING_INTERVAL_SECONDS,
        pong_timeout_s: float = 10.0,
        ack_timeout_s: float = 10.0,
        backoff: Backoff | None = None,
        stable_after_s: float = 30.0,
        connect_limit: int = C.WS_CONNECT_LIMIT,
        connect_window_s: float = C.WS_CONNECT_WINDOW_SECONDS,
        max_frame_bytes: int = 1 << 20,
        max_args: int | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if not url.startswith(("ws://", "wss://")):
            raise DataValidationError(f"WebSocket URL must be ws(s)://..., got {url[:60]!r}")
        if min(ping_interval_s, pong_timeout_s, ack_timeout_s, connect_window_s) <= 0 or connect_limit < 1:
            raise DataValidationError("WebSocket intervals, timeouts and limits must be > 0")
        if max_frame_bytes < 1024:
            raise DataValidationError("max_frame_bytes must be >= 1024")
        self.url = url
        self.category = category or url.rstrip("/").rsplit("/", 1)[-1]
        self.ping_interval_s = ping_interval_s
        self.pong_timeout_s = pong_timeout_s
        self.ack_timeout_s = ack_timeout_s
        self.backoff = backoff if backoff is not None else Backoff(base=0.5, cap=30.0, max_attempts=10**9)
        self.stable_after_s = stable_after_s
        self.connect_limit = connect_limit
        self.connect_window_s = connect_window_s
        self.max_frame_bytes = max_frame_bytes
        self.max_args = max_args
        self.stats = WsStats()
        self.rejected: dict[str, str] = {}
        self._wanted: dict[str, None] = dict.fromkeys(topics)
        self._session_http = session
        self._connect_times: deque[float] = deque()
        self._req_ids = itertools.count(1)
        self._current: _Session | None = None
        self._stopping = False
        self._on_event: Callable[[WsEvent], None] = lambda ev: None

    # ------------------------------------------------------------------ public

    @property
    def wanted(self) -> frozenset[str]:
        """Topics the client subscribes on every connection (requested minus rejected)."""
        return frozenset(t for t in self._wanted if t not in self.rejected)

    @property
    def confirmed(self) -> frozenset[str]:
        """Topics confirmed on the current connection (empty while disconnected)."""
        return frozenset(self._current.confirmed) if self._current else frozenset()

    async def subscribe(self, topics: Iterable[str]) -> None:
        """Add topics (sent at once when connected, and on every later connection)."""
        new = [t for t in topics if t not in self._wanted]
        self._wanted.update(dict.fromkeys(new))
        if self._current is not None and new:
            await self._send_subscribe(self._current, new)

    async def unsubscribe(self, topics: Iterable[str]) -> None:
        """Drop topics (unsubscribed at once when connected)."""
        gone = [t for t in topics if t in self._wanted]
        for t in gone:
            del self._wanted[t]
        sess = self._current
        if sess is not None and gone:
            sess.confirmed.difference_update(gone)
            for batch in subscribe_batches(gone, self.category, max_args=self.max_args):
                await _send_text(sess.ws, request_frame("unsubscribe", batch, f"u{next(self._req_ids)}"))

    async def stop(self) -> None:
        """Close the connection; :meth:`run` returns soon after."""
        self._stopping = True
        sess = self._current
        if sess is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sess.ws.close(code=1000, message=b"client stop"), 2.0)

    async def run(self, on_event: Callable[[WsEvent], None]) -> None:
        """Connect, subscribe and deliver events until :meth:`stop` (or cancellation)."""
        self._on_event = on_event
        own = self._session_http is None
        http = self._session_http or aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10.0, connect=10.0),
            headers={"User-Agent": "marketlake/0.1"},
        )
        failures = 0
        try:
            while not self._stopping:
                if self.stats.connects + self.stats.connect_failures:
                    await get_clock().sleep(self.backoff.delay(failures + 1))
                await self._throttle()
                if self._stopping:
                    break
                stable = await self._one_connection(http)
                failures = 0 if stable else failures + 1
        finally:
            self._current = None
            if own:
                await http.close()

    # ------------------------------------------------------------------ connection life

    async def _throttle(self) -> None:
        clock = get_clock()
        while True:
            now = clock.monotonic()
            while self._connect_times and self._connect_times[0] <= now - self.connect_window_s:
                self._connect_times.popleft()
            if len(self._connect_times) < self.connect_limit:
                return
            # At least a millisecond: a float remainder too small to move the clock never ends.
            wait = max(1e-3, self._connect_times[0] + self.connect_window_s - now)
            self.stats.throttled_s += wait
            await clock.sleep(wait)

    async def _one_connection(self, http: aiohttp.ClientSession) -> bool:
        """One connection from open to loss; True when it stayed up for ``stable_after_s``."""
        conn = self.stats.connects + self.stats.connect_failures + 1
        loop = asyncio.get_running_loop()
        try:
            # The handshake gets the same patience as a subscribe answer: never a hang.
            ws = await asyncio.wait_for(
                http.ws_connect(
                    self.url,
                    autoping=True,
                    heartbeat=None,
                    max_msg_size=max(64 << 20, self.max_frame_bytes * 2),
                    decode_text=False,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0),
                ),
                self.ack_timeout_s,
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self._connect_times.append(get_clock().monotonic())
            self.stats.connect_failures += 1
            self._on_event(
                Disconnected(conn, f"connect failed: {type(exc).__name__}: {exc}"[:300], None, 0.0)
            )
            return False
        # An attempt counts from when it ended: the server saw it at some moment before that, so
        # spacing ends by the window keeps the server's count within the limit too.
        self._connect_times.append(get_clock().monotonic())
        self.stats.connects += 1
        sess = _Session(ws, conn, loop.time())
        self._current = sess
        self._on_event(Connected(conn, self.url))
        closed = _Closed("closed", None)
        try:
            await self._send_subscribe(sess, list(self.wanted))
            if not sess.pending:
                self._report(sess)
            await self._read(sess)
        except _Closed as exc:
            closed = exc
        except (aiohttp.ClientError, ConnectionError) as exc:
            closed = sess.dead or _Closed(f"{type(exc).__name__}: {exc}"[:300], _code(ws, 1006))
        finally:
            self._current = None
            uptime = loop.time() - sess.opened
            if not ws.closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(), 1.0)
        self.stats.disconnects += 1
        if closed.silent:
            self.stats.silent_detected += 1
        self._on_event(Disconnected(conn, closed.reason, closed.code, uptime, closed.silent))
        return uptime >= self.stable_after_s

    async def _read(self, sess: _Session) -> None:
        """Read frames until the connection ends. Deadlines live in :meth:`_watchdog`, so a
        busy stream costs no timer per frame."""
        loop = asyncio.get_running_loop()
        ws = sess.ws
        sess.last_rx = loop.time()
        dog = asyncio.create_task(self._watchdog(sess))
        try:
            while True:
                msg = await ws.receive()
                if msg.type == aiohttp.WSMsgType.TEXT or msg.type == aiohttp.WSMsgType.BINARY:
                    sess.last_rx = loop.time()
                    had_pending = bool(sess.pending)
                    self._frame(sess, msg.data, binary=msg.type == aiohttp.WSMsgType.BINARY)
                    if sess.pending and not had_pending:
                        sess.ack_deadline = sess.last_rx + self.ack_timeout_s
                    continue
                if sess.dead is not None:
                    raise sess.dead
                if self._stopping:
                    raise _Closed("stopped", _code(ws, 1000))
                if msg.type == aiohttp.WSMsgType.ERROR:
                    raise _Closed(f"error: {ws.exception()}"[:300], _code(ws, 1006))
                raise _Closed("closed by server", _code(ws, 1006))
        finally:
            dog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await dog

    async def _watchdog(self, sess: _Session) -> None:
        """Ping on time; declare the socket dead when it stays silent (or a subscribe request
        unanswered) too long, and cut it so the reader returns at once."""
        loop = asyncio.get_running_loop()
        next_ping = loop.time() + self.ping_interval_s
        sess.ack_deadline = loop.time() + self.ack_timeout_s
        looked = False
        while True:
            dead_at = sess.last_rx + self.ping_interval_s + self.pong_timeout_s
            due = min(dead_at, next_ping, sess.ack_deadline if sess.pending else dead_at)
            await asyncio.sleep(max(0.0, due - loop.time()))
            now = loop.time()
            if now >= sess.last_rx + self.ping_interval_s + self.pong_timeout_s:
                if now - due > 0.05 and not looked:
                    # We woke late (the loop was busy, e.g. a first JIT compile): frames may sit
                    # unread in the socket. Let the reader look once more before calling it silent.
                    looked = True
                    await asyncio.sleep(min(0.1, self.pong_timeout_s))
                    continue
                self._cut(sess, _Closed("silent", None, silent=True))
                return
            looked = False
            if sess.pending and now >= sess.ack_deadline:
                self._cut(sess, _Closed(f"no answer to {len(sess.pending)} subscribe request(s)", None))
                return
            if now >= next_ping:
                self.stats.pings += 1
                next_ping = now + self.ping_interval_s
                try:
                    await _send_text(sess.ws, ping_frame(f"p{next(self._req_ids)}"))
                except (aiohttp.ClientError, ConnectionError, RuntimeError):
                    return  # the reader sees the broken connection itself

    @staticmethod
    def _cut(sess: _Session, why: _Closed) -> None:
        # No closing handshake with a peer that does not answer: shut the socket, which ends the
        # reader's receive at once (a graceful close would wait for the silent peer).
        sess.dead = why
        sock = sess.ws.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    # ------------------------------------------------------------------ frames

    def _frame(self, sess: _Session, data: bytes | str, *, binary: bool) -> None:
        raw = data.encode() if isinstance(data, str) else data
        self.stats.frames += 1
        self.stats.bytes += len(raw)
        if len(raw) > self.max_frame_bytes:
            self.stats.oversized += 1
            self._on_event(Malformed(sess.conn, raw[:QUARANTINE_BYTES], len(raw), "oversized"))
            return
        try:
            if binary:
                raise ExchangeProtocolError("bybit ws: a binary frame (Bybit sends text)")
            msg = decode_frame(raw)
        except ExchangeProtocolError as exc:
            self.stats.malformed += 1
            self._on_event(Malformed(sess.conn, raw[:QUARANTINE_BYTES], len(raw), str(exc)[:300]))
            return
        if isinstance(msg, WsCommandResponse):
            self._command(sess, msg)
            return
        self.stats.pushes += 1
        self._on_event(Push(sess.conn, msg, time.time_ns()))

    def _command(self, sess: _Session, msg: WsCommandResponse) -> None:
        if msg.ret_msg == "pong" or msg.op == "pong":
            self.stats.pongs += 1
            return
        if msg.op == "unsubscribe":
            return
        key = msg.req_id if msg.req_id in sess.pending else None
        if key is None and not msg.req_id and sess.pending:
            key = next(iter(sess.pending))  # an ack without req_id answers the oldest request
        if key is None:
            return
        topics = sess.pending.pop(key)
        if msg.success:
            sess.confirmed.update(msg.success_topics or topics)
            for t in msg.fail_topics:
                self.rejected[t] = "refused by the server"
        else:
            self.stats.acks_failed += 1
            self._retry_failed(sess, topics, msg.ret_msg or "")
        if not sess.pending:
            self._report(sess)

    def _retry_failed(self, sess: _Session, topics: list[str], message: str) -> None:
        named = [t for t in _TOPIC_IN_ERROR.findall(message) if t in topics]
        if named:
            for t in named:
                if "already" in message:
                    sess.confirmed.add(t)
                else:
                    self.rejected[t] = message[:200]
            rest = [t for t in topics if t not in named]
        elif len(topics) > 1:
            rest = topics  # re-sent in halves below
        else:
            self.rejected[topics[0]] = message[:200]
            rest = []
        if not rest:
            return
        halves = [rest] if named else [rest[: len(rest) // 2], rest[len(rest) // 2 :]]
        for part in halves:
            req_id = f"s{next(self._req_ids)}"
            sess.pending[req_id] = part
            self.stats.subscribe_requests += 1
            asyncio.ensure_future(self._send_quiet(sess, request_frame("subscribe", part, req_id)))

    async def _send_quiet(self, sess: _Session, frame: bytes) -> None:
        with contextlib.suppress(Exception):
            await _send_text(sess.ws, frame)

    async def _send_subscribe(self, sess: _Session, topics: list[str]) -> None:
        for batch in subscribe_batches(topics, self.category, max_args=self.max_args):
            req_id = f"s{next(self._req_ids)}"
            sess.pending[req_id] = batch
            self.stats.subscribe_requests += 1
            await _send_text(sess.ws, request_frame("subscribe", batch, req_id))

    def _report(self, sess: _Session) -> None:
        topics = frozenset(sess.confirmed)
        sess.reported = True
        self.stats.subscribed_sets.append(topics)
        self._on_event(Subscribed(sess.conn, topics, dict(self.rejected)))
