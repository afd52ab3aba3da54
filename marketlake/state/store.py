"""``StateStore``: the state API (old key names, TTLs, events) on top of one backend.

Values are JSON objects (``dict``), as the old Redis schema held. What each call does when the
backend fails:

* state (``get_state``, strategy, position, settings): raises :class:`~marketlake.errors.SinkError`.
  Redis is then the only holder of that state: there is nothing truer to fall back to.
* market data (``latest_price``, ``latest_candle``) with a lake attached: a cache miss (expired,
  never written, Redis flushed) or a backend failure falls back to the lake, which is the truth
  for market data: the latest stored candle's close / the latest stored candle (``source: lake``
  in the result); a backend failure is logged as a warning. Without a lake: None on a miss,
  :class:`SinkError` on a failure.
* market-data writes from the live stream go through :class:`~marketlake.state.live.StateSink`,
  which counts and logs failures and never holds up the stream or the lake.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final, Self

import msgspec
import polars as pl

from marketlake.clock import get_clock
from marketlake.core.symbols import validate_symbol
from marketlake.core.timeframes import parse_timeframe
from marketlake.errors import ConfigError, DataValidationError, SinkError
from marketlake.state.backend import SQLiteBackend, StateBackend
from marketlake.state.events import EventBus, Handler, StateEvent, Subscription, decode_event, encode_event
from marketlake.state.keys import (
    StateTTL,
    candle_key,
    position_key,
    price_key,
    settings_key,
    strategy_key,
    validate_key,
)
from marketlake.store import Lake

__all__ = ["StateStore", "open_state_store"]

log = logging.getLogger(__name__)

_MAX_VALUE_BYTES: Final = 8 << 20
_CHANNEL_PREFIX: Final = "events:"
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(dict[str, Any])


def _finite_or_none(x: Any) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else float(x)


class StateStore:
    """State and hot market data under the old key names, with TTLs and events.

    Args:
        backend: Where values live (:class:`SQLiteBackend` or :class:`RedisBackend`).
        ttl: Expiry times; the old defaults (price 60 s, candle 300 s, state 3600 s) when None.
        lake: The lake market-data reads fall back to (see the module docstring).

    Use :func:`open_state_store` to build one from a URL. A store is used from one event loop;
    ``async with`` closes it.
    """

    def __init__(self, backend: StateBackend, *, ttl: StateTTL | None = None, lake: Lake | None = None) -> None:
        self.backend = backend
        self.ttl = ttl if ttl is not None else StateTTL()
        self.lake = lake
        self.events = EventBus()
        self._listening = False

    def __repr__(self) -> str:
        return f"StateStore({self.backend.kind}: {self.backend.location})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the backend's connections."""
        await self.backend.close()

    # ------------------------------------------------------------------ events

    async def subscribe(self, handler: Handler, events: Iterable[str] | None = None) -> Subscription:
        """Call ``handler`` with every :class:`StateEvent` named in ``events`` (all when None):
        this store's at once, and other processes' through the backend (Redis pub/sub). Returns
        once cross-process delivery is in force.

        Raises:
            DataValidationError: an unknown event name.
            SinkError: the backend could not subscribe.
        """
        sub = self.events.add(handler, events)
        if not self._listening:
            await self.backend.listen(_CHANNEL_PREFIX + "*", self._on_message)
            self._listening = True
        return sub

    def _on_message(self, data: bytes) -> None:
        event = decode_event(data)
        if event is None or event.origin == self.events.origin:
            return  # our own event came back: already delivered in process
        asyncio.ensure_future(self.events.deliver(event))

    async def emit(self, name: str, key: str, data: Mapping[str, Any] | None = None) -> StateEvent:
        """Deliver an event in process and publish it through the backend.

        A publish failure is logged, not raised: the write the event reports has happened.
        """
        event = StateEvent(
            name=name, key=key, data=None if data is None else dict(data),
            ts_ms=get_clock().now_ms(), origin=self.events.origin,
        )
        await self.events.deliver(event)
        try:
            await self.backend.publish(_CHANNEL_PREFIX + name, encode_event(event))
        except SinkError as exc:
            log.warning("event %s not published to other processes: %s", name, exc)
        return event

    # ------------------------------------------------------------------ raw values

    @staticmethod
    def _encode(value: Mapping[str, Any]) -> bytes:
        if not isinstance(value, Mapping):
            raise DataValidationError(f"state values are dicts (JSON objects), not {type(value).__name__}")
        try:
            data = _encoder.encode(dict(value))
        except (TypeError, msgspec.EncodeError) as exc:
            raise DataValidationError(f"state value is not JSON-serialisable: {exc}") from None
        if len(data) > _MAX_VALUE_BYTES:
            raise DataValidationError(f"state value of {len(data):,} bytes exceeds {_MAX_VALUE_BYTES:,}")
        return data

    async def _get(self, key: str) -> dict[str, Any] | None:
        raw = await self.backend.get(key)
        if raw is None:
            return None
        try:
            return _decoder.decode(raw)
        except msgspec.DecodeError:
            # Written by something else under our key name: say so rather than return garbage.
            raise SinkError(f"state key {key!r} holds a value that is not a JSON object") from None

    async def _set(self, key: str, value: Mapping[str, Any], ttl_s: float | None, event: str) -> None:
        await self.backend.set(key, self._encode(value), ttl_s)
        await self.emit(event, key, value)

    # ------------------------------------------------------------------ generic state

    async def get_state(self, key: str) -> dict[str, Any] | None:
        """The dict stored under ``key``; None when absent or expired."""
        return await self._get(validate_key(key))

    async def set_state(self, key: str, value: Mapping[str, Any], *, ttl_s: float | None | bool = True) -> None:
        """Store ``value`` under ``key`` and emit ``state_updated``.

        Args:
            ttl_s: Seconds until it expires; True (default) uses ``ttl.state``; None never expires.
        """
        ttl = self.ttl.state if ttl_s is True else (None if ttl_s is None else float(ttl_s))
        await self._set(validate_key(key), value, ttl, "state_updated")

    async def delete_state(self, key: str) -> bool:
        """Remove ``key`` (emitting ``state_deleted`` when it existed); True when it did."""
        key = validate_key(key)
        existed = await self.backend.delete(key)
        if existed:
            await self.emit("state_deleted", key)
        return existed

    async def keys(self, pattern: str = "*") -> list[str]:
        """Live keys matching a glob pattern."""
        return await self.backend.keys(validate_key(pattern))

    async def clear(self, pattern: str = "market:*") -> int:
        """Remove every key matching ``pattern`` (default: the market-data cache) and emit
        ``cache_cleared`` with the count; returns it."""
        pattern = validate_key(pattern)
        removed = await self.backend.clear(pattern)
        await self.emit("cache_cleared", pattern, {"removed": removed})
        return removed

    # ------------------------------------------------------------------ named state

    async def get_strategy_state(self, strategy_id: str) -> dict[str, Any] | None:
        """``strategy:{id}:state``."""
        return await self._get(strategy_key(strategy_id))

    async def set_strategy_state(self, strategy_id: str, state: Mapping[str, Any]) -> None:
        """Write ``strategy:{id}:state`` (TTL ``ttl.state``)."""
        await self._set(strategy_key(strategy_id), state, self.ttl.state, "state_updated")

    async def get_position_state(self, position_id: str) -> dict[str, Any] | None:
        """``position:{id}:state``."""
        return await self._get(position_key(position_id))

    async def set_position_state(self, position_id: str, state: Mapping[str, Any]) -> None:
        """Write ``position:{id}:state`` (TTL ``ttl.state``)."""
        await self._set(position_key(position_id), state, self.ttl.state, "state_updated")

    async def get_settings(self, component: str) -> dict[str, Any] | None:
        """``settings:{component}:config``."""
        return await self._get(settings_key(component))

    async def set_settings(self, component: str, config: Mapping[str, Any]) -> None:
        """Write ``settings:{component}:config`` (TTL ``ttl.state``)."""
        await self._set(settings_key(component), config, self.ttl.state, "state_updated")

    # ------------------------------------------------------------------ market data

    async def set_latest_price(
        self, symbol: str, price: float, *, volume: float | None = None, timestamp: int | None = None
    ) -> None:
        """Write ``market:{symbol}:latest`` = ``{symbol, price, volume, timestamp}`` (TTL
        ``ttl.price``) and emit ``price_updated``.

        Raises:
            DataValidationError: a bad symbol, or a price that is not a positive finite number.
        """
        if isinstance(price, bool) or not isinstance(price, (int, float)) or not math.isfinite(price) or price <= 0:
            raise DataValidationError(f"price must be a positive finite number, got {price!r}")
        value = {
            "symbol": symbol,
            "price": float(price),
            "volume": _finite_or_none(volume),
            "timestamp": int(timestamp) if timestamp is not None else get_clock().now_ms(),
        }
        await self._set(price_key(symbol), value, self.ttl.price, "price_updated")

    async def set_latest_candle(self, symbol: str, interval: str | int, candle: Mapping[str, Any]) -> None:
        """Write ``market:{symbol}:candle:{interval}`` (TTL ``ttl.candle``); the candle dict needs
        ``timestamp`` (epoch ms) and OHLC; ``datetime``, ``symbol`` and ``interval`` are added."""
        tf = parse_timeframe(interval)
        try:
            ts = int(candle["timestamp"])
            value = {k: candle[k] for k in candle}
            for k in ("open", "high", "low", "close"):
                value[k] = float(candle[k])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataValidationError(f"a candle needs timestamp, open, high, low, close: {exc}") from None
        value.update(
            symbol=validate_symbol(symbol), interval=tf.name, timestamp=ts,
            datetime=dt.datetime.fromtimestamp(ts / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
        )
        await self._set(candle_key(symbol, tf.name), value, self.ttl.candle, "state_updated")

    async def latest_price(self, symbol: str) -> dict[str, Any] | None:
        """``market:{symbol}:latest``; on a miss or a backend failure, the lake's newest close
        (``source: lake``) when a lake is attached (see the module docstring)."""
        key = price_key(symbol)
        try:
            hit = await self._get(key)
        except SinkError as exc:
            if self.lake is None:
                raise
            log.warning("latest price of %s from the lake: %s", symbol, exc)
            hit = None
        if hit is not None or self.lake is None:
            return hit
        candle = self._lake_latest(symbol, None)
        if candle is None:
            return None
        return {"symbol": symbol, "price": candle["close"], "volume": candle["volume"],
                "timestamp": candle["timestamp"], "source": "lake"}

    async def latest_candle(self, symbol: str, interval: str | int) -> dict[str, Any] | None:
        """``market:{symbol}:candle:{interval}``; falls back to the lake like :meth:`latest_price`."""
        key = candle_key(symbol, interval)
        try:
            hit = await self._get(key)
        except SinkError as exc:
            if self.lake is None:
                raise
            log.warning("latest %s candle of %s from the lake: %s", interval, symbol, exc)
            hit = None
        if hit is not None or self.lake is None:
            return hit
        return self._lake_latest(symbol, parse_timeframe(interval).name)

    def _lake_latest(self, symbol: str, interval: str | None) -> dict[str, Any] | None:
        """The newest stored candle of ``interval``; without one, the candle that closed last
        across the stored timeframes (ties: the shortest timeframe).

        The close time decides, not the timeframe: a 1s series built from yesterday's trade
        archive must not hide the 1m candle that closed a minute ago.
        """
        assert self.lake is not None
        series = self.lake.series("candles").filter(
            (pl.col("symbol") == validate_symbol(symbol))
            & (pl.col("exchange") == self.lake.settings.exchange)
            & (pl.col("category") == self.lake.settings.category)
        )
        if interval is not None:
            series = series.filter(pl.col("timeframe") == interval)
        if series.is_empty():
            return None
        row = max(series.iter_rows(named=True), key=_closed_last_key)
        last = row["last_ts"]
        frame = self.lake.read_candles(symbol, row["timeframe"], last, None)
        if frame.is_empty():
            return None
        c = frame.row(-1, named=True)
        ts = int(c["ts"].timestamp() * 1000)
        return {
            "symbol": symbol, "interval": row["timeframe"], "timestamp": ts,
            "datetime": c["ts"].strftime("%Y-%m-%d %H:%M:%S"),
            "open": c["open"], "high": c["high"], "low": c["low"], "close": c["close"],
            "volume": c["volume"], "turnover": c["turnover"], "confirm": True, "source": "lake",
        }


def _closed_last_key(row: Mapping[str, Any]) -> tuple[int, int]:
    """Sort key of a ``Lake.series()`` row: its last candle's close time, then the shorter
    timeframe first (so ``max`` picks the latest close and, on a tie, the finest series)."""
    tf = parse_timeframe(row["timeframe"])
    last_open = int(row["last_ts"].timestamp() * 1000)
    return tf.next_open(last_open), -tf.duration_ms


def open_state_store(
    url: str | Path | None = None,
    *,
    lake: Lake | None = None,
    ttl: StateTTL | None = None,
    **backend_options: Any,
) -> StateStore:
    """A :class:`StateStore` for ``url``.

    Args:
        url: ``redis://host:port/db`` (or ``rediss://``, ``unix://``) for Redis;
            ``sqlite:///abs/path.sqlite``, ``sqlite:rel/path.sqlite`` or a plain path for SQLite;
            None: SQLite at ``<lake>/_meta/state.sqlite`` (``lake`` is then required).
        lake: The lake (market-data fallback, and the default location).
        ttl: Expiry times (old defaults when None).
        backend_options: Passed to the backend's constructor.

    Raises:
        ConfigError: neither a URL nor a lake, or an unknown URL scheme.
        SinkError: the SQLite file cannot be opened.
    """
    backend: StateBackend
    text = None if url is None else str(url)
    if text is None:
        if lake is None:
            raise ConfigError("open_state_store needs a URL or a lake (for <lake>/_meta/state.sqlite)")
        backend = SQLiteBackend(lake.storage.state_dir / "state.sqlite", **backend_options)
    elif text.startswith(("redis://", "rediss://", "unix://")):
        from marketlake.state.redis_backend import RedisBackend

        backend = RedisBackend(text, **backend_options)
    elif text.startswith("sqlite:"):
        path = text[len("sqlite:"):]
        path = path.removeprefix("//")
        if not path:
            raise ConfigError(f"state URL {text!r} names no file")
        backend = SQLiteBackend(path, **backend_options)
    elif "://" in text:
        raise ConfigError(f"unknown state store URL scheme in {text.split('://')[0]!r}: use redis:// or sqlite:")
    else:
        backend = SQLiteBackend(text, **backend_options)
    return StateStore(backend, ttl=ttl, lake=lake)
