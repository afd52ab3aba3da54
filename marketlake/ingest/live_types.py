"""Data types of the live stream: what callbacks receive, its configuration and its figures."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
import polars as pl

from marketlake.core.symbols import parse_symbols, validate_category
from marketlake.core.timeframes import Timeframe, parse_timeframes
from marketlake.errors import DataValidationError
from marketlake.exchanges.bybit.ws_frames import PublicTrade

__all__ = [
    "LiveCandle",
    "LiveConfig",
    "LiveStats",
    "LiveTrade",
    "TradeBatch",
    "candles_frame",
    "trades_frame",
]

Overflow = Literal["drop_oldest", "drop_newest"]


class LiveCandle(msgspec.Struct, frozen=True, gc=False):
    """A candle of the live stream.

    Attributes:
        symbol: Symbol.
        timeframe: Timeframe name (``1``, ``5``, ``1s`` ...).
        ts_ms: Open time, epoch ms.
        open, high, low, close: Prices.
        volume: Base volume.
        turnover: Quote turnover (None when unknown).
        trades: Trade count (candles built from trades only).
        buy_volume: Taker buy volume (candles built from trades only).
        confirm: True for a closed candle, False for the forming one.
        source: ``ws`` (kline push), ``rest`` (backfilled) or ``trades`` (built from trades).
    """

    symbol: str
    timeframe: str
    ts_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    turnover: float | None = None
    trades: int | None = None
    buy_volume: float | None = None
    confirm: bool = True
    source: str = "ws"

    def as_dict(self) -> dict[str, Any]:
        """The old system's candle dictionary (``timestamp``, ``datetime``, OHLCV, ``turnover``,
        ``confirm``) plus ``symbol`` and ``timeframe``."""
        when = dt.datetime.fromtimestamp(self.ts_ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        return {
            "symbol": self.symbol,
            "timeframe": self.timeframe,
            "timestamp": self.ts_ms,
            "datetime": when,
            "open": self.open,
            "high": self.high,
            "low": self.low,
            "close": self.close,
            "volume": self.volume,
            "turnover": self.turnover,
            "confirm": self.confirm,
        }


#: One public trade (``ts_ms`` epoch ms; ``seq`` orders trades sharing a millisecond): the
#: WebSocket decoder builds these directly, see :class:`~marketlake.exchanges.bybit.ws_frames.PublicTrade`.
LiveTrade = PublicTrade


@dataclass(frozen=True, slots=True)
class TradeBatch:
    """New trades of one symbol, oldest first, as they arrived (duplicates removed)."""

    symbol: str
    trades: tuple[LiveTrade, ...]


@dataclass(frozen=True, slots=True)
class LiveConfig:
    """What to stream and how.

    Attributes:
        symbols: Symbols.
        timeframes: Candle timeframes. Bybit intervals come from ``kline`` pushes; others
            (``1s``, ``5s``, ``15s``) are built from trades, which they switch on.
        trades: Store trades (``publicTrade``) too.
        category: ``linear``, ``spot`` or ``inverse``.
        exchange: Exchange name in the lake.
        flush_interval_s: Seconds between micro-batch writes.
        hole_grace_s: How long a hole in the confirmed candles may wait for a late push before
            REST fills it (after a reconnect REST fills at once).
        trade_lateness_ms: Trades are final this long (market ms) behind the newest one seen;
            only then are they written and aggregated (covers pushes split or reordered).
        resume_max_ms: At start, backfill from the lake's last candle if it is at most this old
            (older history is ``ingest``'s job).
        callback_queue: Items each callback's queue holds.
        overflow: What a full callback queue does: ``drop_oldest`` (keep the newest) or
            ``drop_newest``; drops are counted, the lake is never affected.
        status_interval_s: Seconds between status reports.
        quarantine_max: Malformed frames kept (size-capped) in the ledger per run; the rest are
            only counted.
    """

    symbols: tuple[str, ...]
    timeframes: tuple[Timeframe, ...]
    trades: bool = False
    category: str = "linear"
    exchange: str = "bybit"
    flush_interval_s: float = 1.0
    hole_grace_s: float = 1.0
    trade_lateness_ms: int = 1_000
    resume_max_ms: int = 7 * 86_400_000
    callback_queue: int = 10_000
    overflow: Overflow = "drop_oldest"
    status_interval_s: float = 10.0
    quarantine_max: int = 1_000

    @classmethod
    def of(
        cls,
        symbols: str | Sequence[str],
        timeframes: str | Sequence[str] = "1",
        *,
        trades: bool = False,
        category: str = "linear",
        **options: Any,
    ) -> LiveConfig:
        """Validate user input.

        Raises:
            DataValidationError: no symbols, no timeframes and no trades, a bad option.
        """
        syms = tuple(parse_symbols(symbols))
        if not syms:
            raise DataValidationError("name at least one symbol to stream")
        tfs = tuple(parse_timeframes(list(timeframes) if not isinstance(timeframes, str) else timeframes))
        if not tfs and not trades:
            raise DataValidationError("name timeframes to stream, or --trades")
        built = [t for t in tfs if not t.is_bybit]
        cfg = cls(syms, tfs, trades or bool(built), validate_category(category), **options)
        if cfg.flush_interval_s <= 0 or cfg.hole_grace_s < 0 or cfg.status_interval_s <= 0:
            raise DataValidationError("flush and status intervals must be > 0, hole grace >= 0")
        if cfg.trade_lateness_ms < 0 or cfg.resume_max_ms < 0 or cfg.callback_queue < 1:
            raise DataValidationError("trade lateness and resume window must be >= 0, queues >= 1")
        if cfg.overflow not in ("drop_oldest", "drop_newest"):
            raise DataValidationError("overflow must be drop_oldest or drop_newest")
        return cfg

    @property
    def kline_timeframes(self) -> tuple[Timeframe, ...]:
        """Timeframes streamed as ``kline`` topics."""
        return tuple(t for t in self.timeframes if t.is_bybit)

    @property
    def trade_timeframes(self) -> tuple[Timeframe, ...]:
        """Timeframes built from trades."""
        return tuple(t for t in self.timeframes if not t.is_bybit)

    def topics(self) -> list[str]:
        """The WebSocket topics this configuration needs."""
        out = [f"kline.{tf.name}.{s}" for s in self.symbols for tf in self.kline_timeframes]
        if self.trades:
            out += [f"publicTrade.{s}" for s in self.symbols]
        return out


@dataclass
class LiveStats:
    """Figures of a live run (also each status report's snapshot)."""

    messages: int = 0
    candles_confirmed: int = 0
    forming_updates: int = 0
    candles_written: int = 0
    candles_backfilled: int = 0
    candles_empty: int = 0
    duplicates: int = 0
    trades_received: int = 0
    trades_written: int = 0
    trade_duplicates: int = 0
    trade_candles_written: int = 0
    trade_gaps: int = 0
    connects: int = 0
    disconnects: int = 0
    silent_detected: int = 0
    backfills: int = 0
    failed_ranges: int = 0
    malformed: int = 0
    oversized: int = 0
    quarantined: int = 0
    callback_delivered: int = 0
    callback_dropped: int = 0
    callback_errors: int = 0
    flushes: int = 0
    rows_replaced: int = 0
    rows_unchanged: int = 0
    write_failures: int = 0
    write_seconds: float = 0.0
    last_push_ms: int = 0
    lag_ms: int = 0
    elapsed_s: float = 0.0
    rejected_topics: dict[str, str] = field(default_factory=dict)

    @property
    def reconnects(self) -> int:
        """Connections after the first."""
        return max(0, self.connects - 1)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (``--json`` and the ledger's run record)."""
        out = {k: v for k, v in vars(self).items()}
        out["reconnects"] = self.reconnects
        return out


_CANDLE_COLS = ("open", "high", "low", "close", "volume", "turnover", "trades", "buy_volume")


def candles_frame(candles: Sequence[LiveCandle]) -> pl.DataFrame:
    """Candles as a frame the lake takes (``ts`` Datetime ms UTC, stored columns)."""
    data: dict[str, Any] = {
        "ts": pl.Series([c.ts_ms for c in candles], dtype=pl.Int64).cast(pl.Datetime("ms", "UTC"))
    }
    for col in _CANDLE_COLS:
        dtype = pl.Int64 if col == "trades" else pl.Float64
        data[col] = pl.Series([getattr(c, col) for c in candles], dtype=dtype)
    return pl.DataFrame(data)


def trades_frame(trades: Sequence[LiveTrade]) -> pl.DataFrame:
    """Trades in the stored trade schema (``ts`` Datetime µs UTC), plus ``seq``."""
    return pl.DataFrame(
        {
            "ts": pl.Series([t.ts_ms * 1000 for t in trades], dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
            "price": pl.Series([t.price for t in trades], dtype=pl.Float64),
            "size": pl.Series([t.size for t in trades], dtype=pl.Float64),
            "side": pl.Series([t.side for t in trades], dtype=pl.String),
            "trade_id": pl.Series([t.trade_id for t in trades], dtype=pl.String),
            "tick_direction": pl.Series([t.tick_direction for t in trades], dtype=pl.String),
            "is_block_trade": pl.Series([t.is_block_trade for t in trades], dtype=pl.Boolean),
            "seq": pl.Series([t.seq for t in trades], dtype=pl.Int64),
        }
    )
