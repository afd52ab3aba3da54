"""candles_from_trades: buckets, calendar timeframes, sides, fill, bad input, parallel chunks."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from marketlake import candles_from_trades
from marketlake.errors import InvalidTimeframeError, SchemaMismatchError


def ms(*args: int) -> int:
    return int(dt.datetime(*args, tzinfo=dt.UTC).timestamp() * 1000)


def trades(ts: list[int], price: list[float], size: list[float] | None = None, side: list[str] | None = None) -> pl.DataFrame:
    cols: dict[str, object] = {"ts": ts, "price": price, "size": size or [1.0] * len(ts)}
    if side is not None:
        cols["side"] = side
    return pl.DataFrame(cols)


def test_one_minute_candles_hold_first_max_min_last_and_sums() -> None:
    t0 = ms(2024, 5, 1, 12, 0)
    df = trades([t0, t0 + 10_000, t0 + 59_999, t0 + 60_000], [10.0, 12.0, 9.0, 11.0],
                [1.0, 2.0, 3.0, 4.0], ["Buy", "Sell", "Buy", "Sell"])
    out = candles_from_trades(df, "1m")
    assert out.schema["ts"] == pl.Datetime("ms", "UTC")
    assert out.schema["trades"] == pl.Int64
    first = out.row(0, named=True)
    assert first["ts"] == dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
    assert (first["open"], first["high"], first["low"], first["close"]) == (10.0, 12.0, 9.0, 9.0)
    assert first["volume"] == 6.0
    assert first["turnover"] == 10.0 + 24.0 + 27.0
    assert first["trades"] == 3
    assert first["buy_volume"] == 4.0
    assert out.height == 2


def test_unsorted_trades_give_the_same_candles_as_sorted_ones_with_ties_in_input_order() -> None:
    t0 = ms(2024, 5, 1)
    sorted_df = trades([t0, t0, t0 + 1, t0 + 70_000], [1.0, 2.0, 3.0, 4.0])
    shuffled = sorted_df[[3, 0, 2, 1]]
    a = candles_from_trades(sorted_df, "1")
    b = candles_from_trades(shuffled, "1")
    assert a.equals(b)
    assert a["open"][0] == 1.0  # of the two trades at t0, the first in input order opens


def test_weekly_buckets_open_on_monday_midnight_utc() -> None:
    sunday_night = ms(2024, 3, 3, 23, 59, 59)
    monday = ms(2024, 3, 4)
    out = candles_from_trades(trades([sunday_night, monday], [1.0, 2.0]), "W")
    assert out["ts"].dt.weekday().to_list() == [1, 1]  # polars: Monday is 1
    assert out["ts"].dt.epoch("ms").to_list() == [ms(2024, 2, 26), monday]


def test_monthly_buckets_open_on_the_first_including_leap_february() -> None:
    out = candles_from_trades(
        trades([ms(2024, 2, 29, 23, 59), ms(2024, 3, 1), ms(2023, 12, 31, 23, 59, 59)], [1.0, 2.0, 3.0]), "M"
    )
    assert out["ts"].dt.epoch("ms").to_list() == [ms(2023, 12, 1), ms(2024, 2, 1), ms(2024, 3, 1)]


def test_sub_minute_timeframes_bucket_by_seconds() -> None:
    t0 = ms(2024, 1, 1)
    out = candles_from_trades(trades([t0, t0 + 4_999, t0 + 5_000, t0 + 16_000], [1.0] * 4), "5s")
    assert out["ts"].dt.epoch("ms").to_list() == [t0, t0 + 5_000, t0 + 15_000]
    assert out["trades"].to_list() == [2, 1, 1]


def test_microsecond_timestamps_bucket_like_milliseconds() -> None:
    t0 = ms(2024, 1, 1)
    us = pl.Series([t0 * 1000 + 59_999_999, t0 * 1000 + 60_000_000]).cast(pl.Datetime("us", "UTC"))
    df = pl.DataFrame({"ts": us, "price": [1.0, 2.0], "size": [1.0, 1.0]})
    out = candles_from_trades(df, "1")
    assert out["ts"].dt.epoch("ms").to_list() == [t0, t0 + 60_000]


def test_buy_volume_is_null_without_a_side_column() -> None:
    out = candles_from_trades(trades([ms(2024, 1, 1)], [1.0]), "1")
    assert out["buy_volume"].to_list() == [None]


def test_sides_in_any_letter_case_and_categorical_are_accepted() -> None:
    t0 = ms(2024, 1, 1)
    df = trades([t0, t0 + 1], [1.0, 1.0], [2.0, 3.0], ["buy", "SELL"])
    assert candles_from_trades(df, "1")["buy_volume"].to_list() == [2.0]
    cat = df.with_columns(pl.Series("side", ["Buy", "Sell"], dtype=pl.Categorical))
    assert candles_from_trades(cat, "1")["buy_volume"].to_list() == [2.0]


def test_unknown_side_raises_schema_mismatch_naming_the_row() -> None:
    t0 = ms(2024, 1, 1)
    df = trades([t0, t0 + 1, t0 + 2], [1.0] * 3, side=["Buy", "Sell", "Hold"])
    with pytest.raises(SchemaMismatchError, match="row 2"):
        candles_from_trades(df, "1")


def test_frame_without_price_raises_schema_mismatch() -> None:
    with pytest.raises(SchemaMismatchError, match="price"):
        candles_from_trades(pl.DataFrame({"ts": [1], "size": [1.0]}), "1")


def test_null_ts_or_price_raises_schema_mismatch() -> None:
    with pytest.raises(SchemaMismatchError, match="ts"):
        candles_from_trades(pl.DataFrame({"ts": [1, None], "price": [1.0, 1.0], "size": [1.0, 1.0]}), "1")
    with pytest.raises(SchemaMismatchError, match="price"):
        candles_from_trades(pl.DataFrame({"ts": [1, 2], "price": [1.0, None], "size": [1.0, 1.0]}), "1")


def test_string_timestamps_raise_schema_mismatch() -> None:
    with pytest.raises(SchemaMismatchError, match="ts"):
        candles_from_trades(pl.DataFrame({"ts": ["2024-01-01"], "price": [1.0], "size": [1.0]}), "1")


def test_unknown_timeframe_raises_invalid_timeframe() -> None:
    with pytest.raises(InvalidTimeframeError):
        candles_from_trades(trades([1], [1.0]), "7m")


def test_empty_trades_give_an_empty_frame_with_the_candle_schema() -> None:
    empty = pl.DataFrame(schema={"ts": pl.Datetime("us", "UTC"), "price": pl.Float64, "size": pl.Float64})
    out = candles_from_trades(empty, "1", fill=True)
    assert out.height == 0
    assert out.columns == ["ts", "open", "high", "low", "close", "volume", "turnover", "trades", "buy_volume"]


def test_fill_inserts_flat_candles_that_carry_the_previous_close() -> None:
    t0 = ms(2024, 1, 1)
    out = candles_from_trades(trades([t0, t0 + 3 * 60_000], [5.0, 7.0], side=["Buy", "Buy"]), "1", fill=True)
    assert out.height == 4
    flat = out.row(1, named=True)
    assert (flat["open"], flat["high"], flat["low"], flat["close"]) == (5.0, 5.0, 5.0, 5.0)
    assert (flat["volume"], flat["turnover"], flat["trades"], flat["buy_volume"]) == (0.0, 0.0, 0, 0.0)


def test_nan_price_makes_the_bucket_high_and_low_nan() -> None:
    t0 = ms(2024, 1, 1)
    out = candles_from_trades(trades([t0, t0 + 1, t0 + 2], [1.0, float("nan"), 3.0]), "1")
    assert np.isnan(out["high"][0]) and np.isnan(out["low"][0])
    assert (out["open"][0], out["close"][0]) == (1.0, 3.0)


def test_pyarrow_table_input_is_accepted() -> None:
    t0 = ms(2024, 1, 1)
    table = pa.table({"ts": pa.array([t0 * 1000], pa.timestamp("us", tz="UTC")), "price": [2.0], "size": [3.0]})
    assert candles_from_trades(table, "1")["turnover"].to_list() == [6.0]


def test_parallel_chunks_give_bit_identical_candles() -> None:
    rng = np.random.default_rng(7)
    n = 300_000
    ts = ms(2024, 1, 1) + np.cumsum(rng.integers(0, 400, n))
    df = pl.DataFrame({
        "ts": ts, "price": np.round(100 + np.cumsum(rng.standard_normal(n)) * 0.01, 2),
        "size": rng.integers(1, 1000, n) * 0.001,
        "side": np.where(rng.random(n) < 0.5, "Buy", "Sell"),
    })
    one = candles_from_trades(df, "1s", threads=1)
    for threads in (2, 3, 8):
        assert candles_from_trades(df, "1s", threads=threads).equals(one)


def test_threads_below_one_is_refused() -> None:
    with pytest.raises(ValueError):
        candles_from_trades(trades([1], [1.0]), "1", threads=0)
