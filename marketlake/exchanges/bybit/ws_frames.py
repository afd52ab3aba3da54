"""Fast typed decoding of Bybit v5 public WebSocket frames, and the client's request frames.

The hot path of a stream is decoding ``kline`` and ``publicTrade`` pushes. One msgspec pass reads
the envelope with its ``data`` left as raw bytes, a second decodes ``data`` straight into typed
structs (decimal strings become floats in C), so no Python dict or str is built per field. Anything
else (acks, pongs) goes through :func:`~marketlake.exchanges.bybit.parse_ws.decode_ws_message`.
``benchmarks/bench_ws_decode.py`` compares this with ``json.loads`` and dict access.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Final

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


class Kline(msgspec.Struct, frozen=True, gc=False):
    """One candle of a ``kline`` push, as sent (``end = start + interval - 1``)."""

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


class PublicTrade(msgspec.Struct, frozen=True, gc=False):
    """One trade of a ``publicTrade`` push (wire names ``T s S v p L i BT seq``)."""

    ts_ms: int = msgspec.field(name="T")
    symbol: str = msgspec.field(name="s")
    side: str = msgspec.field(name="S")
    size: float = msgspec.field(name="v")
    price: float = msgspec.field(name="p")
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


_ENVELOPE = msgspec.json.Decoder(_Envelope)
# strict=False: prices and sizes arrive as decimal strings and are parsed to floats in C.
_KLINES = msgspec.json.Decoder(list[Kline], strict=False)
_TRADES = msgspec.json.Decoder(list[PublicTrade], strict=False)
_ENCODER = msgspec.json.Encoder()


def decode_frame(data: bytes | str) -> KlinePush | TradePush | WsCommandResponse:
    """Decode one text frame of a public stream.

    Raises:
        MalformedJSONError: not complete JSON (or not UTF-8).
        ExchangeProtocolError: a shape no public frame has, an unsupported topic, a non-finite
            or negative number, a side other than Buy/Sell.
    """
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
            parts = topic.split(".")
            if len(parts) != 3 or not parts[1] or not parts[2]:
                raise ExchangeProtocolError(f"bybit ws: malformed topic {topic[:60]!r}")
            candles = _KLINES.decode(env.data)
            for k in candles:
                if not _finite(k.open, k.high, k.low, k.close, k.volume, k.turnover) or k.low <= 0:
                    raise ExchangeProtocolError(f"bybit ws {topic[:60]}: non-finite or non-positive value")
            return KlinePush(topic, parts[2], parts[1], env.ts, candles)
        if topic.startswith("publicTrade."):
            symbol = topic[len("publicTrade.") :]
            if not symbol or "." in symbol:
                raise ExchangeProtocolError(f"bybit ws: malformed topic {topic[:60]!r}")
            trades = _TRADES.decode(env.data)
            for t in trades:
                if t.side not in ("Buy", "Sell"):
                    raise ExchangeProtocolError(f"bybit ws {topic[:60]}: side {t.side[:20]!r}")
                if not _finite(t.price, t.size) or t.price <= 0 or t.size < 0:
                    raise ExchangeProtocolError(f"bybit ws {topic[:60]}: bad price or size")
            return TradePush(topic, symbol, env.ts, trades)
    except msgspec.ValidationError as exc:
        raise ExchangeProtocolError(f"bybit ws {topic[:60]}: unexpected data shape: {exc}") from None
    except msgspec.DecodeError as exc:
        raise MalformedJSONError(f"bybit ws {topic[:60]}: data is not valid JSON ({exc})") from None
    raise ExchangeProtocolError(f"bybit ws: unsupported topic {topic[:60]!r}")


def _finite(*values: float) -> bool:
    return all(math.isfinite(v) and v >= 0 for v in values)


def request_frame(op: str, args: Sequence[str], req_id: str | None = None) -> bytes:
    """A client request ``{"op": ..., "args": [...], "req_id": ...}`` as JSON text."""
    body: dict[str, object] = {"op": op, "args": list(args)}
    if req_id is not None:
        body["req_id"] = req_id
    return _ENCODER.encode(body)


def ping_frame(req_id: str) -> bytes:
    """``{"op": "ping", "req_id": ...}``: Bybit's application-level heartbeat."""
    return _ENCODER.encode({"op": "ping", "req_id": req_id})


def subscribe_batches(topics: Iterable[str], category: str, *, max_args: int | None = None) -> list[list[str]]:
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
