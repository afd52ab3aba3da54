"""``DataCollectionConfig``: the old configuration object, every attribute kept, mapped onto
marketlake's :class:`~marketlake.settings.Settings`.

The API key and secret come from the environment (``BYBIT_API_KEY``, ``BYBIT_API_SECRET``) and
are held so that neither ``repr(config)``, ``str(config)`` nor ``vars(config)`` shows them
(logs print those); reading ``config.BYBIT_API_KEY`` still gives the value.

How the old settings map onto marketlake:

=========================  ====================================================================
``API_BASE_URL``           REST base URL (``BYBIT_API_BASE_URL`` in the environment overrides it)
``SYMBOLS``/``TIMEFRAMES``  what to fetch/stream by default
``DATA_DIR``               the directory of ``{SYMBOL}_{TF}.csv`` files (CSVManager, the checker,
                           ``save_to_csv``)
``LIMIT_TO_50_ENTRIES``    ``recent`` ingest (latest 50 candles), CSV files cut to 50 rows
``FETCH_ALL_SYMBOLS``      ``--all-symbols`` when no symbols are named
``DAYS_TO_FETCH``          ``--days``
``ENABLE_WEBSOCKET``       whether ``HybridTradingSystem`` may stream (mode ``live``)
``RUN_INTEGRITY_CHECK``    ``check`` over the fetched series after a fetch
``RUN_GAP_FILLING``        ``repair`` after a fetch: re-fetch gaps, then flat fills (``filled``)
``BULK_BATCH_SIZE``        concurrent requests of the historical runner
``BULK_REQUEST_DELAY_MS``  kept for scripts that set it; pacing is the shared rate budget's job
                           (``RATE_LIMIT_PER_5S``), which never exceeds Bybit's limit
``BULK_MAX_RETRIES``       retries of a failed request (capped exponential backoff)
=========================  ====================================================================

New attributes: ``LAKE_DIR`` (the lake; default ``Settings.lake_root``), ``CATEGORY``
(``linear``), ``WS_URL`` (default derived from ``API_BASE_URL``) and ``RATE_LIMIT_PER_5S``.
"""

from __future__ import annotations

import os
from typing import Any

from marketlake.core.symbols import validate_category, validate_symbol
from marketlake.core.timeframes import parse_timeframe
from marketlake.errors import ConfigError, MarketlakeError
from marketlake.settings import Settings

__all__ = ["DataCollectionConfig"]

_MASK = "***"


class _Secret:
    """A string that shows as ``***`` wherever Python prints it."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return _MASK if self.value else "''"

    __str__ = __repr__


class DataCollectionConfig:
    """Configuration of the old data-collection system (attributes upper-case, as before)."""

    def __init__(self) -> None:
        self._api_key = _Secret(os.environ.get("BYBIT_API_KEY", ""))
        self._api_secret = _Secret(os.environ.get("BYBIT_API_SECRET", ""))
        self.API_BASE_URL: str = os.environ.get("BYBIT_API_BASE_URL", "https://api.bybit.com")
        self.SYMBOLS: list[str] = ["BTCUSDT", "ETHUSDT"]
        self.TIMEFRAMES: list[str] = ["1", "5", "15"]
        self.DATA_DIR: str = "data"
        self.LIMIT_TO_50_ENTRIES: bool = False
        self.FETCH_ALL_SYMBOLS: bool = False
        self.DAYS_TO_FETCH: int = 30
        self.ENABLE_WEBSOCKET: bool = True
        self.RUN_INTEGRITY_CHECK: bool = True
        self.RUN_GAP_FILLING: bool = False
        self.BULK_BATCH_SIZE: int = 20
        self.BULK_REQUEST_DELAY_MS: int = 0
        self.BULK_MAX_RETRIES: int = 3
        self.LAKE_DIR: str | None = None
        self.CATEGORY: str = "linear"
        self.WS_URL: str | None = None
        self.RATE_LIMIT_PER_5S: int | None = None

    # Secrets: properties over masked holders, so vars()/repr() never carry the plain text.
    @property
    def BYBIT_API_KEY(self) -> str:
        """Bybit API key (from ``BYBIT_API_KEY``)."""
        return self._api_key.value

    @BYBIT_API_KEY.setter
    def BYBIT_API_KEY(self, value: str) -> None:
        self._api_key = _Secret(str(value))

    @property
    def BYBIT_API_SECRET(self) -> str:
        """Bybit API secret (from ``BYBIT_API_SECRET``)."""
        return self._api_secret.value

    @BYBIT_API_SECRET.setter
    def BYBIT_API_SECRET(self, value: str) -> None:
        self._api_secret = _Secret(str(value))

    def as_dict(self) -> dict[str, Any]:
        """Every setting by its old name, secrets masked (for logs and reports)."""
        out = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        out["BYBIT_API_KEY"] = repr(self._api_key)
        out["BYBIT_API_SECRET"] = repr(self._api_secret)
        return out

    def __repr__(self) -> str:
        return "DataCollectionConfig(" + ", ".join(f"{k}={v!r}" for k, v in self.as_dict().items()) + ")"

    __str__ = __repr__

    def validate(self) -> None:
        """Check every setting; components call this before using the configuration.

        Raises:
            ConfigError: naming the attribute and what is wrong with it.
        """
        def need(ok: bool, name: str, what: str) -> None:
            if not ok:
                raise ConfigError(f"DataCollectionConfig.{name} {what}, got {getattr(self, name)!r}")

        need(isinstance(self.SYMBOLS, (list, tuple)), "SYMBOLS", "must be a list of symbols")
        need(isinstance(self.TIMEFRAMES, (list, tuple)) and len(self.TIMEFRAMES) > 0, "TIMEFRAMES",
             "must be a non-empty list")
        try:
            for s in self.SYMBOLS:
                validate_symbol(s)
            for t in self.TIMEFRAMES:
                parse_timeframe(t)
            validate_category(self.CATEGORY)
        except MarketlakeError as exc:
            raise ConfigError(f"DataCollectionConfig: {exc}") from None
        for name in ("DAYS_TO_FETCH", "BULK_BATCH_SIZE"):
            value = getattr(self, name)
            need(isinstance(value, int) and not isinstance(value, bool) and value > 0, name,
                 "must be a positive integer")
        need(isinstance(self.BULK_MAX_RETRIES, int) and self.BULK_MAX_RETRIES >= 0, "BULK_MAX_RETRIES",
             "must be an integer >= 0")
        need(isinstance(self.API_BASE_URL, str) and self.API_BASE_URL.startswith(("http://", "https://")),
             "API_BASE_URL", "must be an http(s) URL")
        need(isinstance(self.DATA_DIR, (str, os.PathLike)) and str(self.DATA_DIR) != "", "DATA_DIR",
             "must be a directory path")

    def to_settings(self) -> Settings:
        """marketlake settings for this configuration (file/environment, then these values)."""
        self.validate()
        overrides: dict[str, Any] = {
            "lake_root": self.LAKE_DIR,
            "base_url": self.API_BASE_URL,
            "category": self.CATEGORY,
            "api_key": self.BYBIT_API_KEY or None,
            "api_secret": self.BYBIT_API_SECRET or None,
            "rate_limit_per_5s": self.RATE_LIMIT_PER_5S,
        }
        return Settings.load(overrides=overrides)
