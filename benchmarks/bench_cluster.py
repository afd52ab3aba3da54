"""Batch work on a Dask cluster: archive ingest, then candles built from the stored trades, of
``--days`` days x ``--symbols`` symbols, on a ``LocalCluster`` of 1 vs 2 worker processes.

Set-up (every knob a flag):

* the Bybit emulator serves its daily trade archives on 127.0.0.1 from a thread of this process,
  at a frozen market time (2024-07-03, as the integration tests); its day files (~10,000 trades,
  ~0.3 MB gzip'd each) are generated once, in the untimed warm-up round, and served from memory
  after that (the emulator's file cache is raised to hold them all), so the timed rounds measure
  the client, not the emulator's generator;
* each variant runs, per round, into a fresh lake: (1) :func:`marketlake.cluster.archive_on_cluster`
  (trades only: the client plans, reads each symbol's index, the workers download, parse, write
  and record one day per task), then (2) :func:`marketlake.cluster.build_candles_on_cluster` of
  ``--candles`` (default 1s,5s,15s; one task per symbol-day: read the stored trades, run the
  kernel, write, record);
* variants: ``1 worker`` and ``2 workers`` (``LocalCluster(n_workers=N, threads_per_worker=1,
  processes=True)``, each started once before the rounds; start-up reported, not timed), and
  ``in-process`` for reference (:func:`run_archive_ingest` with its default 3 concurrent downloads,
  then :func:`marketlake.ingest.build.build_candles`), interleaved round by round.

Reported: medians (and best) of the wall time of each phase and the total, the speed-up of 2
workers over 1, and where the time of a cluster run goes, from Dask's task stream: the lead (plan,
index requests and submission, on the client, before the first task starts), the tasks' compute
time summed over workers against the workers' capacity over the span (utilisation), and the tail;
with the CPU time the worker processes used (all their threads) and this process's (client,
scheduler, nannies and the emulator thread).
The stored row counts of every variant are checked equal.

Usage::

    python -m benchmarks.bench_cluster [--symbols 6 --days 20 --repeat 3 --candles 1s,5s,15s]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from benchmarks.datagen import fmt_s, fmt_x, goal, print_table
from marketlake.cluster import ClusterSpec, archive_on_cluster, build_candles_on_cluster, open_client
from marketlake.ingest.archive import run_archive_ingest
from marketlake.ingest.build import build_candles
from marketlake.settings import Settings
from marketlake.store import Lake

NOW = 1_720_000_000_000  # frozen market time (2024-07-03 09:46:40 UTC), as the integration tests
TODAY = dt.date(2024, 7, 3)  # the emulator publishes the days before it


@contextmanager
def emulator(symbols: int) -> Iterator[Any]:
    """The emulator on 127.0.0.1, served from a thread, its archive file cache unbounded."""
    import marketlake_emulator.archive as emu_archive
    from marketlake_emulator import BybitEmulator

    emu_archive._CACHE_FILES = 1_000_000  # type: ignore[misc]  (this process only)
    ready = threading.Event()
    box: dict[str, Any] = {}

    def serve() -> None:
        async def main() -> None:
            emu = BybitEmulator(symbols=max(symbols, 2), seed=7, start_ms=NOW, speed=0.0)
            await emu.start()
            box.update(emu=emu, stop=asyncio.Event(), loop=asyncio.get_running_loop())
            ready.set()
            await box["stop"].wait()
            await emu.stop()

        asyncio.run(main())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    if not ready.wait(30):
        raise RuntimeError("emulator did not start")
    try:
        yield box["emu"]
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(10)


@dataclass
class Run:
    """One timed run of a variant: phase wall times, and the task-stream accounting."""

    archive_s: float = 0.0
    build_s: float = 0.0
    lead_s: float = 0.0
    busy_s: float = 0.0
    span_s: float = 0.0
    tail_s: float = 0.0
    client_cpu_s: float = 0.0
    workers_cpu_s: float = 0.0
    tasks: int = 0
    rows: dict[str, int] = field(default_factory=dict)

    @property
    def total_s(self) -> float:
        return self.archive_s + self.build_s


def stored_rows(root: Path) -> dict[str, int]:
    table = Lake(root).series()
    return {f"{r['dataset']}/{r['symbol']}/{r['timeframe']}": r["rows"] for r in table.iter_rows(named=True)}


class Bench:
    """Runs the variants; keeps one cluster per worker count alive for all rounds."""

    def __init__(self, args: argparse.Namespace, emu: Any, scratch: Path) -> None:
        self.args = args
        self.emu = emu
        self.scratch = scratch
        self.symbols = (["BTCUSDT", "ETHUSDT"] + [f"SYM{i:03d}USDT" for i in range(1, 999)])[: args.symbols]
        self.start = TODAY - dt.timedelta(days=args.days)
        self.clients: dict[int, Any] = {}
        self.starts: dict[int, float] = {}
        self._stack: list[Any] = []
        self.runs: dict[str, list[Run]] = {}
        self._n = 0

    def settings(self, root: Path) -> Settings:
        return Settings.load(overrides={"lake_root": str(root), "archive_url": self.emu.url, "base_url": self.emu.url},
                             environ={})

    def open(self, workers: int) -> None:
        t0 = time.perf_counter()
        ctx = open_client(ClusterSpec(workers=workers))
        client = ctx.__enter__()
        client.wait_for_workers(workers, timeout=120)
        self._stack.append(ctx)
        self.clients[workers] = client
        self.starts[workers] = time.perf_counter() - t0

    def close(self) -> None:
        for ctx in reversed(self._stack):
            ctx.__exit__(None, None, None)

    def fresh(self) -> Path:
        self._n += 1
        root = self.scratch / f"lake-{self._n}"
        return root

    def on_cluster(self, workers: int) -> Run:
        from distributed import get_task_stream

        client, root, run = self.clients[workers], self.fresh(), Run()
        settings = self.settings(root)
        kw: dict[str, Any] = {"start": self.start, "end": TODAY, "today": TODAY}
        cpu0 = sum(client.run(time.process_time).values())
        with get_task_stream(client) as stream:
            wall0 = time.time()
            c0 = time.process_time()
            t0 = time.perf_counter()
            _, st = archive_on_cluster(client, str(root), settings, self.symbols, category="linear", **kw)
            t1 = time.perf_counter()
            _, bt = build_candles_on_cluster(client, str(root), settings, self.symbols, self.args.candles,
                                             category="linear", **kw)
            t2 = time.perf_counter()
            run.client_cpu_s = time.process_time() - c0
            wall2 = time.time()
        run.workers_cpu_s = sum(client.run(time.process_time).values()) - cpu0
        assert not st.failures and not bt.failures, (st.failures, bt.failures)
        run.archive_s, run.build_s = t1 - t0, t2 - t1
        spans = [(s["start"], s["stop"]) for task in stream.data for s in task["startstops"] if s["action"] == "compute"]
        run.tasks = len(spans)
        run.busy_s = sum(b - a for a, b in spans)
        first, last = min(a for a, _ in spans), max(b for _, b in spans)
        run.lead_s, run.span_s, run.tail_s = first - wall0, last - first, max(0.0, wall2 - last)
        run.rows = stored_rows(root)
        shutil.rmtree(root, ignore_errors=True)
        return run

    def in_process(self) -> Run:
        root, run = self.fresh(), Run()
        lake = Lake(root, settings=self.settings(root))
        t0 = time.perf_counter()
        _, st = asyncio.run(run_archive_ingest(lake, self.symbols, category="linear", start=self.start, end=TODAY,
                                               today=TODAY, base_url=self.emu.url))
        t1 = time.perf_counter()
        _, bt = build_candles(lake, self.symbols, self.args.candles, start=self.start, end=TODAY, today=TODAY,
                              category="linear")
        t2 = time.perf_counter()
        assert st is not None and not st.failures and not bt.failures
        run.archive_s, run.build_s = t1 - t0, t2 - t1
        run.rows = stored_rows(root)
        shutil.rmtree(root, ignore_errors=True)
        return run

    def rounds(self, variants: dict[str, Callable[[], Run]]) -> None:
        for i in range(1 + self.args.repeat):
            for name, fn in variants.items():
                run = fn()
                print(f"  round {i}{' (warm-up)' if i == 0 else ''}: {name:<10} archive {fmt_s(run.archive_s)}, "
                      f"build {fmt_s(run.build_s)}, load {os.getloadavg()[0]:.2f}", flush=True)
                if i:
                    self.runs.setdefault(name, []).append(run)


def med(runs: list[Run], what: Callable[[Run], float]) -> float:
    return statistics.median(what(r) for r in runs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--symbols", type=int, default=6)
    parser.add_argument("--days", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--candles", default="1s,5s,15s")
    parser.add_argument("--no-in-process", action="store_true", help="skip the in-process reference variant")
    args = parser.parse_args(argv)

    import dask
    import distributed

    print(f"# bench_cluster — {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC")
    print(f"{args.symbols} symbols x {args.days} days of emulator archive trades, candles {args.candles}; "
          f"python {platform.python_version()}, polars {pl.__version__}, dask {dask.__version__}, "
          f"distributed {distributed.__version__}; {os.cpu_count()} cpus; median of {args.repeat} rounds after "
          f"1 untimed warm-up round, variants interleaved; load average at start {os.getloadavg()[0]:.2f}")
    sys.stdout.flush()
    with emulator(args.symbols) as emu, tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        bench = Bench(args, emu, Path(tmp))
        try:
            bench.open(1)
            bench.open(2)
            print(f"cluster start-up (not timed below): 1 worker {fmt_s(bench.starts[1])}, "
                  f"2 workers {fmt_s(bench.starts[2])}", flush=True)
            variants: dict[str, Callable[[], Run]] = {"1 worker": lambda: bench.on_cluster(1),
                                                      "2 workers": lambda: bench.on_cluster(2)}
            if not args.no_in_process:
                variants["in-process"] = bench.in_process
            bench.rounds(variants)
        finally:
            bench.close()
    runs = bench.runs
    rows = {name: rs[0].rows for name, rs in runs.items()}
    same = all(r == rows["1 worker"] for r in rows.values())
    total_rows = sum(rows["1 worker"].values())
    print_table(
        "wall time, medians (best)",
        ["variant", "archive", "build-candles", "total", "rows stored"],
        [[name, f"{fmt_s(med(rs, lambda r: r.archive_s))} ({fmt_s(min(r.archive_s for r in rs))})",
          f"{fmt_s(med(rs, lambda r: r.build_s))} ({fmt_s(min(r.build_s for r in rs))})",
          f"{fmt_s(med(rs, lambda r: r.total_s))} ({fmt_s(min(r.total_s for r in rs))})", f"{total_rows:,}"]
         for name, rs in runs.items()],
    )
    one, two = runs["1 worker"], runs["2 workers"]
    speedup = {what: med(one, f) / med(two, f) for what, f in
               [("archive", lambda r: r.archive_s), ("build", lambda r: r.build_s), ("total", lambda r: r.total_s)]}
    print_table(
        "where a cluster run's time goes (medians; lead: client plans, reads the indexes, submits; "
        "utilisation: task compute / (workers x span))",
        ["variant", "tasks", "lead", "span", "tail", "task compute", "per task", "utilisation", "worker CPU",
         "CPU per task", "client CPU"],
        [[name, rs[0].tasks, fmt_s(med(rs, lambda r: r.lead_s)), fmt_s(med(rs, lambda r: r.span_s)),
          fmt_s(med(rs, lambda r: r.tail_s)), fmt_s(med(rs, lambda r: r.busy_s)),
          fmt_s(med(rs, lambda r: r.busy_s / max(r.tasks, 1))),
          f"{100 * med(rs, lambda r: r.busy_s / (w * max(r.span_s, 1e-9))):.0f} %",
          fmt_s(med(rs, lambda r: r.workers_cpu_s)), fmt_s(med(rs, lambda r: r.workers_cpu_s / max(r.tasks, 1))),
          fmt_s(med(rs, lambda r: r.client_cpu_s))]
         for name, rs, w in [("1 worker", one, 1), ("2 workers", two, 2)]],
    )
    print(f"\nspeed-up of 2 workers over 1: archive {fmt_x(speedup['archive'])}, build-candles "
          f"{fmt_x(speedup['build'])}, total {fmt_x(speedup['total'])} (goal >= 1.7x: {goal(speedup['total'] >= 1.7)}); "
          f"stored rows equal in every variant: {same}; load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
