"""No lookahead for funding and price candles: for random funding histories (interval changes,
missed settlements) and random mark candles (gaps, partition boundaries), at random times the
feeder returns exactly what a brute-force scan of every row says was known then:

* ``funding_rate_at(t)``: the rate of the last settlement with ``ts <= t``;
* ``mark_price_at(t, tf)``: the close of the last mark candle with ``open + duration <= t``;
* ``aligned(..., funding=True, mark=tf)``: per base row, both of the above at the row's close.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marketlake.feeder import DataFeeder
from tests.feeder_support import aligned_opens, candle_frame, drop_some, ms, new_lake, ref_close, ref_latest_closed

SYMBOL = "BTCUSDT"
H = 3_600_000
ANCHORS = [ms("2024-01-01 00:00"), ms("2023-12-31 16:00"), ms("2024-03-01 00:00")]


@st.composite
def funding_rows(draw: st.DrawFn) -> pl.DataFrame:
    """Settlements on the grid of an interval that changes now and then, some missing."""
    t = draw(st.sampled_from(ANCHORS)) - draw(st.integers(0, 30)) * 8 * H
    rows: list[tuple[int, float, int]] = []
    for _ in range(draw(st.integers(1, 5))):
        minutes = draw(st.sampled_from([60, 240, 480]))
        step = minutes * 60_000
        t = -(-t // step) * step
        for _ in range(draw(st.integers(1, 25))):
            t += step
            if draw(st.integers(0, 9)) == 0:
                continue  # a missed settlement
            rows.append((t, draw(st.floats(-0.003, 0.003, allow_nan=False)), minutes))
    if not rows:
        rows.append((t, 0.0001, 480))
    return pl.DataFrame(rows, schema={"ts": pl.Int64, "rate": pl.Float64, "interval_minutes": pl.Int32}, orient="row")


@st.composite
def mark_series(draw: st.DrawFn) -> tuple[str, pl.DataFrame]:
    tf = draw(st.sampled_from(["1", "5", "60"]))
    opens = aligned_opens(tf, draw(st.sampled_from(ANCHORS)), draw(st.integers(0, 120)), draw(st.integers(1, 120)))
    seed = draw(st.integers(0, 2**16))
    opens = drop_some(opens, seed, draw(st.sampled_from([0.0, 0.3])))
    frame = candle_frame(opens, seed).select("ts", "open", "high", "low", "close")
    return tf, frame


def ref_rate(funding: pl.DataFrame, t: int) -> float | None:
    known = [(ts, r) for ts, r in zip(funding["ts"].to_list(), funding["rate"].to_list(), strict=True) if ts <= t]
    return max(known)[1] if known else None


def ref_mark(tf: str, marks: pl.DataFrame, t: int) -> float | None:
    o = ref_latest_closed(tf, marks["ts"].to_list(), t)
    return None if o is None else marks.filter(pl.col("ts") == o)["close"][0]


def make(funding: pl.DataFrame, tf: str, marks: pl.DataFrame, base: pl.DataFrame | None = None) -> tuple[Path, DataFeeder]:
    tmp = Path(tempfile.mkdtemp(prefix="ml-perp-"))
    lake = new_lake(tmp / "lake")
    lake.write_funding(funding, symbol=SYMBOL)
    lake.write_price_candles("mark", marks, symbol=SYMBOL, timeframe=tf)
    if base is not None:
        lake.write_candles(base, symbol=SYMBOL, timeframe="60")
    return tmp, DataFeeder(lake)


def times(draw: st.DrawFn, edges: list[int], n: int) -> list[int]:
    lo, hi = min(edges) - 10 * H, max(edges) + 10 * H
    at_edge = st.builds(lambda e, d: e + d, st.sampled_from(edges), st.sampled_from([-1, 0, 1]))
    return draw(st.lists(st.one_of(st.integers(lo, hi), at_edge), min_size=n, max_size=n))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(funding=funding_rows(), mark=mark_series(), data=st.data())
def test_rate_and_mark_price_at_t_are_what_was_known_at_t(funding, mark, data) -> None:
    tf, marks = mark
    tmp, feeder = make(funding, tf, marks)
    try:
        edges = funding["ts"].to_list() + [ref_close(tf, o) for o in marks["ts"].to_list()]
        for t in times(data.draw, edges, 30):
            assert feeder.funding_rate_at(SYMBOL, t) == ref_rate(funding, t), f"funding at {t}"
            assert feeder.mark_price_at(SYMBOL, t, tf) == ref_mark(tf, marks, t), f"mark at {t}"
            got = feeder.price_candle_at("mark", SYMBOL, t, tf)
            if got is not None:
                assert got["close_time_ms"] <= t  # never a candle still forming
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(funding=funding_rows(), mark=mark_series(), data=st.data())
def test_aligned_rows_carry_the_funding_and_mark_known_at_the_base_close(funding, mark, data) -> None:
    tf, marks = mark
    anchor = int(np.median(funding["ts"].to_numpy()))
    base_opens = drop_some(aligned_opens("60", anchor, data.draw(st.integers(0, 60)), data.draw(st.integers(1, 60))), 7, 0.2)
    base = candle_frame(base_opens, 3)
    tmp, feeder = make(funding, tf, marks, base)
    try:
        bound = st.one_of(st.none(), st.sampled_from(base_opens), st.integers(base_opens[0] - 5 * H, base_opens[-1] + 5 * H))
        start, end = data.draw(bound), data.draw(bound)
        if start is not None and end is not None and end < start:
            start, end = end, start
        out = feeder.aligned(SYMBOL, "60", [], start, end, funding=True, mark=tf).collect()
        want = [o for o in base_opens if (start is None or o >= start) and (end is None or o < end)]
        assert out["ts"].dt.epoch("ms").to_list() == want
        for row in out.iter_rows(named=True):
            o = int(row["ts"].timestamp() * 1000)
            close = o + H
            assert row["funding_rate"] == ref_rate(funding, close)
            settled = [ts for ts in funding["ts"].to_list() if ts <= close]
            f_ts = None if row["funding_ts"] is None else int(row["funding_ts"].timestamp() * 1000)
            assert f_ts == (max(settled) if settled else None)
            assert row["funding_settled"] == (f_ts is not None and o < f_ts <= close)
            assert row["close_mark"] == ref_mark(tf, marks, close)
            if row["ts_mark"] is not None:
                assert ref_close(tf, int(row["ts_mark"].timestamp() * 1000)) <= close
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
