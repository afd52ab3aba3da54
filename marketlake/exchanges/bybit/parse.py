"""Pure decoding of Bybit v5 public REST payloads with msgspec: no I/O, no clock.

Decoding happens in two steps so that an error envelope never has to match a result type:
:func:`decode_envelope` reads ``retCode``/``retMsg``/``time`` and keeps ``result`` as raw bytes;
the ``decode_*_result`` functions then read the result of one endpoint. Numbers that Bybit sends as
strings (prices, ``launchTime``) are converted here; ``retCode``/``time`` are accepted both as JSON
numbers (the wire) and as strings (ccxt's recorder stores them so).

Two error types come out of here, and callers treat them differently:

* :class:`MalformedJSONError` — the body is not complete JSON (typically truncated in transit);
  a retry usually fixes it.
* :class:`~marketlake.errors.ExchangeProtocolError` — valid JSON of the wrong shape (missing field,
  wrong type, a kline row that is not 7 numeric strings); retrying does not help.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import numpy as np
import polars as pl

from marketlake.core.timeframes import parse_timeframe
from marketlake.errors import ExchangeProtocolError
from marketlake.exchanges.bybit.constants import (
    HEADER_LIMIT,
    HEADER_LIMIT_RESET,
    HEADER_LIMIT_STATUS,
)

__all__ = [
    "Envelope",
    "Instrument",
    "InstrumentsPage",
    "KlineBatch",
    "MalformedJSONError",
    "RateLimitInfo",
    "Trade",
    "decode_envelope",
    "decode_instruments_result",
    "decode_kline_result",
    "decode_recent_trades_result",
    "decode_server_time_result",
    "drop_forming",
    "klines_frame",
    "parse_rate_limit_headers",
    "trades_frame",
]

log = logging.getLogger(__name__)

#: Columns of the frame :func:`klines_frame` returns (the REST subset of the candle schema).
KLINE_FRAME_SCHEMA: Final[dict[str, pl.DataType]] = {
    "ts": pl.Datetime("ms", "UTC"),
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "close": pl.Float64(),
    "volume": pl.Float64(),
    "turnover": pl.Float64(),
}


class MalformedJSONError(ExchangeProtocolError):
    """The body is not complete JSON (truncated, cut by a proxy, an HTML error page ...).

    Unlike its parent, this is usually a transport accident, so the REST client retries it.
    """


def _snippet(data: bytes | str, n: int = 80) -> str:
    text = data if isinstance(data, str) else data[:n].decode("utf-8", "replace")
    text = text[:n]
    return repr(text) + ("..." if len(data) > n else "")


def _decode(data: bytes, type_: Any, what: str) -> Any:
    try:
        return msgspec.json.decode(data, type=type_, strict=False)
    except msgspec.ValidationError as exc:  # a DecodeError subclass: test it first
        raise ExchangeProtocolError(f"bybit {what}: unexpected payload shape: {exc}") from None
    except msgspec.DecodeError as exc:
        raise MalformedJSONError(
            f"bybit {what}: body is not valid JSON ({exc}); starts with {_snippet(data)}"
        ) from None


# --------------------------------------------------------------------------------------------
# Envelope


class _EnvelopeWire(msgspec.Struct):
    retCode: int
    retMsg: str = ""
    result: msgspec.Raw = msgspec.Raw(b"null")
    retExtInfo: Any = None
    time: int | None = None


@dataclass(frozen=True, slots=True)
class Envelope:
    """Bybit's response envelope.

    Attributes:
        ret_code: ``retCode`` (0 is success).
        ret_msg: ``retMsg``.
        result: The raw JSON bytes of ``result`` (``b"null"`` when absent).
        time_ms: ``time``: the server's clock when it answered, epoch ms (None if absent).
    """

    ret_code: int
    ret_msg: str
    result: bytes
    time_ms: int | None


def decode_envelope(data: bytes) -> Envelope:
    """Decode the envelope of any v5 REST response.

    Raises:
        MalformedJSONError: the body is not complete JSON.
        ExchangeProtocolError: valid JSON without an integer ``retCode``.
    """
    wire = _decode(data, _EnvelopeWire, "response envelope")
    return Envelope(
        ret_code=wire.retCode,
        ret_msg=wire.retMsg,
        result=bytes(wire.result),
        time_ms=wire.time,
    )


# --------------------------------------------------------------------------------------------
# Klines


# Numeric strings are converted by msgspec while decoding (strict=False): one pass in C, correctly
# rounded, several times faster than decoding strings and parsing them with numpy afterwards.
_KlineRow = tuple[int, float, float, float, float, float, float]


class _KlineResultWire(msgspec.Struct):
    rows: list[_KlineRow] = msgspec.field(name="list")
    symbol: str = ""
    category: str = ""


@dataclass(frozen=True, slots=True)
class KlineBatch:
    """Decoded kline rows, sorted ascending by open time, one row per open time.

    Attributes:
        symbol: ``result.symbol`` as sent (may be empty).
        category: ``result.category`` as sent (may be empty).
        ts: Open times, epoch ms, int64.
        open: Open prices (float64), likewise ``high``, ``low``, ``close``.
        volume: Base volume (inverse: contracts), float64.
        turnover: Quote turnover (inverse: base), float64.
    """

    symbol: str
    category: str
    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    turnover: np.ndarray

    def __len__(self) -> int:
        return int(self.ts.size)

    def select(self, mask: np.ndarray) -> KlineBatch:
        """Return the rows where the boolean ``mask`` is true."""
        return KlineBatch(
            self.symbol,
            self.category,
            self.ts[mask],
            self.open[mask],
            self.high[mask],
            self.low[mask],
            self.close[mask],
            self.volume[mask],
            self.turnover[mask],
        )


def decode_kline_result(result: bytes) -> KlineBatch:
    """Decode the ``result`` of ``/v5/market/kline`` (rows newest first on the wire).

    Rows are returned ascending; if an open time repeats, the first row sent wins.

    Raises:
        MalformedJSONError: not complete JSON.
        ExchangeProtocolError: a row is not 7 strings, a number does not parse, a value is
            negative or not finite, or ``high < low``.
    """
    wire = _decode(result, _KlineResultWire, "kline result")
    rows = wire.rows
    if not rows:
        empty_i = np.empty(0, dtype=np.int64)
        empty_f = np.empty(0, dtype=np.float64)
        return KlineBatch(wire.symbol, wire.category, empty_i, *([empty_f] * 6))
    ts = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    values = np.array([r[1:] for r in rows], dtype=np.float64)
    finite = np.isfinite(values).all(axis=1) & (values >= 0).all(axis=1)
    if not finite.all():
        bad = int(np.argmin(finite))
        raise ExchangeProtocolError(
            f"bybit kline result: row {bad} holds a negative or non-finite number: {list(rows[bad])}"
        )
    if (values[:, 1] < values[:, 2]).any():
        bad = int(np.argmax(values[:, 1] < values[:, 2]))
        raise ExchangeProtocolError(f"bybit kline result: row {bad} has high < low: {list(rows[bad])}")
    # np.unique sorts and, with return_index, keeps the first occurrence of each open time.
    _, first = np.unique(ts, return_index=True)
    return KlineBatch(
        wire.symbol,
        wire.category,
        ts[first],
        *(np.ascontiguousarray(values[first, j]) for j in range(6)),
    )


def klines_frame(batch: KlineBatch) -> pl.DataFrame:
    """Turn a :class:`KlineBatch` into a frame with columns ts (Datetime ms UTC), open, high,
    low, close, volume, turnover."""
    return pl.DataFrame(
        {
            "ts": pl.Series("ts", batch.ts, dtype=pl.Int64).cast(pl.Datetime("ms", "UTC")),
            "open": batch.open,
            "high": batch.high,
            "low": batch.low,
            "close": batch.close,
            "volume": batch.volume,
            "turnover": batch.turnover,
        },
        schema=KLINE_FRAME_SCHEMA,
    )


# --------------------------------------------------------------------------------------------
# Instruments


class _PriceFilterWire(msgspec.Struct):
    tickSize: str = ""


class _LotSizeFilterWire(msgspec.Struct):
    qtyStep: str = ""
    basePrecision: str = ""
    minOrderQty: str = ""


class _InstrumentWire(msgspec.Struct):
    symbol: str
    status: str = ""
    baseCoin: str = ""
    quoteCoin: str = ""
    settleCoin: str = ""
    contractType: str = ""
    optionsType: str = ""
    launchTime: str = ""
    deliveryTime: str = ""
    priceScale: str = ""
    priceFilter: _PriceFilterWire | None = None
    lotSizeFilter: _LotSizeFilterWire | None = None
    fundingInterval: int | None = None


class _InstrumentsResultWire(msgspec.Struct):
    items: list[_InstrumentWire] = msgspec.field(name="list")
    category: str = ""
    nextPageCursor: str = ""


class Instrument(msgspec.Struct, frozen=True, kw_only=True):
    """One instrument of ``/v5/market/instruments-info``, in marketlake's spelling.

    Attributes:
        symbol: Exchange symbol (e.g. ``BTCUSDT``).
        category: ``linear``, ``inverse``, ``spot`` or ``option`` (from the result, else the
            caller's hint).
        status: ``PreLaunch``, ``Trading``, ``Delivering`` or ``Closed``.
        base_coin: Base coin.
        quote_coin: Quote coin.
        settle_coin: Settle coin (empty for spot).
        contract_type: e.g. ``LinearPerpetual`` (empty for spot/option).
        launch_time_ms: Listing time, epoch ms; None where Bybit does not say (spot).
        delivery_time_ms: Delivery / delisting time, epoch ms; None when ``0`` or absent.
        tick_size: Price step as Bybit writes it (e.g. ``"0.10"``).
        qty_step: Quantity step (spot: ``basePrecision``).
        price_scale: Decimal places of prices, when sent.
        min_order_qty: Minimum order quantity as Bybit writes it (empty when not sent).
        funding_interval_minutes: ``fundingInterval`` (perpetuals; None where not sent, and
            where Bybit sends 0 for contracts without funding).
    """

    symbol: str
    category: str
    status: str
    base_coin: str = ""
    quote_coin: str = ""
    settle_coin: str = ""
    contract_type: str = ""
    launch_time_ms: int | None = None
    delivery_time_ms: int | None = None
    tick_size: str = ""
    qty_step: str = ""
    price_scale: int | None = None
    min_order_qty: str = ""
    funding_interval_minutes: int | None = None


@dataclass(frozen=True, slots=True)
class InstrumentsPage:
    """One page of instruments.

    Attributes:
        category: ``result.category`` (empty when the server omits it).
        instruments: The page's instruments, in server order.
        next_cursor: ``nextPageCursor``; empty on the last page and where Bybit has no
            pagination (spot).
    """

    category: str
    instruments: list[Instrument]
    next_cursor: str


def _opt_int(text: str, what: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        raise ExchangeProtocolError(f"bybit instruments: {what} {text[:30]!r} is not an integer") from None
    return value


def _funding_interval(minutes: int | None) -> int | None:
    if minutes is None or minutes == 0:
        return None
    if not 0 < minutes <= 10_080:  # a week; anything longer is not a funding interval
        raise ExchangeProtocolError(f"bybit instruments: fundingInterval {minutes} is not 1..10080 minutes")
    return minutes


def decode_instruments_result(result: bytes, category: str = "") -> InstrumentsPage:
    """Decode the ``result`` of ``/v5/market/instruments-info``.

    Args:
        result: Raw ``result`` JSON.
        category: Category to assume when the result does not name one (older payloads).

    Raises:
        MalformedJSONError: not complete JSON.
        ExchangeProtocolError: wrong shape, a non-integer time, or a ``fundingInterval`` that is
            not a number of minutes up to a week.
    """
    wire = _decode(result, _InstrumentsResultWire, "instruments result")
    cat = wire.category or category
    out: list[Instrument] = []
    for item in wire.items:
        delivery = _opt_int(item.deliveryTime, "deliveryTime")
        pf, lf = item.priceFilter, item.lotSizeFilter
        out.append(
            Instrument(
                symbol=item.symbol,
                category=cat,
                status=item.status,
                base_coin=item.baseCoin,
                quote_coin=item.quoteCoin,
                settle_coin=item.settleCoin,
                contract_type=item.contractType or item.optionsType,
                launch_time_ms=_opt_int(item.launchTime, "launchTime"),
                delivery_time_ms=delivery or None,
                tick_size=pf.tickSize if pf else "",
                qty_step=(lf.qtyStep or lf.basePrecision) if lf else "",
                price_scale=_opt_int(item.priceScale, "priceScale"),
                min_order_qty=lf.minOrderQty if lf else "",
                funding_interval_minutes=_funding_interval(item.fundingInterval),
            )
        )
    return InstrumentsPage(category=cat, instruments=out, next_cursor=wire.nextPageCursor)


# --------------------------------------------------------------------------------------------
# Recent trades


class _TradeWire(msgspec.Struct):
    execId: str
    symbol: str
    price: float
    size: float
    side: str
    time: int
    isBlockTrade: bool = False
    isRPITrade: bool | None = None
    seq: int | None = None


class _TradesResultWire(msgspec.Struct):
    items: list[_TradeWire] = msgspec.field(name="list")
    category: str = ""


class Trade(msgspec.Struct, frozen=True, kw_only=True):
    """One public trade of ``/v5/market/recent-trade``.

    Attributes:
        trade_id: ``execId`` (a UUID for derivatives, a number for spot).
        symbol: Symbol.
        ts_ms: Trade time, epoch ms.
        price: Price.
        size: Size (base; inverse: contracts).
        side: ``Buy`` or ``Sell`` (the taker's side).
        is_block_trade: ``isBlockTrade``.
        is_rpi_trade: ``isRPITrade`` where sent.
        seq: Cross sequence where sent.
    """

    trade_id: str
    symbol: str
    ts_ms: int
    price: float
    size: float
    side: str
    is_block_trade: bool = False
    is_rpi_trade: bool | None = None
    seq: int | None = None


def decode_recent_trades_result(result: bytes) -> list[Trade]:
    """Decode the ``result`` of ``/v5/market/recent-trade``; trades come back oldest first.

    Raises:
        MalformedJSONError: not complete JSON.
        ExchangeProtocolError: wrong shape, a side other than Buy/Sell, a bad price or size.
    """
    wire = _decode(result, _TradesResultWire, "recent-trade result")
    out: list[Trade] = []
    for t in wire.items:
        if t.side not in ("Buy", "Sell"):
            raise ExchangeProtocolError(f"bybit recent-trade: side {t.side[:20]!r} is not Buy/Sell")
        if not (np.isfinite(t.price) and np.isfinite(t.size)) or t.price <= 0 or t.size < 0:
            raise ExchangeProtocolError(
                f"bybit recent-trade: trade {t.execId[:40]!r} has price {t.price} size {t.size}"
            )
        out.append(
            Trade(
                trade_id=t.execId,
                symbol=t.symbol,
                ts_ms=t.time,
                price=t.price,
                size=t.size,
                side=t.side,
                is_block_trade=t.isBlockTrade,
                is_rpi_trade=t.isRPITrade,
                seq=t.seq,
            )
        )
    # Stable sort: trades sharing a millisecond keep their relative (reversed wire) order.
    out.reverse()
    out.sort(key=lambda tr: tr.ts_ms)
    return out


def trades_frame(trades: list[Trade]) -> pl.DataFrame:
    """Trades as a frame in the stored trade schema (ts in µs; tick_direction is null: REST
    does not send it)."""
    return pl.DataFrame(
        {
            "ts": pl.Series([t.ts_ms * 1000 for t in trades], dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
            "price": pl.Series([t.price for t in trades], dtype=pl.Float64),
            "size": pl.Series([t.size for t in trades], dtype=pl.Float64),
            "side": pl.Series([t.side for t in trades], dtype=pl.String),
            "trade_id": pl.Series([t.trade_id for t in trades], dtype=pl.String),
            "tick_direction": pl.Series([None] * len(trades), dtype=pl.String),
            "is_block_trade": pl.Series([t.is_block_trade for t in trades], dtype=pl.Boolean),
        }
    )


# --------------------------------------------------------------------------------------------
# Server time and headers


class _ServerTimeWire(msgspec.Struct):
    timeSecond: int
    timeNano: int


def decode_server_time_result(result: bytes) -> int:
    """Decode the ``result`` of ``/v5/market/time`` into epoch milliseconds.

    Raises:
        MalformedJSONError: not complete JSON.
        ExchangeProtocolError: wrong shape, or ``timeSecond`` and ``timeNano`` disagree.
    """
    wire = _decode(result, _ServerTimeWire, "server time result")
    if wire.timeNano // 1_000_000_000 != wire.timeSecond:
        raise ExchangeProtocolError(
            f"bybit server time: timeSecond {wire.timeSecond} and timeNano {wire.timeNano} disagree"
        )
    return wire.timeNano // 1_000_000


@dataclass(frozen=True, slots=True)
class RateLimitInfo:
    """The ``X-Bapi-Limit*`` headers of a response (None where absent or unreadable).

    Attributes:
        limit: ``X-Bapi-Limit``: the limit of the current window.
        remaining: ``X-Bapi-Limit-Status``: requests left in the window.
        reset_ms: ``X-Bapi-Limit-Reset-Timestamp``: when the limit resets, on the *server's*
            clock (epoch ms); equal to the current server time when not exceeded.
    """

    limit: int | None
    remaining: int | None
    reset_ms: int | None


def _header_int(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        # Case-insensitive fallback for plain dicts (aiohttp's CIMultiDict needs none).
        lname = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lname), None)
    if value is None:
        return None
    value = value.strip()
    if not (value.isascii() and value.isdigit()) or len(value) > 19:
        return None
    return int(value)


def parse_rate_limit_headers(headers: Mapping[str, str]) -> RateLimitInfo:
    """Read ``X-Bapi-Limit``, ``X-Bapi-Limit-Status`` and ``X-Bapi-Limit-Reset-Timestamp``.

    Unreadable values count as absent: the headers steer the rate budget, they are never a reason
    to fail a request.
    """
    return RateLimitInfo(
        limit=_header_int(headers, HEADER_LIMIT),
        remaining=_header_int(headers, HEADER_LIMIT_STATUS),
        reset_ms=_header_int(headers, HEADER_LIMIT_RESET),
    )


def drop_forming(batch: KlineBatch, interval: str, server_time_ms: int) -> KlineBatch:
    """Keep only closed candles: rows whose period has ended at the *server's* time.

    Bybit's newest kline row may be the forming candle (its close is still the last price); it
    must never be stored. ``server_time_ms`` is the envelope's ``time`` (or ``/v5/market/time``),
    never the local clock.
    """
    tf = parse_timeframe(interval)
    if tf.kind == "month":
        closes = np.array([tf.close_time(int(t)) for t in batch.ts], dtype=np.int64)
    else:
        closes = batch.ts + tf.duration_ms
    return batch.select(closes <= server_time_ms)
