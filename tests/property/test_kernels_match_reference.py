"""Every numba kernel gives the same answers as its plain-Python twin (marketlake.core.reference)."""

from __future__ import annotations

import datetime as dt
import math

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marketlake import candles_from_trades, check_candles, resample
from marketlake.core.reference import (
    ref_candles_from_trades,
    ref_check,
    ref_fill,
    ref_resample,
)
from marketlake.core.timeframes import parse_timeframe
from tests.property._kernel_compare import assert_rows_match, frame_rows

CANDLE_KEYS = ("ts", "open", "high", "low", "close", "volume", "turnover", "trades", "buy_volume")
SETTINGS = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _ms(*args: int) -> int:
    return int(dt.datetime(*args, tzinfo=dt.UTC).timestamp()) * 1000


# Calendar edges: month ends of all lengths, a leap day, a year end, a Sunday→Monday midnight.
EDGES = [
    _ms(2024, 1, 31, 23, 59), _ms(2024, 2, 29, 23, 59), _ms(2023, 2, 28, 23, 59),
    _ms(2024, 4, 30, 23, 59), _ms(2023, 12, 31, 23, 59), _ms(2024, 3, 3, 23, 59),
    _ms(2024, 3, 4, 0, 0), _ms(2024, 6, 15, 12, 0),
]
TIMEFRAMES = ["1s", "5s", "15s", "1", "3", "5", "15", "60", "240", "720", "D", "W", "M"]

prices = st.one_of(
    st.integers(1, 2_000_000).map(lambda k: k * 0.01),  # on a 0.01 tick grid
    st.just(math.nan),
)
sizes = st.one_of(st.integers(1, 50_000).map(lambda k: k * 0.001), st.just(math.nan))


@st.composite
def trade_sets(draw: st.DrawFn) -> tuple[list[int], list[float], list[float], list[str] | None, str]:
    tf = draw(st.sampled_from(TIMEFRAMES))
    edge = draw(st.sampled_from(EDGES))
    span = 40 * 86_400_000 if tf in ("W", "M") else 4 * parse_timeframe(tf).duration_ms
    # A small pool of timestamps makes equal timestamps common.
    pool = draw(st.lists(st.integers(-span, span), min_size=1, max_size=12))
    n = draw(st.integers(0, 40))
    ts = [edge + draw(st.sampled_from(pool)) for _ in range(n)]
    if draw(st.booleans()):
        ts.sort()
    price = [draw(prices) for _ in range(n)]
    size = [draw(sizes) for _ in range(n)]
    side = [draw(st.sampled_from(["Buy", "Sell"])) for _ in range(n)] if draw(st.booleans()) else None
    return ts, price, size, side, tf


def _trades_frame(ts: list[int], price: list[float], size: list[float], side: list[str] | None, unit: str) -> pl.DataFrame:
    cols: dict[str, pl.Series] = {
        "ts": pl.Series(ts, dtype=pl.Int64),
        "price": pl.Series(price, dtype=pl.Float64),
        "size": pl.Series(size, dtype=pl.Float64),
    }
    if unit != "int":
        cols["ts"] = cols["ts"].cast(pl.Datetime("ms", "UTC")).dt.cast_time_unit(unit)  # type: ignore[arg-type]
    if side is not None:
        cols["side"] = pl.Series(side, dtype=pl.String)
    return pl.DataFrame(cols)


@SETTINGS
@given(trade_sets(), st.sampled_from(["int", "ms", "us", "ns"]), st.integers(1, 3), st.booleans())
def test_candles_from_trades_matches_reference(trades, unit, threads, fill) -> None:  # type: ignore[no-untyped-def]
    ts, price, size, side, tf_name = trades
    tf = parse_timeframe(tf_name)
    got = candles_from_trades(_trades_frame(ts, price, size, side, unit), tf, fill=fill, threads=threads)
    want = ref_candles_from_trades(ts, price, size, side, tf)
    if fill:
        want = ref_fill(want, tf)
    assert got.columns == list(CANDLE_KEYS)
    assert_rows_match(frame_rows(got), want, CANDLE_KEYS)


@st.composite
def candle_sets(draw: st.DrawFn) -> tuple[list[dict], str]:  # type: ignore[type-arg]
    target = draw(st.sampled_from(["3", "5", "15", "60", "240", "D", "W", "M"]))
    edge = draw(st.sampled_from(EDGES))
    span_min = 40 * 1440 if target in ("W", "M") else 3 * int(parse_timeframe(target).minutes)
    offsets = draw(st.lists(st.integers(-span_min, span_min), max_size=40))
    rows = []
    for k in offsets:
        o, c = draw(prices), draw(prices)
        rows.append(
            {
                "ts": edge - edge % 60_000 + k * 60_000, "open": o, "close": c,
                "high": max(o, c) + 1.0, "low": min(o, c) - 1.0 if not math.isnan(o) else o,
                "volume": draw(sizes),
                "turnover": draw(st.one_of(st.none(), sizes)),
                "trades": draw(st.one_of(st.none(), st.integers(0, 1000))),
                "buy_volume": draw(st.one_of(st.none(), sizes)),
            }
        )
    return rows, target


@SETTINGS
@given(candle_sets())
def test_resample_matches_reference(candles) -> None:  # type: ignore[no-untyped-def]
    rows, target = candles
    tf = parse_timeframe(target)
    schema = {"ts": pl.Int64, "open": pl.Float64, "high": pl.Float64, "low": pl.Float64,
              "close": pl.Float64, "volume": pl.Float64, "turnover": pl.Float64,
              "trades": pl.Int64, "buy_volume": pl.Float64}
    got = resample(pl.DataFrame(rows, schema=schema), tf)
    assert_rows_match(frame_rows(got), ref_resample(rows, tf), CANDLE_KEYS)


@st.composite
def checked_series(draw: st.DrawFn) -> tuple[list[dict], str]:  # type: ignore[type-arg]
    tf_name = draw(st.sampled_from(["1", "5", "60", "D", "W", "M"]))
    tf = parse_timeframe(tf_name)
    edge = draw(st.sampled_from(EDGES))
    step = 86_400_000 if tf.kind == "month" else tf.duration_ms
    start = tf.floor(edge)
    n = draw(st.integers(0, 40))
    rows = []
    t = start
    for _ in range(n):
        t += draw(st.sampled_from([step, step, step, 0, 2 * step, 5 * step, -step, step // 2 or 1]))
        if tf.kind == "month" and draw(st.booleans()):
            t = tf.next_open(tf.floor(t))  # month steps of real calendar length
        values = draw(
            st.tuples(*(st.sampled_from([100.0, 101.0, 99.0, 0.0, -1.0, math.nan, math.inf])
                        for _ in range(5)))
        )
        o, h, lo, c, v = values
        rows.append(
            {"ts": t, "open": o, "high": h, "low": lo, "close": c, "volume": v,
             "turnover": draw(st.sampled_from([None, 5.0, -5.0, math.nan])),
             "trades": draw(st.sampled_from([None, 3, 0, -2]))}
        )
    return rows, tf_name


@SETTINGS
@given(checked_series(), st.integers(1, 3))
def test_check_candles_matches_reference(series, threads) -> None:  # type: ignore[no-untyped-def]
    rows, tf_name = series
    tf = parse_timeframe(tf_name)
    schema = {"ts": pl.Int64, "open": pl.Float64, "high": pl.Float64, "low": pl.Float64,
              "close": pl.Float64, "volume": pl.Float64, "turnover": pl.Float64, "trades": pl.Int64}
    got = check_candles(pl.DataFrame(rows, schema=schema), tf, threads=threads)
    want = ref_check(rows, tf)
    assert {c.position: set(c.reasons) for c in got.invalid} == want["invalid"]
    assert got.misaligned_rows.tolist() == want["misaligned"]
    assert got.out_of_order_rows.tolist() == want["out_of_order"]
    assert {d.position: (d.first_position, d.differs) for d in got.duplicates} == want["duplicates"]
    assert [(g.position, g.previous_ts, g.current_ts, g.missing_candles) for g in got.gaps] == want["gaps"]
    assert got.total_candles == len(rows)
    if rows:
        assert (got.first_ts, got.last_ts) == (min(r["ts"] for r in rows), max(r["ts"] for r in rows))
