"""fsck checks the log against storage; it acts only on what is provably bad, never on a good file."""

import hashlib
import os
import shutil
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from marketlake.errors import CorruptLakeError
from marketlake.settings import Settings
from marketlake.store import Lake
from marketlake.store.ledger import Status
from tests.helpers import MINUTE, T0, candles


def _tree(root: Path) -> dict[str, str]:
    out = {}
    for d, _, fs in os.walk(root):
        for f in fs:
            p = Path(d, f)
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _files_of(lake, month: str) -> list[Path]:
    sid = lake.find_series("candles")[0]
    return [lake.root / "candles" / f.path for f in lake.snapshot("candles").partition(sid, month)]


def _lake(tmp_path, grace: float = 3600.0) -> Lake:
    return Lake(tmp_path / "lake", settings=Settings.load(overrides={"gc_grace_seconds": grace}, environ={}))


def test_a_healthy_lake_is_left_byte_identical_by_fsck_fix(lake):
    lake.write_candles(candles(1440 * 40), symbol="BTCUSDT", timeframe="1")
    lake.write_candles(candles(10, start=candles(1440 * 40)["ts"][-1] + 60_000), symbol="BTCUSDT", timeframe="1")
    before = _tree(lake.root)
    report = lake.fsck(fix=True)
    assert report.ok and report.issues == [] and report.files_checked == 3
    assert report.rows_checked == 1440 * 40 + 10
    assert _tree(lake.root) == before


def test_a_junk_file_beside_a_good_one_is_an_orphan_and_the_good_file_is_never_touched(tmp_path):
    lake = _lake(tmp_path)
    lake.write_candles(candles(100), symbol="BTCUSDT", timeframe="1")
    good = _files_of(lake, "2024-01")[0]
    junk = good.parent / "part-00000007.parquet"
    junk.write_bytes(b"JUNKJUNK")
    report = lake.fsck(fix=True)
    assert [(i.kind, i.fixed) for i in report.issues] == [("orphan", False)]  # younger than the retention
    assert junk.exists() and good.exists()
    assert lake.read_candles().height == 100
    os.utime(junk, (1, 1))  # as if it had lain there for decades
    assert [(i.kind, i.fixed) for i in lake.fsck(fix=True).issues] == [("orphan", True)]
    assert not junk.exists() and good.exists() and lake.fsck().ok
    assert lake.read_candles().height == 100


def test_a_crashed_writers_uncommitted_file_is_an_orphan_removed_only_after_the_retention(tmp_path):
    lake = _lake(tmp_path, grace=0)
    lake.write_candles(candles(100), symbol="BTCUSDT", timeframe="1")
    good = _files_of(lake, "2024-01")[0]
    stray = good.parent / "part-0123456789abcdef0123456789abcdef.parquet"
    shutil.copy(good, stray)
    report = lake.fsck(fix=True)
    assert [(i.kind, i.fixed) for i in report.issues] == [("orphan", True)] and not stray.exists()
    assert good.exists() and lake.read_candles().height == 100


def test_an_unreadable_file_is_quarantined_and_dropped_from_the_log_and_check_then_reports_its_range(lake):
    lake.write_candles(candles(1440 * 40), symbol="BTCUSDT", timeframe="1")
    sid = lake.find_series("candles")[0]
    lake.ledger.record(sid, T0, T0 + 1440 * 40 * MINUTE, Status.PRESENT)
    bad = _files_of(lake, "2024-02")[0]
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])  # truncated by a failing disk
    with pytest.raises(CorruptLakeError):
        lake.read_candles("BTCUSDT", "1")
    report = lake.fsck()
    assert [i.kind for i in report.issues] == ["unreadable"] and bad.exists()
    fixed = lake.fsck(fix=True)
    assert [(i.kind, i.fixed) for i in fixed.issues] == [("unreadable", True)]
    assert not bad.exists() and list((lake.root / "_meta" / "quarantine").rglob(bad.name))
    assert lake.fsck().ok
    assert lake.read_candles().height == 1440 * 31  # January is intact
    # The ledger still claims February: check reports it as fetched but not stored, repair re-fetches.
    from marketlake.quality import check_lake

    (sc,) = check_lake(lake).series
    feb = T0 + 1440 * 31 * MINUTE
    assert sc.has_issues and sc.unstored == [(feb, T0 + 1440 * 40 * MINUTE)]


def test_a_missing_file_is_reported_and_its_reference_dropped_by_fix(lake):
    lake.write_candles(candles(1440 * 40), symbol="BTCUSDT", timeframe="1")
    shutil.rmtree(_files_of(lake, "2024-02")[0].parent)  # a month folder deleted by hand
    assert [i.kind for i in lake.fsck().issues] == ["missing"]
    lake.fsck(fix=True)
    assert lake.fsck().ok and lake.read_candles().height == 1440 * 31


def test_a_readable_file_that_differs_from_the_log_is_reported_never_removed(lake):
    lake.write_candles(candles(100), symbol="BTCUSDT", timeframe="1")
    f = _files_of(lake, "2024-01")[0]
    table = pq.read_table(f)
    pq.write_table(table.slice(0, 50), f)  # someone rewrote it in place
    report = lake.fsck(fix=True)
    assert [(i.kind, i.fixed) for i in report.issues] == [("mismatch", False)]
    assert f.exists() and not report.ok
    assert lake.read_candles().height == 50


def test_fsck_of_a_lake_that_does_not_exist_creates_nothing(tmp_path):
    lake = Lake(tmp_path / "nothing", settings=Settings.load(environ={}))
    assert lake.fsck().ok and lake.series().is_empty()
    assert not (tmp_path / "nothing").exists()


def test_vacuum_keeps_files_of_named_snapshots_and_deletes_the_rest(tmp_path):
    lake = _lake(tmp_path, grace=0)
    df = candles(100)
    lake.write_candles(df, symbol="BTCUSDT", timeframe="1")
    lake.create_snapshot("before")
    for i in range(3):
        lake.write_candles(df.with_columns(pl.col("close") + i + 1), symbol="BTCUSDT", timeframe="1")
    removed = lake.vacuum()
    assert len(removed) == 2  # the two intermediate versions' files; the snapshot's file stays
    old = Lake(lake.root, settings=lake.settings, as_of="before").read_candles()
    assert old["close"].equals(df["close"])
    lake.delete_snapshot("before")
    assert len(lake.vacuum()) == 1
