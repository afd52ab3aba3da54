"""marketlake: a columnar time-series lake for crypto market data.

The public API is what ``__all__`` lists; everything else is internal and may change.
"""

from marketlake import errors
from marketlake.clock import Clock, ManualClock, SystemClock, get_clock, use_clock
from marketlake.core.timeframes import TIMEFRAMES, Timeframe, parse_timeframe
from marketlake.errors import *  # noqa: F403  (the error tree is part of the public API)
from marketlake.settings import Settings

__version__ = "0.1.0"

__all__ = [
    "TIMEFRAMES",
    "Clock",
    "ManualClock",
    "Settings",
    "SystemClock",
    "Timeframe",
    "errors",
    "get_clock",
    "parse_timeframe",
    "use_clock",
    *errors.__all__,
]
