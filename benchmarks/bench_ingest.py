"""Historical ingest from the Bybit emulator: rows/s vs the rate budget, vs a sequential loop,
and the cost of the lake write (issue 4).

Set-up (every knob a flag):

* the emulator (:class:`~marketlake_emulator.server.BybitEmulator`) serves
  ``--series`` linear symbols (``BTCUSDT``, ``ETHUSDT``, ``SYM001USDT`` ...) at a frozen market time,
  with Bybit's IP limit (``ip_limit=600`` requests per 5 s, a real HTTP 403 ban past it) and a fixed response latency (``p_slow=1``, ``slow_seconds = --latency-ms``; default 100 ms,
  a keep-alive round trip to Bybit's Singapore servers from Europe or North-East Asia);
* by default the emulator runs in a **separate process serving pre-rendered pages**
  (``--emulator paged``: its kline answers, a pure function of the query at a frozen market time,
  are rendered once before the timed runs and served byte-identical). Measured on 60 series at
  590/5 s: generating and formatting 1000 candles costs the plain emulator ~3.2 ms of CPU per page
  (25 % of a core at 118 req/s); on a shared 2-core machine that process starves, answers late
  (request time p50 ~340 ms instead of 100) and bunches its own arrival log. ``process`` (plain,
  separate process) and ``inproc`` (plain, in the client's event loop: 8 ms of loop CPU per page)
  reached ~65 % of the budget where ``paged`` reached 91 %; both remain available;
* one ingest per budget in ``--budget`` (default 500 and 590 requests / 5 s) into a fresh lake,
  exactly as ``marketlake ingest`` does it: ``run_ingest`` with a ``RateBudget`` shared through the
  lake's ``_meta`` SQLite file, ``--concurrency`` workers (default 32), ``--days`` of 1m
  (default 30: 43,200 candles = 44 requests per series).

Reported per budget:

* rows/s achieved (rows fetched and written / wall time of ``run_ingest``, planning and the
  final gap verification included; the runner alone also shown) vs the rows/s the budget allows
  (``budget / 5 s x 1000`` candles per request). Goal >= 90 %;
* the most requests in any 5 s window: granted by the budget, sent (request headers written to
  the socket, aiohttp's trace hook) and logged by the emulator; and the number of HTTP 403
  answers (must be 0). A ban lasts ``--ban-seconds`` (default 60 s instead of Bybit's 10
  minutes: a banned run fails the goal either way and need not stall the benchmark);
* the event loop's lag (how late a 10 ms sleep wakes), which shows CPU contention;
* the lake write: wall seconds inside the write threads (``IngestStats.write_seconds``), their
  CPU (``time.thread_time`` inside the thread), the ledger bookkeeping on the event loop, the
  client's whole CPU (``getrusage``), and a replay of the very same write calls into a fresh lake
  on an otherwise idle process (``time.process_time``: every thread of the process, so Arrow /
  Polars pool threads are counted too) as CPU seconds per 1000 rows. Goal: write time well below
  the fetch time;
* a sequential one-request-at-a-time loop (ccxt-style: ``await fetch_kline_page`` one after the
  other, same client, emulator and latency, no writes) timed on ``--seq-windows`` windows spread
  over the plan and scaled to the plan's request count. Goal: the ingest >= 10x faster.

Finally the lake is compared with the emulator's ground truth (count and every value) for
``--verify`` series and the total row count with the plan.

Usage::

    python -m benchmarks.bench_ingest [--series 200 --days 30 --latency-ms 100 --budget 500,590]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import multiprocessing as mp
import os
import random
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import aiohttp
import numpy as np
import polars as pl

from benchmarks.datagen import BENCH_DATA, fmt_x, goal, open_lake, print_table
from marketlake.exchanges.bybit import constants as C
from marketlake_emulator import BybitEmulator
from marketlake_emulator.control import FaultConfig
from marketlake_emulator.market import SyntheticMarket
from marketlake.exchanges.bybit.rest import BybitRestClient
from marketlake.ingest.historical import IngestStats
from marketlake.ingest.service import IngestOutcome, IngestRequest, run_ingest
from marketlake.net.backoff import Backoff
from marketlake.net.ratelimit import BanLatch, RateBudget

NOW = 1_720_000_000_000  # frozen market time (2024-07-03 09:46:40 UTC), as the integration tests
SEED = 7
WINDOW_S = 5.0
CANDLES_PER_REQUEST = 1000
KLINE = "/v5/market/kline"


# ------------------------------------------------------------------------------- the emulator


def _emulator_faults(latency_s: float, ip_limit: int, ban_s: float) -> dict[str, Any]:
    return {
        "window_seconds": WINDOW_S,
        "ip_limit": ip_limit,
        "ip_ban_seconds": ban_s,
        "p_slow": 1.0 if latency_s > 0 else 0.0,
        "slow_seconds": latency_s,
    }


class PagedEmulator(BybitEmulator):
    """The emulator with its kline answers memoised (market time is frozen, so an answer is a
    function of the query alone) and pre-rendered by :meth:`prerender`: serving a page then costs
    a copy instead of ~3 ms of CPU for generating and formatting 1000 candles. It stands in for a
    remote exchange whose CPU is not the client's: on a shared 2-core machine the plain
    emulator's CPU starves and bunches its own arrival log. Answers are byte-identical."""

    def _build_app(self) -> Any:
        app = super()._build_app()
        inner = self._endpoints[C.PATH_KLINE]
        self.memo: dict[tuple[Any, ...], Any] = {}
        self.memo_hits = 0

        def kline(q: Any, now_ms: int) -> Any:
            key = (tuple(sorted(q.items())), now_ms)
            answer = self.memo.get(key)
            if answer is None:
                answer = self.memo[key] = inner(q, now_ms)
            else:
                self.memo_hits += 1
            return answer

        self._endpoints[C.PATH_KLINE] = kline
        return app

    def prerender(self, windows: list[tuple[str, int, int]]) -> int:
        """Render the answers of these (symbol, first open, last open) 1m windows, with exactly the
        parameters :meth:`BybitRestClient.fetch_kline_page` sends."""
        kline = self._endpoints[C.PATH_KLINE]
        now = self.control.clock.now_ms()
        for symbol, a, b in windows:
            count = (b - a) // 60_000 + 1
            q = {
                "category": "linear",
                "symbol": symbol,
                "interval": "1",
                "start": str(a),
                "end": str(b),
                "limit": str(count),
            }
            kline(q, now)
        self.memo_hits = 0
        return len(self.memo)


def _emulator_stats(emu: BybitEmulator) -> dict[str, Any]:
    log = emu.control.log
    kline = log.select(path=KLINE)
    return {
        "requests": len(log),
        "kline_requests": len(kline),
        "max_in_window": log.max_in_window(WINDOW_S),
        "http_403": len(log.select(status=403)),
        "bans": emu.control.ban_count,
        "cpu_s": time.process_time(),
        "kline_windows": [(r.params.get("symbol"), r.params.get("start")) for r in kline],
        "memo_hits": getattr(emu, "memo_hits", 0),
    }


def _emulator_clear(emu: BybitEmulator) -> None:
    emu.control.log.clear()
    emu.control.unban()


def _emulator_child(conn: Any, symbols: int, faults: dict[str, Any], paged: bool) -> None:
    """Body of the emulator process: serve, answer commands from the pipe until "stop"."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        cls = PagedEmulator if paged else BybitEmulator
        async with cls(
            symbols=symbols, seed=SEED, start_ms=NOW, speed=0.0, faults=FaultConfig(**faults)
        ) as emu:
            conn.send(emu.url)
            while True:
                cmd, arg = await loop.run_in_executor(None, conn.recv)
                if cmd == "stop":
                    conn.send(None)
                    return
                if cmd == "clear":
                    _emulator_clear(emu)
                    conn.send(None)
                elif cmd == "stats":
                    conn.send(_emulator_stats(emu))
                elif cmd == "configure":
                    emu.control.configure(**arg)
                    conn.send(None)
                elif cmd == "prerender":
                    conn.send(emu.prerender(arg) if isinstance(emu, PagedEmulator) else 0)

    asyncio.run(main())


class Emulator:
    """The emulator in a child process or in this one, behind one small interface."""

    def __init__(
        self, mode: str, symbols: int, latency_s: float, ip_limit: int = 600, ban_s: float = 600.0
    ) -> None:
        self.mode = mode
        self.symbols = symbols
        self.faults = _emulator_faults(latency_s, ip_limit, ban_s)
        self._proc: Any = None
        self._conn: Any = None
        self._emu: BybitEmulator | None = None
        self._market: SyntheticMarket | None = None
        self.url = ""

    async def __aenter__(self) -> Self:
        if self.mode in ("process", "paged"):
            ctx = mp.get_context("spawn")
            parent, child = ctx.Pipe()
            self._proc = ctx.Process(
                target=_emulator_child,
                args=(child, self.symbols, self.faults, self.mode == "paged"),
                daemon=True,
            )
            self._proc.start()
            self._conn = parent
            self.url = await asyncio.to_thread(parent.recv)
        else:
            self._emu = BybitEmulator(
                symbols=self.symbols, seed=SEED, start_ms=NOW, speed=0.0, faults=FaultConfig(**self.faults)
            )
            await self._emu.start()
            self.url = self._emu.url
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._call("stop")
            self._proc.join(10)
            if self._proc.is_alive():
                self._proc.terminate()
        if self._emu is not None:
            await self._emu.stop()

    async def _call(self, cmd: str, arg: Any = None) -> Any:
        self._conn.send((cmd, arg))
        return await asyncio.to_thread(self._conn.recv)

    async def clear(self) -> None:
        if self._emu is not None:
            _emulator_clear(self._emu)
        else:
            await self._call("clear")

    async def stats(self) -> dict[str, Any]:
        if self._emu is not None:
            out = _emulator_stats(self._emu)
            out["cpu_s"] = float("nan")  # shares this process
            return out
        return await self._call("stats")

    async def prerender(self, windows: list[tuple[str, int, int]]) -> int:
        """Pre-render these kline windows (``paged`` mode; a no-op otherwise): pages held."""
        if self.mode != "paged":
            return 0
        return await self._call("prerender", windows)

    async def configure(self, **kw: Any) -> None:
        if self._emu is not None:
            self._emu.control.configure(**kw)
        else:
            await self._call("configure", kw)

    @property
    def market(self) -> SyntheticMarket:
        """Ground truth: the emulator's market (rebuilt from the same seed in a child's case)."""
        if self._emu is not None:
            return self._emu.market
        if self._market is None:
            self._market = SyntheticMarket.generate(SEED, self.symbols)
        return self._market


# ------------------------------------------------------------------------------- measuring


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


@dataclass
class WriteMeter:
    """Wraps ``lake.write_candles`` and ``lake.ledger.record`` to time them where they run."""

    keep_frames: bool = False
    calls: int = 0
    rows: int = 0
    wall: float = 0.0
    thread_cpu: float = 0.0
    ledger_calls: int = 0
    ledger_wall: float = 0.0
    ledger_cpu: float = 0.0
    frames: list[tuple[pl.DataFrame, dict[str, Any]]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def install(self, lake: Any) -> None:
        write = lake.write_candles
        ledger = lake.ledger
        record = ledger.record

        def write_candles(frame: pl.DataFrame, **kw: Any) -> Any:
            c0, w0 = time.thread_time(), time.perf_counter()
            out = write(frame, **kw)
            c1, w1 = time.thread_time(), time.perf_counter()
            with self._lock:
                self.calls += 1
                self.rows += frame.height
                self.wall += w1 - w0
                self.thread_cpu += c1 - c0
                if self.keep_frames:
                    self.frames.append((frame, kw))
            return out

        def ledger_record(*a: Any, **kw: Any) -> Any:
            c0, w0 = time.thread_time(), time.perf_counter()
            out = record(*a, **kw)
            self.ledger_calls += 1
            self.ledger_wall += time.perf_counter() - w0
            self.ledger_cpu += time.thread_time() - c0
            return out

        lake.write_candles = write_candles
        ledger.record = ledger_record


def replay_writes(frames: list[tuple[pl.DataFrame, dict[str, Any]]], root: Path) -> tuple[float, float, int]:
    """The same write calls into a fresh lake, one after the other in this thread:
    (process CPU seconds, wall seconds, rows)."""
    lake = open_lake(root)
    rows = 0
    c0, w0 = time.process_time(), time.perf_counter()
    for frame, kw in frames:
        lake.write_candles(frame, **kw)
        rows += frame.height
    return time.process_time() - c0, time.perf_counter() - w0, rows


def _client(
    url: str, budget: RateBudget, ban_s: float = 600.0, session: aiohttp.ClientSession | None = None
) -> BybitRestClient:
    return BybitRestClient(
        url,
        session=session,
        budget=budget,
        ban_latch=BanLatch(),
        ban_seconds=ban_s,
        backoff=Backoff(base=0.05, cap=1.0, max_attempts=12),
    )


def max_in_window(times: list[float], window: float = WINDOW_S) -> int:
    """The most of ``times`` (seconds) within any ``window``."""
    ts = np.sort(np.asarray(times, dtype=np.float64))
    if ts.size == 0:
        return 0
    return int((np.searchsorted(ts, ts + window, side="left") - np.arange(ts.size)).max())


class LoopLag:
    """Event-loop lag: how late a 10 ms sleep wakes up (CPU contention, GIL, blocking calls)."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            self.lags.append(time.perf_counter() - t - 0.01)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def pct(self, q: float) -> float:
        return float(np.percentile(self.lags, q)) if self.lags else 0.0


@dataclass
class IngestRun:
    budget: int
    outcome: IngestOutcome
    wall: float  # run_ingest end to end
    cpu: float  # this process, during run_ingest
    emu: dict[str, Any]
    emu_cpu: float
    meter: WriteMeter
    lake_root: Path
    load: float
    budget_waits: int
    grants_max_in_window: int
    sent_max_in_window: int
    lag: LoopLag

    @property
    def stats(self) -> IngestStats:
        assert self.outcome.stats is not None
        return self.outcome.stats

    @property
    def rows(self) -> int:
        return self.stats.rows_fetched

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.wall

    @property
    def allowed_rows_per_s(self) -> float:
        return self.budget / WINDOW_S * CANDLES_PER_REQUEST


async def one_ingest(
    emu: Emulator,
    symbols: list[str],
    days: float,
    budget_limit: int,
    concurrency: int,
    work: Path,
    keep_frames: bool,
    ban_s: float,
) -> IngestRun:
    await emu.clear()
    before = await emu.stats()
    root = work / f"lake-{budget_limit}"
    shutil.rmtree(root, ignore_errors=True)
    lake = open_lake(root)
    meter = WriteMeter(keep_frames=keep_frames)
    meter.install(lake)
    budget = RateBudget(budget_limit, WINDOW_S, state_dir=root / "_meta")
    request = IngestRequest.of(symbols=symbols, timeframes="1", days=days)
    last = [time.perf_counter()]

    def progress(st: Any) -> None:
        now = time.perf_counter()
        if now - last[0] >= 10.0:
            last[0] = now
            print(
                f"  [{budget_limit}/5s] {st.pages}/{st.requests_planned} pages, {st.rows_fetched:,} rows, "
                f"{st.requests_per_s:.1f} req/s, load {os.getloadavg()[0]:.2f}",
                file=sys.stderr,
                flush=True,
            )

    grants: list[float] = []
    acquire = budget.acquire

    async def timed_acquire() -> int:
        out = await acquire()
        grants.append(time.monotonic())  # same clock as the emulator's log (CLOCK_MONOTONIC)
        return out

    budget.acquire = timed_acquire  # type: ignore[method-assign]
    # When each request's headers were written to the socket (aiohttp's trace hook).
    sent: list[float] = []
    trace = aiohttp.TraceConfig()

    async def on_sent(*_: Any) -> None:
        sent.append(time.monotonic())

    trace.on_request_headers_sent.append(on_sent)
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=64),
        headers={"User-Agent": "marketlake/0.1"},
        trace_configs=[trace],
    )
    lag = LoopLag()
    async with session, _client(emu.url, budget, ban_s, session) as client:
        lag.start()
        c0, w0 = _cpu(), time.perf_counter()
        outcome = await run_ingest(lake, client, request, concurrency=concurrency, on_progress=progress)
        wall, cpu = time.perf_counter() - w0, _cpu() - c0
        await lag.stop()
    load = os.getloadavg()[0]
    after = await emu.stats()
    budget.close()
    return IngestRun(
        budget_limit,
        outcome,
        wall,
        cpu,
        after,
        after["cpu_s"] - before["cpu_s"],
        meter,
        root,
        load,
        budget.waits,
        max_in_window(grants),
        max_in_window(sent),
        lag,
    )


async def sequential(
    emu: Emulator, outcome: IngestOutcome, n_windows: int, budget_limit: int
) -> tuple[float, int, int]:
    """ccxt-style: one request after the other over ``n_windows`` windows spread evenly over the
    plan. Returns (seconds, windows, rows)."""
    windows = [(sp.sid.symbol, a, b) for sp in outcome.plan.series for a, b in sp.windows]
    step = max(1, len(windows) // n_windows)
    subset = windows[::step][:n_windows]
    await emu.clear()
    rows = 0
    async with _client(emu.url, RateBudget(budget_limit, WINDOW_S)) as client:
        # One untimed request opens the keep-alive connection (a ccxt loop would have it too).
        await client.fetch_kline_page("linear", subset[0][0], "1", subset[0][1], subset[0][2])
        t0 = time.perf_counter()
        for symbol, a, b in subset:
            page = await client.fetch_kline_page("linear", symbol, "1", a, b)
            rows += page.frame.height
        seconds = time.perf_counter() - t0
    st = await emu.stats()
    if st["http_403"]:
        raise AssertionError("the sequential loop was banned")
    return seconds, len(subset), rows


def verify(run: IngestRun, market: SyntheticMarket, n: int, rng: random.Random) -> tuple[int, int]:
    """Lake == ground truth (count and values) for ``n`` series (first, last and random ones);
    total rows == rows fetched. Returns (series checked, rows checked)."""
    lake = open_lake(run.lake_root)
    series = run.outcome.plan.series
    pick = {0, len(series) - 1, *rng.sample(range(len(series)), min(n, len(series)))}
    rows = 0
    for i in sorted(pick):
        sp = series[i]
        tf = sp.sid.timeframe
        assert tf is not None
        want = market.candles(sp.sid.symbol, tf.name, sp.start_ms, sp.end_ms - 1)
        got = lake.read_candles(sp.sid.symbol, tf.name, sp.start_ms, sp.end_ms).select(want.columns)
        if got.height != want.height:
            raise AssertionError(f"{sp.sid.label()}: {got.height} rows in the lake, truth {want.height}")
        if not got.equals(want):
            raise AssertionError(f"{sp.sid.label()}: values differ from the emulator's ground truth")
        rows += got.height
    total = lake.sql("select count(*) as n from candles")["n"][0]
    if total != run.rows or run.stats.rows_new != run.rows:
        raise AssertionError(f"lake holds {total} rows; fetched {run.rows}, new {run.stats.rows_new}")
    if not run.outcome.ok:
        raise AssertionError(
            f"ingest not ok: {run.stats.failures[:3]} {list(run.outcome.unexplained_gaps)[:3]}"
        )
    return len(pick), rows


# ------------------------------------------------------------------------------- main


def trading_symbols(n: int) -> tuple[int, list[str]]:
    """(market size, the first ``n`` symbols trading at ``NOW``): the synthetic market delists
    every 40th generated symbol, and a delisted one would only be an "unknown symbol"."""
    size = n
    while True:
        market = SyntheticMarket.generate(SEED, size)
        names = [s.symbol for s in market.instruments("linear") if s.status(NOW) == "Trading"]
        if len(names) >= n:
            return size, names[:n]
        size += n - len(names)


async def amain(args: argparse.Namespace) -> int:
    budgets = [int(b) for b in args.budget.split(",") if b.strip()]
    market_size, symbols = trading_symbols(args.series)
    work = (
        Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench-ingest-", dir=BENCH_DATA))
    )
    work.mkdir(parents=True, exist_ok=True)
    loads = [os.getloadavg()[0]]
    print(f"# bench_ingest — {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC")
    print(
        f"{args.series} series (linear 1m, {symbols[0]} ... {symbols[-1]}) x {args.days:g} days; emulator "
        f"{args.emulator} with ip_limit 600 / 5 s (403 ban {args.ban_seconds:g} s) and {args.latency_ms:g} ms fixed latency; "
        f"concurrency {args.concurrency}; {os.cpu_count()} cpus; load average at start {loads[0]:.2f}"
    )
    sys.stdout.flush()
    runs: dict[int, list[IngestRun]] = {}
    seq: tuple[float, int, int] | None = None
    rng = random.Random(SEED)
    checked = (0, 0)
    try:
        async with Emulator(
            args.emulator, market_size, args.latency_ms / 1000.0, ban_s=args.ban_seconds
        ) as emu:
            if args.emulator == "paged":
                t0 = time.perf_counter()
                request = IngestRequest.of(symbols=symbols, timeframes="1", days=args.days)
                async with _client(emu.url, RateBudget(500, WINDOW_S)) as client:
                    plan = (await run_ingest(open_lake(work / "plan"), client, request, dry_run=True)).plan
                windows = [(sp.sid.symbol, a, b) for sp in plan.series for a, b in sp.windows]
                held = await emu.prerender(windows)
                print(
                    f"  emulator pre-rendered {held:,} pages in {time.perf_counter() - t0:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
            for rep in range(args.repeat):
                for b in budgets:
                    keep = args.replay and rep == 0 and b == budgets[0]
                    print(
                        f"  ingest at {b}/5s (run {rep + 1}/{args.repeat}) ...", file=sys.stderr, flush=True
                    )
                    run = await one_ingest(
                        emu, symbols, args.days, b, args.concurrency, work, keep, args.ban_seconds
                    )
                    loads.append(run.load)
                    runs.setdefault(b, []).append(run)
                    print(
                        f"  -> {run.rows:,} rows in {run.wall:.1f} s = {run.rows_per_s:,.0f} rows/s "
                        f"({run.rows_per_s / run.allowed_rows_per_s:.1%} of budget), max/5s granted/sent/server "
                        f"{run.grants_max_in_window}/{run.sent_max_in_window}/{run.emu['max_in_window']}, "
                        f"loop lag max {max(run.lag.lags, default=0) * 1e3:.0f} ms, 403s {run.emu['http_403']}, budget waits {run.budget_waits:,}, "
                        f"runner {run.stats.elapsed:.1f} s, cpu {run.cpu:.1f} s, emulator memo hits {run.emu['memo_hits']:,}",
                        file=sys.stderr,
                        flush=True,
                    )
                    if rep == 0 and b == budgets[0]:
                        c = verify(run, emu.market, args.verify, rng)
                        checked = (checked[0] + c[0], checked[1] + c[1])
                    if not (rep == 0 and b == budgets[0]):
                        shutil.rmtree(run.lake_root, ignore_errors=True)
            first = runs[budgets[0]][0]
            if args.seq_windows > 0:
                print(f"  sequential loop over {args.seq_windows} windows ...", file=sys.stderr, flush=True)
                seq = await sequential(emu, first.outcome, args.seq_windows, budgets[0])
                loads.append(os.getloadavg()[0])
        replay = None
        if args.replay and first.meter.frames:
            replay = replay_writes(first.meter.frames, work / "replay")
            first.meter.frames.clear()
        report(args, budgets, runs, seq, replay, checked, loads)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def _median(xs: list[float]) -> float:
    return statistics.median(xs)


def report(
    args: argparse.Namespace,
    budgets: list[int],
    runs: dict[int, list[IngestRun]],
    seq: tuple[float, int, int] | None,
    replay: tuple[float, float, int] | None,
    checked: tuple[int, int],
    loads: list[float],
) -> None:
    first = runs[budgets[0]][0]
    plan = first.outcome.plan
    per_series = plan.requests / max(1, len(plan.series))
    ceiling = plan.candles / (plan.requests * CANDLES_PER_REQUEST)
    print(
        f"plan: {len(plan.series)} series, {plan.requests:,} kline requests ({per_series:.1f} per series), "
        f"{plan.candles:,} candle slots; a full page holds 1000, so the windows cap rows/request at "
        f"{ceiling:.1%} of 1000 (plus 2 set-up requests: server time, instruments)"
    )
    rows_tab = []
    for b in budgets:
        rs = runs[b]
        wall = _median([r.wall for r in rs])
        runner = _median([r.stats.elapsed for r in rs])
        rows = rs[0].rows
        allowed = rs[0].allowed_rows_per_s
        rate = rows / wall
        rows_tab.append(
            [
                f"{b} / 5 s",
                f"{allowed:,.0f}",
                f"{rate:,.0f}",
                f"{rate / allowed:.1%} {goal(rate / allowed >= 0.9)}",
                f"{rows / runner:,.0f} ({rows / runner / allowed:.1%})",
                f"{wall:.1f} s" + (f" ({', '.join(f'{r.wall:.1f}' for r in rs)})" if len(rs) > 1 else ""),
                f"{_median([r.stats.requests / r.stats.elapsed for r in rs]):.1f}",
                " / ".join(
                    str(max(x for x in xs))
                    for xs in (
                        [r.grants_max_in_window for r in rs],
                        [r.sent_max_in_window for r in rs],
                        [r.emu["max_in_window"] for r in rs],
                    )
                ),
                f"{sum(r.emu['http_403'] for r in rs)} {goal(all(r.emu['http_403'] == 0 for r in rs))}",
                f"{_median([r.cpu / r.wall for r in rs]):.0%}",
                ", ".join(f"{r.load:.1f}" for r in rs),
            ]
        )
    print_table(
        f"Ingest of {rows:,} rows (median of {len(runs[budgets[0]])} run(s); wall = run_ingest end to end)",
        [
            "budget",
            "allowed rows/s",
            "rows/s",
            "vs allowed (>= 90%)",
            "runner only rows/s",
            "wall",
            "req/s",
            "max in any 5 s: granted / sent / at server",
            "HTTP 403",
            "client CPU",
            "load",
        ],
        rows_tab,
    )

    print(
        "event-loop lag (a 10 ms sleep's overshoot; contention, GIL, blocking calls), p50 / p99 / max ms: "
        + "; ".join(
            f"{r.budget}/5s: {r.lag.pct(50) * 1e3:.1f} / {r.lag.pct(99) * 1e3:.0f} / "
            f"{max(r.lag.lags, default=0) * 1e3:.0f}"
            for b in budgets
            for r in runs[b]
        )
    )

    # Sequential loop
    if seq is not None:
        s_seconds, s_n, s_rows = seq
        per_req = s_seconds / s_n
        scaled = per_req * plan.requests
        tab = []
        for b in budgets:
            wall = _median([r.wall for r in runs[b]])
            ratio = scaled / wall
            tab.append(
                [f"{b} / 5 s", f"{wall:.1f} s", f"{scaled:,.0f} s", f"{fmt_x(ratio)} {goal(ratio >= 10)}"]
            )
        print(
            f"\nsequential loop: {s_n} windows ({s_rows:,} rows) in {s_seconds:.2f} s = {per_req * 1000:.1f} ms "
            f"per request ({args.latency_ms:g} ms of it server latency), {s_rows / s_seconds:,.0f} rows/s; "
            f"scaled to the plan's {plan.requests:,} requests: {scaled:,.0f} s"
        )
        print_table(
            "Ingest vs the sequential loop",
            ["budget", "ingest wall", "sequential (scaled)", "speed-up (>= 10x)"],
            tab,
        )

    # Lake write cost
    tab = []
    for b in budgets:
        r = runs[b][0]
        m, st = r.meter, r.stats
        k = r.rows / 1000
        tab.append(
            [
                f"{b} / 5 s",
                str(m.calls),
                f"{m.rows / max(1, m.calls):,.0f}",
                f"{st.write_seconds:.1f} s ({st.write_seconds / st.elapsed:.0%})",
                f"{m.thread_cpu:.1f} s ({m.thread_cpu / k * 1000:.2f} ms)",
                f"{m.ledger_calls} / {m.ledger_wall:.1f} s ({m.ledger_cpu / k * 1000:.2f} ms)",
                f"{r.cpu:.1f} s ({r.cpu / k * 1000:.2f} ms, {r.cpu / r.wall:.0%} of 1 core)",
                "-" if r.emu_cpu != r.emu_cpu else f"{r.emu_cpu:.1f} s ({r.emu_cpu / r.wall:.0%})",
            ]
        )
    print_table(
        "Lake write cost (first run per budget; in parentheses per 1000 rows or share of the runner's wall time)",
        [
            "budget",
            "writes",
            "rows/write",
            "write wall (share of fetch)",
            "write thread CPU",
            "ledger records / wall (CPU)",
            "client process CPU",
            "emulator CPU",
        ],
        tab,
    )
    if replay is not None:
        cpu, wall, rows = replay
        fetch = first.stats.elapsed
        print(
            f"replay of the {first.meter.calls} write calls of the {budgets[0]}/5s run into a fresh lake, "
            f"sequentially on an idle event loop: {rows:,} rows, {cpu:.2f} s CPU (process_time, all threads) "
            f"= {cpu / rows * 1e6:.3f} ms CPU per 1000 rows, {wall:.2f} s wall = {rows / wall:,.0f} rows/s; "
            f"the write takes {wall / fetch:.0%} of the fetch time "
            f"({fetch:.1f} s) -> {goal(wall < 0.5 * fetch)} (write never the bottleneck: "
            f"{rows / wall / first.allowed_rows_per_s:.1f}x the rows/s the budget can deliver)"
        )
    print(
        f"\nverified: {checked[0]} series ({checked[1]:,} rows) equal the emulator's ground truth "
        f"(count and values); lake row count == rows fetched == rows new; no unexplained gaps"
    )
    print(f"load average (1 min) during the runs: {', '.join(f'{x:.2f}' for x in loads)}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--series", type=int, default=200, help="linear symbols, 1m each (default 200)")
    p.add_argument("--days", type=float, default=30, help="days of 1m per series (default 30)")
    p.add_argument("--latency-ms", type=float, default=100.0, help="fixed emulator latency (default 100)")
    p.add_argument("--budget", default="500,590", help="rate budgets per 5 s (default 500,590)")
    p.add_argument("--concurrency", type=int, default=32, help="ingest workers (default 32)")
    p.add_argument("--repeat", type=int, default=1, help="ingest runs per budget (median; default 1)")
    p.add_argument("--seq-windows", type=int, default=100, help="windows timed sequentially (default 100)")
    p.add_argument(
        "--verify", type=int, default=10, help="random series compared with the truth (default 10)"
    )
    p.add_argument(
        "--emulator",
        choices=("paged", "process", "inproc"),
        default="paged",
        help="paged: a separate process serving pre-rendered pages (default); process: a separate "
        "process generating every page; inproc: generating, in the client's event loop",
    )
    p.add_argument(
        "--ban-seconds",
        type=float,
        default=60.0,
        help="length of a 403 ban, emulator and client (Bybit: >= 600; default 60 so that a banned "
        "run, a failure either way, does not stall the benchmark for 10 minutes)",
    )
    p.add_argument("--no-replay", dest="replay", action="store_false", help="skip the write replay")
    p.add_argument("--workdir", default="", help="where lakes go (default a temp dir under bench-data/)")
    p.add_argument("--keep", action="store_true", help="keep the lakes")
    args = p.parse_args(argv)
    if args.series < 1 or args.days <= 0:
        p.error("--series and --days must be positive")
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
