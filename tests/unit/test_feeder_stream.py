"""DataFeeder's new access paths: ``iter_batches`` (time order, full batches, lazy partition reads,
working-set budget), ``scan`` and ``aligned``."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from marketlake import DataFeeder, Lake
from marketlake.errors import MemoryBudgetError
from tests.feeder_support import aligned_opens, candle_frame, ms, new_lake

UTC = dt.UTC
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]


DAYS = 163  # 2023-09-01 .. 2024-02-10: six monthly partitions of 1m candles, two yearly of 60m / D


@pytest.fixture(scope="module")
def months(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    """Three symbols: 1m candles from 2023-09-01 for 163 days with a few holes, 60m and D over the
    same span. Read-only for the tests, so written once."""
    lake = new_lake(tmp_path_factory.mktemp("stream") / "lake")
    for i, sym in enumerate(SYMBOLS):
        opens = aligned_opens("1", ms("2023-09-01"), 0, DAYS * 1440)
        opens = [o for k, o in enumerate(opens) if (k + i) % 97 != 0]  # holes, different per symbol
        lake.write_candles(candle_frame(opens, i), symbol=sym, timeframe="1")
        lake.write_candles(candle_frame(aligned_opens("60", ms("2023-09-01"), 0, DAYS * 24), 10 + i), symbol=sym, timeframe="60")
        lake.write_candles(candle_frame(aligned_opens("D", ms("2023-09-01"), 0, DAYS), 20 + i), symbol=sym, timeframe="D")
    return lake


TF_ORDER = {"1": 0, "60": 1, "D": 2}


def reference(lake: Lake, start: str | None, end: str | None) -> pl.DataFrame:
    """Every row of the request, sorted the way iter_batches promises: ts, then symbol, then
    timeframe in request order."""
    frame = lake.read_candles(SYMBOLS, ["1", "60", "D"], start, end)
    return frame.sort(
        pl.col("ts"),
        pl.col("symbol").replace_strict({s: i for i, s in enumerate(SYMBOLS)}, return_dtype=pl.Int64),
        pl.col("timeframe").replace_strict(TF_ORDER, return_dtype=pl.Int64),
    )


@pytest.mark.parametrize(("start", "end"), [(None, None), ("2023-12-31 22:13", "2024-01-02 00:01")])
def test_iter_batches_yields_full_batches_in_time_order(months: Lake, start: str | None, end: str | None) -> None:
    feeder = DataFeeder(months)
    batches = list(feeder.iter_batches(SYMBOLS, ["1", "60", "D"], start, end, rows=9_973))
    assert all(b.height == 9_973 for b in batches[:-1]) and 0 < batches[-1].height <= 9_973
    got = pl.concat(batches)
    assert got.columns == ["symbol", "timeframe", "ts", "open", "high", "low", "close", "volume",
                           "turnover", "trades", "buy_volume", "filled"]
    assert got.equals(reference(months, start, end))


def test_iter_batches_reads_partitions_only_as_it_goes(months: Lake) -> None:
    feeder = DataFeeder(months)
    it = feeder.iter_batches(SYMBOLS, ["1"], rows=1_000)
    assert feeder.partitions_read == 0  # nothing is read until iteration starts
    first = next(it)
    assert first.height == 1_000
    assert feeder.partitions_read == 3  # the first month of each symbol, nothing more
    rest = sum(b.height for b in it)
    assert feeder.partitions_read == 3 * 6  # every partition read exactly once
    assert first.height + rest == months.read_candles(SYMBOLS, "1").height


def test_iter_batches_checks_its_working_set_against_the_budget(months: Lake) -> None:
    feeder = DataFeeder(months, memory_budget_bytes=40_000_000)
    whole = feeder.estimate_bytes(SYMBOLS, ["1"])
    assert whole > feeder.budget_bytes  # the data does not fit the budget ...
    rows = sum(b.height for b in feeder.iter_batches(SYMBOLS, ["1"], rows=1_000))
    assert rows == months.read_candles(SYMBOLS, "1").height  # ... and streams through it anyway
    with pytest.raises(MemoryBudgetError) as err:
        feeder.iter_batches(SYMBOLS, ["1"], rows=100_000)  # raised at the call, before any read
    assert err.value.budget_bytes == 40_000_000 and err.value.needed_bytes > 40_000_000
    assert "lower rows=" in str(err.value)
    assert feeder.partitions_read == 3 * 6


def test_scan_is_lazy_over_a_half_open_range(months: Lake) -> None:
    lf = DataFeeder(months).scan(["BTCUSDT"], ["60"], "2024-01-01", "2024-01-02")
    assert isinstance(lf, pl.LazyFrame)
    frame = lf.collect()
    assert frame.height == 24
    assert frame.get_column("ts").min() == dt.datetime(2024, 1, 1, tzinfo=UTC)
    assert DataFeeder(months).scan(timeframes="D").collect().height == 3 * DAYS


def test_aligned_shows_each_timeframe_as_it_was_known_at_the_base_close(months: Lake) -> None:
    frame = DataFeeder(months).aligned("BTCUSDT", "1", ["60", "D"], "2024-01-02 10:58", "2024-01-02 11:01").collect()
    assert frame.columns[:3] == ["ts", "close_time", "open"]
    assert {"ts_60", "close_60", "volume_60", "ts_D", "close_D"} <= set(frame.columns)
    rows = {r["ts"].strftime("%H:%M"): r for r in frame.iter_rows(named=True)}
    # 10:58 closes 10:59: the last closed hour is 09:00; 10:59 closes at 11:00, when 10:00 closes.
    assert rows["10:58"]["ts_60"] == dt.datetime(2024, 1, 2, 9, tzinfo=UTC)
    assert rows["10:59"]["ts_60"] == dt.datetime(2024, 1, 2, 10, tzinfo=UTC)
    assert rows["11:00"]["ts_60"] == dt.datetime(2024, 1, 2, 10, tzinfo=UTC)
    assert all(r["ts_D"] == dt.datetime(2024, 1, 1, tzinfo=UTC) for r in rows.values())


def test_aligned_agrees_with_get_multi_timeframe_data_at_every_base_close(months: Lake) -> None:
    feeder = DataFeeder(months)
    frame = feeder.aligned("ETHUSDT", "60", ["1", "D"], "2023-12-31 20:00", "2024-01-01 04:00").collect()
    assert frame.height == 8
    for row in frame.iter_rows(named=True):
        got = feeder.get_multi_timeframe_data("ETHUSDT", ["1", "D"], row["close_time"])
        assert got is not None
        assert got["1"]["datetime"] == row["ts_1"] and got["1"]["close"] == row["close_1"]
        assert got["D"]["datetime"] == row["ts_D"] and got["D"]["volume"] == row["volume_D"]


def test_aligned_leaves_nulls_before_the_first_closed_candle(months: Lake) -> None:
    frame = DataFeeder(months).aligned("SOLUSDT", "60", ["D"], None, "2023-09-02 02:00").collect()
    assert frame.get_column("ts_D").null_count() == 23  # the first day closes at 2023-09-02 00:00
    assert frame.get_column("ts_D").drop_nulls().to_list() == [dt.datetime(2023, 9, 1, tzinfo=UTC)] * 3
