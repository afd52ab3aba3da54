"""``HybridTradingSystem``: the old orchestrator of historical and real-time collection, on the
compat fetcher (ingest into the lake) and WebSocket handler (the live runner).

Modes of :meth:`HybridTradingSystem.fetch_data_hybrid`: ``full`` fetches ``days`` of history;
``recent`` the latest 50 candles per series; ``live`` starts streaming (needs
``ENABLE_WEBSOCKET``). After a ``full``/``recent`` fetch, ``RUN_INTEGRITY_CHECK`` runs
:func:`~marketlake.quality.check_lake` over the fetched series (result in :attr:`last_check`)
and ``RUN_GAP_FILLING`` runs :func:`~marketlake.quality.repair.repair_lake`: gaps are re-fetched
first and only what the exchange does not have is filled with flat candles marked ``filled``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Final, Self

import polars as pl

from marketlake.compat._candles import candle_dicts
from marketlake.compat.config import DataCollectionConfig
from marketlake.compat.csv_manager import CSVManager
from marketlake.compat.fetcher import OptimizedDataFetcher
from marketlake.compat.websocket import WebSocketHandler
from marketlake.core.timeframes import parse_timeframe
from marketlake.errors import ConfigError, DataValidationError
from marketlake.quality.check import check_lake
from marketlake.quality.repair import repair_lake

__all__ = ["HybridTradingSystem"]

log = logging.getLogger(__name__)
MODES: Final = ("full", "recent", "live")
SOURCES: Final = ("memory", "websocket", "csv", "combined")


class HybridTradingSystem:
    """Historical plus real-time collection behind the old calls.

    Attributes:
        fetcher: The historical fetcher (after :meth:`initialize`).
        ws_handler: The WebSocket handler (after a ``live`` fetch), else None.
        csv_manager: CSV access on ``config.DATA_DIR``.
        last_check: The integrity check of the last fetch (``RUN_INTEGRITY_CHECK``).
        last_repair: The repair report of the last fetch (``RUN_GAP_FILLING``).
    """

    def __init__(self, config: DataCollectionConfig) -> None:
        self.config = config
        self.fetcher: OptimizedDataFetcher | None = None
        self.ws_handler: WebSocketHandler | None = None
        self.csv_manager = CSVManager(config)
        self.last_check: Any = None
        self.last_repair: Any = None
        self.ws_options: dict[str, Any] = {}

    async def initialize(self) -> None:
        """Open the historical fetcher (the lake and REST client); the WebSocket opens in ``live``."""
        self.config.validate()
        if self.fetcher is None:
            self.fetcher = OptimizedDataFetcher(self.config)
        await self.fetcher.initialize()

    async def __aenter__(self) -> Self:
        await self.initialize()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def fetch_data_hybrid(
        self,
        symbols: Sequence[str] | None = None,
        timeframes: Sequence[str] | None = None,
        days: int | None = None,
        mode: str = "full",
    ) -> None:
        """Collect data; see the module docstring for the modes.

        Raises:
            ValueError: an unknown mode, or bad symbols/timeframes/days.
            ConfigError: ``live`` with ``ENABLE_WEBSOCKET`` off.
            ConnectionError: ``live`` could not subscribe.
        """
        if mode not in MODES:
            raise DataValidationError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        await self.initialize()
        assert self.fetcher is not None
        syms = list(symbols) if symbols is not None else ([] if self.config.FETCH_ALL_SYMBOLS else list(self.config.SYMBOLS))
        tfs = list(timeframes) if timeframes is not None else list(self.config.TIMEFRAMES)
        if mode == "live":
            if not self.config.ENABLE_WEBSOCKET:
                raise ConfigError("mode 'live' needs config.ENABLE_WEBSOCKET = True")
            if not syms:
                syms = await self.fetcher._get_all_symbols()
            if self.ws_handler is not None:
                await self.ws_handler.close()
            self.ws_handler = WebSocketHandler(self.config, syms, timeframes=tfs, ws_options=self.ws_options)
            await self.ws_handler.connect()
            return
        limit_50 = mode == "recent" or self.config.LIMIT_TO_50_ENTRIES
        ok = await self.fetcher.fetch_historical_data_fast(
            syms, tfs, days if days is not None else self.config.DAYS_TO_FETCH, limit_50
        )
        if not ok:
            log.error("historical fetch incomplete (see the log above)")
        lake = self.fetcher.lake
        assert lake is not None
        scope = {"symbols": syms or None, "timeframes": tfs, "category": self.config.CATEGORY}
        if self.config.RUN_GAP_FILLING:
            self.last_repair = await repair_lake(lake, client=self.fetcher.client, fill=True, **scope)
        if self.config.RUN_INTEGRITY_CHECK:
            self.last_check = check_lake(lake, consistency=False, **scope)
            bad = [sc.sid.label() for sc in self.last_check.series if sc.unexplained or sc.result.duplicate_count]
            if bad:
                log.warning("integrity issues in %d series: %s", len(bad), ", ".join(bad[:10]))

    def _memory_frame(self, symbol: str, timeframe: str) -> pl.DataFrame | None:
        if self.fetcher is None:
            return None
        frame = self.fetcher.memory_data.get(f"{symbol}_{timeframe}")
        if frame is None:  # keys are spelled as fetched: try the other spellings of the timeframe
            name = parse_timeframe(timeframe).name
            for key, f in self.fetcher.memory_data.items():
                sym, _, tf = key.rpartition("_")
                if sym == symbol and parse_timeframe(tf).name == name:
                    return f
        return frame

    async def save_to_csv(self, directory: str = "data") -> None:
        """Write every fetched series to ``directory/{SYMBOL}_{TF}.csv``, merged over the rows a
        file already has (newer values win; 50 rows with ``LIMIT_TO_50_ENTRIES``)."""
        if self.fetcher is None:
            return
        target = self._csv(directory)
        for key, frame in self.fetcher.memory_data.items():
            symbol, _, tf = key.rpartition("_")
            target.write_frame(symbol, tf, frame.with_columns(frame["ts"].dt.epoch("ms")), merge=True)

    async def update_csv_with_realtime_data(self, directory: str = "data") -> None:
        """Merge the closed candles streamed so far into ``directory``'s CSV files."""
        if self.ws_handler is None:
            return
        target = self._csv(directory)
        for symbol in self.ws_handler.symbols:
            for tf in self.ws_handler.timeframes:
                closed = [c for c in self.ws_handler.get_real_time_data(symbol, tf) if c["confirm"]]
                if closed:
                    target.append_new_data(symbol, tf, closed)

    def _csv(self, directory: str) -> CSVManager:
        if str(directory) == str(self.config.DATA_DIR):
            return self.csv_manager
        other = DataCollectionConfig.__new__(DataCollectionConfig)
        other.__dict__.update(self.config.__dict__)
        other.DATA_DIR = str(directory)
        return CSVManager(other)

    def get_data(self, symbol: str, timeframe: str, source: str = "memory") -> list[dict[str, Any]]:
        """Candles of one series from ``source``: ``memory`` (fetched history), ``websocket``
        (streamed, with the forming candle last), ``csv`` (``config.DATA_DIR``'s file) or
        ``combined`` (history, then streamed candles; a streamed candle replaces a historical
        one of the same timestamp), oldest first.

        Raises:
            ValueError: an unknown source.
        """
        if source not in SOURCES:
            raise DataValidationError(f"source must be one of {', '.join(SOURCES)}, not {source!r}")
        if source == "csv":
            return self.csv_manager.read_csv_data(symbol, timeframe)
        live = self.ws_handler.get_real_time_data(symbol, timeframe) if self.ws_handler is not None else []
        if source == "websocket":
            return live
        frame = self._memory_frame(symbol, timeframe)
        history = candle_dicts(frame) if frame is not None else []
        if source == "memory":
            return history
        merged = {c["timestamp"]: c for c in history}
        merged.update((c["timestamp"], c) for c in live)
        return [merged[t] for t in sorted(merged)]

    async def close(self) -> None:
        """Stop streaming and close connections."""
        if self.ws_handler is not None:
            await self.ws_handler.close()
        if self.fetcher is not None:
            await self.fetcher.close()
