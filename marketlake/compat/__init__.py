"""The old public API on marketlake: change the import, keep the script.

``from marketlake.compat import HybridTradingSystem, DataCollectionConfig, ...`` replaces the old
``shared_modules.data_collection.*`` and ``simple_strategy.shared.data_feeder`` imports; the
classes keep their constructor arguments, method names, signatures and return shapes, and run on
the lake (ingest, live runner, kernels, CSV interop, state store, PostgreSQL sink).
"""

from marketlake.compat.config import DataCollectionConfig
from marketlake.compat.csv_manager import CSVManager
from marketlake.compat.data_management import (
    DATA_MANAGEMENT_CONFIG,
    DatabaseManager,
    MarketDataManager,
    StateManager,
    configure,
    delete_state,
    get_candles,
    get_latest_price,
    get_state,
    process_market_data,
    set_state,
)
from marketlake.compat.fetcher import OptimizedDataFetcher
from marketlake.compat.hybrid import HybridTradingSystem
from marketlake.compat.integrity import DataIntegrityChecker
from marketlake.compat.websocket import WebSocketHandler
from marketlake.feeder import DataFeeder

__all__ = [
    "DATA_MANAGEMENT_CONFIG",
    "CSVManager",
    "DataCollectionConfig",
    "DataFeeder",
    "DataIntegrityChecker",
    "DatabaseManager",
    "HybridTradingSystem",
    "MarketDataManager",
    "OptimizedDataFetcher",
    "StateManager",
    "WebSocketHandler",
    "configure",
    "delete_state",
    "get_candles",
    "get_latest_price",
    "get_state",
    "process_market_data",
    "set_state",
]
