"""The shapes the feeder's arguments may take, and turning them into lists."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from marketlake.core.timeframes import Timeframe
from marketlake.errors import ConfigError, InvalidSymbolError, InvalidTimeframeError
from marketlake.store.layout import CANDLES

__all__ = ["SymbolsArg", "TimeframeArg", "TimeframesArg", "reject_csv_dir", "symbol_items", "timeframe_items"]

#: Symbols: a list, or one string (comma-separated for several).
SymbolsArg = str | Sequence[str]
#: One timeframe: a Bybit name or alias, minutes as int, or a Timeframe.
TimeframeArg = str | int | Timeframe
#: Timeframes: a list of them, or one (a string may be comma-separated).
TimeframesArg = TimeframeArg | Sequence[TimeframeArg]


def symbol_items(values: SymbolsArg) -> list[str]:
    """The symbols of ``values`` as a list (not validated yet)."""
    if isinstance(values, str):
        return values.split(",")
    if not isinstance(values, Sequence):
        raise InvalidSymbolError(f"symbols must be a string or a list of strings, got {type(values).__name__}")
    return list(values)


def timeframe_items(values: TimeframesArg) -> list[TimeframeArg]:
    """The timeframes of ``values`` as a list (not parsed yet), blanks dropped."""
    if isinstance(values, str):
        return [v for v in values.split(",") if v.strip()]
    if isinstance(values, (int, Timeframe)) and not isinstance(values, bool):
        return [values]
    if not isinstance(values, Sequence):
        raise InvalidTimeframeError(f"timeframes must be a string or a list, got {type(values).__name__}")
    return list(values)


def reject_csv_dir(path: Path) -> None:
    """A directory of the old system's CSV files is not a lake: say how to import it."""
    if path.is_dir() and not (path / CANDLES).exists() and any(path.glob("*_*.csv")):
        raise ConfigError(
            f"{path} holds CSV files of the old system, not a lake; import them first: "
            f"marketlake import-csv {path} --lake lake, then DataFeeder('lake')"
        )
