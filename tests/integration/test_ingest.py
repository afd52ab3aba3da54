"""End-to-end ingest against the emulator on 127.0.0.1: exact, resumable, fault-tolerant."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from marketlake_emulator import BybitEmulator
from marketlake.ingest.service import IngestRequest, run_ingest, unexplained_gaps
from marketlake.settings import Settings
from marketlake.store import Lake
from marketlake.store.ledger import Status
from tests.integration.emulated import NOW, client_for, emulator_thread, run_with_emulator, truth

ROOT = Path(__file__).resolve().parents[2]
DAY = 86_400_000
KLINE = "/v5/market/kline"


def new_lake(path: Path) -> Lake:
    return Lake(path, settings=Settings.load(environ={}))


def assert_lake_equals_truth(lake: Lake, emu: BybitEmulator, outcome) -> None:
    for sp in outcome.plan.series:
        tf = sp.sid.timeframe.name
        want = truth(emu, sp.sid.symbol, tf, sp.start_ms, sp.end_ms)
        got = lake.read_candles(sp.sid.symbol, tf, sp.start_ms, sp.end_ms).select(want.columns)
        assert got.height == want.height, f"{sp.sid.label()}: {got.height} rows, truth {want.height}"
        assert got.equals(want), f"{sp.sid.label()}: values differ from the emulator's ground truth"


def test_ingest_equals_the_emulators_ground_truth_for_every_series(tmp_path):
    lake = new_lake(tmp_path / "lake")

    async def t(emu: BybitEmulator) -> None:
        req = IngestRequest.of(symbols="BTCUSDT,ETHUSDT,SYM001USDT", timeframes="1,5,60,D", days=12)
        async with client_for(emu.url, lake) as client:
            out = await run_ingest(lake, client, req)
        assert out.ok, (out.stats.failures, out.unexplained_gaps)
        assert out.stats.series == 12 and out.stats.series_done == 12
        assert_lake_equals_truth(lake, emu, out)
        # Every kline request was a window of at most 1000 candles and none was sent twice.
        windows = [(r.params["symbol"], r.params["interval"], r.params["start"]) for r in emu.control.log.select(path=KLINE)]
        assert len(windows) == len(set(windows)) == out.plan.requests

    run_with_emulator(t)


def test_a_second_run_sends_no_kline_request_and_changes_nothing(tmp_path):
    lake = new_lake(tmp_path / "lake")

    async def t(emu: BybitEmulator) -> None:
        req = IngestRequest.of(symbols="BTCUSDT,ETHUSDT", timeframes="1,15", days=5)
        async with client_for(emu.url, lake) as client:
            await run_ingest(lake, client, req)
            before = emu.control.log.select(path=KLINE)
            again = await run_ingest(lake, client, req)
        assert again.plan.requests == 0 and again.stats.rows_fetched == 0
        assert emu.control.log.select(path=KLINE) == before

    run_with_emulator(t)


def test_outages_are_recorded_as_verified_empty_not_as_gaps(tmp_path):
    lake = new_lake(tmp_path / "lake")
    base = NOW - NOW % 60_000 - 3 * DAY
    outage = (base - 90 * 60_000, base)  # 90 minutes, minute-aligned

    async def t(emu: BybitEmulator) -> None:
        req = IngestRequest.of(symbols="BTCUSDT", timeframes="1", days=5)
        async with client_for(emu.url, lake) as client:
            out = await run_ingest(lake, client, req)
        assert out.ok and out.unexplained_gaps == {}
        sid = out.plan.series[0].sid
        empty = lake.ledger.covered(sid, outage[0] - DAY, outage[1] + DAY, Status.EMPTY)
        assert empty == [outage]
        assert out.stats.empty_candles == 90
        assert_lake_equals_truth(lake, emu, out)

    from marketlake_emulator.market import SyntheticMarket

    market = SyntheticMarket.generate(7, 6, outages=[outage])
    run_with_emulator(t, market=market)


def test_an_unknown_symbol_gives_one_clear_error_and_the_others_complete(tmp_path):
    lake = new_lake(tmp_path / "lake")

    async def t(emu: BybitEmulator) -> None:
        req = IngestRequest.of(symbols="BTCUSDT,NOPEUSDT,ETHUSDT", timeframes="5", days=3)
        async with client_for(emu.url, lake) as client:
            out = await run_ingest(lake, client, req)
        assert out.unknown_symbols == ["NOPEUSDT"] and not out.ok
        assert {s.sid.symbol for s in out.plan.series} == {"BTCUSDT", "ETHUSDT"}
        assert out.stats.series_done == 2 and not out.stats.failures
        assert_lake_equals_truth(lake, emu, out)

    run_with_emulator(t)


def test_history_before_the_listing_is_verified_empty_without_a_request(tmp_path):
    lake = new_lake(tmp_path / "lake")

    async def t(emu: BybitEmulator) -> None:
        listed = emu.market.instrument("SYM002USDT").launch_ms
        req = IngestRequest.of(symbols="SYM002USDT", timeframes="D", start_ms=listed - 30 * DAY, end_ms=listed + 20 * DAY)
        async with client_for(emu.url, lake) as client:
            out = await run_ingest(lake, client, req)
        sp = out.plan.series[0]
        assert sp.before_listing is not None and sp.start_ms >= listed - DAY
        assert lake.ledger.covered(sp.sid, listed - 30 * DAY, sp.start_ms, Status.EMPTY)
        assert out.ok
        assert_lake_equals_truth(lake, emu, out)

    run_with_emulator(t)


@pytest.mark.parametrize("fault", ["p_10006", "p_429", "p_5xx", "p_truncated", "p_10016", "p_disconnect"])
def test_injected_faults_still_give_an_exact_lake(tmp_path, fault):
    lake = new_lake(tmp_path / "lake")

    async def t(emu: BybitEmulator) -> None:
        # A short rate window keeps 10006 resets (honoured by the client) short.
        emu.control.configure(**{fault: 0.25}, window_seconds=0.5)
        req = IngestRequest.of(symbols="BTCUSDT,SYM001USDT", timeframes="1,60", days=4)
        async with client_for(emu.url, lake) as client:
            out = await run_ingest(lake, client, req)
            assert client.stats.retries > 0  # the faults really happened
        assert out.ok, out.stats.failures
        assert_lake_equals_truth(lake, emu, out)

    run_with_emulator(t)


def test_at_the_default_budget_the_client_is_never_banned_and_the_peak_rate_is_reported(tmp_path, capsys):
    lake = new_lake(tmp_path / "lake")

    async def t(emu: BybitEmulator) -> None:
        emu.control.configure(ip_limit=600, window_seconds=5.0)
        req = IngestRequest.of(symbols="BTCUSDT,ETHUSDT,SYM001USDT,SYM002USDT", timeframes="1", days=70)
        async with client_for(emu.url, lake) as client:
            t0 = time.perf_counter()
            out = await run_ingest(lake, client, req, concurrency=64)
            took = time.perf_counter() - t0
        peak = emu.control.log.max_in_window(5.0)
        with capsys.disabled():
            print(f"\n[ingest] {out.stats.requests} requests in {took:.1f} s; max in any 5 s window: {peak}")
        assert emu.control.log.select(status=403) == []
        assert peak <= 500
        assert out.ok
        assert_lake_equals_truth(lake, emu, out)

    run_with_emulator(t)


def test_when_banned_by_force_nothing_is_sent_until_the_ban_lifts(tmp_path):
    lake = new_lake(tmp_path / "lake")

    async def t(emu: BybitEmulator) -> None:
        # On the kline path: an ingest first sends the time and the instruments snapshot.
        emu.control.configure(ip_ban_seconds=1.0, paths=[KLINE])
        emu.control.schedule("ok", "ok", "403")
        req = IngestRequest.of(symbols="BTCUSDT,ETHUSDT", timeframes="1", days=6)
        async with client_for(emu.url, lake, ban_seconds=1.0) as client:
            out = await run_ingest(lake, client, req, concurrency=4)
        banned = emu.control.log.select(status=403)
        assert len(banned) >= 1 and out.stats.bans == 1
        first_ban = banned[0].mono
        # Requests already in flight when the ban struck may still arrive a moment later; after
        # that, nothing until the ban lifts.
        during = [r for r in emu.control.log.records if first_ban + 0.05 < r.mono < first_ban + 0.95]
        assert during == [], f"{len(during)} requests were sent during the ban"
        assert out.ok
        assert_lake_equals_truth(lake, emu, out)

    run_with_emulator(t)


CANCEL_ROUNDS = int(os.environ.get("MARKETLAKE_TEST_INGEST_CANCEL_ROUNDS", "20"))


def test_an_ingest_cancelled_at_random_points_resumes_to_the_same_lake_fetching_nothing_twice(tmp_path):
    lake = new_lake(tmp_path / "lake")
    rng = random.Random(4)

    async def t(emu: BybitEmulator) -> None:
        req = IngestRequest.of(symbols="BTCUSDT,ETHUSDT,SYM001USDT", timeframes="1,5", days=20)
        async with client_for(emu.url, lake) as client:
            for _ in range(CANCEL_ROUNDS):
                covered = _covered_windows(lake, req)
                emu.control.log.clear()
                task = asyncio.ensure_future(run_ingest(lake, client, req, concurrency=8))
                await asyncio.sleep(rng.uniform(0.01, 0.12))
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                _assert_no_covered_window_requested(emu, covered)
            covered = _covered_windows(lake, req)
            emu.control.log.clear()
            out = await run_ingest(lake, client, req)
            _assert_no_covered_window_requested(emu, covered)
        assert out.ok
        assert_lake_equals_truth(lake, emu, out)
        for sp in out.plan.series:
            got = lake.read_candles(sp.sid.symbol, sp.sid.timeframe.name)
            assert got["ts"].is_unique().all()

    run_with_emulator(t)


def _covered_windows(lake: Lake, req: IngestRequest) -> dict[tuple[str, str], list[tuple[int, int]]]:
    out = {}
    if not lake.has_ledger:
        return out
    for row in lake.ledger.table().filter(pl.col("status").is_in(["present", "empty"])).iter_rows(named=True):
        out.setdefault((row["symbol"], row["timeframe"]), []).append((row["start_ms"], row["end_ms"]))
    return out


def _assert_no_covered_window_requested(emu: BybitEmulator, covered) -> None:
    for r in emu.control.log.select(path=KLINE):
        a, b = int(r.params["start"]), int(r.params["end"])
        for s, e in covered.get((r.params["symbol"], r.params["interval"]), []):
            assert not (s <= a and b < e), f"window {r.params} was fetched although covered"


KILL_ROUNDS = int(os.environ.get("MARKETLAKE_TEST_INGEST_KILL_ROUNDS", "4"))


def test_an_ingest_killed_with_sigkill_resumes_to_the_exact_lake(tmp_path):
    root = tmp_path / "lake"
    rng = random.Random(9)
    with emulator_thread() as emu:
        args = [
            sys.executable, "-m", "marketlake", "ingest", "--symbols", "BTCUSDT,ETHUSDT", "--timeframes", "1,5",
            "--days", "60", "--base-url", emu.url, "--lake", str(root),
        ]
        env = {**os.environ, "MARKETLAKE_RATE_LIMIT_PER_5S": "500"}
        for _ in range(KILL_ROUNDS):
            proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(rng.uniform(1.0, 2.5))
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        covered = _covered_windows(new_lake(root), None)
        emu.control.log.clear()
        done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        _assert_no_covered_window_requested(emu, covered)
        lake = new_lake(root)
        for sym in ("BTCUSDT", "ETHUSDT"):
            for tf in ("1", "5"):
                got = lake.read_candles(sym, tf)
                assert got["ts"].is_unique().all()
                first, last = got["ts"].dt.epoch("ms").min(), got["ts"].dt.epoch("ms").max()
                want = truth(emu, sym, tf, first, last + 1)
                assert got.select(want.columns).equals(want)
                sid = lake.series().filter((pl.col("symbol") == sym) & (pl.col("timeframe") == tf))
                assert sid.height == 1
        # A kill leaves at most uncommitted files: orphans, never referenced, kept within the retention.
        assert lake.fsck().ok or all(i.kind == "orphan" and not i.fixed for i in lake.fsck().issues)
