"""The lake on an S3-compatible object store against the same lake on local disk (issue 12).

Both lakes are on this machine: the object store is moto's S3 server on 127.0.0.1 (the test
suite's, ``tests/s3server.py``), so the ratios are the cost of the protocol (HTTP requests, a
Python S3 server, the object-store clients) and of the store's request pattern, not of a network.
On a real network every request adds its round trip (~1 ms same-region, tens of ms further), so
the request counts printed at the end matter as much as the times.

The same data (``--symbols`` x ``--days`` of the datagen 1m set, default 10 x 90 =
1,296,000 candles) is written into an empty local lake and an empty ``s3://bucket/lake``, one
``write_candles`` per symbol, the two alternating symbol by symbol. Then, the two lakes measured in
interleaved rounds (local first, then S3, every round; medians):

1. **Bulk write** (one run): the set into each lake.
2. **Request round trip**: one ``Storage.head`` of a log entry (a stat locally, a HEAD on S3):
   the floor every metadata request pays; and one ``Storage.has_prefix`` of the log (a directory
   scan locally, a delimited LIST on S3).
3. **Live-flush commit**: ``write_candles`` of ``--flush-candles`` (3) new candles after the newest
   of BTCUSDT 1m, ``--flushes`` (100) times per lake over the rounds: p50 / p90 / max (the store's
   automatic compaction and background checkpoints included, as they happen; the three slowest
   S3 flushes are printed with their versions). Run before the reads so these read a log that grew as a live lake's does (a checkpoint, entries after it).
4. **Symbol-month warm**: ``lake.read_candles("BTCUSDT", "1", start, end)`` of the set's second
   month on one ``Lake`` per store (``--reads`` calls per round, the median of all calls).
5. **Full scan**: ``lake.read_candles()`` (every column of every row into Polars), and
   ``lake.scan_candles().select(pl.len()).collect()`` (rows counted from the Parquet footers).
6. **Symbol-month in a fresh process**: ``python -c`` that imports the store, opens
   ``Lake(root)`` (S3 settings from the standard ``AWS_*`` variables) and reads the month; the time
   inside the process from ``Lake(...)`` to the frame (table open included) and the process' wall
   time, beside ``python -c "import marketlake.store"`` (the interpreter + import floor). With the
   table-state cache present (a previous process left it: ``<lake>/_meta/tablestate`` locally,
   ``settings.state_dir`` for S3), present but as old as the end of the bulk write (restored
   before each run: a reader machine that last read before the flushes; it replays the log
   entries since, one request each) and absent (deleted before each run: the table is opened
   with delta-rs, which replays the log from its last checkpoint).
7. **Requests per operation** (untimed; ``--no-requests`` skips): moto's request recorder counts
   the HTTP requests of one warm read, one fresh-process read with and without the cache, one
   full scan and one flush, by method and by kind of object (log, data file, marketlake's
   ``_meta``, a folder listing); ``--show-requests`` prints each one.

Usage::

    python -m benchmarks.bench_s3                      # ~1-1.5 min on 2 shared cores
    python -m benchmarks.bench_s3 --symbols 3 --days 60 --repeat 3 --flushes 30   # quick

Scratch lakes go under ``bench-data/s3/`` and are removed afterwards (``--keep`` keeps them).
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from benchmarks.datagen import (
    BENCH_DATA,
    REPO,
    DataSet,
    add_dataset_args,
    dataset_from_args,
    fmt_rate,
    fmt_s,
    fmt_x,
    header,
    measure_many,
    print_table,
)

WORK = BENCH_DATA / "s3"
SYMBOL = "BTCUSDT"

# A fresh process: import the store, open the lake, read one symbol-month; one JSON line out.
_CHILD = r'''
import json, sys, time
t0 = time.perf_counter()
from marketlake.settings import Settings
from marketlake.store import Lake
t1 = time.perf_counter()
root, symbol, start, end = sys.argv[1:5]
lake = Lake(root, settings=Settings.load())
df = lake.read_candles(symbol, "1", start, end)
t2 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "inside": t2 - t1, "rows": df.height}))
'''
_FLOOR = "import marketlake.store"


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def _month(ds: DataSet) -> tuple[str, str]:
    """[start, end) of the set's second calendar month (its first when it holds only one)."""
    first = dt.date(ds.start.year, ds.start.month, 1)
    nxt = (first + dt.timedelta(days=32)).replace(day=1)
    after = (nxt + dt.timedelta(days=32)).replace(day=1)
    last_day = ds.start + dt.timedelta(days=ds.days)
    if after <= last_day:
        return nxt.isoformat(), after.isoformat()
    return ds.start.isoformat(), min(nxt, last_day).isoformat()


class Recorder:
    """moto's request recorder (``/moto-api/recorder/...``): the HTTP requests an operation made."""

    def __init__(self, endpoint: str, show: bool = False) -> None:
        self.endpoint = endpoint
        self.show = show

    def _call(self, what: str) -> str:
        with urllib.request.urlopen(f"{self.endpoint}/moto-api/recorder/{what}", timeout=30) as r:
            return r.read().decode()

    def count(self, label: str, run: Callable[[], Any]) -> collections.Counter[str]:
        if self.show:
            print(f"  {label}:")
        self._call("reset-recording")
        self._call("start-recording")
        try:
            run()
        finally:
            self._call("stop-recording")
        out: collections.Counter[str] = collections.Counter()
        for line in self._call("download-recording").splitlines():
            if not line.strip():
                continue
            e = json.loads(line)
            url = e["url"].split("?", 1)
            path, query = url[0], (url[1] if len(url) > 1 else "")
            if "_delta_log" in path or "_delta_log" in query:
                kind = "log"
            elif path.endswith(".parquet"):
                kind = "data"
            elif "/_meta/" in path or "_meta" in query:
                kind = "_meta"
            else:
                kind = "folder"
            method = e["method"]
            if method == "GET" and ("list-type" in query or "delimiter" in query or "prefix=" in query):
                method = "LIST"
            elif method == "GET" and any(k.lower() == "range" for k in e.get("headers", {})):
                method = "GET range"
            out[f"{method} {kind}"] += 1
            if self.show:
                print(f"    {method:<9} {path.split('/', 3)[-1]}{'?' + query if query else ''}")
        return out


def _fmt_requests(c: collections.Counter[str]) -> str:
    if not c:
        return "0"
    items = sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))
    return f"{sum(c.values())}: " + ", ".join(f"{n} {k}" for k, n in items)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_dataset_args(p, symbols=10, days=90)
    p.add_argument("--reads", type=int, default=10, help="warm symbol-month reads per round (default 10)")
    p.add_argument("--flushes", type=int, default=100, help="flush commits per lake (default 100)")
    p.add_argument("--flush-candles", type=int, default=3, help="candles per flush (default 3)")
    p.add_argument("--heads", type=int, default=50, help="request round trips per round (default 50)")
    p.add_argument("--no-requests", action="store_true", help="skip the request counts")
    p.add_argument("--show-requests", action="store_true", help="print every request counted")
    p.add_argument("--keep", action="store_true", help="keep the scratch lakes under bench-data/s3/")
    args = p.parse_args(argv)
    ds = dataset_from_args(args)
    header("bench_s3: the lake on S3 (moto on 127.0.0.1) vs local disk", ds, args)
    loads = [os.getloadavg()[0]]

    run_dir = WORK / f"run-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    run_dir.mkdir(parents=True)
    # moto's recorder appends to this file (its default is ./moto_recording in the server's cwd).
    os.environ["MOTO_RECORDER_FILEPATH"] = str(run_dir / "moto-recording.jsonl")
    from tests.s3server import running_s3_server

    try:
        with running_s3_server() as server:
            _run(args, ds, server, run_dir, loads)
    finally:
        if not args.keep:
            shutil.rmtree(run_dir, ignore_errors=True)


def _run(args: argparse.Namespace, ds: DataSet, server: Any, run_dir: Path, loads: list[float]) -> None:
    from marketlake.settings import Settings
    from marketlake.store import Lake, logwriter

    local_root = run_dir / "local"
    state_dir = run_dir / "state"
    bucket = server.new_bucket()
    s3_root = f"s3://{bucket}/lake"
    s3_settings = server.settings(state_dir)
    local_settings = Settings.load(environ={})
    names = ("local", "S3")

    def open_lakes() -> dict[str, Lake]:
        return {"local": Lake(local_root, settings=local_settings), "S3": Lake(s3_root, settings=s3_settings)}

    # ------------------------------------------------------------------ 1. bulk write
    t0 = time.perf_counter()
    frames = dict(ds.frames())
    print(f"generated {ds.rows:,} candles in {time.perf_counter() - t0:.1f} s; moto at {server.endpoint}",
          flush=True)
    lakes = open_lakes()
    write_s = dict.fromkeys(names, 0.0)
    for sym, frame in frames.items():
        for name in names:
            t0 = time.perf_counter()
            lakes[name].write_candles(frame, symbol=sym, timeframe="1")
            write_s[name] += time.perf_counter() - t0

    # The table-state caches as a reader left them after the bulk write (a fresh Lake's first
    # snapshot saves its cache), kept aside: a reader machine that last read before the flushes.
    stale = run_dir / "stale-cache"
    stale_version = {}
    for name, lk in open_lakes().items():
        stale_version[name] = lk.snapshot("candles").version
    shutil.copytree(local_root / "_meta" / "tablestate", stale / "local")
    shutil.copytree(state_dir, stale / "S3")

    # ------------------------------------------------------------------ 2. one request
    heads = measure_many(
        {n: (lambda lk=lakes[n]: [lk.storage.head("candles/_delta_log/00000000000000000000.json")
                                  for _ in range(args.heads)]) for n in names}
        | {f"{n} prefix": (lambda lk=lakes[n]: [lk.storage.has_prefix("candles/_delta_log")
                                                for _ in range(args.heads)]) for n in names},
        repeat=args.repeat,
    )

    # ------------------------------------------------------------------ 3. live-flush commits
    base = frames[SYMBOL].tail(args.flush_candles)
    next_ts = dict.fromkeys(names, int(frames[SYMBOL]["ts"][-1]) + 60_000)
    flush_times: dict[str, list[float]] = {n: [] for n in names}
    flush_log: dict[str, list[tuple[float, int | None, int]]] = {n: [] for n in names}
    per_round = max(1, args.flushes // args.repeat)

    def flush(name: str) -> float:
        n = args.flush_candles
        ts = next_ts[name]
        df = base.with_columns(pl.Series("ts", [ts + 60_000 * i for i in range(n)], dtype=pl.Int64))
        next_ts[name] = ts + 60_000 * n
        t0 = time.perf_counter()
        res = lakes[name].write_candles(df, symbol=SYMBOL, timeframe="1")
        elapsed = time.perf_counter() - t0
        flush_log[name].append((elapsed, res.version, res.files_written))
        return elapsed

    for name in names:  # untimed: the first flush creates the next month's partition
        flush(name)
    for _ in range(args.repeat):
        for name in names:
            flush_times[name].extend(flush(name) for _ in range(per_round))
    loads.append(os.getloadavg()[0])
    versions = {n: lakes[n].versions()["candles"] for n in names}
    time.sleep(1.0)  # (a background checkpoint of the last commits finishes)
    checkpoint = logwriter.last_checkpoint(lakes["S3"].storage, "candles")

    # ------------------------------------------------------------------ 4. warm symbol-month
    start, end = _month(ds)
    lakes = open_lakes()  # readers that did not write: a snapshot built as a reader builds it
    warm_calls: dict[str, list[float]] = {n: [] for n in names}

    def warm(name: str) -> int:
        rows = 0
        for _ in range(args.reads):
            t0 = time.perf_counter()
            rows = lakes[name].read_candles(SYMBOL, "1", start, end).height
            warm_calls[name].append(time.perf_counter() - t0)
        return rows

    warm_rounds = measure_many({n: (lambda n=n: warm(n)) for n in names}, repeat=args.repeat)
    for n in names:  # (the warm-up round's calls are in the list: drop them)
        warm_calls[n] = warm_calls[n][args.reads:]
    month_rows = {n: warm_rounds[n].result for n in names}
    assert month_rows["local"] == month_rows["S3"], month_rows

    # ------------------------------------------------------------------ 5. full scan
    scans = measure_many(
        {f"{n} read": (lambda n=n: lakes[n].read_candles().height) for n in names}
        | {f"{n} count": (lambda n=n: lakes[n].scan_candles().select(pl.len()).collect().item()) for n in names},
        repeat=args.repeat,
    )
    total_rows = scans["local read"].result
    assert scans["S3 read"].result == total_rows == scans["S3 count"].result, "S3 and local lakes differ"
    loads.append(os.getloadavg()[0])

    # ------------------------------------------------------------------ 6. fresh process
    local_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MARKETLAKE_"))}
    s3_env = server.env(state_dir)
    local_cache = local_root / "_meta" / "tablestate"

    def child(root: str, env: dict[str, str], drop: Path | None = None,
              restore: Path | None = None) -> Callable[[], dict[str, float]]:
        def run() -> dict[str, float]:
            if drop is not None:
                shutil.rmtree(drop, ignore_errors=True)
                if restore is not None:
                    shutil.copytree(restore, drop)
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", _CHILD, root, SYMBOL, start, end], env=env,
                                  cwd=run_dir, capture_output=True, text=True, check=False)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                raise RuntimeError(f"fresh-process read failed:\n{proc.stderr[-3000:]}")
            out = json.loads(proc.stdout.strip().splitlines()[-1])
            assert out["rows"] == month_rows["local"], out
            return {**out, "wall": wall}
        return run

    def floor() -> dict[str, float]:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", _FLOOR], env=local_env, cwd=run_dir, check=True)
        return {"wall": time.perf_counter() - t0}

    fresh_variants = {
        "import floor": floor,
        "local, cache": child(str(local_root), local_env),
        "S3, cache": child(s3_root, s3_env),
        "local, old cache": child(str(local_root), local_env, local_cache, stale / "local"),
        "S3, old cache": child(s3_root, s3_env, state_dir, stale / "S3"),
        "local, no cache": child(str(local_root), local_env, local_cache),
        "S3, no cache": child(s3_root, s3_env, state_dir),
    }
    fresh: dict[str, list[dict[str, float]]] = {k: [] for k in fresh_variants}
    for i in range(args.repeat + 1):
        for k, fn in fresh_variants.items():
            r = fn()
            if i:
                fresh[k].append(r)
    loads.append(os.getloadavg()[0])

    # ------------------------------------------------------------------ 7. requests
    requests: dict[str, collections.Counter[str]] = {}
    if not args.no_requests:
        rec = Recorder(server.endpoint, show=args.show_requests)
        s3 = lakes["S3"]
        flush("S3")  # (this Lake's first commit also reads the table's protocol: not counted)
        ops: dict[str, Callable[[], Any]] = {
            "symbol-month, warm": lambda: s3.read_candles(SYMBOL, "1", start, end),
            "symbol-month, fresh process, cache": fresh_variants["S3, cache"],
            "symbol-month, fresh process, no cache": fresh_variants["S3, no cache"],
            f"symbol-month, fresh process, cache {versions['S3'] - stale_version['S3']} versions old":
                fresh_variants["S3, old cache"],
            "full scan (read_candles())": lambda: s3.read_candles(),
            "count rows (select(pl.len()))": lambda: s3.scan_candles().select(pl.len()).collect(),
            "one live flush": lambda: flush("S3"),
            "one request (Storage.head)": lambda: s3.storage.head("candles/_delta_log/00000000000000000000.json"),
        }
        for label, op in ops.items():
            requests[label] = rec.count(label, op)

    # ------------------------------------------------------------------ tables
    print(f"\nlakes: {total_rows:,} candles; the candles table at version {versions['local']} (local) / "
          f"{versions['S3']} (S3) after the flushes; symbol-month {SYMBOL} {start}..{end} = "
          f"{month_rows['local']:,} candles; load average {', '.join(f'{x:.2f}' for x in loads)}")

    def row(label: str, lo: float, s3: float, fmt: Callable[[float], str] = fmt_s) -> list[str]:
        return [label, fmt(lo), fmt(s3), fmt_x(s3 / lo)]

    rows = [
        [f"bulk write, {ds.rows:,} candles (one run)",
         f"{fmt_s(write_s['local'])} = {fmt_rate(ds.rows / write_s['local'])}",
         f"{fmt_s(write_s['S3'])} = {fmt_rate(ds.rows / write_s['S3'])}", fmt_x(write_s["S3"] / write_s["local"])],
        row("one request round trip (Storage.head)", heads["local"].median / args.heads,
            heads["S3"].median / args.heads),
        row("is there a log (Storage.has_prefix)", heads["local prefix"].median / args.heads,
            heads["S3 prefix"].median / args.heads),
    ]
    for label, q in (("p50", 0.5), ("p90", 0.9), ("max", 1.0)):
        rows.append(row(f"live-flush commit ({args.flush_candles} candles), {label}",
                        _pct(flush_times["local"], q), _pct(flush_times["S3"], q)))
    rows.append(row("symbol-month warm (median of calls)", statistics.median(warm_calls["local"]),
                    statistics.median(warm_calls["S3"])))
    rows.append(row(f"full scan read_candles() ({fmt_rate(total_rows / scans['local read'].median)} local)",
                    scans["local read"].median, scans["S3 read"].median))
    rows.append(row("count rows, scan_candles().select(pl.len())", scans["local count"].median,
                    scans["S3 count"].median))

    def fmed(k: str, field: str) -> float:
        return statistics.median(r[field] for r in fresh[k])

    behind = versions["S3"] - stale_version["S3"]
    for cache in ("cache", "old cache", "no cache"):
        label = f"cache {behind} versions old" if cache == "old cache" else cache
        rows.append(row(f"fresh process, Lake(...) -> frame, {label}",
                        fmed(f"local, {cache}", "inside"), fmed(f"S3, {cache}", "inside")))
    for cache in ("cache", "no cache"):
        rows.append(row(f"fresh process, wall, {cache} (floor {fmt_s(fmed('import floor', 'wall'))})",
                        fmed(f"local, {cache}", "wall"), fmed(f"S3, {cache}", "wall")))
    print_table(f"S3 (moto, loopback) vs local disk: medians of {args.repeat} interleaved rounds",
                ["measure", "local", "S3", "S3 / local"], rows)

    gain = [
        [n, fmt_s(fmed(f"{n}, cache", "inside")), fmt_s(fmed(f"{n}, old cache", "inside")),
         fmt_s(fmed(f"{n}, no cache", "inside")),
         fmt_x(fmed(f"{n}, no cache", "inside") / fmed(f"{n}, cache", "inside"))]
        for n in names
    ]
    print_table(f"What the table-state cache buys a fresh process (Lake(...) -> frame; last checkpoint "
                f"at version {checkpoint})",
                ["lake", "cache current", f"cache {behind} versions old", "cache absent", "absent / current"],
                gain)
    slow = sorted(flush_log["S3"][1:1 + len(flush_times["S3"])], key=lambda r: -r[0])[:3]
    print("\nslowest S3 flushes: " + "; ".join(f"{fmt_s(t)} (version {v})" for t, v, _ in slow)
          + f" -- a checkpoint is written every 100 versions by a background thread")
    if requests:
        print_table("HTTP requests per operation on the S3 lake (moto's recorder)",
                    ["operation", "requests"], [[k, _fmt_requests(v)] for k, v in requests.items()])


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
