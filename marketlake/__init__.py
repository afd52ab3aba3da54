"""marketlake: a columnar time-series lake for crypto market data.

The public API is what ``__all__`` lists; everything else is internal and may change.

Names are imported on first use (PEP 562 ``__getattr__``): ``import marketlake`` stays cheap, so
the ``marketlake`` command starts in a fraction of a second instead of paying for numba, pyarrow,
polars and aiohttp before it has even parsed its flags.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from marketlake import errors
from marketlake.errors import *  # noqa: F403  (the error tree is part of the public API; it is light)

if TYPE_CHECKING:  # pragma: no cover  (static checkers and IDEs see the eager imports)
    from marketlake.clock import Clock, ManualClock, SystemClock, get_clock, use_clock
    from marketlake.core.candles import candles_from_trades, resample
    from marketlake.core.consistency import check_consistency
    from marketlake.core.integrity import CheckResult, check_candles, integrity_report
    from marketlake.core.timeframes import TIMEFRAMES, Timeframe, parse_timeframe
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

# Public name -> the module that defines it. One table, so __all__, __getattr__ and __dir__ agree.
_LAZY: dict[str, str] = {
    "Clock": "marketlake.clock",
    "ManualClock": "marketlake.clock",
    "SystemClock": "marketlake.clock",
    "get_clock": "marketlake.clock",
    "use_clock": "marketlake.clock",
    "candles_from_trades": "marketlake.core.candles",
    "resample": "marketlake.core.candles",
    "check_consistency": "marketlake.core.consistency",
    "CheckResult": "marketlake.core.integrity",
    "check_candles": "marketlake.core.integrity",
    "integrity_report": "marketlake.core.integrity",
    "TIMEFRAMES": "marketlake.core.timeframes",
    "Timeframe": "marketlake.core.timeframes",
    "parse_timeframe": "marketlake.core.timeframes",
    "DataFeeder": "marketlake.feeder",
    "ArchiveStats": "marketlake.ingest.archive",
    "run_archive_ingest": "marketlake.ingest.archive",
    "LiveRunner": "marketlake.ingest.live",
    "LiveConfig": "marketlake.ingest.live_types",
    "IngestRequest": "marketlake.ingest.service",
    "run_ingest": "marketlake.ingest.service",
    "ImportReport": "marketlake.interop.csv",
    "export_csv": "marketlake.interop.csv",
    "import_csv": "marketlake.interop.csv",
    "export_postgres": "marketlake.interop.postgres",
    "check_lake": "marketlake.quality",
    "repair_lake": "marketlake.quality",
    "Settings": "marketlake.settings",
    "StateStore": "marketlake.state",
    "StateTTL": "marketlake.state",
    "open_state_store": "marketlake.state",
    "FsckReport": "marketlake.store",
    "Lake": "marketlake.store",
    "WriteResult": "marketlake.store",
}

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


def __getattr__(name: str) -> Any:
    """Import a public name on first access and cache it in the module (PEP 562).

    Raises:
        AttributeError: ``name`` is not part of the public API.
    """
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'marketlake' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later accesses skip __getattr__
    return value


def __dir__() -> list[str]:
    """The public names, imported or not, so ``dir(marketlake)`` and completion show them all."""
    return sorted(set(globals()) | set(__all__))
