"""Many machines, one lake on S3: writers with no shared local file, killed and restarted.

Three "machines" are processes with state directories of their own (rate budget, table-state
cache, ledger replica); they share nothing but the bucket of a real S3 server (moto, on
127.0.0.1) and the emulated exchange. They ingest klines and archive trades of overlapping
symbols at the same time, are SIGKILLed at random moments and restarted. The lake must end equal
to the exchange's truth, without a lost or a duplicate row, fsck must find nothing but the
uncommitted files of the killed writers, and a machine that comes last plans from the others'
commits: it fetches nothing they already committed.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from marketlake.ingest.archive import day_bounds
from marketlake.store import Lake
from tests.integration.emulated import emulator_thread, truth

ROOT = Path(__file__).resolve().parents[2]
KILLS = int(os.environ.get("MARKETLAKE_TEST_MACHINE_KILLS", "2"))
MACHINES = {"m1": "BTCUSDT,ETHUSDT", "m2": "ETHUSDT,SYM001USDT", "m3": "SYM001USDT,BTCUSDT"}
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SYM001USDT")
START, END = dt.date(2024, 6, 25), dt.date(2024, 6, 28)
KEYS = ["ts", "price", "size", "side", "trade_id"]

pytestmark = pytest.mark.timeout(600)


def _commands(name: str, url: str, lake_url: str) -> list[list[str]]:
    base = [sys.executable, "-m", "marketlake"]
    return [
        [*base, "ingest", "--symbols", MACHINES[name], "--timeframes", "1", "--days", "12",
         "--base-url", url, "--lake", lake_url],
        [*base, "archive", "--symbols", MACHINES[name], "--start", START.isoformat(), "--end", END.isoformat(),
         "--archive-url", url, "--base-url", url, "--lake", lake_url],
    ]


def test_three_machines_killed_and_restarted_end_with_the_exact_lake(s3_server, tmp_path: Path) -> None:
    rng = random.Random(12)
    lake_url = f"s3://{s3_server.new_bucket()}/team-lake"
    envs = {m: {**s3_server.env(tmp_path / m), "MARKETLAKE_RATE_LIMIT_PER_5S": "500"} for m in MACHINES}
    with emulator_thread() as emu:
        emu.control.configure(p_slow=0.3, slow_seconds=0.2, paths=["/archive", "/v5/market/kline"])
        # Rounds of all three machines at once, each killed at a random moment.
        for _ in range(KILLS):
            procs = []
            for m in MACHINES:
                cmd = rng.choice(_commands(m, emu.url, lake_url))
                procs.append(subprocess.Popen(cmd, cwd=ROOT, env=envs[m], stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL))
            time.sleep(rng.uniform(2.0, 4.0))
            for p in procs:
                p.send_signal(signal.SIGKILL)
                p.wait(30)
        emu.control.configure(p_slow=0.0)
        # Restarted, all at once, to completion.
        for step in range(2):
            procs = [subprocess.Popen(_commands(m, emu.url, lake_url)[step], cwd=ROOT, env=envs[m],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                     for m in MACHINES]
            for p in procs:
                _, err = p.communicate(timeout=300)
                assert p.returncode == 0, err[-2000:]

        lake = Lake(lake_url, settings=s3_server.settings(tmp_path / "auditor"))
        for sym in SYMBOLS:
            got = lake.read_candles(sym, "1")
            assert got.get_column("ts").is_unique().all(), f"{sym}: duplicate candles"
            first, last = got["ts"].dt.epoch("ms").min(), got["ts"].dt.epoch("ms").max()
            want = truth(emu, sym, "1", first, last + 1)
            assert got.select(want.columns).equals(want), f"{sym}: candles differ from the exchange"
            assert last - first >= 11 * 86_400_000  # (the whole requested range, not a stub of it)
            trades = lake.read_trades(sym).select(KEYS)
            want_t = emu.market.trades(sym, day_bounds(START)[0], day_bounds(END)[0], category="linear").select(KEYS)
            assert trades.height == want_t.height and trades.equals(want_t), f"{sym}: trades differ"
        # Killed writers leave uncommitted files only (invisible to readers); nothing else.
        issues = lake.fsck().issues
        assert all(i.kind == "orphan" for i in issues), issues
        fixed = Lake(lake_url, settings=s3_server.settings(tmp_path / "auditor", gc_grace_seconds=0))
        fixed.fsck(fix=True)
        assert fixed.fsck().ok
        # A machine that comes last plans from everybody's commits: nothing left to fetch.
        emu.control.log.clear()
        late = {**s3_server.env(tmp_path / "m4"), "MARKETLAKE_RATE_LIMIT_PER_5S": "500"}
        done = subprocess.run(
            [sys.executable, "-m", "marketlake", "ingest", "--symbols", ",".join(SYMBOLS), "--timeframes", "1",
             "--days", "12", "--base-url", emu.url, "--lake", lake_url],
            cwd=ROOT, env=late, capture_output=True, text=True, timeout=300,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        kline_requests = [r for r in emu.control.log.select(path="/v5/market/kline")]
        # Only the still-open newest window (the current minute moves on) may be asked again.
        assert len(kline_requests) <= len(SYMBOLS), [r.params for r in kline_requests]
        runs = lake.ledger.runs()
        assert set(runs["status"].to_list()) <= {"ok", "killed", "running"}
        assert (runs["status"] == "ok").sum() >= 7
        assert pl.Series(runs["host"]).n_unique() >= 1
