"""Data makers and brute-force references for the DataFeeder tests.

The references are written independently of marketlake's timeframe arithmetic: fixed timeframes
close ``duration`` after they open, ``M`` candles close at the first instant of the next calendar
month, computed with ``datetime``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import numpy as np
import polars as pl

from marketlake.settings import Settings
from marketlake.store import Lake

UTC = dt.UTC
MINUTE = 60_000
#: Durations of the fixed timeframes the tests use, in ms (W opens on Mondays).
FIXED_MS = {"1": MINUTE, "5": 5 * MINUTE, "15": 15 * MINUTE, "60": 60 * MINUTE, "D": 1440 * MINUTE,
            "W": 7 * 1440 * MINUTE}
_MONDAY_1970_01_05 = 4 * 1440 * MINUTE


def ms(text: str) -> int:
    """Epoch ms of an ISO time written in UTC."""
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def month_start(ts_ms: int, months_ahead: int = 0) -> int:
    d = dt.datetime.fromtimestamp(ts_ms / 1000, UTC)
    k = d.year * 12 + d.month - 1 + months_ahead
    return int(dt.datetime(k // 12, k % 12 + 1, 1, tzinfo=UTC).timestamp() * 1000)


def ref_close(tf: str, open_ms: int) -> int:
    """When a candle of ``tf`` opening at ``open_ms`` closes (reference implementation)."""
    if tf == "M":
        return month_start(open_ms, 1)
    return open_ms + FIXED_MS[tf]


def ref_latest_closed(tf: str, opens: Iterable[int], t: int) -> int | None:
    """Open time of the latest candle of ``opens`` closed at ``t``, by looking at every candle."""
    closed = [o for o in opens if ref_close(tf, o) <= t]
    return max(closed) if closed else None


def aligned_opens(tf: str, anchor: int, before: int, after: int) -> list[int]:
    """``before`` candle opens of ``tf`` before ``anchor`` and ``after`` from it (``anchor`` is
    floored to the timeframe first)."""
    if tf == "M":
        first = month_start(anchor)
        return [month_start(first, k) for k in range(-before, after)]
    d = FIXED_MS[tf]
    off = _MONDAY_1970_01_05 if tf == "W" else 0
    first = (anchor - off) // d * d + off
    return [first + k * d for k in range(-before, after)]


def candle_frame(opens: list[int], seed: int) -> pl.DataFrame:
    """Consistent random candles at the given open times (nulls in ``trades`` now and then)."""
    rng = np.random.default_rng(seed)
    n = len(opens)
    close = np.round(100 + np.cumsum(rng.normal(0, 1, n)), 2)
    open_ = np.concatenate((close[:1], close[:-1]))
    high = np.round(np.maximum(open_, close) + rng.random(n), 2)
    low = np.round(np.minimum(open_, close) - rng.random(n), 2)
    volume = np.round(rng.gamma(1.0, 2.0, n), 3)
    trades = pl.Series("trades", rng.integers(1, 500, n), dtype=pl.Int64)
    return pl.DataFrame(
        {
            "ts": np.asarray(opens, dtype=np.int64),
            "open": open_, "high": high, "low": low, "close": close, "volume": volume,
            "turnover": np.round(volume * close, 4),
        }
    ).with_columns(pl.when(pl.Series(rng.random(n) < 0.2)).then(None).otherwise(trades).alias("trades"))


def drop_some(opens: list[int], seed: int, p: float) -> list[int]:
    """``opens`` with a fraction ``p`` removed at random, plus one block gap when ``p > 0``."""
    if p <= 0 or len(opens) < 3:
        return opens
    rng = np.random.default_rng(seed)
    keep = rng.random(len(opens)) >= p
    a = int(rng.integers(0, len(opens)))
    keep[a : a + int(rng.integers(1, max(2, len(opens) // 3)))] = False
    kept = [o for o, k in zip(opens, keep) if k]
    return kept or opens[:1]


def new_lake(root) -> Lake:
    """A lake with settings independent of the environment."""
    return Lake(root, settings=Settings.load(environ={}))
