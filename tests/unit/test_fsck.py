"""fsck reports and removes leftovers and unreadable files, never a good one."""

import hashlib
import os
from pathlib import Path

import polars as pl

from tests.helpers import candles


def _snapshot(root: Path) -> dict[str, str]:
    out = {}
    for d, _, fs in os.walk(root / "candles"):
        for f in fs:
            p = Path(d, f)
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _partition(lake, month="2024-01"):
    return next((lake.root / "candles").rglob(f"date={month}"))


def test_a_healthy_lake_is_left_byte_identical_by_fsck_fix(lake):
    lake.write_candles(candles(1440 * 40), symbol="BTCUSDT", timeframe="1")
    lake.write_candles(candles(10, start=candles(1440 * 40)["ts"][-1] + 60_000), symbol="BTCUSDT", timeframe="1")
    before = _snapshot(lake.root)
    report = lake.fsck(fix=True)
    assert report.ok and report.issues == [] and report.files_checked == 3
    assert report.rows_checked == 1440 * 40 + 10
    assert _snapshot(lake.root) == before


def test_leftover_temp_files_are_reported_then_removed(lake):
    lake.write_candles(candles(100), symbol="BTCUSDT", timeframe="1")
    leftover = _partition(lake) / ".tmp-part-00000002.parquet.999.abc.inprogress"
    leftover.write_bytes(b"half a file")
    report = lake.fsck()
    assert not report.ok and [i.kind for i in report.issues] == ["temp"] and leftover.exists()
    assert lake.read_candles().height == 100  # readers never saw it
    fixed = lake.fsck(fix=True)
    assert fixed.ok and not leftover.exists()
    assert lake.read_candles().height == 100


def test_superseded_files_left_by_a_crash_are_moved_out(lake):
    df = candles(100)
    lake.write_candles(df, symbol="BTCUSDT", timeframe="1")
    pdir = _partition(lake)
    old = pdir / "part-00000001.parquet"
    stale = old.read_bytes()
    lake.write_candles(df.with_columns(pl.col("close") + 1), symbol="BTCUSDT", timeframe="1")
    old.write_bytes(stale)  # as if the writer died between publishing part-2 and moving part-1 out
    assert lake.read_candles()["close"].equals(df["close"] + 1)
    report = lake.fsck(fix=True)
    assert [i.kind for i in report.issues] == ["superseded"] and not old.exists()
    assert lake.read_candles()["close"].equals(df["close"] + 1)


def test_an_unreadable_file_is_quarantined_not_deleted(lake):
    lake.write_candles(candles(1440 * 40), symbol="BTCUSDT", timeframe="1")
    bad = next(_partition(lake, "2024-02").iterdir())
    bad.write_bytes(bad.read_bytes()[: len(bad.read_bytes()) // 2])  # truncated
    report = lake.fsck()
    assert [i.kind for i in report.issues] == ["unreadable"]
    assert bad.exists()
    lake.fsck(fix=True)
    assert not bad.exists()
    assert list((lake.root / "_meta" / "quarantine").rglob(bad.name))
    assert lake.fsck().ok
    assert lake.read_candles().height == 1440 * 31  # January is intact


def test_foreign_files_are_reported_and_never_touched(lake):
    lake.write_candles(candles(10), symbol="BTCUSDT", timeframe="1")
    note = _partition(lake) / "notes.txt"
    note.write_text("mine")
    report = lake.fsck(fix=True)
    assert [i.kind for i in report.issues] == ["foreign"] and not report.ok
    assert note.read_text() == "mine"


def test_trash_is_purged_after_the_grace_period(tmp_path):
    from marketlake.settings import Settings
    from marketlake.store import Lake

    lake = Lake(tmp_path / "l", settings=Settings.load(overrides={"gc_grace_seconds": 0}, environ={}))
    df = candles(10)
    lake.write_candles(df, symbol="BTCUSDT", timeframe="1")
    lake.write_candles(df.with_columns(pl.col("close") + 1), symbol="BTCUSDT", timeframe="1")
    assert list((lake.root / "_meta" / "trash").iterdir())
    assert lake.fsck(fix=True).trash_purged == 1
    assert not list((lake.root / "_meta" / "trash").iterdir())
