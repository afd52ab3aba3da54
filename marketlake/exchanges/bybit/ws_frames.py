"""Fast typed decoding of Bybit v5 public WebSocket frames, and the client's request frames.

The hot path of a stream is decoding ``kline`` and ``publicTrade`` pushes. Bybit writes ``topic``
first, so the frame's first bytes tell its kind and one typed msgspec pass decodes the whole push
straight into structs (decimal strings become floats, and prices, sizes and sides are checked, in
C); no Python dict or str is built per field, and trades come out as the live runner's records.
Frames in another field order take a two-pass path (envelope with ``data`` left raw, then ``data``
by topic); acks and pongs go through :func:`~marketlake.exchanges.bybit.parse_ws.decode_ws_message`.
``benchmarks/bench_ws_decode.py`` compares this with ``json.loads`` and dict access.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Final, Literal

import msgspec

from marketlake.errors import DataValidationError, ExchangeProtocolError
from marketlake.exchanges.bybit import constants as C
from marketlake.exchanges.bybit.parse import MalformedJSONError
from marketlake.exchanges.bybit.parse_ws import WsCommandResponse, decode_ws_message

__all__ = [
    "Kline",
    "KlinePush",
    "PublicTrade",
    "TradePush",
    "decode_frame",
    "ping_frame",
    "request_frame",
    "subscribe_batches",
    "ws_url_for",
]

#: Hosts whose WebSocket lives on another host (Bybit's REST and stream hosts differ).
_STREAM_HOSTS: Final = {
    "api.bybit.com": "stream.bybit.com",
    "api-testnet.bybit.com": "stream-testnet.bybit.com",
    "api.bytick.com": "stream.bytick.com",
}


# Checked in C while decoding: prices finite and > 0, quantities finite and >= 0 (NaN fails both).
_Price = Annotated[float, msgspec.Meta(gt=0, lt=sys.float_info.max)]
_Quantity = Annotated[float, msgspec.Meta(ge=0, lt=sys.float_info.max)]


class Kline(msgspec.Struct, frozen=True, gc=False):
    """One candle of a ``kline`` push, as sent (``end = start + interval - 1``)."""

    start: int
    end: int
    interval: str
    open: _Price
    close: _Price
    high: _Price
    low: _Price
    volume: _Quantity
    turnover: _Quantity
    confirm: bool
    timestamp: int


class PublicTrade(msgspec.Struct, frozen=True, gc=False):
    """One public trade: what a ``publicTrade`` push item decodes to (wire names ``T p v S i L BT
    seq``; the symbol is the topic's), and the live runner's trade record as it is (so the hot path
    builds no second object per trade).

    Attributes:
        ts_ms: Trade time, epoch ms.
        price: Price.
        size: Size (base; inverse: contracts).
        side: ``Buy`` or ``Sell`` (the taker's side).
        trade_id: Exchange trade id.
        tick_direction: ``PlusTick``, ``ZeroPlusTick``, ``MinusTick``, ``ZeroMinusTick`` (None from REST).
        is_block_trade: Block trade.
        seq: Cross sequence: orders trades sharing a millisecond.
    """

    ts_ms: int = msgspec.field(name="T")
    price: _Price = msgspec.field(name="p")
    size: _Quantity = msgspec.field(name="v")
    side: Literal["Buy", "Sell"] = msgspec.field(name="S")
    trade_id: str = msgspec.field(name="i")
    tick_direction: str | None = msgspec.field(default=None, name="L")
    is_block_trade: bool = msgspec.field(default=False, name="BT")
    seq: int | None = None


class KlinePush(msgspec.Struct, frozen=True, gc=False):
    """A decoded ``kline.{interval}.{symbol}`` push."""

    topic: str
    symbol: str
    interval: str
    ts_ms: int
    candles: list[Kline]


class TradePush(msgspec.Struct, frozen=True, gc=False):
    """A decoded ``publicTrade.{symbol}`` push."""

    topic: str
    symbol: str
    ts_ms: int
    trades: list[PublicTrade]


class _Envelope(msgspec.Struct):
    topic: str | None = None
    ts: int | None = None
    type: str | None = None
    data: msgspec.Raw = msgspec.Raw(b"")  # left undecoded: read below with the topic's type


class _KlineFrame(msgspec.Struct):
    topic: str
    ts: int
    data: list[Kline]


class _TradeFrame(msgspec.Struct):
    topic: str
    ts: int
    data: list[PublicTrade]


_ENVELOPE = msgspec.json.Decoder(_Envelope)
# strict=False: prices and sizes arrive as decimal strings and are parsed to floats in C.
_KLINES = msgspec.json.Decoder(list[Kline], strict=False)
_TRADES = msgspec.json.Decoder(list[PublicTrade], strict=False)
_KLINE_FRAME = msgspec.json.Decoder(_KlineFrame, strict=False)
_TRADE_FRAME = msgspec.json.Decoder(_TradeFrame, strict=False)
_ENCODER = msgspec.json.Encoder()
_KLINE_HEAD: Final = b'{"topic":"kline.'
_TRADE_HEAD: Final = b'{"topic":"publicTrade.'


def decode_frame(data: bytes | str) -> KlinePush | TradePush | WsCommandResponse:
    """Decode one text frame of a public stream.

    Raises:
        MalformedJSONError: not complete JSON (or not UTF-8).
        ExchangeProtocolError: a shape no public frame has, an unsupported topic, a non-finite
            or negative number, a side other than Buy/Sell.
    """
    raw = data if isinstance(data, bytes) else data.encode()
    # Bybit writes "topic" first: then one typed pass decodes the whole push. Anything else (acks,
    # other field orders) takes the general path.
    if raw.startswith(_TRADE_HEAD):
        decoder: msgspec.json.Decoder[Any] = _TRADE_FRAME
    elif raw.startswith(_KLINE_HEAD):
        decoder = _KLINE_FRAME
    else:
        return _general(raw)
    try:
        frame = decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise ExchangeProtocolError(f"bybit ws push: unexpected shape: {exc}") from None
    except msgspec.DecodeError as exc:
        raise MalformedJSONError(f"bybit ws: frame is not valid JSON ({exc})") from None
    return _push(frame.topic, frame.ts, frame.data)


#: Parsed topics, ``topic -> (symbol, interval or None for trades)`` (a stream has few).
_TOPICS: dict[str, tuple[str, str | None]] = {}


def _push(topic: str, ts: int, rows: list[Any]) -> KlinePush | TradePush:
    parsed = _TOPICS.get(topic)
    if parsed is None:
        parsed = _parse_topic(topic)
        if len(_TOPICS) < 100_000:
            _TOPICS[topic] = parsed
    symbol, interval = parsed
    if interval is None:
        return TradePush(topic, symbol, ts, rows)
    return KlinePush(topic, symbol, interval, ts, rows)


def _parse_topic(topic: str) -> tuple[str, str | None]:
    if topic.startswith("publicTrade."):
        symbol = topic[len("publicTrade.") :]
        if symbol and "." not in symbol:
            return symbol, None
    else:
        parts = topic.split(".")
        if len(parts) == 3 and parts[0] == "kline" and parts[1] and parts[2]:
            return parts[2], parts[1]
    raise ExchangeProtocolError(f"bybit ws: malformed topic {topic[:60]!r}")


def _general(data: bytes) -> KlinePush | TradePush | WsCommandResponse:
    # Any field order: the envelope first with ``data`` left raw, then ``data`` by its topic.
    try:
        env = _ENVELOPE.decode(data)
    except msgspec.ValidationError as exc:
        raise ExchangeProtocolError(f"bybit ws: unexpected frame shape: {exc}") from None
    except msgspec.DecodeError as exc:
        raise MalformedJSONError(f"bybit ws: frame is not valid JSON ({exc})") from None
    topic = env.topic
    if topic is None:
        msg = decode_ws_message(data)
        if not isinstance(msg, WsCommandResponse):
            raise ExchangeProtocolError("bybit ws: a client request frame came from the server")
        return msg
    if env.ts is None or not env.data:
        raise ExchangeProtocolError(f"bybit ws push {topic[:60]!r} lacks ts or data")
    try:
        if topic.startswith("kline."):
            return _push(topic, env.ts, _KLINES.decode(env.data))
        if topic.startswith("publicTrade."):
            return _push(topic, env.ts, _TRADES.decode(env.data))
    except msgspec.ValidationError as exc:
        raise ExchangeProtocolError(f"bybit ws {topic[:60]}: unexpected data shape: {exc}") from None
    except msgspec.DecodeError as exc:
        raise MalformedJSONError(f"bybit ws {topic[:60]}: data is not valid JSON ({exc})") from None
    raise ExchangeProtocolError(f"bybit ws: unsupported topic {topic[:60]!r}")


def request_frame(op: str, args: Sequence[str], req_id: str | None = None) -> bytes:
    """A client request ``{"op": ..., "args": [...], "req_id": ...}`` as JSON text."""
    body: dict[str, object] = {"op": op, "args": list(args)}
    if req_id is not None:
        body["req_id"] = req_id
    return _ENCODER.encode(body)


def ping_frame(req_id: str) -> bytes:
    """``{"op": "ping", "req_id": ...}``: Bybit's application-level heartbeat."""
    return _ENCODER.encode({"op": "ping", "req_id": req_id})


def subscribe_batches(
    topics: Iterable[str], category: str, *, max_args: int | None = None
) -> list[list[str]]:
    """Split ``topics`` into subscribe requests within Bybit's per-request limits of ``category``
    (spot: 10 topics; linear/inverse: 21,000 characters of args), optionally also at most
    ``max_args`` each. Order is kept; duplicates are dropped.
    """
    most = C.WS_ARGS_PER_REQUEST.get(category)
    if max_args is not None:
        most = max_args if most is None else min(most, max_args)
    chars = C.WS_ARGS_CHARS_PER_REQUEST.get(category)
    out: list[list[str]] = []
    batch: list[str] = []
    used = 0
    for topic in dict.fromkeys(topics):
        full = (most is not None and len(batch) >= most) or (chars is not None and used + len(topic) > chars)
        if batch and full:
            out.append(batch)
            batch, used = [], 0
        batch.append(topic)
        used += len(topic)
    if batch:
        out.append(batch)
    return out


def ws_url_for(base_url: str, category: str) -> str:
    """The public WebSocket URL for a REST base URL: ``http(s)://HOST`` → ``ws(s)://HOST/v5/public/
    <category>`` (Bybit's own ``api*`` hosts map to their ``stream*`` hosts).

    Raises:
        DataValidationError: ``category`` has no public stream, or the URL is not http(s).
    """
    if category not in C.WS_PUBLIC_PATHS:
        raise DataValidationError(
            f"no public WebSocket for category {category[:20]!r}; use one of {', '.join(C.WS_PUBLIC_PATHS)}"
        )
    scheme, sep, rest = base_url.rstrip("/").partition("://")
    if not sep or scheme not in ("http", "https"):
        raise DataValidationError(f"base URL must be http(s)://HOST, got {base_url[:60]!r}")
    host = rest.split("/", 1)[0]
    name, colon, port = host.partition(":")
    host = _STREAM_HOSTS.get(name, name) + colon + port
    return f"{'wss' if scheme == 'https' else 'ws'}://{host}{C.WS_PUBLIC_PATHS[category]}"
