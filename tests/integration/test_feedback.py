"""Feedback on long or failing work, against the emulator: Ctrl-C mid-ingest and mid-archive
(exit 130, one line saying what is committed, the bar stopped first, a re-run resumes), retries
shown as they happen on one updating terminal line, and the library's retry observer."""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import polars as pl
import pytest

from marketlake.clock import get_clock
from marketlake.exchanges.bybit.archive import BybitArchiveClient
from marketlake.net.backoff import Backoff, RetryEvent
from marketlake.store import Lake
from marketlake_emulator import BybitEmulator
from tests.integration.emulated import NOW, client_for, emulator_thread, run_with_emulator, truth

ROOT = Path(__file__).resolve().parents[2]
DAY_MS = 86_400_000
ERASE = "\r\x1b[2K"
SHOW_CURSOR = "\x1b[?25h"


class PtyCapture:
    """A pseudo-terminal for one stream of a child process, read to EOF in a thread: the child
    sees a terminal (so it draws bars and rewrites lines), the test gets every byte it wrote."""

    def __init__(self, columns: int = 160) -> None:
        self.master, self.slave = os.openpty()
        # A terminal's size (a fresh pty has 0 x 0, which rich reads as 80 columns).
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
        self._chunks: list[bytes] = []
        self._thread = threading.Thread(target=self._read, daemon=True)

    def start(self) -> None:
        os.close(self.slave)  # the child holds its own copy; EOF comes when the child exits
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the child side is closed
                break
            if not data:
                break
            self._chunks.append(data)

    def text(self) -> str:
        self._thread.join(30)
        os.close(self.master)
        return b"".join(self._chunks).decode("utf-8", "replace")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "marketlake", *args]


def _stored_rows(root: Path, symbols: list[str]) -> int:
    lake = Lake(root)
    return sum(lake.read_candles(s, "1").height for s in symbols)


def _kline_requests(emu: BybitEmulator) -> int:
    return sum(1 for r in emu.control.log.select() if r.path.endswith("/kline"))


def test_ctrl_c_mid_ingest_stops_the_bar_exits_130_says_what_is_committed_and_a_rerun_resumes(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    symbols = ["BTCUSDT", "ETHUSDT"]
    args = _cli("ingest", "--symbols", ",".join(symbols), "--timeframes", "1", "--days", "60",
                "--concurrency", "2", "--lake", str(root))
    with emulator_thread() as emu:
        # Slow answers: the run is still going when Ctrl-C comes (174 windows, about 15 s).
        emu.control.configure(p_slow=0.6, slow_seconds=0.25, paths=["/v5/market/kline"])
        bar = PtyCapture()  # stdout on a terminal: the progress bar is drawn
        proc = subprocess.Popen([*args, "--base-url", emu.url], cwd=ROOT, stdout=bar.slave,
                                stderr=subprocess.PIPE, text=True)
        bar.start()
        deadline = time.monotonic() + 60
        while _kline_requests(emu) < 30:
            assert proc.poll() is None and time.monotonic() < deadline, "ingest did not get going"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        screen = bar.text()
        assert proc.returncode == 130, err
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and "Traceback" not in err, err
        line = lines[0]
        assert line.startswith("interrupted: ") and "run the same command again" in line, line
        # What the line says is committed is what the lake holds: the fetched pages were flushed.
        said = re.search(r"interrupted: ([\d,]+) rows of ([\d,]+)/([\d,]+) windows committed", line)
        assert said is not None, line
        rows, windows, planned = (int(g.replace(",", "")) for g in said.groups())
        assert 0 < windows < planned and rows == _stored_rows(root, symbols)
        # The bar was drawn, then stopped before the line: rich shows the cursor again on stop.
        assert "requests" in screen and screen.rstrip("\r\n").endswith(SHOW_CURSOR), repr(screen[-300:])
        assert Lake(root).ledger.runs()["status"].to_list() == ["interrupted"]

        emu.control.configure(p_slow=0.0)
        done = subprocess.run([*args, "--base-url", emu.url], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert "no unexplained gaps" in done.stdout
        lake = Lake(root)
        for symbol in symbols:
            got = lake.read_candles(symbol, "1")
            first, last = got["ts"].dt.epoch("ms").min(), got["ts"].dt.epoch("ms").max()
            assert last == NOW - NOW % 60_000 - 60_000  # up to the last closed candle
            want = truth(emu, symbol, "1", first, last + 1)
            assert got.select(want.columns).equals(want), symbol
        runs = lake.ledger.runs()["status"].to_list()
        assert runs == ["ok", "interrupted"]


def test_ctrl_c_mid_archive_exits_130_with_the_days_committed_and_a_rerun_fetches_the_rest(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    start, end = dt.date(2024, 6, 20), dt.date(2024, 7, 2)
    args = _cli("archive", "--symbols", "BTCUSDT", "--start", start.isoformat(), "--end", end.isoformat(),
                "--concurrency", "1", "--lake", str(root))
    with emulator_thread() as emu:
        emu.control.configure(p_slow=1.0, slow_seconds=0.4, paths=["/archive"])
        args += ["--archive-url", emu.url]
        proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while sum(1 for r in emu.control.log.select() if r.path.endswith(".csv.gz")) < 3:
            assert proc.poll() is None and time.monotonic() < deadline, "archive did not get going"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("interrupted: "), err
        said = re.search(r"(\d+) day\(s\) of trades committed .* of (\d+) planned", lines[0])
        assert said is not None, lines[0]
        days, planned = int(said.group(1)), int(said.group(2))
        assert planned == (end - start).days and 0 < days < planned
        assert "run the same command again" in lines[0]
        stored_days = Lake(root).read_trades("BTCUSDT").select(pl.col("ts").dt.date().n_unique()).item()
        assert stored_days >= days  # a day written when Ctrl-C came is stored but not yet claimed

        emu.control.configure(p_slow=0.0)
        emu.control.log.clear()
        done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        fetched = [r.path for r in emu.control.log.select() if r.path.endswith(".csv.gz")]
        assert len(set(fetched)) == planned - days  # only the days the first run did not commit (a retry may repeat one)
        first = (start - dt.date(1970, 1, 1)).days * DAY_MS
        want = pl.concat(
            emu.market.trades("BTCUSDT", first + i * DAY_MS, first + (i + 1) * DAY_MS, category="linear")
            for i in range(planned)
        ).select(["ts", "price", "size", "side", "trade_id"])
        got = Lake(root).read_trades("BTCUSDT").select(want.columns)
        assert got.equals(want)


def test_retries_show_on_one_updating_terminal_line_that_is_erased_when_the_request_succeeds(tmp_path: Path) -> None:
    with emulator_thread() as emu:
        emu.control.configure(paths=["/v5/market/time"])
        emu.control.schedule("5xx", "5xx", "5xx")
        term = PtyCapture()  # stderr on a terminal
        proc = subprocess.Popen(
            _cli("ingest", "--symbols", "BTCUSDT", "--days", "1", "--base-url", emu.url, "--lake", str(tmp_path / "lake")),
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=term.slave, text=True,
            env={**os.environ, "COLUMNS": "160"},  # pytest's own COLUMNS would win over the pty's size
        )
        term.start()
        out, _ = proc.communicate(timeout=120)
        err = term.text()
    assert proc.returncode == 0, err
    assert "no unexplained gaps" in out
    # One line, rewritten in place: no newline between the retries, each drawn over the last.
    first, last = err.index("retrying: "), err.rindex("retrying: ")
    assert "\n" not in err[first:last] and err[:first].endswith(ERASE)
    shown = re.findall(
        r"\r\x1b\[2Kretrying: attempt (\d)/8 failed, next at \d\d:\d\d:\d\d UTC \(in \d+\.\d s\): "
        r"GET /v5/market/time: HTTP 503",
        err,
    )
    assert shown == ["1", "2", "3"], repr(err)
    # The request then succeeded: the line was erased, nothing of it is left.
    assert err[last:].count(ERASE) == 1 and err.rstrip().endswith(ERASE.rstrip()), repr(err[last:])


def test_the_clients_tell_an_observer_each_retry_and_the_recovery_and_are_silent_without_one(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    seen: list[tuple[RetryEvent, int]] = []

    def observe(ev: RetryEvent) -> None:
        seen.append((ev, get_clock().now_ms()))

    async def scenario(emu: BybitEmulator) -> None:
        lake = Lake(tmp_path / "lake")
        emu.control.configure(paths=["/v5/market/time"])
        emu.control.schedule("5xx", "10016")
        async with client_for(emu.url, lake, on_retry=observe) as client:
            assert await client.get_server_time() == NOW
        failures, recovered = [e for e, _ in seen if not e.recovered], [e for e, _ in seen if e.recovered]
        assert [e.attempt for e in failures] == [1, 2] and [e.attempt for e in recovered] == [3]
        assert "HTTP 5" in failures[0].reason and "10016" in failures[1].reason
        assert all(e.context == "GET /v5/market/time" and e.max_attempts == 12 for e, _ in seen)
        for ev, at in seen[:2]:
            assert ev.next_at_ms is not None and abs(ev.next_at_ms - (at + ev.delay_s * 1000)) <= 2
        # The archive client reports the same way.
        seen.clear()
        emu.control.configure(paths=["/archive"])
        emu.control.schedule("5xx")
        archive = BybitArchiveClient(emu.url, backoff=Backoff(base=0.01, cap=0.05), on_retry=observe)
        async with archive:
            assert await archive.days("BTCUSDT", "linear")
        assert [(e.attempt, e.recovered) for e, _ in seen] == [(1, False), (2, True)]
        assert seen[0][0].context.startswith("bybit archive index BTCUSDT")
        # Without an observer the library prints nothing.
        emu.control.configure(paths=["/v5/market/time"])
        emu.control.schedule("5xx", "5xx")
        async with client_for(emu.url, lake) as quiet:
            await quiet.get_server_time()
            assert quiet.stats.retries == 2

    capfd.readouterr()
    run_with_emulator(scenario)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
