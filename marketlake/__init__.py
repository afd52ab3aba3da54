"""marketlake: a columnar time-series lake for crypto market data.

The public API is what ``__all__`` lists; everything else is internal and may change.
"""

from marketlake import errors
from marketlake.clock import Clock, ManualClock, SystemClock, get_clock, use_clock
from marketlake.core.candles import candles_from_trades, resample
from marketlake.core.consistency import check_consistency
from marketlake.core.integrity import CheckResult, check_candles, integrity_report
from marketlake.core.timeframes import TIMEFRAMES, Timeframe, parse_timeframe
from marketlake.errors import *  # noqa: F403  (the error tree is part of the public API)
from marketlake.feeder import DataFeeder
from marketlake.ingest.archive import ArchiveStats, run_archive_ingest
from marketlake.ingest.live import LiveRunner
from marketlake.ingest.live_types import LiveConfig
from marketlake.ingest.service import IngestRequest, run_ingest
from marketlake.interop.csv import ImportReport, export_csv, import_csv
from marketlake.interop.postgres import export_postgres
from marketlake.quality import check_lake, repair_lake
from marketlake.settings import Settings
from marketlake.state import StateStore, StateTTL, open_state_store
from marketlake.store import FsckReport, Lake, WriteResult

__version__ = "0.1.0"

__all__ = [
    "ArchiveStats",
    "CheckResult",
    "candles_from_trades",
    "check_candles",
    "check_consistency",
    "check_lake",
    "repair_lake",
    "run_archive_ingest",
    "run_ingest",
    "integrity_report",
    "resample",
    "TIMEFRAMES",
    "Clock",
    "DataFeeder",
    "IngestRequest",
    "LiveConfig",
    "LiveRunner",
    "FsckReport",
    "ImportReport",
    "Lake",
    "ManualClock",
    "Settings",
    "StateStore",
    "StateTTL",
    "SystemClock",
    "Timeframe",
    "WriteResult",
    "errors",
    "export_csv",
    "export_postgres",
    "get_clock",
    "import_csv",
    "open_state_store",
    "parse_timeframe",
    "use_clock",
    *errors.__all__,
]
