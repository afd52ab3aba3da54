"""Files written before a column was added stay readable, writable and fsck-clean."""

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from tests.helpers import MINUTE, T0, candles


def _downgrade(lake):
    """Replace every candle file by a copy without the ``filled`` column, committed through the
    log, as an older marketlake wrote it."""
    from marketlake.store.files import write_data_file
    from marketlake.store.table import NewFile, partition_values

    table = lake.table("candles")
    snap = table.snapshot()
    for sid in snap.series_ids():
        for key, files in snap.partitions(sid).items():
            adds = []
            for f in files:
                old = pq.read_table(table.path / f.path).drop(["filled"])
                rel, size = write_data_file(lake.storage, "candles", sid.partition_path(key), old)
                ts = old.column("ts").cast("int64").to_numpy() * 1000
                adds.append(NewFile(rel, size, old.num_rows, int(ts.min()), int(ts.max()), partition_values(sid, key)))
            table.commit(adds, [(f, partition_values(sid, key)) for f in files],
                         {(sid, key): frozenset(f.path for f in files)}, operation="test_downgrade")


def test_files_without_a_later_column_read_it_as_its_default(lake):
    lake.write_candles(candles(100), symbol="BTCUSDT", timeframe="1")
    _downgrade(lake)
    got = lake.read_candles("BTCUSDT", "1")
    assert got.height == 100 and got["filled"].to_list() == [False] * 100
    assert lake.sql("select count(*) from candles where not filled").item() == 100
    assert lake.fsck().ok


def test_old_and_new_files_mix_in_one_partition_and_merge(lake):
    df = candles(100)
    lake.write_candles(df.head(60), symbol="BTCUSDT", timeframe="1")
    _downgrade(lake)
    lake.write_candles(df.tail(40), symbol="BTCUSDT", timeframe="1")  # a delta in the new schema
    assert lake.sql("select count(*) from candles").item() == 100
    r = lake.write_candles(df.slice(10, 5).with_columns(pl.col("close") + 1), symbol="BTCUSDT", timeframe="1")
    assert r.rows_replaced == 5
    got = lake.read_candles("BTCUSDT", "1")
    assert got.height == 100 and not got["filled"].any()
    newest = lake.plan_files("candles", lake.find_series("candles"), None, None)[0].files[-1]
    assert pa.types.is_boolean(pq.read_schema(newest).field("filled").type)
    assert lake.fsck().ok
    assert lake.read_candles(start=T0 + 10 * MINUTE, end=T0 + 15 * MINUTE)["close"].equals(df.slice(10, 5)["close"] + 1)
