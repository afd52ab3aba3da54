"""``marketlake stream`` and ``ingest --mode live`` as processes: SIGTERM exits cleanly, SIGKILL
loses at most the unflushed micro-batch and the next run backfills it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from marketlake.settings import Settings
from marketlake.store import Lake
from marketlake.store.ledger import Status
from tests.integration.emulated import emulator_thread
from tests.integration.live_support import (
    SPEED,
    assert_klines_exact,
    assert_trade_candles_exact,
    assert_trades_exact,
    coverage,
    sid_of,
)

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "MARKETLAKE_RATE_LIMIT_PER_5S": "500"}


def lake_at(root: Path) -> Lake:
    return Lake(root, settings=Settings.load(environ={}))


def covered_until(root: Path, sid) -> int:  # type: ignore[no-untyped-def]
    if not (root / "_meta" / "ledger.sqlite").exists():
        return 0
    with lake_at(root).ledger as ledger:
        ends = [r.end_ms for r in ledger.ranges(sid) if r.status in (Status.PRESENT, Status.EMPTY)]
    return max(ends, default=0)


def wait_covered(root: Path, sid, minimum: int, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while covered_until(root, sid) < minimum:
        assert time.monotonic() < end, "the stream wrote nothing in time"
        time.sleep(0.2)


def stream_args(url: str, root: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "marketlake",
        "stream",
        "--symbols",
        "BTCUSDT,ETHUSDT",
        "--timeframes",
        "1,5s",
        "--trades",
        "--base-url",
        url,
        "--lake",
        str(root),
        "--flush-interval",
        "0.3",
        "--status-interval",
        "0.5",
    ]


def test_sigkill_loses_at_most_the_unflushed_batch_and_sigterm_flushes_and_exits_zero(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    minute = sid_of("BTCUSDT", "1")
    with emulator_thread(speed=SPEED) as emu:
        first = subprocess.Popen(
            stream_args(emu.url, root), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        wait_covered(root, minute, 1)
        start = covered_until(root, minute)
        wait_covered(root, minute, start + 5 * 60_000)
        first.send_signal(signal.SIGKILL)
        killed_at = emu.control.clock.now_ms()
        first.wait(30)
        # What the ledger vouches for reaches to within a flush and a candle of the kill.
        assert covered_until(root, minute) >= killed_at - 4 * 60_000
        time.sleep(1.0)  # five market minutes pass with nobody streaming
        second = subprocess.Popen(
            stream_args(emu.url, root),
            cwd=ROOT,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_covered(root, minute, killed_at + 10 * 60_000)
        second.send_signal(signal.SIGTERM)
        out, err = second.communicate(timeout=60)
        assert second.returncode == 0, err
        assert "stream stopped" in out and "msg/s" in out
        lake = lake_at(root)
        for symbol in ("BTCUSDT", "ETHUSDT"):
            assert assert_klines_exact(lake, emu, symbol, "1") >= 15
            assert_trades_exact(lake, emu, symbol)
            assert_trade_candles_exact(lake, emu, symbol, "5s")
        runs = lake.ledger.runs()
        # The killed one never closed its record: the second run found its process gone.
        assert runs.height == 2 and runs["status"].to_list() == ["ok", "killed"]
        assert all(i.kind == "orphan" and not i.fixed for i in lake.fsck().issues)


def test_ingest_mode_live_backfills_history_then_streams_without_a_seam(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    with emulator_thread(speed=SPEED) as emu:
        begin = emu.control.clock.now_ms()
        args = [
            sys.executable,
            "-m",
            "marketlake",
            "ingest",
            "--symbols",
            "BTCUSDT",
            "--timeframes",
            "1,5",
            "--days",
            "1",
            "--mode",
            "live",
            "--base-url",
            emu.url,
            "--lake",
            str(root),
        ]
        proc = subprocess.Popen(
            args, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        wait_covered(root, sid_of("BTCUSDT", "5"), begin + 15 * 60_000)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "no unexplained gaps" in out and "stream stopped" in out
        lake = lake_at(root)
        for tf in ("1", "5"):
            assert_klines_exact(lake, emu, "BTCUSDT", tf)
            lo, hi = coverage(lake, sid_of("BTCUSDT", tf))  # one span: history, seam, stream
            assert lo <= begin - 86_400_000 + 30 * 60_000 and hi >= begin + 15 * 60_000
        kinds = lake.ledger.runs()["kind"].to_list()
        assert sorted(kinds) == ["ingest", "stream"]


def test_ctrl_c_flushes_the_stream_exits_130_with_what_is_committed_and_a_rerun_resumes(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    minute = sid_of("BTCUSDT", "1")
    with emulator_thread(speed=SPEED) as emu:
        proc = subprocess.Popen(
            stream_args(emu.url, root), cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        wait_covered(root, minute, 1)
        start = covered_until(root, minute)
        wait_covered(root, minute, start + 5 * 60_000)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("interrupted: ") and "Traceback" not in err, err
        assert "run `marketlake stream` again to resume" in lines[0]
        assert "stream stopped" in out  # the summary still goes to stdout
        # The line's figures are what the lake holds: everything in hand was flushed first.
        lake = lake_at(root)
        said = re.match(r"interrupted: ([\d,]+) candles and ([\d,]+) trades committed", lines[0])
        assert said is not None, lines[0]
        candles_said, trades_said = (int(g.replace(",", "")) for g in said.groups())
        stored_candles = sum(lake.read_candles(s, tf).height for s in ("BTCUSDT", "ETHUSDT") for tf in ("1", "5s"))
        assert candles_said == stored_candles > 0
        assert trades_said == lake.read_trades().height > 0
        assert lake.ledger.runs()["status"].to_list() == ["ok"]  # stopped cleanly, not interrupted mid-write
        # A re-run resumes: the time in between is backfilled, nothing is lost.
        stopped_at = covered_until(root, minute)
        again = subprocess.Popen(
            stream_args(emu.url, root), cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        wait_covered(root, minute, stopped_at + 5 * 60_000)
        again.send_signal(signal.SIGTERM)
        _, err = again.communicate(timeout=60)
        assert again.returncode == 0, err
        lake = lake_at(root)
        for symbol in ("BTCUSDT", "ETHUSDT"):
            assert_klines_exact(lake, emu, symbol, "1")
            assert_trades_exact(lake, emu, symbol)
