import datetime as dt

import polars as pl
import pyarrow as pa
import pytest

from marketlake.core.schemas import CANDLE_COLUMNS, TRADE_COLUMNS, normalize_candles, normalize_trades
from marketlake.errors import SchemaMismatchError
from tests.helpers import candles


def test_int_ms_and_datetime_ts_normalise_to_the_same_utc_timestamps():
    df = candles(3)
    as_dt = df.with_columns(pl.from_epoch("ts", time_unit="ms"))  # naive: taken as UTC
    as_tz = df.with_columns(pl.from_epoch("ts", time_unit="ms").dt.replace_time_zone("Asia/Tokyo"))
    a, b = normalize_candles(df), normalize_candles(as_dt)
    assert a.equals(b)
    # An aware datetime keeps its instant (Tokyo wall time = instant + 9 h).
    c = normalize_candles(as_tz)
    assert (c["ts"].dt.epoch("ms") - a["ts"].dt.epoch("ms")).unique().to_list() == [-9 * 3_600_000]
    assert a.columns == list(CANDLE_COLUMNS)
    assert a.schema["ts"] == pl.Datetime("ms", "UTC")


def test_arrow_tables_and_old_dict_shape_are_accepted():
    rows = [{"timestamp": 1_640_995_200_000, "datetime": "2022-01-01 00:00:00", "open": 47000.0,
             "high": 47100.0, "low": 46900.0, "close": 47050.0, "volume": 1000.0, "confirm": True}]
    out = normalize_candles(pa.Table.from_pylist(rows))
    assert out["ts"][0] == dt.datetime(2022, 1, 1, tzinfo=dt.timezone.utc)
    assert out["turnover"].is_null().all() and out["trades"].is_null().all()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.drop("close"), "missing column"),
        (lambda d: d.with_columns(pl.lit("x").alias("open")), "cannot be read"),
        (lambda d: d.with_columns(pl.lit(None, dtype=pl.Float64).alias("high")), "null at row 0"),
        (lambda d: d.with_columns(pl.lit(1).alias("mystery")), "unexpected column"),
        (lambda d: d.with_columns(pl.col("ts").cast(pl.String)), "epoch milliseconds or a datetime"),
        (lambda d: d.with_columns(pl.col("ts") // 1000), "seconds or microseconds"),
        (lambda d: d.with_columns(pl.col("ts") * 1000), "not between 1990 and 2200"),
    ],
)
def test_bad_candle_frames_raise_schema_mismatch(change, message):
    with pytest.raises(SchemaMismatchError, match=message):
        normalize_candles(change(candles(3)))


def test_non_frames_are_rejected():
    with pytest.raises(SchemaMismatchError):
        normalize_candles([1, 2, 3])


def test_trades_normalise_side_and_ids():
    df = pl.DataFrame({"ts": [1_704_067_200_000], "price": [1.5], "size": [2], "side": ["sell"], "trade_id": [7]})
    out = normalize_trades(df)
    assert out.columns == list(TRADE_COLUMNS)
    assert out.row(0, named=True)["side"] == "Sell" and out["trade_id"][0] == "7"
    assert out.schema["ts"] == pl.Datetime("us", "UTC")


def test_trade_side_must_be_buy_or_sell():
    df = pl.DataFrame({"ts": [1, 2], "price": [1.0, 1.0], "size": [1.0, 1.0], "side": ["Buy", "hold"], "trade_id": ["a", "b"]})
    with pytest.raises(SchemaMismatchError, match="'hold' at row 1"):
        normalize_trades(df)
