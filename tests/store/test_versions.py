"""Versions, named snapshots and ``as_of`` reads: a backtest's inputs never change under it."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import time
from pathlib import Path

import polars as pl
import pytest

from marketlake.errors import DataValidationError, LakeWriteError
from marketlake.settings import Settings
from marketlake.store import Lake
from tests.helpers import MINUTE, T0, candles


def _lake(root: Path, grace: float = 0.0) -> Lake:
    return Lake(root, settings=Settings.load(overrides={"gc_grace_seconds": grace}, environ={}))


def _digest(df: pl.DataFrame) -> str:
    return hashlib.sha256(df.write_ipc(None).getvalue()).hexdigest()


def test_a_snapshot_reads_bit_identical_after_ingest_repair_compaction_and_vacuum(tmp_path):
    lake = _lake(tmp_path / "lake")
    df = candles(1440 * 40)
    lake.write_candles(df, symbol="BTCUSDT", timeframe="1")
    lake.write_candles(candles(500, seed=3), symbol="ETHUSDT", timeframe="5")
    lake.create_snapshot("bt-2024", note="inputs of the January backtest")
    pinned = Lake(lake.root, settings=lake.settings, as_of="bt-2024")
    before = _digest(pinned.read_candles(["BTCUSDT", "ETHUSDT"]))
    before_sql = pinned.sql("select symbol, count(*) n, sum(close::DECIMAL(18,2)) s, max(ts) t from candles group by 1 order by 1")

    lake.write_candles(candles(1440, start=T0 + 1440 * 40 * MINUTE), symbol="BTCUSDT", timeframe="1")  # ingest
    lake.write_candles(df.slice(10, 5).with_columns(pl.col("close") + 9), symbol="BTCUSDT", timeframe="1")
    lake.delete_candles(symbol="BTCUSDT", timeframe="1", ts=[T0 + 20 * MINUTE])  # repair
    lake.compact()  # compaction + vacuum (retention 0)
    assert lake.vacuum() == []

    again = Lake(lake.root, settings=lake.settings, as_of="bt-2024")
    assert _digest(again.read_candles(["BTCUSDT", "ETHUSDT"])) == before
    assert again.sql("select symbol, count(*) n, sum(close::DECIMAL(18,2)) s, max(ts) t from candles group by 1 order by 1").equals(before_sql)
    assert _digest(pinned.read_candles(["BTCUSDT", "ETHUSDT"])) == before  # a reader opened earlier, too
    assert lake.read_candles("BTCUSDT").height == 1440 * 41 - 1


def test_as_of_a_version_and_as_of_a_time_read_the_lake_as_it_was(tmp_path):
    lake = _lake(tmp_path / "lake", grace=3600)
    df = candles(100)
    r1 = lake.write_candles(df, symbol="BTCUSDT", timeframe="1")
    time.sleep(0.05)
    between = dt.datetime.now(dt.UTC)
    time.sleep(0.05)
    lake.write_candles(df.with_columns(pl.col("close") + 1), symbol="BTCUSDT", timeframe="1")
    by_version = Lake(lake.root, settings=lake.settings, as_of=r1.version)
    by_time = Lake(lake.root, settings=lake.settings, as_of=between.isoformat())
    for old in (by_version, by_time):
        assert old.read_candles()["close"].equals(df["close"])
        assert old.sql("select max(close) from candles").item() == df["close"].max()
    assert lake.read_candles()["close"].equals(df["close"] + 1)


def test_a_lake_read_as_of_is_read_only(tmp_path):
    lake = _lake(tmp_path / "lake")
    lake.write_candles(candles(10), symbol="BTCUSDT", timeframe="1")
    lake.create_snapshot("s")
    old = Lake(lake.root, settings=lake.settings, as_of="s")
    with pytest.raises(LakeWriteError, match="read-only"):
        old.write_candles(candles(10), symbol="BTCUSDT", timeframe="1")
    with pytest.raises(LakeWriteError, match="read-only"):
        old.compact()


@pytest.mark.parametrize("bad", ["nosuchsnapshot", "2024-13-45", -1, 10_000, True])
def test_an_as_of_that_names_nothing_is_one_clear_error(tmp_path, bad):
    lake = _lake(tmp_path / "lake")
    lake.write_candles(candles(10), symbol="BTCUSDT", timeframe="1")
    with pytest.raises(DataValidationError):
        Lake(lake.root, settings=lake.settings, as_of=bad)


def test_snapshots_are_listed_refuse_duplicate_or_bad_names_and_can_be_deleted(tmp_path):
    lake = _lake(tmp_path / "lake")
    lake.write_candles(candles(10), symbol="BTCUSDT", timeframe="1")
    info = lake.create_snapshot("a", note="first")
    assert info.versions["candles"] == lake.versions()["candles"] and info.rows["candles"] == 10
    lake.create_snapshot("b")
    assert [s.name for s in lake.snapshots()] == ["a", "b"]
    for bad in ("a", "../x", "", "has space", "x" * 200):
        with pytest.raises(DataValidationError):
            lake.create_snapshot(bad)
    lake.delete_snapshot("a")
    assert [s.name for s in lake.snapshots()] == ["b"]
    with pytest.raises(DataValidationError):
        lake.delete_snapshot("a")


def test_a_rewrite_of_stored_rows_commits_nothing_and_leaves_every_file_identical(lake):
    df = candles(1440 * 40)
    lake.write_candles(df, symbol="BTCUSDT", timeframe="1")
    files = {str(p): p.read_bytes() for p in lake.root.rglob("*") if p.is_file()}
    version = lake.versions()
    r = lake.write_candles(df, symbol="BTCUSDT", timeframe="1")
    assert not r.changed and r.rows_unchanged == df.height
    assert lake.versions() == version
    assert {str(p): p.read_bytes() for p in lake.root.rglob("*") if p.is_file()} == files


def test_foreign_delta_readers_see_the_committed_rows(lake):
    from deltalake import DeltaTable

    lake.write_candles(candles(300), symbol="BTCUSDT", timeframe="1")
    lake.write_candles(candles(200, seed=1), symbol="ETHUSDT", timeframe="1")
    path = str(lake.root / "candles")
    assert pl.scan_delta(path).filter(pl.col("symbol") == "ETHUSDT").collect().height == 200
    assert DeltaTable(path).to_pyarrow_dataset().to_table().num_rows == 500
    assert sorted(DeltaTable(path).metadata().partition_columns) == sorted(
        ["exchange", "category", "symbol", "timeframe", "date"]
    )


def test_reading_a_missing_lake_creates_nothing(tmp_path):
    lake = Lake(tmp_path / "typo", settings=Settings.load(environ={}))
    assert lake.read_candles().is_empty() and lake.series().is_empty()
    assert set(lake.versions().values()) == {-1}
    assert lake.sql("select count(*) from candles").item() == 0
    assert not os.path.exists(tmp_path / "typo")


def test_a_symlink_planted_in_the_tree_is_refused_and_nothing_is_created_outside(tmp_path):
    lake = _lake(tmp_path / "lake")
    lake.write_candles(candles(10), symbol="BTCUSDT", timeframe="1")
    outside = tmp_path / "outside"
    outside.mkdir()
    (lake.root / "candles" / "exchange=bybit" / "category=linear" / "symbol=ETHUSDT").symlink_to(outside)
    with pytest.raises(LakeWriteError, match="outside the lake root"):
        lake.write_candles(candles(10), symbol="ETHUSDT", timeframe="1")
    assert list(outside.iterdir()) == []
    assert lake.read_candles().height == 10 and lake.fsck().ok
