"""Knobs, records and canned frames of the emulator's WebSocket side (split from
:mod:`~marketlake_emulator.ws` to keep files small)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Final

import msgspec
from aiohttp import web

from marketlake.exchanges.bybit import constants as C

__all__ = [
    "MALFORMED_FRAMES",
    "WS_FAULT_KINDS",
    "WsConnectionRecord",
    "WsFaultConfig",
    "WsRequestRecord",
    "push_shape",
]

#: Faults a connection can be given (:meth:`EmulatorWs.inject`, the ``p_*`` knobs).
WS_FAULT_KINDS: Final = (
    "close1006",
    "reset",
    "goaway",
    "silent",
    "delay",
    "duplicate",
    "reorder",
    "malformed",
    "oversized",
)
#: Junk a ``malformed`` fault sends, in turn (every sixth one goes out as a binary frame).
MALFORMED_FRAMES: Final = (
    b'{"topic":"kline.1.BTCUSDT","type":"snapshot","ts":1,"data":[{"start":',  # cut JSON
    b'{"topic":"publicTrade.BTCUSDT","ts":1,"type":"snapshot","data":"\xff\xfe"}',  # bad UTF-8
    b'{"topic":"kline.1.BTCUSDT","type":"snapshot","ts":1,"data":[{"start":"x"}]}',  # wrong shape
    b'{"topic":"orderbook.50.BTCUSDT","type":"snapshot","ts":1,"data":{}}',  # unknown topic
    b"[1,2,3]",  # JSON, but not an object
)


@dataclass
class WsFaultConfig:
    """How the WebSocket side behaves and misbehaves; every field may change while it runs.

    Attributes:
        push_interval_s: Real seconds between push ticks of a connection.
        trade_batch_max: Most trades in one ``publicTrade`` push.
        kline_updates: Push the forming candle (``confirm: false``) when it changed.
        kline_update_ms: Least market time between two such pushes of a topic (Bybit pushes
            about once a second; in market time, so a sped-up market keeps the ratio).
        p_close1006 ... p_oversized: Probability per push tick and connection of each fault of
            :data:`WS_FAULT_KINDS`.
        delay_s: How long a ``delay`` fault holds a connection's frames (real seconds).
        oversized_bytes: Size of an ``oversized`` frame.
        enforce_args_limits: Refuse subscribe requests over Bybit's per-request limits.
        connect_limit: Refuse upgrades (HTTP 429) past this many connections per
            ``connect_window_s``; None = no limit (the log still shows the peak).
        connect_window_s: The window of ``connect_limit``, real seconds.
        record_sends: Keep ``(topic, key, time_ns)`` of every push sent (latency benchmarks).
        reply_latency_s: Real seconds before each answer to a request: the network round trip a
            client of the real exchange always has. pybit 5.x stores a subscription's ``req_id``
            only after sending it, so an ack arriving within microseconds (a local server with no
            latency) finds no entry and pybit closes the socket; a few ms avoid that race.
    """

    push_interval_s: float = 0.1
    trade_batch_max: int = 100
    kline_updates: bool = True
    kline_update_ms: int = 1000
    p_close1006: float = 0.0
    p_reset: float = 0.0
    p_goaway: float = 0.0
    p_silent: float = 0.0
    p_delay: float = 0.0
    p_duplicate: float = 0.0
    p_reorder: float = 0.0
    p_malformed: float = 0.0
    p_oversized: float = 0.0
    delay_s: float = 1.0
    oversized_bytes: int = 2_000_000
    enforce_args_limits: bool = True
    connect_limit: int | None = None
    connect_window_s: float = C.WS_CONNECT_WINDOW_SECONDS
    record_sends: bool = False
    reply_latency_s: float = 0.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` on an out-of-range knob."""
        if not 0.0 < self.push_interval_s <= 60.0:
            raise ValueError("push_interval_s must be within (0, 60]")
        if self.kline_update_ms < 0:
            raise ValueError("kline_update_ms must be >= 0")
        if self.trade_batch_max < 1:
            raise ValueError("trade_batch_max must be >= 1")
        for f in fields(self):
            if f.name.startswith("p_") and not 0.0 <= getattr(self, f.name) <= 1.0:
                raise ValueError(f"{f.name} must be within [0, 1]")
        if not 0.0 <= self.reply_latency_s <= 10.0:
            raise ValueError("reply_latency_s must be within [0, 10]")
        if self.delay_s < 0 or self.connect_window_s <= 0:
            raise ValueError("delay_s must be >= 0 and connect_window_s > 0")
        if not 1 <= self.oversized_bytes <= 256 * 2**20:
            raise ValueError("oversized_bytes must be 1..256 MiB")
        if self.connect_limit is not None and self.connect_limit < 1:
            raise ValueError("connect_limit must be >= 1 or None")


@dataclass(slots=True)
class WsConnectionRecord:
    """One WebSocket connection the emulator accepted.

    Attributes:
        conn_id: The ``conn_id`` its acks carry.
        category: ``linear``, ``spot`` or ``inverse``.
        opened_mono: Real monotonic seconds at the upgrade.
        closed_mono: When it ended (None while open).
        end: How it ended: ``client`` (the client closed or went away) or a fault kind.
        topics: Topics subscribed when it ended (or now).
        faults: Faults it was given, in order.
    """

    conn_id: str
    category: str
    opened_mono: float
    closed_mono: float | None = None
    end: str | None = None
    topics: set[str] = field(default_factory=set)
    faults: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class WsRequestRecord:
    """One client request: connection, op, args, req_id, and whether it succeeded."""

    conn_id: str
    op: str
    args: tuple[str, ...]
    req_id: str | None
    success: bool


def push_shape(rows: list[dict[str, object]]) -> list[dict[str, Any]]:
    """REST trade objects → ``publicTrade`` items, with a tick direction from the price change."""
    out: list[dict[str, Any]] = []
    prev: str | None = None
    last_move = "Plus"
    for t in rows:
        price = str(t["price"])
        if prev is not None and float(price) != float(prev):
            last_move = "Plus" if float(price) > float(prev) else "Minus"
            tick = f"{last_move}Tick"
        else:
            tick = f"Zero{last_move}Tick"
        prev = price
        out.append(
            {
                "T": int(t["time"]),  # type: ignore[call-overload]
                "s": t["symbol"],
                "S": t["side"],
                "v": t["size"],
                "p": price,
                "L": tick,
                "i": t["execId"],
                "BT": bool(t["isBlockTrade"]),
                "seq": int(t["seq"]),  # type: ignore[call-overload]
            }
        )
    return out


async def read_admin_json(request: web.Request) -> dict[str, Any]:
    """The JSON object body of an emulator admin request (REST or WebSocket side), else HTTP 400."""
    try:
        data = msgspec.json.decode(await request.read())
    except msgspec.DecodeError as exc:
        raise web.HTTPBadRequest(text=f"body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text="body must be a JSON object")
    return data
