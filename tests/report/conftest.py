"""A lake with known gaps: six UTC days, four series, each day a known cell state."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from marketlake.settings import Settings
from marketlake.store import Lake
from marketlake.store.layout import SeriesId
from marketlake.store.ledger import Status

D0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
DAY = 86_400_000
HOUR = 3_600_000
SECOND = 1_000
DAYS = [f"2024-01-0{i + 1}" for i in range(6)]

#: Expected cell states per row label, day by day (the rows in the order the grid gives them).
EXPECTED: dict[str, list[str]] = {
    # 1s candles built from trades: explained by the trades' ledger and where trades are.
    "bybit/linear/BTCUSDT/1s": ["empty", "missing", "empty", "failed", "missing", "missing"],
    "bybit/linear/BTCUSDT/60": ["present", "empty", "failed", "missing", "filled", "missing"],
    "bybit/linear/BTCUSDT/trades": ["present", "present", "empty", "failed", "missing", "missing"],
    "bybit/linear/ETHUSDT/60": ["empty", "empty", "present", "present", "present", "present"],
}


def candles(opens: list[int], *, filled: bool = False) -> pl.DataFrame:
    """Flat candles opening at ``opens``."""
    n = len(opens)
    return pl.DataFrame({
        "ts": opens, "open": [100.0] * n, "high": [101.0] * n, "low": [99.0] * n,
        "close": [100.5] * n, "volume": [1.0] * n, "filled": [filled] * n,
    })


def hours(day: int, first: int = 0, last: int = 24) -> list[int]:
    """Open times of the hourly candles ``first..last-1`` of day ``day``."""
    return [D0 + day * DAY + h * HOUR for h in range(first, last)]


def build_gappy_lake(root: Path) -> Lake:
    """Write the lake whose cells :data:`EXPECTED` describes."""
    lake = Lake(root, settings=Settings.load(environ={}))
    led = lake.ledger
    btc = SeriesId.of("candles", exchange="bybit", category="linear", symbol="BTCUSDT", timeframe="60")
    eth = SeriesId.of("candles", exchange="bybit", category="linear", symbol="ETHUSDT", timeframe="60")
    trades = SeriesId.of("trades", exchange="bybit", category="linear", symbol="BTCUSDT")

    # BTCUSDT 1h: day 0 whole; day 1 half, then an outage; day 2 a failed fetch; day 3 nothing
    # at all; day 4 flat fills; day 5 whole but for one candle the ledger claims (lost since).
    real = hours(0) + hours(1, 0, 12) + [t for t in hours(5) if t != D0 + 5 * DAY + 5 * HOUR]
    lake.write_candles(candles(real), symbol="BTCUSDT", timeframe="60")
    lake.write_candles(candles(hours(4), filled=True), symbol="BTCUSDT", timeframe="60")
    led.record(btc, D0, D0 + DAY + 12 * HOUR, Status.PRESENT)
    led.record(btc, D0 + DAY + 12 * HOUR, D0 + 2 * DAY, Status.EMPTY, detail="outage")
    led.record(btc, D0 + 2 * DAY, D0 + 3 * DAY, Status.FAILED)
    led.record(btc, D0 + 5 * DAY, D0 + 6 * DAY, Status.PRESENT)

    # ETHUSDT 1h: listed on day 2 (before: verified empty), complete since.
    lake.write_candles(candles(hours(2) + hours(3) + hours(4) + hours(5)), symbol="ETHUSDT", timeframe="60")
    led.record(eth, D0, D0 + 2 * DAY, Status.EMPTY, detail="before listing")
    led.record(eth, D0 + 2 * DAY, D0 + 6 * DAY, Status.PRESENT)

    # BTCUSDT trades: days 0-1 stored, day 2 published empty, day 3 lost, days 4-5 never fetched.
    # Day 0 has three trades and their 1s candles; day 1 has a trade whose candle was never built.
    day0 = [D0 + 10 * SECOND + 250, D0 + 10 * SECOND + 900, D0 + HOUR + 5]
    day1 = [D0 + DAY + 7 * HOUR]
    lake.write_trades(pl.DataFrame({
        "ts": day0 + day1, "price": [100.0] * 4, "size": [1.0] * 4, "side": ["Buy"] * 4,
        "trade_id": [f"t{i}" for i in range(4)],
    }), symbol="BTCUSDT")
    led.record(trades, D0, D0 + 2 * DAY, Status.PRESENT)
    led.record(trades, D0 + 2 * DAY, D0 + 3 * DAY, Status.EMPTY)
    led.record(trades, D0 + 3 * DAY, D0 + 4 * DAY, Status.FAILED)
    lake.write_candles(candles([D0 + 10 * SECOND, D0 + HOUR]), symbol="BTCUSDT", timeframe="1s")
    return lake


@pytest.fixture
def gappy_lake(tmp_path: Path) -> Lake:
    """The lake of :func:`build_gappy_lake` in a temporary directory."""
    return build_gappy_lake(tmp_path / "lake")
