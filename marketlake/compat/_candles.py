"""The old candle dictionary, to and from the lake's frames.

``{'timestamp': int ms, 'datetime': 'YYYY-MM-DD HH:MM:SS' (UTC), 'open', 'high', 'low', 'close',
'volume': float, 'turnover': float (when known), 'confirm': bool (WebSocket only)}``
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Final

import polars as pl

from marketlake.errors import DataValidationError

__all__ = ["candle_dicts", "frame_from_dicts"]

_PRICES: Final = ("open", "high", "low", "close", "volume")
# Epoch ms of 1990-01-01 and 2200-01-01: anything outside is seconds or microseconds by mistake.
_MS_LO: Final = 631_152_000_000
_MS_HI: Final = 7_258_118_400_000


def candle_dicts(frame: pl.DataFrame) -> list[dict[str, Any]]:
    """Rows of a candle frame (``ts`` Datetime or int ms) as old candle dicts, in frame order."""
    if frame.is_empty():
        return []
    ts = pl.col("ts") if frame.schema["ts"] != pl.Int64 else pl.from_epoch("ts", time_unit="ms")
    cols = [
        ts.dt.epoch("ms").alias("timestamp"),
        ts.dt.strftime("%Y-%m-%d %H:%M:%S").alias("datetime"),
        *(pl.col(c).cast(pl.Float64) for c in _PRICES),
    ]
    has_turnover = "turnover" in frame.columns and frame.get_column("turnover").null_count() < frame.height
    if has_turnover:
        cols.append(pl.col("turnover").cast(pl.Float64))
    if "confirm" in frame.columns:
        cols.append(pl.col("confirm"))
    return frame.select(cols).to_dicts()


def _number(row: Mapping[str, Any], key: str, i: int) -> float:
    value = row.get(key)
    if isinstance(value, bool) or value is None:
        raise DataValidationError(f"candle {i}: '{key}' is missing")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataValidationError(f"candle {i}: '{key}' = {value!r} is not a number") from None


def frame_from_dicts(rows: Iterable[Mapping[str, Any]]) -> pl.DataFrame:
    """Old candle dicts → a frame (``ts`` int ms, OHLCV, ``turnover`` when any row has it).

    ``timestamp`` (epoch ms) is required; ``datetime`` is ignored (derived from ``timestamp``).

    Raises:
        DataValidationError: a row that is not a dict, lacks a field, or holds a non-number or a
            timestamp that is not epoch milliseconds.
    """
    ts: list[int] = []
    cols: dict[str, list[float | None]] = {c: [] for c in (*_PRICES, "turnover")}
    any_turnover = False
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise DataValidationError(f"candle {i}: expected a dict, got {type(row).__name__}")
        t = _number(row, "timestamp", i)
        if not math.isfinite(t) or t != int(t) or not _MS_LO <= t <= _MS_HI:
            raise DataValidationError(
                f"candle {i}: timestamp {row.get('timestamp')!r} is not epoch milliseconds between 1990 and 2200"
            )
        ts.append(int(t))
        for c in _PRICES:
            cols[c].append(_number(row, c, i))
        tv = row.get("turnover")
        any_turnover = any_turnover or tv is not None
        cols["turnover"].append(None if tv is None else _number(row, "turnover", i))
    data: dict[str, Any] = {"ts": pl.Series(ts, dtype=pl.Int64)}
    for c in _PRICES:
        data[c] = pl.Series(cols[c], dtype=pl.Float64)
    if any_turnover:
        data["turnover"] = pl.Series(cols["turnover"], dtype=pl.Float64)
    return pl.DataFrame(data)
