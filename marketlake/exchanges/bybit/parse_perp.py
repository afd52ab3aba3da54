"""Pure decoding of Bybit v5 perpetual-futures market payloads with msgspec: no I/O, no clock.

Endpoints: ``/v5/market/funding/history``, ``/v5/market/mark-price-kline``,
``/v5/market/index-price-kline``, ``/v5/market/premium-index-price-kline`` and
``/v5/market/open-interest``; plus the conversion of decoded instruments into a snapshot frame of
:data:`~marketlake.core.schemas_perp.INSTRUMENT_SNAPSHOT_SCHEMA`.

As in :mod:`marketlake.exchanges.bybit.parse`, each ``decode_*`` reads the raw ``result`` of a
decoded envelope, numeric strings are converted by msgspec while decoding, and a body of the wrong
shape raises :class:`~marketlake.errors.ExchangeProtocolError` with one line naming the endpoint
and the row. Beyond the shape, every decoder checks what the pagers rely on: all three endpoints
send rows newest first, and a row out of that order (or a repeated time) is refused rather than
silently re-sorted, because the pagers derive the next page from the oldest row. Numbers must be
finite (``"nan"``, ``"inf"``, ``"1e400"`` are refused) and times within 1990..2200.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Final

import msgspec
import numpy as np
import polars as pl

from marketlake.core.schemas_perp import (
    INSTRUMENT_SNAPSHOT_SCHEMA,
    OPEN_INTEREST_SCHEMA,
    PRICE_CANDLE_SCHEMA,
)
from marketlake.core.timeframes import Timeframe
from marketlake.errors import ExchangeProtocolError
from marketlake.exchanges.bybit.parse import Instrument, _decode

__all__ = [
    "FUNDING_FRAME_SCHEMA",
    "FundingBatch",
    "OpenInterestPage",
    "PriceKlineBatch",
    "decode_funding_result",
    "decode_open_interest_result",
    "decode_price_kline_result",
    "funding_frame",
    "instruments_snapshot_frame",
    "open_interest_frame",
    "price_klines_frame",
]

_TS_MIN_MS: Final = 631_152_000_000  # 1990-01-01
_TS_MAX_MS: Final = 7_258_118_400_000  # 2200-01-01
#: A funding rate is a fraction of position value per settlement; Bybit caps it at a few percent.
#: A magnitude of 1 (100 %) or more is a broken payload, not a market event.
_MAX_ABS_RATE: Final = 1.0
#: Wire times: msgspec refuses anything outside int64 (a huge number string) as a shape error.
_WireMs = Annotated[int, msgspec.Meta(ge=-(2**62), le=2**62)]
#: Columns of :func:`funding_frame` (the stored schema minus ``interval_minutes``, which the
#: ingest infers with :func:`marketlake.core.funding.infer_funding_intervals`).
FUNDING_FRAME_SCHEMA: Final[dict[str, pl.DataType]] = {"ts": pl.Datetime("ms", "UTC"), "rate": pl.Float64()}


def _check_times(ts: np.ndarray, what: str) -> None:
    """Times in range and strictly descending (Bybit's order for every endpoint here)."""
    if not ts.size:
        return
    bad = (ts < _TS_MIN_MS) | (ts >= _TS_MAX_MS)
    if bad.any():
        i = int(np.argmax(bad))
        raise ExchangeProtocolError(f"bybit {what}: row {i} has time {ts[i]}, not between 1990 and 2200")
    steps = np.diff(ts) >= 0
    if steps.any():
        i = int(np.argmax(steps)) + 1
        raise ExchangeProtocolError(
            f"bybit {what}: rows not newest first: row {i} time {ts[i]} follows {ts[i - 1]}"
        )


def _ascending(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values[::-1])


# --------------------------------------------------------------------------------------------
# Funding history


class _FundingRowWire(msgspec.Struct):
    symbol: str
    fundingRate: float
    fundingRateTimestamp: _WireMs


class _FundingResultWire(msgspec.Struct):
    rows: list[_FundingRowWire] = msgspec.field(name="list")
    category: str = ""


@dataclass(frozen=True, slots=True)
class FundingBatch:
    """Decoded funding settlements, ascending by time.

    Attributes:
        category: ``result.category`` as sent (may be empty).
        symbol: The rows' symbol (empty when there are no rows).
        ts: Settlement times, epoch ms, int64, strictly ascending.
        rate: Funding rates, float64.
    """

    category: str
    symbol: str
    ts: np.ndarray
    rate: np.ndarray

    def __len__(self) -> int:
        return int(self.ts.size)

    def select(self, mask: np.ndarray) -> FundingBatch:
        """The rows where the boolean ``mask`` is true."""
        return FundingBatch(self.category, self.symbol, self.ts[mask], self.rate[mask])


def decode_funding_result(result: bytes) -> FundingBatch:
    """Decode the ``result`` of ``/v5/market/funding/history`` (rows newest first on the wire).

    Raises:
        MalformedJSONError: not complete JSON.
        ExchangeProtocolError: wrong shape, rows of several symbols, rows not strictly newest
            first, a time outside 1990..2200, a rate that is not finite or of magnitude >= 1.
    """
    what = "funding history"
    wire = _decode(result, _FundingResultWire, f"{what} result")
    rows = wire.rows
    n = len(rows)
    ts = np.fromiter((r.fundingRateTimestamp for r in rows), np.int64, count=n)
    rate = np.fromiter((r.fundingRate for r in rows), np.float64, count=n)
    symbols = {r.symbol for r in rows}
    if len(symbols) > 1:
        raise ExchangeProtocolError(f"bybit {what}: rows of several symbols {sorted(symbols)[:3]}")
    bad = ~np.isfinite(rate) | (np.abs(rate) >= _MAX_ABS_RATE)
    if bad.any():
        i = int(np.argmax(bad))
        raise ExchangeProtocolError(f"bybit {what}: row {i} has funding rate {rate[i]!r}")
    _check_times(ts, what)
    return FundingBatch(wire.category, symbols.pop() if symbols else "", _ascending(ts), _ascending(rate))


def funding_frame(batch: FundingBatch) -> pl.DataFrame:
    """Columns ts (Datetime ms UTC) and rate; the ingest adds ``interval_minutes``."""
    return pl.DataFrame(
        {"ts": pl.Series(batch.ts, dtype=pl.Int64).cast(pl.Datetime("ms", "UTC")), "rate": batch.rate},
        schema=FUNDING_FRAME_SCHEMA,
    )


# --------------------------------------------------------------------------------------------
# Mark, index and premium-index price klines

_PriceRow = tuple[_WireMs, float, float, float, float]


class _PriceKlineResultWire(msgspec.Struct):
    rows: list[_PriceRow] = msgspec.field(name="list")
    symbol: str = ""
    category: str = ""


@dataclass(frozen=True, slots=True)
class PriceKlineBatch:
    """Decoded 5-field kline rows (no volume), ascending by open time.

    Attributes:
        kind: ``mark``, ``index`` or ``premium``.
        symbol: ``result.symbol`` as sent (may be empty).
        category: ``result.category`` as sent (may be empty).
        ts: Open times, epoch ms, int64, strictly ascending.
        open: Open values (float64), likewise ``high``, ``low``, ``close``.
    """

    kind: str
    symbol: str
    category: str
    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray

    def __len__(self) -> int:
        return int(self.ts.size)

    def select(self, mask: np.ndarray) -> PriceKlineBatch:
        """The rows where the boolean ``mask`` is true."""
        return PriceKlineBatch(
            self.kind, self.symbol, self.category, self.ts[mask],
            self.open[mask], self.high[mask], self.low[mask], self.close[mask],
        )

    def closed(self, tf: Timeframe, server_time_ms: int) -> PriceKlineBatch:
        """Only the candles whose period has ended at the server's time (the newest row may be
        forming: its close is still moving)."""
        closes = np.array([tf.close_time(int(t)) for t in self.ts], dtype=np.int64) if tf.kind == "month" else self.ts + tf.duration_ms
        return self.select(closes <= server_time_ms)


def decode_price_kline_result(result: bytes, kind: str) -> PriceKlineBatch:
    """Decode the ``result`` of a mark / index / premium-index price kline endpoint.

    Args:
        result: Raw ``result`` JSON (rows ``[startTime, open, high, low, close]``, newest first).
        kind: ``mark``, ``index`` or ``premium``. Mark and index prices must be > 0; the premium
            index is a signed ratio and may be negative or zero.

    Raises:
        MalformedJSONError: not complete JSON.
        ExchangeProtocolError: a row is not 5 numeric strings, a value is not finite (or not
            positive for mark/index), ``high < low``, rows not strictly newest first, or a time
            outside 1990..2200.
    """
    if kind not in ("mark", "index", "premium"):
        raise ValueError(f"unknown price kind {kind!r}")
    what = f"{kind} price kline"
    wire = _decode(result, _PriceKlineResultWire, f"{what} result")
    rows = wire.rows
    ts = np.fromiter((r[0] for r in rows), np.int64, count=len(rows))
    values = np.array([r[1:] for r in rows], dtype=np.float64).reshape(len(rows), 4)
    bad = ~np.isfinite(values).all(axis=1)
    if kind != "premium":
        bad |= (values <= 0).any(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise ExchangeProtocolError(f"bybit {what}: row {i} holds a bad number: {list(rows[i])}")
    low_high = values[:, 1] < values[:, 2]
    if low_high.any():
        i = int(np.argmax(low_high))
        raise ExchangeProtocolError(f"bybit {what}: row {i} has high < low: {list(rows[i])}")
    _check_times(ts, what)
    cols = (_ascending(values[:, j]) for j in range(4))
    return PriceKlineBatch(kind, wire.symbol, wire.category, _ascending(ts), *cols)


def price_klines_frame(batch: PriceKlineBatch) -> pl.DataFrame:
    """Columns ts (Datetime ms UTC), open, high, low, close: the stored price-candle schema."""
    return pl.DataFrame(
        {
            "ts": pl.Series(batch.ts, dtype=pl.Int64).cast(pl.Datetime("ms", "UTC")),
            "open": batch.open,
            "high": batch.high,
            "low": batch.low,
            "close": batch.close,
        },
        schema=PRICE_CANDLE_SCHEMA,
    )


# --------------------------------------------------------------------------------------------
# Open interest


class _OpenInterestRowWire(msgspec.Struct):
    openInterest: float
    timestamp: _WireMs
    singleOpenInterest: float | None = None


class _OpenInterestResultWire(msgspec.Struct):
    rows: list[_OpenInterestRowWire] = msgspec.field(name="list")
    symbol: str = ""
    category: str = ""
    nextPageCursor: str = ""


@dataclass(frozen=True, slots=True)
class OpenInterestPage:
    """One page of ``/v5/market/open-interest``, ascending by time.

    Attributes:
        symbol: ``result.symbol`` as sent (may be empty).
        category: ``result.category`` as sent (may be empty).
        ts: Interval open times, epoch ms, int64, strictly ascending.
        open_interest: Two-sided open interest (linear: base coin; inverse: USD), float64.
        next_cursor: ``nextPageCursor`` (empty: no further page).
    """

    symbol: str
    category: str
    ts: np.ndarray
    open_interest: np.ndarray
    next_cursor: str

    def __len__(self) -> int:
        return int(self.ts.size)


def decode_open_interest_result(result: bytes) -> OpenInterestPage:
    """Decode the ``result`` of ``/v5/market/open-interest`` (rows newest first on the wire).

    Raises:
        MalformedJSONError: not complete JSON.
        ExchangeProtocolError: wrong shape, a value that is negative or not finite, rows not
            strictly newest first, or a time outside 1990..2200.
    """
    what = "open interest"
    wire = _decode(result, _OpenInterestResultWire, f"{what} result")
    rows = wire.rows
    n = len(rows)
    ts = np.fromiter((r.timestamp for r in rows), np.int64, count=n)
    oi = np.fromiter((r.openInterest for r in rows), np.float64, count=n)
    bad = ~np.isfinite(oi) | (oi < 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise ExchangeProtocolError(f"bybit {what}: row {i} has openInterest {oi[i]!r}")
    _check_times(ts, what)
    return OpenInterestPage(wire.symbol, wire.category, _ascending(ts), _ascending(oi), wire.nextPageCursor)


def open_interest_frame(ts: np.ndarray, open_interest: np.ndarray) -> pl.DataFrame:
    """Columns ts (Datetime ms UTC), open_interest: the stored open-interest schema."""
    return pl.DataFrame(
        {"ts": pl.Series(ts, dtype=pl.Int64).cast(pl.Datetime("ms", "UTC")), "open_interest": open_interest},
        schema=OPEN_INTEREST_SCHEMA,
    )


# --------------------------------------------------------------------------------------------
# Instruments → snapshot frame


def _decimal(text: str, what: str, symbol: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ExchangeProtocolError(
            f"bybit instruments: {symbol[:30]} {what} {text[:30]!r} is not a number"
        ) from None
    if not np.isfinite(value) or value < 0:
        raise ExchangeProtocolError(
            f"bybit instruments: {symbol[:30]} {what} {text[:30]!r} is not a finite size"
        )
    return value


def instruments_snapshot_frame(instruments: Sequence[Instrument]) -> pl.DataFrame:
    """Instruments as a snapshot frame (:data:`INSTRUMENT_SNAPSHOT_SCHEMA`), ready for
    :func:`marketlake.core.instruments.apply_snapshot`. Decimal strings become float64 (empty
    ones null); a delivery time of 0 is already None.

    Raises:
        ExchangeProtocolError: a step or size that is not a finite non-negative number.
    """
    rows = [
        {
            "symbol": i.symbol,
            "category": i.category,
            "status": i.status,
            "contract_type": i.contract_type or None,
            "launch_time": i.launch_time_ms,
            "delivery_time": i.delivery_time_ms,
            "tick_size": _decimal(i.tick_size, "tickSize", i.symbol),
            "qty_step": _decimal(i.qty_step, "qtyStep", i.symbol),
            "min_order_qty": _decimal(i.min_order_qty, "minOrderQty", i.symbol),
            "funding_interval_minutes": i.funding_interval_minutes,
            "price_scale": i.price_scale,
            "base_coin": i.base_coin or None,
            "quote_coin": i.quote_coin or None,
        }
        for i in instruments
    ]
    schema = {c: (pl.Int64 if c in ("launch_time", "delivery_time") else t) for c, t in INSTRUMENT_SNAPSHOT_SCHEMA.items()}
    frame = pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)
    return frame.with_columns(pl.col("launch_time", "delivery_time").cast(pl.Datetime("ms", "UTC")))
