"""check and repair over a lake ingested from the emulator, with faults injected into the lake."""

from __future__ import annotations

import json

import polars as pl

from marketlake.cli.app import main
from marketlake_emulator import BybitEmulator
from marketlake_emulator.market import SyntheticMarket
from marketlake.ingest.service import IngestRequest, run_ingest
from marketlake.quality import check_lake, repair_lake
from marketlake.settings import Settings
from marketlake.store import Lake
from tests.integration.emulated import NOW, client_for, run_with_emulator, truth

MIN = 60_000
DAY = 86_400_000
BASE = NOW - NOW % MIN - 2 * DAY
OUTAGE = (BASE - 45 * MIN, BASE)
MARKET = SyntheticMarket.generate(7, 6, outages=[OUTAGE])


def new_lake(tmp_path) -> Lake:
    return Lake(tmp_path / "lake", settings=Settings.load(environ={}))


async def ingest(lake: Lake, emu: BybitEmulator, tfs: str = "1,5"):
    req = IngestRequest.of(symbols="BTCUSDT,ETHUSDT", timeframes=tfs, days=4)
    async with client_for(emu.url, lake) as client:
        return await run_ingest(lake, client, req)


def damage(lake: Lake) -> dict[str, int]:
    """Delete 7 minutes, break 2 candles, add a misaligned one (BTCUSDT 1m)."""
    t = BASE + 3 * 3600 * 1000
    lake.delete_candles(symbol="BTCUSDT", timeframe="1", start=t, end=t + 7 * MIN)
    row = lake.read_candles("BTCUSDT", "1", t + DAY // 4, t + DAY // 4 + 2 * MIN)
    lake.write_candles(row.with_columns(pl.col("low") + 1e6).drop("symbol", "timeframe"), symbol="BTCUSDT", timeframe="1")
    lake.write_candles(row.head(1).with_columns(pl.col("ts") + pl.duration(seconds=30)).drop("symbol", "timeframe"),
                       symbol="BTCUSDT", timeframe="1")
    return {"gap_at": t, "invalid_at": t + DAY // 4}


def test_check_finds_every_injected_fault_and_explains_the_exchanges_outage(tmp_path):
    lake = new_lake(tmp_path)

    async def t(emu: BybitEmulator) -> None:
        await ingest(lake, emu)
        clean = check_lake(lake)
        assert not clean.has_issues
        btc1 = next(s for s in clean.series if s.sid.label() == "bybit/linear/BTCUSDT/1")
        assert [(g.previous_ts, g.current_ts) for g in btc1.explained] == [(OUTAGE[0] - MIN, OUTAGE[1])]
        where = damage(lake)
        found = check_lake(lake, "BTCUSDT", "1")
        (s,) = found.series
        assert s.has_issues
        assert [g.missing_candles for g in s.unexplained] == [7]
        assert s.unexplained[0].previous_ts == where["gap_at"] - MIN
        assert s.result.invalid_count == 2 and s.result.misaligned_rows.size == 1
        report = found.report()
        assert set(report) == {"files_checked", "files_with_issues", "total_gaps", "total_duplicates",
                               "total_invalid_candles", "issues"}
        entry = report["issues"]["bybit/linear/BTCUSDT/1"]
        assert set(entry) == {"has_issues", "gaps", "duplicate_count", "invalid_candles", "total_candles",
                              "first_timestamp", "last_timestamp"}
        assert set(entry["gaps"][0]) == {"position", "previous_timestamp", "current_timestamp", "expected_interval",
                                         "actual_interval", "gap_duration", "missing_candles", "gap_minutes"}
        assert entry["gaps"][0]["missing_candles"] == 7 and entry["gaps"][0]["gap_minutes"] == 7.0

    run_with_emulator(t, market=MARKET)


def test_check_compares_higher_timeframes_with_the_resampled_minutes(tmp_path):
    lake = new_lake(tmp_path)

    async def t(emu: BybitEmulator) -> None:
        await ingest(lake, emu)
        assert all(s.consistency is None or s.consistency.ok for s in check_lake(lake).series)
        five = lake.read_candles("ETHUSDT", "5").slice(100, 1)
        lake.write_candles(five.with_columns(pl.col("volume") * 2).drop("symbol", "timeframe"), symbol="ETHUSDT", timeframe="5")
        (s,) = check_lake(lake, "ETHUSDT", "5").series
        assert s.has_issues and len(s.consistency.mismatches) == 1

    run_with_emulator(t, market=MARKET)


def test_repair_quarantines_bad_rows_and_refetches_gaps_until_the_lake_equals_the_exchange(tmp_path):
    lake = new_lake(tmp_path)

    async def t(emu: BybitEmulator) -> None:
        out = await ingest(lake, emu)
        damage(lake)
        async with client_for(emu.url, lake) as client:
            rep = await repair_lake(lake, client=client)
        btc = next(s for s in rep.series if s.series == "bybit/linear/BTCUSDT/1")
        assert btc.quarantined == 3 and btc.gaps_refetched >= 1 and btc.candles_refetched == 9
        assert rep.gaps_left == 0 and not rep.refetch_failures
        q = lake.quarantined()
        assert q.height == 3 and q["reason"].str.contains("high_below|low_above|misaligned").all()
        assert not check_lake(lake).has_issues
        for sp in out.plan.series:
            want = truth(emu, sp.sid.symbol, sp.sid.timeframe.name, sp.start_ms, sp.end_ms)
            got = lake.read_candles(sp.sid.symbol, sp.sid.timeframe.name).select(want.columns)
            assert got.equals(want)

    run_with_emulator(t, market=MARKET)


def test_fill_only_when_asked_marks_fills_and_unfill_removes_them(tmp_path):
    lake = new_lake(tmp_path)

    async def t(emu: BybitEmulator) -> None:
        await ingest(lake, emu, "1")
        where = damage(lake)
        rep = await repair_lake(lake)  # no client, no fill: gaps are reported, never papered over
        assert rep.gaps_left == 2  # the deleted 7 minutes and the quarantined 2
        filled = await repair_lake(lake, fill=True)
        assert sum(s.candles_filled for s in filled.series) == 9 and filled.gaps_left == 0
        got = lake.read_candles("BTCUSDT", "1", where["gap_at"], where["gap_at"] + 7 * MIN)
        assert got["filled"].all() and (got["volume"] == 0).all() and got["close"].n_unique() == 1
        assert lake.read_candles("ETHUSDT", "1")["filled"].any() is False
        check = check_lake(lake, "BTCUSDT", "1").series[0]
        assert check.filled == 9 and not check.has_issues
        removed = await repair_lake(lake, unfill=True)
        assert sum(s.fills_removed for s in removed.series) == 9
        assert not lake.read_candles()["filled"].any()

    run_with_emulator(t, market=MARKET)


def test_check_and_repair_commands_exit_codes_and_report_file(tmp_path, capsys):
    lake = new_lake(tmp_path)

    async def t(emu: BybitEmulator) -> None:
        await ingest(lake, emu, "1")

    run_with_emulator(t, market=MARKET)
    root = str(lake.root)
    assert main(["check", "--lake", root]) == 0
    damage(lake)
    report = tmp_path / "report.json"
    assert main(["check", "--lake", root, "--report", str(report)]) == 1
    data = json.loads(report.read_text())
    assert data["files_with_issues"] == 1 and data["total_invalid_candles"] == 2
    assert main(["repair", "--lake", root, "--no-refetch", "--json"]) == 1  # gaps left
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{"):])["gaps_left"] == 2
    assert main(["repair", "--lake", root, "--no-refetch", "--fill"]) == 0
    assert main(["check", "--lake", root]) == 0


def test_demo_runs_offline_end_to_end(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--days", "2"]) == 0
    out = capsys.readouterr().out
    assert "no issues" in out and "BTCUSDT" in out
    assert "5s candles built" in out
    assert (tmp_path / "demo-lake" / "candles").is_dir()
    assert (tmp_path / "demo-lake" / "trades").is_dir()
