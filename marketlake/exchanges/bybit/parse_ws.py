"""Pure decoding of Bybit v5 public WebSocket frames (kline / publicTrade pushes, command acks,
pongs, client requests), as the recorded payloads in ``../shared/fixtures/bybit`` show them.

The streaming client and the emulator's WebSocket side (a later issue) build on these; the
golden tests decode every recorded frame with them.
"""

from __future__ import annotations

from typing import Any

import msgspec

from marketlake.errors import ExchangeProtocolError
from marketlake.exchanges.bybit.parse import MalformedJSONError

__all__ = [
    "WsCommandResponse",
    "WsKline",
    "WsKlinePush",
    "WsMessage",
    "WsRequest",
    "WsTrade",
    "WsTradePush",
    "decode_ws_message",
]


class _FrameWire(msgspec.Struct):
    topic: str | None = None
    type: str | None = None
    ts: int | None = None
    data: Any = None
    op: str | None = None
    success: bool | None = None
    ret_msg: str | None = None
    conn_id: str | None = None
    req_id: str | None = None
    args: list[str] | None = None


class _KlineWire(msgspec.Struct):
    start: int
    end: int
    interval: str
    open: float
    close: float
    high: float
    low: float
    volume: float
    turnover: float
    confirm: bool
    timestamp: int


class _TradeWire(msgspec.Struct):
    T: int
    s: str
    S: str
    v: float
    p: float
    i: str
    L: str | None = None
    BT: bool = False
    seq: int | None = None


class _CommandDataWire(msgspec.Struct):
    successTopics: list[str] = []
    failTopics: list[str] = []


class WsKline(msgspec.Struct, frozen=True, kw_only=True):
    """One candle of a ``kline.{interval}.{symbol}`` push.

    Attributes:
        start_ms: Open time, epoch ms.
        end_ms: Last millisecond of the period (Bybit sends ``start + duration - 1``).
        interval: Interval in Bybit's spelling.
        open: Open, likewise high, low, close.
        volume: Base volume.
        turnover: Quote turnover.
        confirm: True once the candle is closed.
        timestamp_ms: When the server built the message.
    """

    start_ms: int
    end_ms: int
    interval: str
    open: float
    high: float
    low: float
    close: float
    volume: float
    turnover: float
    confirm: bool
    timestamp_ms: int


class WsKlinePush(msgspec.Struct, frozen=True, kw_only=True):
    """A kline push. Attributes: topic, symbol, interval, type, ts_ms, candles."""

    topic: str
    symbol: str
    interval: str
    type: str
    ts_ms: int
    candles: list[WsKline]


class WsTrade(msgspec.Struct, frozen=True, kw_only=True):
    """One trade of a ``publicTrade.{symbol}`` push (``T s S v p L i BT seq``)."""

    ts_ms: int
    symbol: str
    side: str
    size: float
    price: float
    trade_id: str
    tick_direction: str | None = None
    is_block_trade: bool = False
    seq: int | None = None


class WsTradePush(msgspec.Struct, frozen=True, kw_only=True):
    """A publicTrade push. Attributes: topic, symbol, type, ts_ms, trades."""

    topic: str
    symbol: str
    type: str
    ts_ms: int
    trades: list[WsTrade]


class WsCommandResponse(msgspec.Struct, frozen=True, kw_only=True):
    """The server's answer to a command: subscribe ack, pong (all three shapes Bybit uses).

    Attributes:
        op: ``subscribe``, ``ping`` (linear/spot pong), ``pong`` (option pong) ...
        success: ``success`` where sent.
        ret_msg: ``ret_msg`` (``"pong"`` for a pong, ``""``/``"subscribe"`` for an ack).
        conn_id: Connection id.
        req_id: Echoed request id.
        args: ``args`` (option pong carries the time there).
        success_topics: Topics acknowledged (option/spread ``COMMAND_RESP``).
        fail_topics: Topics refused.
    """

    op: str | None
    success: bool | None
    ret_msg: str | None = None
    conn_id: str | None = None
    req_id: str | None = None
    args: list[str] = []
    success_topics: list[str] = []
    fail_topics: list[str] = []


class WsRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A client → server frame: ``{"op": "subscribe"|"unsubscribe"|"ping", "args": [...]}``."""

    op: str
    args: list[str] = []
    req_id: str | None = None


WsMessage = WsKlinePush | WsTradePush | WsCommandResponse | WsRequest


def _convert(data: Any, type_: Any, what: str) -> Any:
    try:
        return msgspec.convert(data, type_, strict=False)
    except msgspec.ValidationError as exc:
        raise ExchangeProtocolError(f"bybit ws {what}: unexpected shape: {exc}") from None


def _topic_parts(topic: str, n: int) -> list[str]:
    parts = topic.split(".")
    if len(parts) != n or not all(parts):
        raise ExchangeProtocolError(f"bybit ws: malformed topic {topic[:60]!r}")
    return parts


def decode_ws_message(data: bytes | str) -> WsMessage:
    """Decode one WebSocket text frame.

    Raises:
        MalformedJSONError: not complete JSON.
        ExchangeProtocolError: a shape none of the known frames has, or an unsupported topic.
    """
    raw = data.encode() if isinstance(data, str) else data
    try:
        frame = msgspec.json.decode(raw, type=_FrameWire, strict=False)
    except msgspec.ValidationError as exc:
        raise ExchangeProtocolError(f"bybit ws: unexpected frame shape: {exc}") from None
    except msgspec.DecodeError as exc:
        raise MalformedJSONError(f"bybit ws: frame is not valid JSON ({exc})") from None
    if frame.topic is not None:
        if frame.ts is None or frame.type is None:
            raise ExchangeProtocolError(f"bybit ws push {frame.topic[:60]!r} lacks ts or type")
        if frame.topic.startswith("kline."):
            _, interval, symbol = _topic_parts(frame.topic, 3)
            rows = _convert(frame.data, list[_KlineWire], "kline push")
            candles = [
                WsKline(
                    start_ms=k.start,
                    end_ms=k.end,
                    interval=k.interval,
                    open=k.open,
                    high=k.high,
                    low=k.low,
                    close=k.close,
                    volume=k.volume,
                    turnover=k.turnover,
                    confirm=k.confirm,
                    timestamp_ms=k.timestamp,
                )
                for k in rows
            ]
            return WsKlinePush(
                topic=frame.topic,
                symbol=symbol,
                interval=interval,
                type=frame.type,
                ts_ms=frame.ts,
                candles=candles,
            )
        if frame.topic.startswith("publicTrade."):
            _, symbol = _topic_parts(frame.topic, 2)
            rows = _convert(frame.data, list[_TradeWire], "publicTrade push")
            trades = [
                WsTrade(
                    ts_ms=t.T,
                    symbol=t.s,
                    side=t.S,
                    size=t.v,
                    price=t.p,
                    trade_id=t.i,
                    tick_direction=t.L,
                    is_block_trade=t.BT,
                    seq=t.seq,
                )
                for t in rows
            ]
            return WsTradePush(
                topic=frame.topic, symbol=symbol, type=frame.type, ts_ms=frame.ts, trades=trades
            )
        raise ExchangeProtocolError(f"bybit ws: unsupported topic {frame.topic[:60]!r}")
    if frame.success is not None or frame.type == "COMMAND_RESP" or frame.op == "pong":
        topics = (
            _convert(frame.data, _CommandDataWire, "command response")
            if frame.data is not None
            else _CommandDataWire()
        )
        return WsCommandResponse(
            op=frame.op,
            success=frame.success,
            ret_msg=frame.ret_msg,
            conn_id=frame.conn_id,
            req_id=frame.req_id,
            args=frame.args or [],
            success_topics=topics.successTopics,
            fail_topics=topics.failTopics,
        )
    if frame.op is not None:
        return WsRequest(op=frame.op, args=frame.args or [], req_id=frame.req_id)
    raise ExchangeProtocolError("bybit ws: frame is neither a push, a command response nor a request")
