"""Point lookups equal brute force: ``get_data_at_timestamp`` is the candle opening exactly at the
time (or None), ``get_latest_data(n)`` the last ``n`` candles — from the lake and from loaded data.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from pathlib import Path

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marketlake.feeder import DataFeeder
from tests.feeder_support import aligned_opens, candle_frame, drop_some, ms, new_lake

MAX_SIDE = {"1": 200, "5": 150, "60": 100, "D": 60, "W": 20, "M": 10}
ANCHORS = [ms("2024-01-01 00:00"), ms("2024-03-01 00:00"), ms("2023-12-31 23:07")]
SYMBOL = "ETHUSDT"
VALUES = ("open", "high", "low", "close", "volume", "turnover", "trades", "buy_volume", "filled")


@st.composite
def series(draw: st.DrawFn) -> tuple[str, pl.DataFrame]:
    tf = draw(st.sampled_from(list(MAX_SIDE)))
    before = draw(st.integers(0, MAX_SIDE[tf]))
    after = draw(st.integers(0 if before else 1, MAX_SIDE[tf]))
    seed = draw(st.integers(0, 2**16))
    opens = drop_some(aligned_opens(tf, draw(st.sampled_from(ANCHORS)), before, after), seed,
                      draw(st.sampled_from([0.0, 0.3])))
    return tf, candle_frame(opens, seed)


def expected_dict(frame: pl.DataFrame, t: int) -> dict | None:
    """Brute force: scan every row for the one opening at ``t``."""
    for row in frame.iter_rows(named=True):
        if row["ts"] == t:
            return row
    return None


def same_candle(got: dict, row: dict) -> bool:
    full = {**row, "buy_volume": None, "filled": False}  # what the lake stores for omitted columns
    return got["timestamp"] == got["timestamp_ms"] == row["ts"] and all(got[c] == full[c] for c in VALUES)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(s=series(), data=st.data())
def test_point_lookups_equal_brute_force_from_lake_and_from_loaded_data(
    s: tuple[str, pl.DataFrame], data: st.DataObject
) -> None:
    tf, frame = s
    tmp = Path(tempfile.mkdtemp(prefix="ml-lookup-"))
    try:
        lake = new_lake(tmp / "lake")
        lake.write_candles(frame, symbol=SYMBOL, timeframe=tf)
        opens = frame.get_column("ts").to_list()
        at_open = st.builds(lambda o, d: o + d, st.sampled_from(opens), st.sampled_from([0, 0, -1, 1, 30_000]))
        ts = data.draw(st.lists(st.one_of(at_open, st.integers(opens[0] - 10**9, opens[-1] + 10**9)),
                                min_size=20, max_size=20))
        from_lake = DataFeeder(lake)
        loaded = DataFeeder(lake)
        a, b = sorted(data.draw(st.lists(st.sampled_from(ts), min_size=2, max_size=2)))
        loaded.load_data([SYMBOL], [tf], a, b)  # end inclusive, as in the old feeder
        for t in ts:
            expected = expected_dict(frame, t)
            # The time may be passed as int ms, an aware datetime or an ISO string.
            as_dt = dt.datetime.fromtimestamp(t / 1000, dt.UTC)
            for f, when in ((from_lake, t), (loaded, t), (from_lake, as_dt), (loaded, as_dt.isoformat())):
                got = f.get_data_at_timestamp(SYMBOL, tf, when)
                if expected is None:
                    assert got is None
                else:
                    assert got is not None and same_candle(got, expected)

        n = data.draw(st.integers(1, len(opens) + 3))
        latest = from_lake.get_latest_data(SYMBOL, tf, n)
        tail = list(frame.tail(n).iter_rows(named=True))
        assert latest is not None and len(latest) == len(tail)
        assert all(same_candle(g, r) for g, r in zip(latest, tail, strict=True))
        # Loaded: the latest of the loaded window [a, b] (both ends included).
        window = [r for r in frame.iter_rows(named=True) if a <= r["ts"] <= b][-n:]
        latest = loaded.get_latest_data(SYMBOL, tf, n)
        if not window:
            assert latest is None
        else:
            assert latest is not None and all(same_candle(g, r) for g, r in zip(latest, window, strict=True))
            assert len(latest) == len(window)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
