"""The pure core: timeframes, schemas, symbols, time conversions and numba kernels. No I/O."""

from marketlake.core.schemas import normalize_candles, normalize_trades
from marketlake.core.symbols import validate_category, validate_exchange, validate_symbol
from marketlake.core.timeframes import TIMEFRAMES, Timeframe, parse_timeframe, parse_timeframes
from marketlake.core.timeutil import to_ms

__all__ = [
    "TIMEFRAMES",
    "Timeframe",
    "normalize_candles",
    "normalize_trades",
    "parse_timeframe",
    "parse_timeframes",
    "to_ms",
    "validate_category",
    "validate_exchange",
    "validate_symbol",
]
