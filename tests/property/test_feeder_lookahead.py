"""No lookahead: for random series and random times, the feeder returns exactly the latest candle
that had closed, never a later one — compared with a brute-force reference over every candle.

Series are random in timeframe mix (1m to M), position (around month and year boundaries, where
partitions change) and gaps (random holes plus a block gap, so a lookup must walk back across
partitions). Times are random, plus exact open and close instants and their neighbours, where an
off-by-one would show.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marketlake.feeder import DataFeeder
from tests.feeder_support import (
    aligned_opens,
    candle_frame,
    drop_some,
    ms,
    new_lake,
    ref_close,
    ref_latest_closed,
)

TIMEFRAMES = ["1", "5", "60", "D", "W", "M"]  # shortest first
MAX_SIDE = {"1": 150, "5": 120, "60": 100, "D": 50, "W": 20, "M": 8}
ANCHORS = [ms("2024-01-01 00:00"), ms("2024-03-01 00:00"), ms("2023-12-31 23:07"), ms("2024-02-29 12:00")]
SYMBOL = "BTCUSDT"
DAY = 86_400_000
VALUE_COLUMNS = ("open", "high", "low", "close", "volume", "turnover", "trades")

Market = dict[str, pl.DataFrame]  # timeframe -> the candles written


@st.composite
def markets(draw: st.DrawFn) -> Market:
    anchor = draw(st.sampled_from(ANCHORS))
    tfs = draw(st.lists(st.sampled_from(TIMEFRAMES), min_size=1, max_size=4, unique=True))
    out: Market = {}
    for tf in sorted(tfs, key=TIMEFRAMES.index):
        before = draw(st.integers(0, MAX_SIDE[tf]))
        after = draw(st.integers(0 if before else 1, MAX_SIDE[tf]))
        seed = draw(st.integers(0, 2**16))
        opens = drop_some(aligned_opens(tf, anchor, before, after), seed, draw(st.sampled_from([0.0, 0.2, 0.6])))
        out[tf] = candle_frame(opens, seed)
    return out


def opens_of(frame: pl.DataFrame) -> list[int]:
    return frame.get_column("ts").to_list()


def times(draw: st.DrawFn, market: Market, n: int) -> list[int]:
    """Random times over the market's span (and beyond it), half of them at candle boundaries."""
    edges = sorted({e for tf, f in market.items() for o in opens_of(f) for e in (o, ref_close(tf, o))})
    lo, hi = edges[0] - 40 * DAY, edges[-1] + 40 * DAY
    anywhere = st.integers(lo, hi)
    at_edge = st.builds(lambda e, d: e + d, st.sampled_from(edges), st.sampled_from([-1, 0, 1]))
    return draw(st.lists(st.one_of(anywhere, at_edge), min_size=n, max_size=n))


def write(market: Market) -> tuple[Path, DataFeeder]:
    tmp = Path(tempfile.mkdtemp(prefix="ml-feeder-"))
    lake = new_lake(tmp / "lake")
    for tf, frame in market.items():
        lake.write_candles(frame, symbol=SYMBOL, timeframe=tf)
    return tmp, DataFeeder(lake)


def check_entry(market: Market, tf: str, t: int, got: dict | None) -> None:
    """``got`` is the latest candle of ``tf`` closed at ``t``, with its stored values."""
    expected = ref_latest_closed(tf, opens_of(market[tf]), t)
    if expected is None:
        assert got is None, f"{tf} at {t}: a candle that had not closed: {got}"
        return
    assert got is not None, f"{tf} at {t}: missed the candle opened at {expected}"
    assert ref_close(tf, got["timestamp"]) <= t, f"{tf} at {t}: lookahead, candle closes later"
    assert got["close_time_ms"] == ref_close(tf, got["timestamp"])
    assert got["timestamp"] == got["timestamp_ms"] == expected
    row = market[tf].filter(pl.col("ts") == expected).row(0, named=True)
    assert {c: got[c] for c in VALUE_COLUMNS} == {c: row[c] for c in VALUE_COLUMNS}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(market=markets(), data=st.data())
def test_multi_timeframe_data_is_the_latest_closed_candle_of_each_timeframe(market: Market, data: st.DataObject) -> None:
    tmp, feeder = write(market)
    try:
        tfs = list(market)
        ts = times(data.draw, market, 25)
        # A second feeder answers from a randomly placed loaded window (falling back to the lake
        # outside it): both paths must give the reference answer.
        loaded = DataFeeder(feeder.lake)
        a, b = sorted(data.draw(st.lists(st.sampled_from(ts), min_size=2, max_size=2)))
        loaded.load_data([SYMBOL], tfs, start_date=a, end_date=b)
        for t in ts:
            for f in (feeder, loaded):
                got = f.get_multi_timeframe_data(SYMBOL, tfs, t)
                if got is None:
                    assert all(ref_latest_closed(tf, opens_of(market[tf]), t) is None for tf in tfs)
                    continue
                for tf in tfs:
                    check_entry(market, tf, t, got.get(tf))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(market=markets(), data=st.data())
def test_aligned_rows_carry_the_latest_candle_closed_at_the_base_close(market: Market, data: st.DataObject) -> None:
    tmp, feeder = write(market)
    try:
        base, *others = list(market)
        # Bounds inside the base series mostly (so rows remain), sometimes open or unaligned.
        b_opens = opens_of(market[base])
        bound = st.one_of(
            st.none(), st.sampled_from(b_opens), st.integers(b_opens[0] - DAY, b_opens[-1] + DAY)
        )
        start, end = data.draw(bound), data.draw(bound)
        if start is not None and end is not None and end < start:
            start, end = end, start
        out = feeder.aligned(SYMBOL, base, others, start, end).collect()
        base_opens = [
            o for o in opens_of(market[base]) if (start is None or o >= start) and (end is None or o < end)
        ]
        assert out.get_column("ts").dt.epoch("ms").to_list() == base_opens
        for row in out.iter_rows(named=True):
            b_open = int(row["ts"].timestamp() * 1000)
            t = ref_close(base, b_open)
            assert int(row["close_time"].timestamp() * 1000) == t
            for tf in others:
                expected = ref_latest_closed(tf, opens_of(market[tf]), t)
                got = row[f"ts_{tf}"]
                if expected is None:
                    assert got is None, f"{tf} for base {b_open}: a candle that had not closed"
                    continue
                got_ms = int(got.timestamp() * 1000)
                assert ref_close(tf, got_ms) <= t, f"{tf} for base {b_open}: lookahead"
                assert got_ms == expected
                stored = market[tf].filter(pl.col("ts") == expected).row(0, named=True)
                assert row[f"close_{tf}"] == stored["close"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
