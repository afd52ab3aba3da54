"""A full history of funding + mark 1m + open interest 5min from the emulator at the default rate
budget (issue 13): rows/s, and the achieved request rate as a fraction of what the budget allows.

Set-up (every knob a flag):

* the emulator serves ``--symbols`` linear symbols (``BTCUSDT``, ``ETHUSDT``, ``SYM001USDT`` ...)
  at a frozen market time (2024-07-03, as the integration tests), with Bybit's IP limit (600
  requests / 5 s; a 403 ban past it) and ``--latency-ms`` (default 100 ms) on every answer;
* it runs in a **separate process with memoised answers**: market time is frozen, so an answer
  is a function of its query. A warm-up ingest (no budget, no latency, into a scratch lake) asks
  every query of the plan once, so the timed run is served copies. On a 2-core machine a
  generating emulator (a 1000-candle mark-price page costs it milliseconds of CPU: trade candles
  and premium minutes) would otherwise starve the client and measure itself
  (``benchmarks/bench_ingest.py`` found the same for klines); ``--no-memo`` serves it plain;
* the timed run is exactly ``marketlake ingest --data funding,mark,oi --timeframes 1
  --oi-intervals 5min --days N``: :func:`run_ingest` into a fresh lake with the lake-shared
  :class:`RateBudget` at ``--budget`` (default 500 / 5 s, the settings' default) and
  ``--concurrency`` (default 32).

Reported: requests, rows (funding settlements + mark candles + open-interest points), wall time of
``run_ingest`` (snapshot, plan, fetch, write, verification), rows/s, the achieved request rate and
its fraction of ``budget / 5 s`` (goal >= 90 %), the most requests the emulator saw in any 5 s
window and its 403 answers (must be 0); then the stored row counts against the emulator's truth.

Usage::

    python -m benchmarks.bench_perp_ingest                       # 3 symbols x 1 year (a few minutes)
    python -m benchmarks.bench_perp_ingest --symbols 50 --days 365   # the issue's 50 x 1 year
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.datagen import goal, print_table
from marketlake.core.timeframes import parse_timeframe
from marketlake.exchanges.bybit import constants as C
from marketlake.exchanges.bybit.rest import BybitRestClient
from marketlake.ingest.service import IngestOutcome, IngestRequest, run_ingest
from marketlake.net.backoff import Backoff
from marketlake.net.ratelimit import BanLatch, RateBudget
from marketlake.settings import Settings
from marketlake.store import Lake

NOW = 1_720_000_000_000  # frozen market time (2024-07-03 09:46:40 UTC), as the integration tests
SEED = 7
WINDOW_S = 5.0
DATA_PATHS = (C.PATH_FUNDING_HISTORY, C.PATH_OPEN_INTEREST, *C.PATH_PRICE_KLINES.values())


# ------------------------------------------------------------------------------- the emulator


def _child(conn: Any, symbols: int, memo: bool) -> None:
    """The emulator process: serve, answer commands from the pipe until "stop"."""
    from marketlake_emulator import BybitEmulator
    from marketlake_emulator.control import FaultConfig

    class MemoEmulator(BybitEmulator):
        def _build_app(self) -> Any:
            app = super()._build_app()
            self.memo: dict[tuple[Any, ...], Any] = {}
            if memo:
                for path in DATA_PATHS:
                    self._endpoints[path] = self._memoised(path, self._endpoints[path])
            return app

        def _memoised(self, path: str, inner: Any) -> Any:
            def answer(q: Any, now_ms: int) -> Any:
                key = (path, tuple(sorted(q.items())), now_ms)
                got = self.memo.get(key)
                if got is None:
                    got = self.memo[key] = inner(q, now_ms)
                return got

            return answer

    async def main() -> None:
        loop = asyncio.get_running_loop()
        # No IP limit for the warm-up; the timed run sets Bybit's (600 / 5 s) and the latency.
        faults = FaultConfig(window_seconds=WINDOW_S, ip_limit=10**9, ip_ban_seconds=60.0)
        async with MemoEmulator(symbols=symbols, seed=SEED, start_ms=NOW, speed=0.0, faults=faults) as emu:
            conn.send(emu.url)
            while True:
                cmd, arg = await loop.run_in_executor(None, conn.recv)
                if cmd == "stop":
                    conn.send(None)
                    return
                if cmd == "configure":
                    emu.control.configure(**arg)
                    emu.control.log.clear()
                    emu.control.unban()
                    conn.send(None)
                elif cmd == "stats":
                    log = emu.control.log
                    conn.send({
                        "requests": len(log),
                        "data_requests": sum(1 for r in log.select() if r.path in DATA_PATHS),
                        "max_in_window": log.max_in_window(WINDOW_S),
                        "http_403": len(log.select(status=403)),
                        "memo": len(emu.memo),
                    })

    asyncio.run(main())


class EmulatorProcess:
    def __init__(self, symbols: int, memo: bool) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_child, args=(child, symbols, memo), daemon=True)
        self._proc.start()
        self.url: str = self._conn.recv()

    def call(self, cmd: str, arg: Any = None) -> Any:
        self._conn.send((cmd, arg))
        return self._conn.recv()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.call("stop")
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.terminate()


# ------------------------------------------------------------------------------- the runs


async def ingest(url: str, root: Path, req: IngestRequest, budget: int, concurrency: int) -> tuple[IngestOutcome, float]:
    lake = Lake(root, settings=Settings.load(environ={}))
    client = BybitRestClient(
        url, budget=RateBudget(budget, state_dir=lake.root / "_meta"), ban_latch=BanLatch(), ban_seconds=60.0,
        backoff=Backoff(base=0.05, cap=1.0, max_attempts=12),
    )
    async with client:
        t0 = time.perf_counter()
        out = await run_ingest(lake, client, req, concurrency=concurrency)
        return out, time.perf_counter() - t0


def truth_rows(symbols: list[str], days: float, out: IngestOutcome) -> dict[str, int]:
    """Rows the emulator holds over each planned range, per dataset."""
    from marketlake_emulator.derivatives import DerivativesModel
    from marketlake_emulator.market import SyntheticMarket

    market = SyntheticMarket.generate(SEED, len(symbols))
    model = DerivativesModel(market)
    got = {"funding": 0, "mark_candles": 0, "open_interest": 0}
    for sp in out.plan.series:
        spec = market.instrument(sp.sid.symbol)
        a, b = sp.start_ms, sp.end_ms
        if b <= a:
            continue
        if sp.sid.dataset == "funding":
            got["funding"] += sum(1 for t in model.settlements(spec, a, b - 1) if t < b)
        elif sp.sid.dataset == "open_interest":
            got["open_interest"] += len(model.oi_points(spec, 300_000, a, b - 1))
        else:
            got["mark_candles"] += len(model.price_candles(spec, "mark", parse_timeframe("1"), a, b - 1, now_ms=NOW))
    return got


def stored_rows(root: Path) -> dict[str, int]:
    lake = Lake(root, settings=Settings.load(environ={}))
    return {ds: lake.read(ds).height for ds in ("funding", "mark_candles", "open_interest")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, default=3, help="linear symbols (BTCUSDT, ETHUSDT, SYM001USDT ...)")
    ap.add_argument("--days", type=float, default=365.0, help="history per symbol")
    ap.add_argument("--budget", type=int, default=500, help="requests per 5 s (the settings' default)")
    ap.add_argument("--latency-ms", type=float, default=100.0, help="every answer this late")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--no-memo", action="store_true", help="a generating emulator (no warm-up)")
    ap.add_argument("--keep", type=Path, default=None, help="keep the timed lake here")
    args = ap.parse_args()

    names = (["BTCUSDT", "ETHUSDT"] + [f"SYM{i:03d}USDT" for i in range(1, args.symbols - 1)])[: args.symbols]
    req = IngestRequest.of(symbols=names, timeframes="1", days=args.days, data="funding,mark,oi", oi_intervals="5min")
    tmp = Path(tempfile.mkdtemp(prefix="bench-perp-"))
    emu = EmulatorProcess(args.symbols, memo=not args.no_memo)
    try:
        if not args.no_memo:
            t0 = time.perf_counter()
            warm, _ = asyncio.run(ingest(emu.url, tmp / "warm", req, 100_000, args.concurrency))
            assert warm.ok, warm.stats.failures if warm.stats else warm
            memo = emu.call("stats")["memo"]
            print(f"warm-up: {memo:,} answers memoised in {time.perf_counter() - t0:.1f} s")
            shutil.rmtree(tmp / "warm", ignore_errors=True)
        emu.call("configure", {
            "ip_limit": 600, "p_slow": 1.0 if args.latency_ms > 0 else 0.0, "slow_seconds": args.latency_ms / 1000,
        })
        time.sleep(WINDOW_S + 1)  # the warm-up's requests leave the emulator's rate window
        emu.call("configure", {})  # and its log; lifts a ban, if any
        root = args.keep or tmp / "lake"
        out, wall = asyncio.run(ingest(emu.url, root, req, args.budget, args.concurrency))
        es = emu.call("stats")
    finally:
        emu.close()
    st = out.stats
    assert st is not None
    allowed = args.budget / WINDOW_S
    rate = st.requests / wall
    rows = st.rows_fetched
    print_table(
        f"perp ingest: {args.symbols} symbols x {args.days:g} days of funding + mark 1m + open interest 5min, "
        f"budget {args.budget} / 5 s, latency {args.latency_ms:g} ms, concurrency {args.concurrency}",
        ["figure", "value"],
        [
            ["requests (client)", f"{st.requests:,}"],
            ["rows fetched and written", f"{rows:,}"],
            ["wall time of run_ingest", f"{wall:,.1f} s"],
            ["rows/s", f"{rows / wall:,.0f}"],
            ["request rate achieved", f"{rate:,.1f} / s"],
            ["budget allows", f"{allowed:,.1f} / s"],
            ["fraction of the budget", f"{rate / allowed:.1%}  (goal >= 90 %: {goal(rate / allowed >= 0.9)})"],
            ["fraction, runner only (no snapshot/plan/verify)", f"{st.requests / st.elapsed / allowed:.1%}"],
            ["most requests in any 5 s (emulator)", f"{es['max_in_window']}"],
            ["HTTP 403 answers", f"{es['http_403']}"],
            ["write time (threads, wall)", f"{st.write_seconds:,.1f} s"],
        ],
    )
    per = [[name, f"{ds.series}", f"{ds.pages:,}", f"{ds.rows_fetched:,}"] for name, ds in st.datasets.items()]
    print_table("per dataset", ["dataset", "series", "requests", "rows"], per)
    want = truth_rows(names, args.days, out)
    have = stored_rows(root)
    print_table("stored vs the emulator's truth", ["dataset", "stored", "truth"],
                [[k, f"{have[k]:,}", f"{want[k]:,}"] for k in want])
    assert out.ok and have == want, (out.unexplained_gaps, have, want)
    if args.keep is None:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
