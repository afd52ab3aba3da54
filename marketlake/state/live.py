"""Mirror the live stream into the state store: latest price and latest closed candle.

``StateSink(store).attach(runner)`` registers two callbacks on a
:class:`~marketlake.ingest.live.LiveRunner`: every closed candle becomes
``market:{symbol}:candle:{tf}`` (and its close the latest price, plus a ``candle_generated``
event); every trade batch sets ``market:{symbol}:latest`` from its newest trade. The runner
delivers callbacks from bounded queues off the socket's path, so a slow or dead Redis delays
nothing but these updates; a failed update is counted and logged, and the lake (written by the
runner itself) is never affected.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from marketlake.errors import MarketlakeError
from marketlake.state.store import StateStore

if TYPE_CHECKING:  # types only: state sits below ingest in the import order
    from marketlake.ingest.live_types import LiveCandle, TradeBatch

__all__ = ["StateSink"]

log = logging.getLogger(__name__)


class StateSink:
    """Callbacks that keep a :class:`StateStore`'s market data current from a live runner.

    Attributes:
        store: The store written to.
        candles: Candles mirrored.
        prices: Price updates written.
        errors: Updates that failed (the store was unreachable, ...).
    """

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.candles = 0
        self.prices = 0
        self.errors = 0

    def attach(self, runner: Any) -> StateSink:
        """Register on ``runner`` (a ``LiveRunner``: anything with its ``add_callback``)."""
        runner.add_callback(self.on_candle, candles=True, trades=False)
        runner.add_callback(self.on_trades, candles=False, trades=True)
        return self

    async def on_candle(self, candle: LiveCandle) -> None:
        """A closed candle: latest candle of its timeframe, latest price, ``candle_generated``."""
        data = candle.as_dict()
        try:
            await self.store.set_latest_candle(candle.symbol, candle.timeframe, data)
            await self.store.set_latest_price(
                candle.symbol, candle.close, volume=candle.volume, timestamp=candle.ts_ms
            )
            await self.store.emit("candle_generated", f"market:{candle.symbol}:candle:{candle.timeframe}", data)
        except MarketlakeError as exc:
            self.errors += 1
            log.warning("state store: candle %s %s not mirrored: %s", candle.symbol, candle.timeframe, exc)
            return
        self.candles += 1
        self.prices += 1

    async def on_trades(self, batch: TradeBatch) -> None:
        """New trades: the newest one's price becomes the latest price."""
        if not batch.trades:
            return
        last = batch.trades[-1]
        try:
            await self.store.set_latest_price(batch.symbol, last.price, volume=last.size, timestamp=last.ts_ms)
        except MarketlakeError as exc:
            self.errors += 1
            log.warning("state store: price of %s not mirrored: %s", batch.symbol, exc)
            return
        self.prices += 1
