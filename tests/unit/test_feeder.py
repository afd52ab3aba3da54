"""DataFeeder: the old feeder's methods and return shapes, the no-lookahead rule on fixed examples,
the memory budget, point lookups that open one partition, and typed errors for bad input."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest

from marketlake import DataFeeder, Lake
from marketlake._feeder.budget import ROW_BYTES
from marketlake.errors import (
    ConfigError,
    DataValidationError,
    InvalidSymbolError,
    InvalidTimeframeError,
    MarketlakeError,
    MemoryBudgetError,
)
from tests.feeder_support import aligned_opens, candle_frame, ms

UTC = dt.UTC
MIN = 60_000


@pytest.fixture
def market(lake: Lake) -> Lake:
    """BTCUSDT 1m over 2024-01-30 .. 2024-02-02 (two monthly partitions), 60m and D over January
    and February, M over 2023-2024; ETHUSDT 1m over the same days."""
    one = aligned_opens("1", ms("2024-01-30 00:00"), 0, 4 * 1440)
    lake.write_candles(candle_frame(one, 1), symbol="BTCUSDT", timeframe="1")
    lake.write_candles(candle_frame(one, 2), symbol="ETHUSDT", timeframe="1")
    lake.write_candles(candle_frame(aligned_opens("60", ms("2024-01-01"), 0, 60 * 24), 3), symbol="BTCUSDT", timeframe="60")
    lake.write_candles(candle_frame(aligned_opens("D", ms("2024-01-01"), 0, 60), 4), symbol="BTCUSDT", timeframe="D")
    lake.write_candles(candle_frame(aligned_opens("M", ms("2023-01-01"), 0, 24), 5), symbol="BTCUSDT", timeframe="M")
    return lake


# ---------------------------------------------------------------- return shapes


def test_get_data_at_timestamp_returns_the_old_dict_of_python_values(market: Lake) -> None:
    candle = DataFeeder(market).get_data_at_timestamp("BTCUSDT", "1", ms("2024-01-31 10:00"))
    assert candle is not None
    assert candle["timestamp"] == candle["timestamp_ms"] == ms("2024-01-31 10:00")
    assert candle["datetime"] == dt.datetime(2024, 1, 31, 10, 0, tzinfo=UTC)
    assert candle["close_time_ms"] == ms("2024-01-31 10:01")
    assert all(type(candle[c]) is float for c in ("open", "high", "low", "close", "volume", "turnover"))
    assert candle["filled"] is False
    assert set(candle) >= {"timestamp", "timestamp_ms", "datetime", "open", "high", "low", "close", "volume"}


def test_get_data_at_timestamp_matches_open_times_only(market: Lake) -> None:
    feeder = DataFeeder(market)
    assert feeder.get_data_at_timestamp("BTCUSDT", "1", ms("2024-01-31 10:00") + 30_000) is None
    assert feeder.get_data_at_timestamp("BTCUSDT", "1", ms("2025-01-01")) is None


def test_times_may_be_int_datetime_date_string_numpy_or_pandas(market: Lake) -> None:
    feeder = DataFeeder(market)
    t = ms("2024-02-01 00:00")
    forms = [t, dt.datetime(2024, 2, 1, tzinfo=UTC), dt.datetime(2024, 2, 1), dt.date(2024, 2, 1),
             "2024-02-01", "2024-02-01 00:00:00", "2024-02-01T01:00:00+01:00", str(t), np.int64(t),
             np.datetime64("2024-02-01T00:00"), pd.Timestamp("2024-02-01", tz="UTC")]
    got = [feeder.get_data_at_timestamp("BTCUSDT", "1", f) for f in forms]
    assert all(g is not None and g["timestamp"] == t for g in got)


def test_get_latest_data_returns_the_last_candles_oldest_first(market: Lake) -> None:
    latest = DataFeeder(market).get_latest_data("BTCUSDT", "1", lookback_periods=5)
    assert latest is not None
    assert [c["timestamp"] for c in latest] == [ms("2024-02-02 23:55") + k * MIN for k in range(5)]
    only = DataFeeder(market).get_latest_data("BTCUSDT", "M", lookback_periods=100)
    assert only is not None and len(only) == 24  # fewer exist than asked for


def test_get_latest_data_after_load_data_is_the_end_of_the_loaded_window(market: Lake) -> None:
    feeder = DataFeeder(market)
    assert feeder.load_data(["BTCUSDT"], ["1"], "2024-01-30", "2024-01-31")
    latest = feeder.get_latest_data("BTCUSDT", "1", 2)
    assert latest is not None
    assert [c["timestamp"] for c in latest] == [ms("2024-01-31 23:58"), ms("2024-01-31 23:59")]


def test_load_data_end_date_is_inclusive_as_in_the_old_feeder(market: Lake) -> None:
    feeder = DataFeeder(market)
    data = feeder.get_data_for_symbols(["BTCUSDT"], ["1"], "2024-01-31", "2024-01-31")
    assert data["BTCUSDT"]["1"].height == 1440  # a date means the whole day
    data = feeder.get_data_for_symbols(["BTCUSDT"], ["1"], "2024-01-31 10:00", "2024-01-31 10:05")
    assert data["BTCUSDT"]["1"].height == 6  # a time includes the candle opening at it


def test_load_data_returns_false_when_the_window_holds_no_candle(market: Lake) -> None:
    feeder = DataFeeder(market)
    assert feeder.load_data(["BTCUSDT"], ["1"], "2023-06-01", "2023-06-30") is False
    assert feeder.load_data(["BTCUSDT"], ["1"], "2024-02-01", "2024-02-01") is True


def test_get_data_for_symbols_nests_frames_by_symbol_and_timeframe_as_spelled(market: Lake) -> None:
    feeder = DataFeeder(market)
    feeder.load_data(["BTCUSDT", "ETHUSDT"], ["1"], "2024-01-30", "2024-02-02")
    both = feeder.get_data_for_symbols(["BTCUSDT", "ETHUSDT"], ["1"], "2024-01-31", "2024-01-31")
    assert set(both) == {"BTCUSDT", "ETHUSDT"} and both["ETHUSDT"]["1"].height == 1440
    data = feeder.get_data_for_symbols("BTCUSDT", ["1", "1h"], "2024-01-31", "2024-01-31")
    assert set(data["BTCUSDT"]) == {"1", "1h"}
    btc = data["BTCUSDT"]
    assert btc["1"].columns == ["ts", "open", "high", "low", "close", "volume", "turnover", "trades",
                                "buy_volume", "filled"]
    assert btc["1"].height == 1440 and btc["1h"].height == 24  # loaded, and read from the lake
    expected = market.read_candles("BTCUSDT", "1", "2024-01-31", "2024-02-01").drop("symbol", "timeframe")
    assert btc["1"].equals(expected)
    assert btc["1"].get_column("ts").is_sorted()


# ---------------------------------------------------------------- no lookahead, fixed examples


def test_multi_timeframe_data_at_1030_gives_the_0900_hour_candle(market: Lake) -> None:
    feeder = DataFeeder(market)
    got = feeder.get_multi_timeframe_data("BTCUSDT", ["1", "60", "D"], "2024-01-31 10:30")
    assert got is not None
    assert got["1"]["datetime"] == dt.datetime(2024, 1, 31, 10, 29, tzinfo=UTC)
    assert got["60"]["datetime"] == dt.datetime(2024, 1, 31, 9, 0, tzinfo=UTC)  # 10:00 still forming
    assert got["D"]["datetime"] == dt.datetime(2024, 1, 30, tzinfo=UTC)
    at_11 = feeder.get_multi_timeframe_data("BTCUSDT", ["60"], "2024-01-31 11:00")
    assert at_11 is not None and at_11["60"]["datetime"] == dt.datetime(2024, 1, 31, 10, 0, tzinfo=UTC)
    just_before = feeder.get_multi_timeframe_data("BTCUSDT", ["60"], ms("2024-01-31 11:00") - 1)
    assert just_before is not None and just_before["60"]["datetime"].hour == 9


def test_month_candles_close_at_the_calendar_month_end(market: Lake) -> None:
    feeder = DataFeeder(market)
    before = feeder.get_multi_timeframe_data("BTCUSDT", ["M"], ms("2024-03-01 00:00") - 1)
    at = feeder.get_multi_timeframe_data("BTCUSDT", ["M"], "2024-03-01")
    assert before is not None and before["M"]["datetime"] == dt.datetime(2024, 1, 1, tzinfo=UTC)
    assert at is not None and at["M"]["datetime"] == dt.datetime(2024, 2, 1, tzinfo=UTC)  # 29 days long


def test_multi_timeframe_data_is_none_before_any_candle_closed(market: Lake) -> None:
    feeder = DataFeeder(market)
    assert feeder.get_multi_timeframe_data("BTCUSDT", ["1", "60"], "2024-01-01 00:30") is None
    assert feeder.get_multi_timeframe_data("BTCUSDT", ["1", "D"], "2023-12-01") is None
    only_hour = feeder.get_multi_timeframe_data("BTCUSDT", ["1", "60"], "2024-01-01 01:00")
    assert only_hour is not None and set(only_hour) == {"60"}  # no 1m candle had closed yet


def test_multi_timeframe_data_walks_back_over_a_gap(market: Lake) -> None:
    # The 1m series ends 2024-02-02 23:59; at 2024-03-15 the latest closed 1m candle is that one.
    got = DataFeeder(market).get_multi_timeframe_data("BTCUSDT", ["1"], "2024-03-15")
    assert got is not None and got["1"]["timestamp"] == ms("2024-02-02 23:59")


# ---------------------------------------------------------------- partitions and cache


def test_point_lookups_open_one_partition_not_the_series(market: Lake) -> None:
    feeder = DataFeeder(market)  # BTCUSDT 1m has partitions 2024-01 and 2024-02
    assert feeder.get_data_at_timestamp("BTCUSDT", "1", "2024-02-01 12:00") is not None
    assert feeder.partitions_read == 1
    feeder.get_data_at_timestamp("BTCUSDT", "1", "2024-02-02 12:00")
    feeder.get_multi_timeframe_data("BTCUSDT", ["1"], "2024-02-01 13:00")
    assert feeder.partitions_read == 1  # same partition: served from the cache
    feeder.get_multi_timeframe_data("BTCUSDT", ["1"], "2024-01-31 13:00")
    assert feeder.partitions_read == 2


def test_a_later_write_is_seen_by_the_next_lookup(market: Lake) -> None:
    feeder = DataFeeder(market)
    t = ms("2024-02-01 12:00")
    assert feeder.get_data_at_timestamp("BTCUSDT", "1", t)["close"] != 12345.5  # type: ignore[index]
    row = candle_frame([t], 9).with_columns(pl.lit(12345.5).alias("close"), pl.lit(12345.5).alias("high"))
    market.write_candles(row, symbol="BTCUSDT", timeframe="1")
    assert feeder.get_data_at_timestamp("BTCUSDT", "1", t)["close"] == 12345.5  # type: ignore[index]


# ---------------------------------------------------------------- memory budget


def test_load_data_over_budget_raises_with_the_estimate_and_the_budget(market: Lake) -> None:
    feeder = DataFeeder(market, memory_budget_bytes=100_000)
    with pytest.raises(MemoryBudgetError) as err:
        feeder.load_data(["BTCUSDT", "ETHUSDT"], ["1"], "2024-01-30", "2024-02-02")
    rows = 2 * 4 * 1440
    assert err.value.needed_bytes == int(rows * ROW_BYTES)
    assert err.value.budget_bytes == 100_000
    assert "0.8 MiB" in str(err.value) and "0.1 MiB" in str(err.value)
    assert isinstance(err.value, MemoryError) and isinstance(err.value, MarketlakeError)
    assert feeder.get_memory_usage()["loaded_series"] == 0  # nothing was read


def test_the_estimate_matches_what_load_data_holds(market: Lake) -> None:
    feeder = DataFeeder(market)
    for window in [(None, None), ("2024-01-31 10:07", "2024-02-01 03:00"), ("2024-02-01", None)]:
        estimate = feeder.estimate_bytes(["BTCUSDT"], ["1", "60"], *window)
        feeder.unload()
        feeder.load_data(["BTCUSDT"], ["1", "60"], *window)
        held = feeder.get_memory_usage()["loaded_bytes"]
        assert abs(estimate - held) <= 0.02 * held, (window, estimate, held)


def test_the_budget_counts_what_is_already_loaded(market: Lake) -> None:
    one_series = DataFeeder(market).estimate_bytes(["BTCUSDT"], ["1"])
    feeder = DataFeeder(market, memory_budget_bytes=int(one_series * 1.5))
    feeder.load_data(["BTCUSDT"], ["1"])
    with pytest.raises(MemoryBudgetError) as err:
        feeder.load_data(["ETHUSDT"], ["1"])
    assert err.value.budget_bytes < one_series
    assert feeder.load_data(["BTCUSDT"], ["1"])  # reloading replaces, so it still fits


def test_get_memory_usage_reports_percent_budget_and_loaded_data(market: Lake) -> None:
    feeder = DataFeeder(market, memory_limit_percent=50)
    before = feeder.get_memory_usage()
    assert 0 < before["percent"] <= 100
    assert before["budget_bytes"] == int(before["total_bytes"] * 0.5)
    assert before["loaded_bytes"] == 0 and before["rss_bytes"] > 0
    feeder.load_data(["BTCUSDT"], ["1", "60"])
    after = feeder.get_memory_usage()
    assert after["loaded_series"] == 2 and after["loaded_rows"] == 4 * 1440 + 60 * 24
    assert after["loaded_bytes"] > 0
    assert after["free_budget_bytes"] == after["budget_bytes"] - after["loaded_bytes"] - after["cache_bytes"]


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (lambda f: f.get_data_at_timestamp("XRPUSDT", "1", "2024-02-01"), InvalidSymbolError, "stored symbols: BTCUSDT, ETHUSDT"),
        (lambda f: f.get_data_at_timestamp("ETHUSDT", "60", "2024-02-01"), InvalidTimeframeError, "stored timeframes: 1"),
        (lambda f: f.get_data_at_timestamp("btcusdt", "1", "2024-02-01"), InvalidSymbolError, "invalid symbol"),
        (lambda f: f.get_data_at_timestamp("../x", "1", "2024-02-01"), InvalidSymbolError, "invalid symbol"),
        (lambda f: f.get_data_at_timestamp("BTCUSDT", "7m", "2024-02-01"), InvalidTimeframeError, "unknown timeframe"),
        (lambda f: f.get_data_at_timestamp("BTCUSDT", "1", "next tuesday"), DataValidationError, "cannot read"),
        (lambda f: f.get_data_at_timestamp("BTCUSDT", "1", 1706745600), DataValidationError, "seconds?"),
        (lambda f: f.get_data_at_timestamp("BTCUSDT", "1", None), DataValidationError, "got None"),
        (lambda f: f.get_data_at_timestamp("BTCUSDT", "1", True), DataValidationError, "bool"),
        (lambda f: f.get_multi_timeframe_data("BTCUSDT", ["1", "9"], "2024-02-01"), InvalidTimeframeError, "unknown"),
        (lambda f: f.get_multi_timeframe_data("BTCUSDT", [], "2024-02-01"), InvalidTimeframeError, "no timeframes"),
        (lambda f: f.get_latest_data("BTCUSDT", "1", 0), DataValidationError, "positive int"),
        (lambda f: f.get_latest_data("BTCUSDT", "1", "5"), DataValidationError, "positive int"),
        (lambda f: f.load_data([], ["1"]), InvalidSymbolError, "no symbols"),
        (lambda f: f.load_data(["BTCUSDT"], ["1"], "2024-02-02", "2024-02-01"), DataValidationError, "after"),
        (lambda f: f.load_data(["BTCUSDT"], ["1"], "2024-13-01"), DataValidationError, "start_date"),
        (lambda f: f.iter_batches(["BTCUSDT"], ["1"], rows=0), DataValidationError, "positive int"),
        (lambda f: f.aligned("BTCUSDT", "1", ["W"]), InvalidTimeframeError, "no W candles"),
        (lambda f: f.scan(["DOGEUSDT"]), InvalidSymbolError, "no candles of DOGEUSDT"),
    ],
)
def test_bad_input_raises_a_typed_error_that_says_what_is_wrong(market: Lake, call, error, words: str) -> None:
    with pytest.raises(error) as err:
        call(DataFeeder(market))
    assert words in str(err.value)


@pytest.mark.parametrize("pct", [0, -5, 150, "90", True])
def test_a_memory_limit_outside_0_100_is_a_config_error(lake: Lake, pct: object) -> None:
    with pytest.raises(ConfigError, match="memory_limit_percent"):
        DataFeeder(lake, memory_limit_percent=pct)  # type: ignore[arg-type]


def test_a_directory_of_old_csv_files_is_refused_with_the_import_command(tmp_path: Path) -> None:
    (tmp_path / "BTCUSDT_1.csv").write_text("timestamp,datetime,open,high,low,close,volume\n")
    with pytest.raises(ConfigError, match="marketlake import-csv"):
        DataFeeder(tmp_path)


def test_a_feeder_as_of_a_snapshot_keeps_its_inputs_while_the_lake_changes(market: Lake) -> None:
    market.create_snapshot("bt")
    feeder = DataFeeder(market.root, as_of="bt")
    before = feeder.get_data_at_timestamp("BTCUSDT", "1", "2024-02-01 12:00")
    t = ms("2024-02-01 12:00")
    market.write_candles(
        pl.DataFrame({"ts": [t], "open": [1.0], "high": [1.0], "low": [1.0], "close": [1.0], "volume": [1.0]}),
        symbol="BTCUSDT", timeframe="1",
    )
    assert DataFeeder(market.root, as_of="bt").get_data_at_timestamp("BTCUSDT", "1", "2024-02-01 12:00") == before
    assert feeder.get_data_at_timestamp("BTCUSDT", "1", "2024-02-01 12:00") == before
    assert DataFeeder(market).get_data_at_timestamp("BTCUSDT", "1", "2024-02-01 12:00")["close"] == 1.0


def test_a_feeder_opens_a_lake_directory_given_as_a_path(market: Lake) -> None:
    feeder = DataFeeder(str(market.root))
    assert feeder.get_data_at_timestamp("ETHUSDT", "1m", "2024-01-30 00:00") is not None


def test_unload_gives_the_memory_back_to_the_budget(market: Lake) -> None:
    feeder = DataFeeder(market)
    feeder.load_data(["BTCUSDT"], ["1"])
    feeder.get_data_at_timestamp("BTCUSDT", "60", "2024-01-05 00:00")  # caches a partition
    used = feeder.get_memory_usage()
    assert used["loaded_bytes"] > 0 and used["cache_bytes"] > 0
    feeder.unload()
    after = feeder.get_memory_usage()
    assert after["loaded_bytes"] == after["cache_bytes"] == 0
    assert after["free_budget_bytes"] == after["budget_bytes"]


def test_cached_partitions_make_way_for_load_data(market: Lake) -> None:
    need = DataFeeder(market).estimate_bytes(["BTCUSDT"], ["1"])
    feeder = DataFeeder(market, memory_budget_bytes=int(need * 1.05))
    feeder.get_data_at_timestamp("BTCUSDT", "60", "2024-01-05")  # caches the 2024 partition of 60m
    assert feeder.get_memory_usage()["cache_bytes"] > need * 0.05  # no room left beside it ...
    assert feeder.load_data(["BTCUSDT"], ["1"])  # ... until the cache gives way
    assert feeder.get_memory_usage()["cache_bytes"] == 0
