"""Damage to the lake's files ends in a complete lake after ``check`` + ``repair``, and ``fsck``
never removes data a reader could still read.

The three cases a new user met with the previous format: the newest partition truncated by a
disk and quarantined by ``fsck --fix``; a month folder deleted by hand; a junk file planted beside
a good one.
"""

from __future__ import annotations

import os
import shutil

import polars as pl

from marketlake.ingest.service import IngestRequest, run_ingest
from marketlake.quality import check_lake, repair_lake
from marketlake.settings import Settings
from marketlake.store import Lake
from marketlake_emulator import BybitEmulator
from tests.integration.emulated import client_for, run_with_emulator, truth


def _lake(tmp_path) -> Lake:
    return Lake(tmp_path / "lake", settings=Settings.load(environ={}))


async def _ingest(lake: Lake, emu: BybitEmulator):
    req = IngestRequest.of(symbols="BTCUSDT", timeframes="1", days=40)  # June and July 2024: two partitions
    async with client_for(emu.url, lake) as client:
        out = await run_ingest(lake, client, req)
    (sp,) = out.plan.series
    return sp


def _files(lake: Lake, month: str):
    sid = lake.find_series("candles")[0]
    return [lake.root / "candles" / f.path for f in lake.snapshot("candles").partition(sid, month)]


async def _repair_and_compare(lake: Lake, emu: BybitEmulator, sp) -> None:
    async with client_for(emu.url, lake) as client:
        rep = await repair_lake(lake, client=client)
    assert rep.gaps_left == 0 and not rep.refetch_failures
    assert not check_lake(lake).has_issues
    want = truth(emu, "BTCUSDT", "1", sp.start_ms, sp.end_ms)
    got = lake.read_candles("BTCUSDT", "1").select(want.columns)
    assert got.equals(want)
    assert lake.fsck().ok


def test_a_truncated_newest_partition_quarantined_by_fsck_is_reported_by_check_and_refetched(tmp_path):
    lake = _lake(tmp_path)

    async def t(emu: BybitEmulator) -> None:
        sp = await _ingest(lake, emu)
        (newest,) = _files(lake, "2024-07")
        newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 3])
        fixed = lake.fsck(fix=True)
        assert [(i.kind, i.fixed) for i in fixed.issues] == [("unreadable", True)]
        assert list((lake.root / "_meta" / "quarantine").rglob(newest.name))  # kept, not deleted
        found = check_lake(lake)
        (sc,) = found.series
        assert found.has_issues and sc.unstored and sc.unstored[-1][1] == sp.end_ms
        await _repair_and_compare(lake, emu, sp)

    run_with_emulator(t)


def test_a_month_folder_deleted_by_hand_is_reported_by_check_and_refetched_by_repair(tmp_path):
    lake = _lake(tmp_path)

    async def t(emu: BybitEmulator) -> None:
        sp = await _ingest(lake, emu)
        shutil.rmtree(_files(lake, "2024-06")[0].parent)
        assert [i.kind for i in lake.fsck().issues] == ["missing"]
        found = check_lake(lake)
        assert found.has_issues and found.series[0].damaged
        await _repair_and_compare(lake, emu, sp)

    run_with_emulator(t)


def test_a_junk_file_beside_a_good_one_changes_nothing_a_reader_sees(tmp_path):
    lake = _lake(tmp_path)

    async def t(emu: BybitEmulator) -> None:
        sp = await _ingest(lake, emu)
        (good,) = _files(lake, "2024-06")
        junk = good.parent / "part-00000007.parquet"
        junk.write_bytes(b"8 bytes!")
        before = lake.read_candles("BTCUSDT", "1")
        report = lake.fsck(fix=True)
        assert [(i.kind, i.fixed) for i in report.issues] == [("orphan", False)]  # young: kept, reported
        assert good.exists() and lake.read_candles("BTCUSDT", "1").equals(before)
        assert not check_lake(lake).has_issues
        os.utime(junk, (1, 1))
        lake.fsck(fix=True)
        assert not junk.exists() and good.exists()
        await _repair_and_compare(lake, emu, sp)
        assert pl.read_delta(str(lake.root / "candles")).height == before.height

    run_with_emulator(t)
