"""Reading: partition pruning, ranges, series listing, DuckDB views."""

import datetime as dt
import threading

import polars as pl
import pytest

from marketlake.errors import DataValidationError
from tests.helpers import MINUTE, T0, candles, stored

DAY = 1440 * MINUTE


@pytest.fixture
def filled(lake):
    lake.write_candles(candles(1440 * 70, seed=1), symbol="BTCUSDT", timeframe="1")  # Jan 1 .. Mar 10
    lake.write_candles(candles(1440 * 3, seed=2), symbol="ETHUSDT", timeframe="1")
    lake.write_candles(candles(24 * 10, step=60 * MINUTE, seed=3), symbol="BTCUSDT", timeframe="60")
    return lake


def test_start_is_inclusive_and_end_exclusive(filled):
    got = filled.read_candles("BTCUSDT", "1", start=T0 + 10 * MINUTE, end=T0 + 20 * MINUTE)
    assert got["ts"].dt.epoch("ms").to_list() == [T0 + i * MINUTE for i in range(10, 20)]


def test_ranges_accept_dates_datetimes_and_strings(filled):
    a = filled.read_candles("BTCUSDT", "1", start="2024-02-01", end=dt.date(2024, 2, 2))
    b = filled.read_candles("BTCUSDT", "1", start=dt.datetime(2024, 2, 1), end="2024-02-02 00:00:00")
    assert a.height == 1440 and a.equals(b)


def test_only_partitions_that_can_match_are_opened(filled):
    # Ruin the February file: a scan of January must not touch it, a scan of February must fail.
    feb = next((filled.root / "candles").rglob("symbol=BTCUSDT/timeframe=1/date=2024-02/part-*.parquet"))
    feb.write_bytes(b"garbage")
    assert filled.read_candles("BTCUSDT", "1", start="2024-01-05", end="2024-02-01").height == 27 * 1440
    assert filled.read_candles("ETHUSDT").height == 3 * 1440
    with pytest.raises(Exception):
        filled.read_candles("BTCUSDT", "1", start="2024-02-01", end="2024-02-02")


def test_no_symbols_means_every_stored_symbol_and_timeframe(filled):
    got = filled.read_candles()
    assert set(got.select("symbol", "timeframe").unique().iter_rows()) == {("BTCUSDT", "1"), ("ETHUSDT", "1"), ("BTCUSDT", "60")}
    assert got.height == 1440 * 73 + 240


def test_unknown_symbols_read_as_empty_with_the_full_schema(filled):
    got = filled.read_candles("XRPUSDT", "1")
    assert got.is_empty()
    assert got.columns == filled.read_candles("BTCUSDT", "1", end=T0 + MINUTE).columns


def test_timeframe_aliases_select_the_same_series(filled):
    assert filled.read_candles("BTCUSDT", "1h").equals(filled.read_candles("BTCUSDT", "60"))


def test_lazy_scan_supports_projection_and_further_filters(filled):
    lf = filled.scan_candles(["BTCUSDT", "ETHUSDT"], "1", start="2024-01-02", end="2024-01-03")
    out = lf.filter(pl.col("symbol") == "ETHUSDT").select("ts", "close").collect()
    assert out.height == 1440 and out.columns == ["ts", "close"]


def test_series_lists_every_series_with_its_extent(filled):
    s = filled.series().sort("symbol", "timeframe")
    rows = {(r["symbol"], r["timeframe"]): r for r in s.iter_rows(named=True)}
    btc = rows[("BTCUSDT", "1")]
    assert btc["rows"] == 1440 * 70 and btc["partitions"] == 3
    assert btc["first_ts"] == dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    assert btc["last_ts"] == dt.datetime(2024, 3, 10, 23, 59, tzinfo=dt.timezone.utc)
    assert btc["bytes"] > 0 and btc["exchange"] == "bybit" and btc["category"] == "linear"
    assert rows[("BTCUSDT", "60")]["rows"] == 240
    # A second call answers from the footer cache with the same result.
    assert filled.series().sort("symbol", "timeframe").equals(s)


def test_sql_sees_hive_columns_and_binds_parameters(filled):
    out = filled.sql(
        "select symbol, timeframe, date, count(*) as n from candles where symbol = ? and ts >= ? group by all order by date",
        ["BTCUSDT", "2024-03-01"],
    )
    assert out.rows() == [("BTCUSDT", "1", "2024-03", 1440 * 10)]


def test_sql_values_equal_the_polars_read(filled):
    via_sql = filled.sql("select ts, open, high, low, close, volume, turnover from candles where symbol='ETHUSDT' order by ts")
    via_pl = filled.read_candles("ETHUSDT").select(via_sql.columns)
    assert via_sql.with_columns(pl.col("ts").dt.cast_time_unit("ms")).equals(via_pl)


def test_sql_on_an_empty_lake_has_typed_empty_views(lake):
    assert lake.sql("select count(*) as n from candles").item() == 0
    assert lake.sql("select count(*) as n from trades").item() == 0
    assert "close" in lake.sql("select * from candles").columns


def test_sql_errors_are_data_validation_errors(filled):
    with pytest.raises(DataValidationError, match="SQL error"):
        filled.sql("select nope from candles")
    with pytest.raises(DataValidationError):
        filled.sql("selec 1")


def test_sql_sees_writes_made_after_the_first_query(filled):
    assert filled.sql("select count(*) from candles where symbol='SOLUSDT'").item() == 0
    filled.write_candles(candles(7), symbol="SOLUSDT", timeframe="1")
    assert filled.sql("select count(*) from candles where symbol='SOLUSDT'").item() == 7


def test_connect_gives_a_snapshot_that_refresh_updates(filled):
    con = filled.connect()
    n = con.sql("select count(*) from candles").fetchall()[0][0]
    filled.write_candles(candles(5, start=T0 + 100 * DAY), symbol="BTCUSDT", timeframe="1")
    filled.refresh(con)
    assert con.sql("select count(*) from candles").fetchall()[0][0] == n + 5


def test_readers_racing_a_rewriter_always_see_one_complete_version(lake):
    base = candles(2000).with_columns(pl.lit(0.0).alias("volume"))
    lake.write_candles(base, symbol="BTCUSDT", timeframe="1")
    stop = threading.Event()
    errors: list[BaseException] = []

    def rewrite():
        k = 0
        try:
            while not stop.is_set():
                k += 1
                lake.write_candles(base.with_columns(pl.lit(float(k)).alias("volume")), symbol="BTCUSDT", timeframe="1")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=rewrite)
    t.start()
    try:
        for _ in range(60):
            got = lake.read_candles("BTCUSDT", "1")
            assert got.height == 2000
            assert got["volume"].n_unique() == 1  # one version, never a mix
    finally:
        stop.set()
        t.join()
    assert not errors
