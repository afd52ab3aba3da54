"""``OptimizedDataFetcher``: the old historical fetcher, on marketlake's ingest.

``fetch_historical_data_fast`` runs :func:`~marketlake.ingest.service.run_ingest` (planned from
the coverage ledger, within the shared rate budget, written to the lake), then holds the fetched
range of each series in memory, as the old fetcher did; :meth:`get_memory_data` renders it as
the old candle dicts. Anything already in the lake is not fetched again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import polars as pl

from marketlake.compat._candles import candle_dicts
from marketlake.compat.config import DataCollectionConfig
from marketlake.core.timeframes import parse_timeframe
from marketlake.errors import ExchangeError
from marketlake.exchanges.bybit.rest import BybitRestClient
from marketlake.ingest.service import RECENT_CANDLES, IngestRequest, run_ingest
from marketlake.net.backoff import Backoff
from marketlake.net.ratelimit import RateBudget
from marketlake.store import Lake

__all__ = ["OptimizedDataFetcher"]

log = logging.getLogger(__name__)
DAY_MS = 86_400_000


class OptimizedDataFetcher:
    """Fetches history into the lake (and memory).

    Attributes:
        lake: The lake (``config.LAKE_DIR``), set by :meth:`initialize`.
        client: The REST client, set by :meth:`initialize`.
        memory_data: Fetched candles per ``SYMBOL_TF`` key (polars frames; see :meth:`get_memory_data`).
        last_outcome: What the last fetch did (plan, figures, gaps), for diagnostics.
    """

    def __init__(self, config: DataCollectionConfig) -> None:
        self.config = config
        self.lake: Lake | None = None
        self.client: BybitRestClient | None = None
        self.memory_data: dict[str, pl.DataFrame] = {}
        self.last_outcome: Any = None

    async def initialize(self) -> None:
        """Open the lake and the REST client (the rate budget is shared through the lake)."""
        if self.client is not None:
            return
        settings = self.config.to_settings()
        self.lake = Lake(settings=settings)
        budget = RateBudget(settings.rate_limit_per_5s, state_dir=self.lake.storage.state_dir)
        self.client = BybitRestClient(
            self.config.API_BASE_URL, budget=budget,
            backoff=Backoff(max_attempts=self.config.BULK_MAX_RETRIES + 1),
        )

    async def _ready(self) -> tuple[Lake, BybitRestClient]:
        await self.initialize()
        assert self.lake is not None and self.client is not None
        return self.lake, self.client

    async def fetch_historical_data_fast(
        self, symbols: Sequence[str], timeframes: Sequence[str], days: int, limit_50: bool = False
    ) -> bool:
        """Fetch ``days`` of history (or, with ``limit_50``, the latest 50 candles) of every
        symbol and timeframe into the lake and memory.

        With no symbols and ``FETCH_ALL_SYMBOLS`` every trading symbol is fetched.

        Returns:
            True when every series is complete; False when a series failed, a symbol is unknown
            or the exchange could not be reached (the reason is logged; what was fetched stays).

        Raises:
            ValueError: bad symbols, timeframes or days (:class:`~marketlake.errors.DataValidationError`).
        """
        lake, client = await self._ready()
        all_symbols = not symbols and self.config.FETCH_ALL_SYMBOLS
        request = IngestRequest.of(
            symbols=None if all_symbols else list(symbols), all_symbols=all_symbols,
            timeframes=list(timeframes), category=self.config.CATEGORY,
            days=None if limit_50 else days, mode="recent" if limit_50 else "full",
        )
        try:
            outcome = await run_ingest(lake, client, request, concurrency=self.config.BULK_BATCH_SIZE)
        except ExchangeError as exc:
            log.error("fetch failed: %s", exc)
            return False
        self.last_outcome = outcome
        if outcome.unknown_symbols:
            log.error("unknown symbols: %s", ", ".join(outcome.unknown_symbols))
        now = outcome.server_time_ms
        names = sorted({s.sid.symbol for s in outcome.plan.series} | set(symbols or ()))
        if all_symbols:
            names = sorted(lake.series("candles").get_column("symbol").unique().to_list())
        for tf_text in timeframes:
            tf = parse_timeframe(tf_text)
            for sym in names:
                if sym in outcome.unknown_symbols:
                    continue
                if limit_50:
                    frame = lake.read_candles(sym, tf, tf.floor(now) - (RECENT_CANDLES + 1) * tf.duration_ms * 2, None,
                                              category=self.config.CATEGORY).tail(RECENT_CANDLES)
                else:
                    frame = lake.read_candles(sym, tf, now - days * DAY_MS, None, category=self.config.CATEGORY)
                self.memory_data[f"{sym}_{tf_text}"] = frame.drop("symbol", "timeframe")
        if not outcome.ok:
            log.error("fetch incomplete: failures=%s unexplained gaps=%s",
                      outcome.stats.failures if outcome.stats else None, list(outcome.unexplained_gaps)[:5])
        return outcome.ok

    async def _fetch_symbol_timeframe(self, symbol: str, timeframe: str, days: int, limit_50: bool) -> list[dict[str, Any]]:
        """Fetch one series (as the old concurrent example calls it); returns its candles."""
        await self.fetch_historical_data_fast([symbol], [timeframe], days, limit_50)
        frame = self.memory_data.get(f"{symbol}_{timeframe}")
        return [] if frame is None else candle_dicts(frame)

    async def _get_all_symbols(self) -> list[str]:
        """Every trading symbol of ``config.CATEGORY`` (linear by default), sorted."""
        _, client = await self._ready()
        return [i.symbol for i in await client.get_instruments(self.config.CATEGORY)]

    def get_memory_data(self) -> dict[str, list[dict[str, Any]]]:
        """``{"BTCUSDT_1": [candle dict, ...]}``, oldest first, for everything fetched so far."""
        return {key: candle_dicts(frame) for key, frame in self.memory_data.items()}

    async def close(self) -> None:
        """Close the REST client's session."""
        if self.client is not None:
            await self.client.close()
            self.client = None
