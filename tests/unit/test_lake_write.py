"""Writing: merge by key, last write wins, idempotent, deltas and compaction."""

import hashlib
import os
from pathlib import Path

import polars as pl
import pytest

from marketlake.settings import Settings
from marketlake.store import Lake
from tests.helpers import MINUTE, T0, candles, stored


def _files(root: Path) -> dict[str, str]:
    """Relative path → sha256 of every data file under the dataset trees."""
    out = {}
    for ds in ("candles", "trades"):
        for d, _, fs in os.walk(root / ds):
            for f in fs:
                p = Path(d, f)
                out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def test_written_candles_read_back_exactly(lake):
    df = candles(5000)
    result = lake.write_candles(df, symbol="BTCUSDT", timeframe="1")
    assert (result.rows_new, result.rows_replaced, result.rows_unchanged) == (5000, 0, 0)
    assert result.partitions == ["2024-01"]
    back = lake.read_candles("BTCUSDT", "1")
    assert back.columns[:2] == ["symbol", "timeframe"]
    assert back.select(stored(df).columns).equals(stored(df))


def test_rows_are_split_into_monthly_partitions_for_one_minute_candles(lake):
    df = candles(60 * 24 * 40)  # 40 days from Jan 1
    result = lake.write_candles(df, symbol="BTCUSDT", timeframe="1")
    assert result.partitions == ["2024-01", "2024-02"]
    dirs = sorted(p.name for p in (lake.root / "candles/exchange=bybit/category=linear/symbol=BTCUSDT/timeframe=1").iterdir())
    assert dirs == ["date=2024-01", "date=2024-02"]


def test_hourly_candles_go_into_yearly_partitions(lake):
    df = candles(24 * 400, step=60 * MINUTE)
    assert lake.write_candles(df, symbol="BTCUSDT", timeframe="60").partitions == ["2024", "2025"]


def test_rewriting_the_same_rows_reports_nothing_new_and_leaves_files_byte_identical(lake):
    df = candles(3000)
    lake.write_candles(df, symbol="BTCUSDT", timeframe="1")
    before = _files(lake.root)
    again = lake.write_candles(df.sample(fraction=1.0, shuffle=True, seed=3), symbol="BTCUSDT", timeframe="1")
    assert (again.rows_new, again.rows_replaced, again.rows_unchanged) == (0, 0, 3000)
    assert not again.changed and again.partitions == []
    assert _files(lake.root) == before


def test_nan_and_null_values_count_as_unchanged_on_rewrite(lake):
    df = candles(10).with_columns(pl.when(pl.int_range(10) == 3).then(float("nan")).otherwise(pl.col("close")).alias("close"))
    lake.write_candles(df, symbol="BTCUSDT", timeframe="1")
    assert lake.write_candles(df, symbol="BTCUSDT", timeframe="1").rows_unchanged == 10


def test_last_write_wins_and_counts_are_exact(lake):
    df = candles(100)
    lake.write_candles(df, symbol="BTCUSDT", timeframe="1")
    changed = df.slice(10, 20).with_columns(pl.col("close") + 1.0)
    extra = candles(5, start=T0 + 100 * MINUTE, seed=9)
    older = candles(5, start=T0 - 5 * MINUTE, seed=8)
    batch = pl.concat([changed, df.slice(50, 10), extra, older])
    result = lake.write_candles(batch, symbol="BTCUSDT", timeframe="1")
    assert (result.rows_new, result.rows_replaced, result.rows_unchanged) == (10, 20, 10)
    back = lake.read_candles("BTCUSDT", "1")
    assert back.height == 110
    assert back["ts"].is_sorted() and back["ts"].n_unique() == 110
    expected = stored(pl.concat([older, df.slice(0, 10), changed, df.slice(30, 70), extra]))
    assert back.select(expected.columns).equals(expected)


def test_within_one_frame_the_last_row_for_a_key_wins(lake):
    df = candles(3)
    dup = df.slice(1, 1).with_columns(pl.col("close") * 2)
    lake.write_candles(pl.concat([df, dup]), symbol="BTCUSDT", timeframe="1")
    back = lake.read_candles("BTCUSDT", "1")
    assert back.height == 3 and back["close"][1] == dup["close"][0]


def _data_files(root: Path) -> dict[str, str]:
    return {k: v for k, v in _files(root).items() if "_delta_log" not in k}


def test_newer_rows_are_added_as_one_more_file_without_rewriting_the_partition(lake):
    df = candles(1000)
    lake.write_candles(df.head(900), symbol="BTCUSDT", timeframe="1")
    before = _data_files(lake.root)
    result = lake.write_candles(df.tail(100), symbol="BTCUSDT", timeframe="1")
    assert result.rows_new == 100 and result.files_written == 1
    after = _data_files(lake.root)
    assert set(before.items()) <= set(after.items())  # nothing stored was rewritten
    assert len(set(after) - set(before)) == 1
    assert len(lake.snapshot("candles").partition(lake.find_series("candles")[0], "2024-01")) == 2
    assert lake.read_candles("BTCUSDT", "1").height == 1000


def test_each_write_is_one_delta_transaction_across_its_partitions(lake):
    v0 = lake.versions()["candles"]
    result = lake.write_candles(candles(60 * 24 * 40), symbol="BTCUSDT", timeframe="1")
    assert result.partitions == ["2024-01", "2024-02"]
    assert lake.versions()["candles"] == result.version
    history = lake.table("candles").history(1)[0]
    assert history["marketlake.operation"] == "write_candles"
    assert result.version == (v0 + 2 if v0 < 0 else v0 + 1)  # (a new table: version 0 is its creation)


def test_files_are_folded_once_a_partition_reaches_the_configured_count(tmp_path):
    lake = Lake(tmp_path / "lake", settings=Settings.load(overrides={"compact_after_deltas": 4}, environ={}))
    df = candles(100)
    sid = None
    for i in range(10):
        lake.write_candles(df.slice(i * 10, 10), symbol="BTCUSDT", timeframe="1")
        back = lake.read_candles("BTCUSDT", "1")
        assert back.height == (i + 1) * 10 and back["ts"].is_unique().all()
        sid = lake.find_series("candles")[0]
        assert len(lake.snapshot("candles").partition(sid, "2024-01")) < 4
    lake.compact()
    assert len(lake.snapshot("candles").partition(sid, "2024-01")) == 1
    assert lake.read_candles("BTCUSDT", "1").select(stored(df).columns).equals(stored(df))


def test_replaced_files_stay_readable_for_a_reader_of_the_older_version(lake):
    df = candles(500)
    lake.write_candles(df, symbol="BTCUSDT", timeframe="1")
    pinned = Lake(lake.root, settings=lake.settings, as_of=lake.versions()["candles"])
    lake.write_candles(df.with_columns(pl.col("close") + 1), symbol="BTCUSDT", timeframe="1")
    assert pinned.read_candles("BTCUSDT", "1")["close"].equals(stored(df)["close"])
    assert lake.read_candles("BTCUSDT", "1")["close"].equals(stored(df)["close"] + 1)
    # Delta readers see one version: never both files.
    assert pl.read_delta(str(lake.root / "candles")).height == 500


def test_trades_merge_by_trade_id(lake):
    t = pl.DataFrame({
        "ts": [T0, T0, T0 + 5], "price": [1.0, 1.1, 1.2], "size": [1.0, 2.0, 3.0],
        "side": ["Buy", "Sell", "Buy"], "trade_id": ["a", "b", "c"],
    })
    assert lake.write_trades(t, symbol="BTCUSDT").rows_new == 3
    again = lake.write_trades(t.with_columns(pl.when(pl.col("trade_id") == "b").then(9.9).otherwise(pl.col("price")).alias("price")), symbol="BTCUSDT")
    assert (again.rows_new, again.rows_replaced, again.rows_unchanged) == (0, 1, 2)
    back = lake.read_trades("BTCUSDT")
    assert back["trade_id"].to_list() == ["a", "b", "c"] and back["price"].to_list() == [1.0, 9.9, 1.2]
    assert back["ts"].dtype == pl.Datetime("us", "UTC")


def test_trades_with_sub_millisecond_times_keep_them(lake):
    import datetime as dt
    t = pl.DataFrame({
        "ts": [dt.datetime(2024, 1, 1, 0, 0, 0, 123456)], "price": [1.0], "size": [1.0], "side": ["Buy"], "trade_id": ["x"],
    })
    lake.write_trades(t, symbol="BTCUSDT")
    assert lake.read_trades("BTCUSDT")["ts"][0].microsecond == 123456


def test_delete_removes_keys_atomically_and_reports_them(lake):
    df = candles(100)
    lake.write_candles(df, symbol="BTCUSDT", timeframe="1")
    r = lake.delete_candles(symbol="BTCUSDT", timeframe="1", ts=[T0 + 5 * MINUTE, T0 + 7 * MINUTE])
    assert r.rows_deleted == 2
    r = lake.delete_candles(symbol="BTCUSDT", timeframe="1", start=T0 + 90 * MINUTE, end=T0 + 200 * MINUTE)
    assert r.rows_deleted == 10
    assert lake.read_candles("BTCUSDT", "1").height == 88
    assert lake.delete_candles(symbol="BTCUSDT", timeframe="1", ts=[T0 + 5 * MINUTE]).rows_deleted == 0


def test_empty_frames_write_nothing(lake):
    assert not lake.write_candles(candles(0), symbol="BTCUSDT", timeframe="1").changed
    assert not (lake.root / "candles").exists()


def test_spot_and_linear_series_never_mix(lake):
    lake.write_candles(candles(10, seed=1), symbol="BTCUSDT", timeframe="1", category="spot")
    lake.write_candles(candles(20, seed=2), symbol="BTCUSDT", timeframe="1")
    assert lake.read_candles("BTCUSDT", "1").height == 20
    assert lake.read_candles("BTCUSDT", "1", category="spot").height == 10


def test_a_lake_root_that_is_a_file_is_refused(tmp_path):
    from marketlake.errors import LakeError
    (tmp_path / "f").write_text("x")
    with pytest.raises(LakeError):
        Lake(tmp_path / "f", settings=Settings.load(environ={}))
