"""Small realistic data makers for tests (prices on a tick grid, volumes on a lot step)."""

from __future__ import annotations

import numpy as np
import polars as pl

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
MINUTE = 60_000


def candles(n: int, *, start: int = T0, step: int = MINUTE, seed: int = 0, tick: float = 0.1) -> pl.DataFrame:
    """``n`` consecutive candles from ``start`` with consistent OHLC."""
    rng = np.random.default_rng(seed)
    close = np.round((30_000 + np.cumsum(rng.normal(0, 15, n))) / tick) * tick
    open_ = np.concatenate((close[:1], close[:-1]))
    wick = np.round(np.abs(rng.normal(0, 8, (2, n))) / tick) * tick
    high = np.maximum(open_, close) + wick[0]
    low = np.minimum(open_, close) - wick[1]
    volume = np.round(rng.gamma(0.8, 2.0, n), 3)
    return pl.DataFrame(
        {
            "ts": start + step * np.arange(n, dtype=np.int64),
            "open": np.round(open_, 1),
            "high": np.round(high, 1),
            "low": np.round(low, 1),
            "close": np.round(close, 1),
            "volume": volume,
            "turnover": np.round(volume * close, 4),
        }
    )


def stored(frame: pl.DataFrame) -> pl.DataFrame:
    """The columns a lake read returns for ``frame`` (for equality checks)."""
    return frame.select(
        pl.col("ts").cast(pl.Datetime("ms", "UTC")) if frame.schema["ts"] != pl.Int64
        else pl.from_epoch("ts", time_unit="ms").dt.replace_time_zone("UTC"),
        "open", "high", "low", "close", "volume", "turnover",
    )
