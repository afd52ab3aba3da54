"""The data-management interfaces of the old design (seed 004) on the lake, the state store and
the PostgreSQL sink: ``MarketDataManager``, ``StateManager``, ``DatabaseManager`` and the module
functions ``process_market_data``, ``get_candles``, ``get_latest_price``, ``get_state``,
``set_state``, ``delete_state``.

Where things live: trades and candles in the lake (the truth); latest price/candle and state in
the state store (SQLite by default, Redis with ``state_url="redis://..."``), under the old key
names, with the old TTLs and events; PostgreSQL through :class:`DatabaseManager` (bound
parameters only) and ``marketlake export-postgres``.

The module functions use one default manager per event loop, built from
``DATA_MANAGEMENT_CONFIG`` and the lake of the settings, or what :func:`configure` set.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

import polars as pl

from marketlake.clock import get_clock
from marketlake.compat._candles import candle_dicts, frame_from_dicts
from marketlake.core.candles import candles_from_trades
from marketlake.core.symbols import validate_symbol
from marketlake.core.timeframes import parse_timeframe
from marketlake.errors import DataValidationError
from marketlake.settings import Settings
from marketlake.state.keys import StateTTL, candle_key
from marketlake.state.store import StateStore, open_state_store
from marketlake.store import Lake

__all__ = [
    "DATA_MANAGEMENT_CONFIG",
    "DatabaseManager",
    "MarketDataManager",
    "StateManager",
    "configure",
    "delete_state",
    "get_candles",
    "get_latest_price",
    "get_state",
    "process_market_data",
    "set_state",
]

#: The old configuration, same shape; ``postgres`` user/password come from libpq's environment.
DATA_MANAGEMENT_CONFIG: dict[str, Any] = {
    "postgres": {"host": "localhost", "port": 5432, "database": "trading_bot", "max_connections": 20},
    "redis": {"host": "localhost", "port": 6379, "db": 0},
    "candles": {"intervals": ["1m", "5m", "15m", "1h", "4h", "1d"], "max_candles_per_query": 1000},
    "cache": {"price_ttl": 60, "candle_ttl": 300, "state_ttl": 3600},
}
_TRADE_ALIASES: Final = {
    "symbol": ("symbol", "s"), "price": ("price", "p"), "size": ("size", "qty", "volume", "v"),
    "timestamp": ("timestamp", "T", "time", "ts"), "side": ("side", "S"),
    "trade_id": ("trade_id", "id", "execId", "i"),
}


def _pick(data: Mapping[str, Any], name: str) -> Any:
    for key in _TRADE_ALIASES[name]:
        if key in data and data[key] is not None:
            return data[key]
    return None


class MarketDataManager:
    """Trades in, candles out, history from the lake.

    Args:
        lake: The lake (default: the settings' lake).
        state: The state store (default: SQLite in the lake's ``_meta``).
        config: The old configuration dict (cache TTLs, candle limits).
        flush_trades: Buffered trades that trigger a write to the lake.

    Attributes:
        cache: The state store (the seed's ``RedisClient``).
        lake: The lake.
    """

    def __init__(self, lake: Lake | None = None, state: StateStore | None = None, *,
                 config: Mapping[str, Any] | None = None, flush_trades: int = 10_000) -> None:
        self.config = dict(config or DATA_MANAGEMENT_CONFIG)
        self.lake = lake if lake is not None else Lake(settings=Settings.load())
        self.cache = state if state is not None else open_state_store(
            lake=self.lake, ttl=StateTTL.from_config(self.config.get("cache")))
        self.flush_trades = max(1, flush_trades)
        self.max_candles = int(self.config.get("candles", {}).get("max_candles_per_query", 1000))
        self._trades: dict[str, list[dict[str, Any]]] = {}
        self._seen: set[tuple[str, str]] = set()

    @staticmethod
    def _normalise_trade(trade: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(trade, Mapping):
            raise DataValidationError(f"a trade is a dict, not {type(trade).__name__}")
        symbol = validate_symbol(_pick(trade, "symbol"))
        try:
            price, size, ts = float(_pick(trade, "price")), float(_pick(trade, "size")), int(_pick(trade, "timestamp"))
        except (TypeError, ValueError):
            raise DataValidationError(f"a trade needs numeric price, size and timestamp (epoch ms): {dict(trade)!r:.200}") from None
        if not (math.isfinite(price) and price > 0 and math.isfinite(size) and size > 0):
            raise DataValidationError(f"trade price and size must be positive, got {price!r}, {size!r}")
        side = str(_pick(trade, "side") or "").capitalize()
        if side not in ("Buy", "Sell"):
            raise DataValidationError(f"trade side must be Buy or Sell, got {_pick(trade, 'side')!r}")
        tid = _pick(trade, "trade_id")
        # Without an exchange id, the trade's own fields name it (identical re-sends dedupe).
        tid = str(tid) if tid is not None else f"{ts}:{price!r}:{size!r}:{side}"
        return {"symbol": symbol, "price": price, "size": size, "timestamp": ts, "side": side, "trade_id": tid}

    async def process_trade(self, trade: Mapping[str, Any]) -> dict[str, Any]:
        """Take one trade (``symbol, price, size, timestamp`` ms``, side``, optional ``trade_id``;
        Bybit's ``s p v T S i`` also work): buffer it for the lake, update the latest price, emit
        ``trade_processed``. A repeated ``trade_id`` is ignored. Returns the normalised trade."""
        t = self._normalise_trade(trade)
        if (t["symbol"], t["trade_id"]) in self._seen:
            return t
        self._seen.add((t["symbol"], t["trade_id"]))
        self._trades.setdefault(t["symbol"], []).append(t)
        await self.cache.set_latest_price(t["symbol"], t["price"], volume=t["size"], timestamp=t["timestamp"])
        await self.cache.emit("trade_processed", f"market:{t['symbol']}:latest", t)
        if sum(len(v) for v in self._trades.values()) >= self.flush_trades:
            self.flush()
        return t

    def flush(self) -> int:
        """Write buffered trades to the lake; returns how many."""
        n = 0
        for symbol, rows in list(self._trades.items()):
            if rows:
                self.lake.write_trades(self._trade_frame(rows), symbol=symbol)
                n += len(rows)
            self._trades[symbol] = []
        self._seen.clear()
        return n

    @staticmethod
    def _trade_frame(rows: Sequence[Mapping[str, Any]]) -> pl.DataFrame:
        return pl.DataFrame({
            "ts": pl.Series([r["timestamp"] * 1000 for r in rows], dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
            "price": [r["price"] for r in rows], "size": [r["size"] for r in rows],
            "side": [r["side"] for r in rows], "trade_id": [r["trade_id"] for r in rows],
        })

    async def generate_candle(self, symbol: str, timestamp: int, interval: str = "1") -> dict[str, Any] | None:
        """The candle of ``interval`` (default 1m) holding ``timestamp``, from the trades buffered
        and stored; None when there are none. A closed candle (its period has ended by the clock)
        is written to the lake with its trades; either way it becomes the latest candle in the
        cache and ``candle_generated`` is emitted. The dict has ``confirm`` (closed or not)."""
        tf = parse_timeframe(interval)
        symbol = validate_symbol(symbol)
        start = tf.floor(int(timestamp))
        end = tf.next_open(start)
        buffered = [r for r in self._trades.get(symbol, []) if start <= r["timestamp"] < end]
        stored = self.lake.read_trades(symbol, start, end).select("ts", "price", "size", "side", "trade_id")
        frame = pl.concat([stored, self._trade_frame(buffered)]) if buffered else stored
        frame = frame.unique("trade_id", keep="last", maintain_order=True)
        if frame.is_empty():
            return None
        built = candles_from_trades(frame, tf)
        closed = end <= get_clock().now_ms()
        if closed:
            self.flush()
            self.lake.write_candles(built, symbol=symbol, timeframe=tf)
        candle = candle_dicts(built)[0] | {"confirm": closed, "trades": int(built["trades"][0])}
        await self.cache.set_latest_candle(symbol, tf.name, candle)
        await self.cache.emit("candle_generated", candle_key(symbol, tf.name), candle)
        return candle

    async def get_historical_data(self, symbol: str, start_time: int, end_time: int, interval: str = "1") -> list[dict[str, Any]]:
        """Stored candles with ``start_time <= timestamp <= end_time`` (epoch ms), oldest first."""
        frame = self.lake.read_candles(validate_symbol(symbol), interval, int(start_time), int(end_time) + 1)
        return candle_dicts(frame)

    async def get_candles(self, symbol: str, interval: str, limit: int = 100) -> list[dict[str, Any]]:
        """The latest ``limit`` stored candles (at most ``max_candles_per_query``), oldest first."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise DataValidationError(f"limit must be a positive integer, got {limit!r}")
        limit = min(limit, self.max_candles)
        tf = parse_timeframe(interval)
        series = self.lake.series("candles").filter(
            (pl.col("symbol") == validate_symbol(symbol)) & (pl.col("timeframe") == tf.name)
            & (pl.col("exchange") == self.lake.settings.exchange) & (pl.col("category") == self.lake.settings.category)
        )
        if series.is_empty():
            return []
        last = int(series["last_ts"][0].timestamp() * 1000)
        first = int(series["first_ts"][0].timestamp() * 1000)
        span = (limit + 1) * tf.duration_ms
        while True:  # widen the window until it holds ``limit`` candles or the whole series
            frame = self.lake.read_candles(symbol, tf, last - span, None)
            if frame.height >= limit or last - span <= first:
                return candle_dicts(frame.tail(limit))
            span *= 4

    async def get_latest_price(self, symbol: str) -> float | None:
        """The latest price (cache, else the lake's newest close); None when nothing is known."""
        hit = await self.cache.latest_price(symbol)
        return None if hit is None else float(hit["price"])

    async def process_candle(self, candle: Mapping[str, Any]) -> None:
        """A candle pushed by a feed (``symbol``, ``interval``/``timeframe``, ``timestamp``, OHLCV,
        ``confirm``): the latest candle and price; a confirmed one is also written to the lake."""
        symbol = validate_symbol(candle.get("symbol"))
        tf = parse_timeframe(candle.get("interval") or candle.get("timeframe") or "1")
        await self.cache.set_latest_candle(symbol, tf.name, candle)
        await self.cache.set_latest_price(symbol, float(candle["close"]), volume=candle.get("volume"),
                                          timestamp=int(candle["timestamp"]))
        if candle.get("confirm", True):
            self.lake.write_candles(frame_from_dicts([candle]), symbol=symbol, timeframe=tf)
            await self.cache.emit("candle_generated", candle_key(symbol, tf.name), dict(candle))


class StateManager:
    """Strategy, position and settings state (the seed's ``self.redis`` is the state store)."""

    def __init__(self, state: StateStore | None = None, *, lake: Lake | None = None) -> None:
        self.redis = state if state is not None else open_state_store(
            lake=lake if lake is not None else Lake(settings=Settings.load()))

    async def get_strategy_state(self, strategy_id: str) -> dict[str, Any]:
        """``strategy:{id}:state``; ``{}`` when there is none."""
        return await self.redis.get_strategy_state(strategy_id) or {}

    async def update_strategy_state(self, strategy_id: str, state: Mapping[str, Any]) -> None:
        """Replace ``strategy:{id}:state``."""
        await self.redis.set_strategy_state(strategy_id, state)

    async def get_position_state(self, position_id: str) -> dict[str, Any]:
        """``position:{id}:state``; ``{}`` when there is none."""
        return await self.redis.get_position_state(position_id) or {}

    async def update_position_state(self, position_id: str, state: Mapping[str, Any]) -> None:
        """Replace ``position:{id}:state``."""
        await self.redis.set_position_state(position_id, state)

    async def get_settings(self, component: str) -> dict[str, Any]:
        """``settings:{component}:config``; ``{}`` when there is none."""
        return await self.redis.get_settings(component) or {}

    async def update_settings(self, component: str, config: Mapping[str, Any]) -> None:
        """Replace ``settings:{component}:config``."""
        await self.redis.set_settings(component, config)


from marketlake.compat.database import DatabaseManager

_defaults: dict[int, tuple[asyncio.AbstractEventLoop, MarketDataManager]] = {}
_configured: dict[str, Any] = {}


def configure(*, lake: Lake | None = None, state_url: str | None = None, config: Mapping[str, Any] | None = None) -> None:
    """Set what the module functions use (a lake, a state store URL, the old config dict)."""
    _configured.update(lake=lake, state_url=state_url, config=config)
    _defaults.clear()


def _manager() -> MarketDataManager:
    # One manager per event loop: a Redis connection belongs to the loop that opened it.
    loop = asyncio.get_running_loop()
    hit = _defaults.get(id(loop))
    if hit is not None and hit[0] is loop:
        return hit[1]
    lake = _configured.get("lake") or Lake(settings=Settings.load())
    config = _configured.get("config") or DATA_MANAGEMENT_CONFIG
    state = open_state_store(_configured.get("state_url"), lake=lake, ttl=StateTTL.from_config(config.get("cache")))
    manager = MarketDataManager(lake, state, config=config)
    _defaults[id(loop)] = (loop, manager)
    return manager


async def process_market_data(data: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> None:
    """A trade, a candle, a list of them, or a Bybit push (``publicTrade.*`` / ``kline.*`` frame)."""
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        for item in data:
            await process_market_data(item)
        return
    if not isinstance(data, Mapping):
        raise DataValidationError(f"market data is a dict or a list of dicts, not {type(data).__name__}")
    topic = data.get("topic")
    if isinstance(topic, str) and isinstance(data.get("data"), list):
        kind, _, rest = topic.partition(".")
        if kind == "publicTrade":
            await process_market_data([dict(t) | {"s": t.get("s", rest)} for t in data["data"]])
        elif kind == "kline":
            interval, _, symbol = rest.partition(".")
            await process_market_data([
                {"symbol": symbol, "interval": interval, "timestamp": k.get("start"), "open": k.get("open"),
                 "high": k.get("high"), "low": k.get("low"), "close": k.get("close"), "volume": k.get("volume"),
                 "turnover": k.get("turnover"), "confirm": bool(k.get("confirm"))}
                for k in data["data"]
            ])
        else:
            raise DataValidationError(f"unsupported topic {topic[:60]!r}")
        return
    if all(k in data for k in ("open", "high", "low", "close")):
        await _manager().process_candle(data)
    else:
        await _manager().process_trade(data)


async def get_candles(symbol: str, interval: str, limit: int = 100) -> list[dict[str, Any]]:
    """The latest ``limit`` candles of a series, oldest first."""
    return await _manager().get_candles(symbol, interval, limit)


async def get_latest_price(symbol: str) -> float | None:
    """The latest price of ``symbol`` (None when nothing is known)."""
    return await _manager().get_latest_price(symbol)


async def get_state(key: str) -> dict[str, Any]:
    """The state dict under ``key`` (``{}`` when absent)."""
    return await _manager().cache.get_state(key) or {}


async def set_state(key: str, value: Mapping[str, Any]) -> None:
    """Store ``value`` under ``key`` (TTL: the config's ``state_ttl``)."""
    await _manager().cache.set_state(key, value)


async def delete_state(key: str) -> None:
    """Remove ``key`` (emits ``state_deleted`` when it existed)."""
    await _manager().cache.delete_state(key)

