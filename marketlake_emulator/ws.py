"""The Bybit emulator's public WebSocket: ``/v5/public/{linear,spot,inverse}`` on the REST port.

What it speaks, as the recorded payloads in ``../shared/fixtures/bybit`` show:

* ``{"op": "subscribe"|"unsubscribe", "args": [...], "req_id": ...}`` answered with the ack of
  the market: linear/inverse ``{"success", "ret_msg": "", "conn_id", "req_id": <echo or "">,
  "op"}``, spot ``{"success", "ret_msg": "subscribe", "conn_id", ["req_id"], "op"}`` (``req_id``
  only when the request had one). A request is all-or-nothing: an unknown topic fails it with
  ``error:handler not found,topic:<t>`` (the text Bybit sends), more than 10 args on spot with
  ``args size >10``, more than 21,000 characters of args on linear/inverse likewise.
* ``{"op": "ping"}`` answered with the pong of the market (``ret_msg: "pong"``, ``op: "ping"``).
* ``kline.{interval}.{symbol}`` pushes: the forming candle (``confirm: false``) when a trade
  changed it, at most once per ``kline_update_ms`` of market time (Bybit: about once a second), and once a candle's period has ended on the market clock, that candle with
  ``confirm: true`` (``end = start + interval - 1``), in order, exactly the candle REST serves.
* ``publicTrade.{symbol}`` pushes: the trades whose time passed since the last tick, ascending,
  in batches of at most ``trade_batch_max``, the same trades ``/v5/market/recent-trade`` serves.

A subscription starts at the market time it was acknowledged: a kline topic's first
``confirm: true`` is the candle forming then, a trade topic's first trade is the first one after.

Faults (:data:`WS_FAULT_KINDS`), injected on the next push tick of a connection, either scheduled
with :meth:`EmulatorWs.inject` or drawn with the ``p_*`` probabilities of :class:`WsFaultConfig`:
``close1006`` (TCP closed without a close frame: the client reports 1006), ``reset`` (TCP RST),
``goaway`` (close frame 1001), ``silent`` (socket stays open, nothing more is sent, pongs neither),
``delay`` (everything is held for ``delay_s`` then sent at once), ``duplicate`` / ``reorder`` (the
next push is sent twice / swapped with the one after it), ``malformed`` (a junk frame: cut JSON,
invalid UTF-8, a wrong shape, an unknown topic, a binary frame), ``oversized`` (an extra frame of
``oversized_bytes``). Injected junk frames are always *extra*: skipping them loses no data.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import struct
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Final

import msgspec
from aiohttp import WSMsgType, web

from marketlake.core.timeframes import Timeframe, parse_timeframe
from marketlake.exchanges.bybit import constants as C
from marketlake_emulator.ws_config import (
    MALFORMED_FRAMES,
    WS_FAULT_KINDS,
    WsConnectionRecord,
    WsFaultConfig,
    WsRequestRecord,
    push_shape,
    read_admin_json,
)
from marketlake_emulator.market_types import InstrumentSpec, format_decimal

if TYPE_CHECKING:  # pragma: no cover
    from marketlake_emulator.control import EmulatorClock
    from marketlake_emulator.market import SyntheticMarket

__all__ = ["WS_FAULT_KINDS", "EmulatorWs", "WsConnectionRecord", "WsFaultConfig", "WsRequestRecord"]

log = logging.getLogger(__name__)

_ADMIN: Final = "/_emulator/ws"
_TRADE_CACHE_MINUTES: Final = 4096


class _Req(msgspec.Struct):
    op: str
    args: list[str] = []
    # ccxt.pro sends an integer; Bybit accepts it and echoes it back as a string ("req_id":"3").
    req_id: str | int | None = None


@dataclass(slots=True)
class _KlineTopic:
    spec: InstrumentSpec
    tf: Timeframe
    cur_open: int  # open of the candle forming at the last tick: the next one to confirm
    last_update_ms: int = -(2**62)  # market time of the last confirm:false push
    last_row: tuple[int, ...] | None = None  # what that push carried (no change, no push)


@dataclass(slots=True)
class _TradeTopic:
    spec: InstrumentSpec
    cursor: int  # trades with time <= cursor were pushed (or precede the subscription)


@dataclass(eq=False)
class _Conn:
    ws: web.WebSocketResponse
    request: web.Request
    record: WsConnectionRecord
    topics: dict[str, _KlineTopic | _TradeTopic] = field(default_factory=dict)
    faults: deque[str] = field(default_factory=deque)
    silent: bool = False
    hold_until: float = 0.0
    backlog: list[bytes] = field(default_factory=list)
    duplicate_next: int = 0
    reorder_next: int = 0
    held: bytes | None = None
    closed: bool = False
    extra: deque[bytes] = field(default_factory=deque)


class EmulatorWs:
    """The WebSocket side of a :class:`~marketlake_emulator.server.BybitEmulator`
    (``emu.ws``): routes, per-connection push loops, faults and logs.

    It is given the market and the clock, not the emulator, so that only the server module
    knows both sides (no import circle).

    Args:
        market: The market it pushes (the same object the REST side serves).
        clock: The market clock shared with the REST side.
        faults: Initial configuration (default: no faults, a push tick every 0.1 s).
    """

    def __init__(
        self, market: SyntheticMarket, clock: EmulatorClock, faults: WsFaultConfig | None = None
    ) -> None:
        self.market = market
        self.clock = clock
        self.faults = faults or WsFaultConfig()
        self.connections: list[WsConnectionRecord] = []
        self.requests: list[WsRequestRecord] = []
        self.sends: list[tuple[str, str, int]] = []
        self.pushes = 0
        #: Errors of push loops (a bug in the emulator; tests assert there are none).
        self.errors: list[str] = []
        self.injected: dict[str, int] = {k: 0 for k in WS_FAULT_KINDS}
        self._live: set[_Conn] = set()
        self._connect_times: deque[float] = deque()
        self._rng = random.Random(f"{market.seed}:ws-faults")
        self._trade_cache: OrderedDict[tuple[int, int], list[dict[str, Any]]] = OrderedDict()
        self._junk = 0

    # ------------------------------------------------------------------ set-up and knobs

    def install(self, app: web.Application) -> None:
        """Add the WebSocket and admin routes to ``app`` and close sockets on shutdown."""
        for category, path in C.WS_PUBLIC_PATHS.items():
            app.router.add_get(path, self._handler(category))
        app.router.add_get(f"{_ADMIN}/state", self._admin_state)
        app.router.add_post(f"{_ADMIN}/faults", self._admin_faults)
        app.router.add_post(f"{_ADMIN}/inject", self._admin_inject)
        app.on_shutdown.append(self._close_all)

    def configure(self, **changes: Any) -> None:
        """Set fault knobs by name, validated; nothing changes on an error.

        Raises:
            ValueError: an unknown knob or an out-of-range value.
        """
        known = {f.name for f in fields(WsFaultConfig)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown ws knob(s): {', '.join(sorted(unknown))}")
        candidate = WsFaultConfig(**{**{n: getattr(self.faults, n) for n in known}, **changes})
        for name in changes:
            setattr(self.faults, name, getattr(candidate, name))

    def inject(self, *kinds: str, conn_id: str | None = None) -> int:
        """Give every open connection (or the one with ``conn_id``) these faults at its next
        push tick, in order; return how many connections got them.

        Raises:
            ValueError: an unknown fault kind.
        """
        for kind in kinds:
            if kind not in WS_FAULT_KINDS:
                raise ValueError(f"unknown ws fault {kind!r}; use one of {', '.join(WS_FAULT_KINDS)}")
        hit = 0
        for conn in list(self._live):
            if conn_id is None or conn.record.conn_id == conn_id:
                conn.faults.extend(kinds)
                hit += 1
        return hit

    def inject_frame(self, frame: bytes, conn_id: str | None = None) -> int:
        """Send ``frame`` (any bytes, as a text frame) to every open connection (or one) at its
        next push tick, before its pushes; return how many connections get it."""
        hit = 0
        for conn in list(self._live):
            if conn_id is None or conn.record.conn_id == conn_id:
                conn.extra.append(bytes(frame))
                hit += 1
        return hit

    @property
    def open_connections(self) -> list[WsConnectionRecord]:
        """Records of the connections open now."""
        return [c.record for c in self._live]

    def max_connects_in_window(self, window_s: float) -> int:
        """The most connections opened within any ``window_s`` real seconds."""
        times = sorted(c.opened_mono for c in self.connections)
        best, lo = 0, 0
        for hi, t in enumerate(times):
            while t - times[lo] >= window_s:
                lo += 1
            best = max(best, hi - lo + 1)
        return best

    # ------------------------------------------------------------------ the connection

    def _handler(self, category: str) -> Any:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._serve(request, category)

        return handle

    async def _serve(self, request: web.Request, category: str) -> web.StreamResponse:
        f = self.faults
        mono = time.monotonic()
        while self._connect_times and self._connect_times[0] <= mono - f.connect_window_s:
            self._connect_times.popleft()
        if f.connect_limit is not None and len(self._connect_times) >= f.connect_limit:
            return web.Response(status=429, text="429 Too Many Requests: too many connections")
        self._connect_times.append(mono)
        ws = web.WebSocketResponse(autoping=True, max_msg_size=1 << 20)
        await ws.prepare(request)
        record = WsConnectionRecord(str(uuid.uuid4()), category, mono)
        self.connections.append(record)
        conn = _Conn(ws, request, record)
        self._live.add(conn)
        pusher = asyncio.create_task(self._push_loop(conn))
        pusher.add_done_callback(lambda t, conn=conn: self._pusher_done(t, conn))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._on_request(conn, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await self._reply(conn, "", False, "error:binary frames are not supported", None)
                else:
                    break
        finally:
            conn.closed = True
            pusher.cancel()
            with contextlib.suppress(BaseException):
                await pusher
            self._live.discard(conn)
            record.closed_mono = time.monotonic()
            record.end = record.end or "client"
            record.topics = set(conn.topics)
        return ws

    def _pusher_done(self, task: asyncio.Task[None], conn: _Conn) -> None:
        # A push loop that dies would leave a socket that answers pings but never pushes (and
        # never takes a fault): report the bug and drop the connection instead.
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        self.errors.append(f"{type(exc).__name__}: {exc}")
        log.error("emulator push loop failed", exc_info=exc)
        conn.record.end = "error"
        if conn.request.transport is not None:
            conn.request.transport.close()

    async def _close_all(self, app: web.Application) -> None:
        for conn in list(self._live):
            with contextlib.suppress(Exception):
                await conn.ws.close(code=1001, message=b"server shutdown")

    async def _send(self, conn: _Conn, data: bytes) -> None:
        if conn.silent or conn.closed:
            return
        if conn.hold_until:
            if time.monotonic() < conn.hold_until:
                conn.backlog.append(data)
                return
            conn.hold_until = 0.0
            backlog, conn.backlog = conn.backlog, []
            for frame in backlog:
                await self._write(conn, frame)
        await self._write(conn, data)

    async def _write(self, conn: _Conn, data: bytes) -> None:
        try:
            await conn.ws.send_frame(data, WSMsgType.TEXT)
        except (ConnectionError, RuntimeError):
            conn.closed = True

    # ------------------------------------------------------------------ requests and acks

    async def _reply(self, conn: _Conn, op: str, ok: bool, message: str, req_id: str | None) -> None:
        if self.faults.reply_latency_s > 0:
            await asyncio.sleep(self.faults.reply_latency_s)
        spot = conn.record.category == "spot"
        body: dict[str, Any] = {"success": ok, "ret_msg": message, "conn_id": conn.record.conn_id}
        if not spot:
            body["req_id"] = req_id or ""
        elif req_id is not None:
            body["req_id"] = req_id
        body["op"] = op
        await self._send(conn, msgspec.json.encode(body))

    async def _on_request(self, conn: _Conn, text: str) -> None:
        try:
            req = msgspec.json.decode(text, type=_Req)
        except msgspec.DecodeError:
            await self._reply(conn, "", False, "error:request is not valid JSON", None)
            return
        rid = None if req.req_id is None else str(req.req_id)
        self.requests.append(WsRequestRecord(conn.record.conn_id, req.op, tuple(req.args), rid, True))
        if req.op == "ping":
            await self._reply(conn, "ping", True, "pong", rid)
            return
        if req.op not in ("subscribe", "unsubscribe"):
            self._mark_failed()
            await self._reply(conn, req.op, False, f"error:op {req.op[:40]} is not supported", rid)
            return
        error = self._check_args(conn.record.category, req.args)
        now = self.clock.now_ms()
        built: dict[str, _KlineTopic | _TradeTopic] = {}
        if error is None and req.op == "subscribe":
            for topic in req.args:
                state = self._topic_state(conn.record.category, topic, now)
                if state is None:
                    error = f"error:handler not found,topic:{topic[:100]}"
                    break
                built[topic] = state
        if error is not None:
            self._mark_failed()
            await self._reply(conn, req.op, False, error, rid)
            return
        if req.op == "subscribe":
            for topic, state in built.items():
                conn.topics.setdefault(topic, state)  # re-subscribing keeps the running cursor
        else:
            for topic in req.args:
                conn.topics.pop(topic, None)
        conn.record.topics = set(conn.topics)
        await self._reply(conn, req.op, True, req.op if conn.record.category == "spot" else "", rid)

    def _mark_failed(self) -> None:
        last = self.requests[-1]
        self.requests[-1] = WsRequestRecord(last.conn_id, last.op, last.args, last.req_id, False)

    def _check_args(self, category: str, args: list[str]) -> str | None:
        if not self.faults.enforce_args_limits:
            return None
        most = C.WS_ARGS_PER_REQUEST.get(category)
        if most is not None and len(args) > most:
            return f"args size >{most}"
        chars = C.WS_ARGS_CHARS_PER_REQUEST.get(category)
        if chars is not None and sum(len(a) for a in args) > chars:
            return f"args length >{chars}"
        return None

    def _topic_state(self, category: str, topic: str, now: int) -> _KlineTopic | _TradeTopic | None:
        parts = topic.split(".")
        market = self.market
        if len(parts) == 3 and parts[0] == "kline" and parts[1] in C.INTERVALS:
            if not market.has(parts[2], category):
                return None
            tf = parse_timeframe(parts[1])
            return _KlineTopic(market.instrument(parts[2], category), tf, tf.floor(now))
        if len(parts) == 2 and parts[0] == "publicTrade" and market.has(parts[1], category):
            return _TradeTopic(market.instrument(parts[1], category), now)
        return None

    # ------------------------------------------------------------------ pushes

    async def _push_loop(self, conn: _Conn) -> None:
        while not conn.closed:
            await asyncio.sleep(self.faults.push_interval_s)
            if conn.closed:
                return
            for kind in self._faults_now(conn):
                conn.record.faults.append(kind)
                self.injected[kind] += 1
                if await self._apply(conn, kind):
                    return
            if conn.silent:
                continue
            while conn.extra:
                await self._send(conn, conn.extra.popleft())
            now = self.clock.now_ms()
            for topic, state in list(conn.topics.items()):
                frames = (
                    self._kline_frames(topic, state, now)
                    if isinstance(state, _KlineTopic)
                    else self._trade_frames(topic, state, now)
                )
                for frame, key in frames:
                    await self._push(conn, frame, topic, key)
            if conn.held is not None:  # a reorder with no later push this tick: send it now
                held, conn.held = conn.held, None
                await self._send(conn, held)

    def _faults_now(self, conn: _Conn) -> list[str]:
        out = list(conn.faults)
        conn.faults.clear()
        f = self.faults
        for kind in WS_FAULT_KINDS:
            p = getattr(f, f"p_{kind}")
            if p > 0.0 and self._rng.random() < p:
                out.append(kind)
        return out

    async def _apply(self, conn: _Conn, kind: str) -> bool:
        """Apply one fault; True when the connection is gone."""
        if kind in ("close1006", "reset", "goaway"):
            conn.record.end = kind
            conn.closed = True
            transport = conn.request.transport
            if kind == "goaway":
                with contextlib.suppress(Exception):
                    await conn.ws.close(code=1001, message=b"going away")
            elif transport is not None:
                if kind == "reset":
                    sock = transport.get_extra_info("socket")
                    if sock is not None:
                        with contextlib.suppress(OSError):
                            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    transport.abort()
                else:
                    transport.close()
            return True
        if kind == "silent":
            conn.silent = True
        elif kind == "delay":
            conn.hold_until = time.monotonic() + self.faults.delay_s
        elif kind == "duplicate":
            conn.duplicate_next += 1
        elif kind == "reorder":
            conn.reorder_next += 1
        elif kind == "malformed":
            junk = MALFORMED_FRAMES[self._junk % len(MALFORMED_FRAMES)]
            self._junk += 1
            if self._junk % (len(MALFORMED_FRAMES) + 1) == 0:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await conn.ws.send_bytes(junk)  # a binary frame
            else:
                await self._send(conn, junk)
        elif kind == "oversized":
            head, tail = b'{"topic":"publicTrade.PAD","type":"snapshot","ts":1,"pad":"', b'"}'
            pad = b"x" * max(0, self.faults.oversized_bytes - len(head) - len(tail))
            await self._send(conn, head + pad + tail)
        return False

    async def _push(self, conn: _Conn, frame: bytes, topic: str, key: str) -> None:
        if conn.reorder_next and conn.held is None:
            conn.reorder_next -= 1
            conn.held = frame
            return
        repeat = 1
        if conn.duplicate_next:
            conn.duplicate_next -= 1
            repeat = 2
        for _ in range(repeat):
            await self._send(conn, frame)
        self.pushes += 1
        if self.faults.record_sends:
            self.sends.append((topic, key, time.time_ns()))
        if conn.held is not None:
            held, conn.held = conn.held, None
            await self._send(conn, held)

    def _kline_frames(self, topic: str, t: _KlineTopic, now: int) -> list[tuple[bytes, str]]:
        out: list[tuple[bytes, str]] = []
        forming = t.tf.floor(now)
        market = self.market
        if forming > t.cur_open:
            closed = market.raw_candles(t.spec, t.tf, t.cur_open, forming - 1)
            for i in range(len(closed)):
                row = closed.take(slice(i, i + 1))
                out.append((self._kline_frame(topic, t, row, True, now), f"c{int(row.ts[0])}"))
            t.cur_open = forming
        if self.faults.kline_updates and now - t.last_update_ms >= self.faults.kline_update_ms:
            live = market.forming_candle(t.spec, t.tf, now)
            if len(live):
                row = tuple(int(c[0]) for c in (live.ts, live.open, live.high, live.low, live.close, live.volume))
                if row != t.last_row:  # Bybit pushes the forming candle on change only
                    t.last_row, t.last_update_ms = row, now
                    out.append((self._kline_frame(topic, t, live, False, now), f"f{int(live.ts[0])}"))
        return out

    def _kline_frame(self, topic: str, t: _KlineTopic, row: Any, confirm: bool, now: int) -> bytes:
        s = t.spec
        start = int(row.ts[0])
        data = {
            "start": start,
            "end": t.tf.next_open(start) - 1,
            "interval": t.tf.name,
            "open": format_decimal(int(row.open[0]), s.price_scale),
            "close": format_decimal(int(row.close[0]), s.price_scale),
            "high": format_decimal(int(row.high[0]), s.price_scale),
            "low": format_decimal(int(row.low[0]), s.price_scale),
            "volume": format_decimal(int(row.volume[0]), s.qty_scale),
            "turnover": format_decimal(int(row.turnover[0]), s.turnover_scale),
            "confirm": confirm,
            "timestamp": now,
        }
        return msgspec.json.encode({"topic": topic, "data": [data], "ts": now, "type": "snapshot"})

    def _trade_frames(self, topic: str, t: _TradeTopic, now: int) -> list[tuple[bytes, str]]:
        if now <= t.cursor:
            return []
        trades = list(self._ws_trades(t.spec, t.cursor + 1, now + 1))
        t.cursor = now
        n = self.faults.trade_batch_max
        return [
            (
                msgspec.json.encode(
                    {"topic": topic, "type": "snapshot", "ts": now, "data": trades[i : i + n]}
                ),
                str(trades[i]["i"]),
            )
            for i in range(0, len(trades), n)
        ]

    def _ws_trades(self, spec: InstrumentSpec, start_ms: int, end_ms: int) -> Iterable[dict[str, Any]]:
        """Trades with ``start_ms <= T < end_ms`` in the push shape (``T s S v p L i BT seq``)."""
        minute = start_ms - start_ms % 60_000
        while minute < end_ms:
            key = (spec.key, minute)
            rows = self._trade_cache.get(key)
            if rows is None:
                rows = push_shape(self.market.minute_trades(spec, minute))
                self._trade_cache[key] = rows
                if len(self._trade_cache) > _TRADE_CACHE_MINUTES:
                    self._trade_cache.popitem(last=False)
            for row in rows:
                if start_ms <= row["T"] < end_ms:
                    yield row
            minute += 60_000

    # ------------------------------------------------------------------ admin routes

    async def _admin_state(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "faults": {f.name: getattr(self.faults, f.name) for f in fields(WsFaultConfig)},
                "open": [c.conn_id for c in self.open_connections],
                "connections": len(self.connections),
                "pushes": self.pushes,
                "injected": self.injected,
            }
        )

    async def _admin_body(self, request: web.Request) -> dict[str, Any]:
        return await read_admin_json(request)

    async def _admin_faults(self, request: web.Request) -> web.Response:
        try:
            self.configure(**await self._admin_body(request))
        except (TypeError, ValueError) as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        return await self._admin_state(request)

    async def _admin_inject(self, request: web.Request) -> web.Response:
        kinds = (await self._admin_body(request)).get("faults")
        if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
            raise web.HTTPBadRequest(text='expected {"faults": ["close1006", ...]}')
        try:
            self.inject(*kinds)
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        return await self._admin_state(request)
