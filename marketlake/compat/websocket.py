"""``WebSocketHandler``: the old real-time handler, on marketlake's live runner.

:meth:`WebSocketHandler.connect` starts a :class:`~marketlake.ingest.live.LiveRunner` in the
background (kline topics of the symbols x ``config.TIMEFRAMES``) and returns once the exchange
confirmed the subscriptions. The runner writes every closed candle to the lake and heals
disconnects over REST, which the old handler did not; the handler keeps the closed candles it
saw in memory (:meth:`get_real_time_data`, plus the forming candle with ``confirm: False``) and
calls each callback with every closed candle as an old candle dict (``symbol`` and
``timeframe`` added). Plain callbacks run in a worker thread and ``async def`` ones on the loop,
each behind its own bounded queue: a slow callback never stalls the stream.

The old private methods (``_listen_for_messages``, ``_subscribe_to_symbols_in_batches``,
``_process_message``) are not provided: the runner's WebSocket client does that work.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from marketlake.compat.config import DataCollectionConfig
from marketlake.core.timeframes import parse_timeframe
from marketlake.exchanges.bybit.rest import BybitRestClient
from marketlake.exchanges.bybit.ws_frames import ws_url_for
from marketlake.ingest.live import LiveRunner
from marketlake.ingest.live_types import LiveCandle, LiveConfig
from marketlake.net.ratelimit import RateBudget
from marketlake.store import Lake

__all__ = ["WebSocketHandler"]

_KEEP = 10_000  # closed candles kept in memory per series


class WebSocketHandler:
    """Streams klines of ``symbols`` (default ``config.SYMBOLS``).

    Args:
        config: The configuration (symbols, timeframes, URLs, lake).
        symbols: Symbols to subscribe to.
        timeframes: Timeframes (default ``config.TIMEFRAMES``).
        ws_options: Extra options of the WebSocket client (ping interval, backoff ...).

    Attributes:
        runner: The live runner while connected (its ``stats``, ``latest_price`` ...).
    """

    def __init__(
        self,
        config: DataCollectionConfig,
        symbols: Sequence[str] | None = None,
        *,
        timeframes: Sequence[str] | None = None,
        ws_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.symbols = list(symbols if symbols is not None else config.SYMBOLS)
        self.timeframes = list(timeframes if timeframes is not None else config.TIMEFRAMES)
        self.ws_options = dict(ws_options or {})
        self.runner: LiveRunner | None = None
        self._callbacks: list[Callable[[dict[str, Any]], Any]] = []
        self._closed: dict[tuple[str, str], deque[dict[str, Any]]] = {}
        self._task: asyncio.Task[Any] | None = None
        self._rest: BybitRestClient | None = None

    @property
    def is_connected(self) -> bool:
        """True while streaming with every subscription confirmed."""
        r = self.runner
        return bool(r and r.client and self._task and not self._task.done() and r.client.confirmed)

    def _register(self, runner: LiveRunner, callback: Callable[[dict[str, Any]], Any]) -> None:
        if inspect.iscoroutinefunction(callback):
            async def deliver(c: LiveCandle) -> None:
                await callback(c.as_dict())
        else:
            def deliver(c: LiveCandle) -> None:  # type: ignore[misc]
                callback(c.as_dict())
        runner.add_callback(deliver)

    def add_callback(self, callback: Callable[[dict[str, Any]], Any]) -> None:
        """Call ``callback(candle_dict)`` for each closed candle (from now on)."""
        if not callable(callback):
            raise TypeError("a callback must be callable")
        self._callbacks.append(callback)
        if self.runner is not None:
            self._register(self.runner, callback)

    def _keep(self, c: LiveCandle) -> None:
        key = (c.symbol, c.timeframe)
        self._closed.setdefault(key, deque(maxlen=_KEEP)).append(c.as_dict())

    async def connect(self, timeout_s: float = 30.0) -> None:
        """Connect, subscribe and start streaming in the background.

        Raises:
            ConnectionError: no confirmed subscription within ``timeout_s`` (the runner is stopped).
            ValueError: bad symbols or timeframes.
        """
        if self._task is not None and not self._task.done():
            return
        settings = self.config.to_settings()
        lake = Lake(settings=settings)
        cfg = LiveConfig.of(self.symbols, self.timeframes, category=self.config.CATEGORY,
                            exchange=settings.exchange)
        self._rest = BybitRestClient(
            self.config.API_BASE_URL, budget=RateBudget(settings.rate_limit_per_5s, state_dir=lake.storage.state_dir)
        )
        url = self.config.WS_URL or ws_url_for(self.config.API_BASE_URL, cfg.category)
        runner = LiveRunner(lake, self._rest, cfg, ws_url=url, ws_options=self.ws_options,
                            run_args={"compat": "WebSocketHandler"})
        runner.add_callback(self._keep)
        for cb in self._callbacks:
            self._register(runner, cb)
        self.runner = runner
        self._task = asyncio.create_task(runner.run())
        wanted = frozenset(cfg.topics())
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not (runner.client is not None and wanted <= runner.client.confirmed | runner.client.rejected.keys()):
            if self._task.done() or asyncio.get_running_loop().time() > deadline:
                error = self._task.exception() if self._task.done() and not self._task.cancelled() else None
                await self.close()
                raise ConnectionError(f"WebSocket {url}: no confirmed subscription ({error or 'timed out'})")
            await asyncio.sleep(0.02)

    def get_real_time_data(self, symbol: str, timeframe: str) -> list[dict[str, Any]]:
        """Closed candles seen since :meth:`connect`, oldest first, then the forming candle
        (``confirm: False``) if there is a newer one."""
        name = parse_timeframe(timeframe).name
        out = list(self._closed.get((symbol, name), ()))
        if self.runner is not None:
            forming = self.runner.latest_candle(symbol, name)
            if forming is not None and not forming.confirm and (not out or forming.ts_ms > out[-1]["timestamp"]):
                out.append(forming.as_dict())
        return out

    async def close(self) -> None:
        """Stop streaming (everything received is written to the lake first)."""
        if self.runner is not None:
            self.runner.stop()
        if self._task is not None:
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None
        if self._rest is not None:
            await self._rest.close()
            self._rest = None

    disconnect = close
