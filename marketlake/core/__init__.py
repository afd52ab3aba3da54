"""The pure core: timeframes, schemas, symbols, time conversions and numba kernels. No I/O.

Names load on first use (PEP 562): ``marketlake.core.symbols`` is needed by the CLI before any
command runs, and must not drag in polars and numba through ``schemas``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from marketlake.core.schemas import normalize_candles, normalize_trades
    from marketlake.core.symbols import validate_category, validate_exchange, validate_symbol
    from marketlake.core.timeframes import TIMEFRAMES, Timeframe, parse_timeframe, parse_timeframes
    from marketlake.core.timeutil import to_ms

_LAZY: dict[str, str] = {
    "normalize_candles": "marketlake.core.schemas",
    "normalize_trades": "marketlake.core.schemas",
    "validate_category": "marketlake.core.symbols",
    "validate_exchange": "marketlake.core.symbols",
    "validate_symbol": "marketlake.core.symbols",
    "TIMEFRAMES": "marketlake.core.timeframes",
    "Timeframe": "marketlake.core.timeframes",
    "parse_timeframe": "marketlake.core.timeframes",
    "parse_timeframes": "marketlake.core.timeframes",
    "to_ms": "marketlake.core.timeutil",
}

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


def __getattr__(name: str) -> Any:
    """Import a public name on first access and cache it (PEP 562).

    Raises:
        AttributeError: ``name`` is not part of this package's API.
    """
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'marketlake.core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """Public names, imported or not."""
    return sorted(set(globals()) | set(__all__))
