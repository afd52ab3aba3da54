"""The Delta Lake store (issue 11) against the previous store (commit 833164a), same data, one run.

Both stores run the SAME worker code in long-lived subprocesses: the new one from this tree, the
previous one from ``git archive 833164a marketlake`` (extracted under ``bench-data/delta/``; the
editable-install finder is dropped so that package is the one imported, as in
``tests/store/test_migrate.py``). The parent sends each worker one command per round, the two
variants alternating within every round (previous first, then new), and takes medians over the
rounds. Each store writes its own lakes through its own ``Lake.write_candles``.

Items (issue 11, "What it must show"):

1. **One symbol-month of 1m** (``Lake.read_candles(symbol, "1", start, end)``) on a big lake of
   ``--big-symbols`` (500) symbols x 3 timeframes (1, 5, 60) x ``--big-years`` (3) years: every
   series holds one candle per day (small files: 1m monthly partitions, 5m/60m yearly, i.e. 42
   partitions per symbol, 21,000 files), written with one ``write_candles`` call per series (for
   the new store one commit per series: 1,500 commits, a checkpoint every 100). BTCUSDT 1m also
   holds one full month (June of the last year, 43,200 candles). Read (a) that full month and
   (b) a sparse month of another symbol (30 candles):
   *warm*: one ``Lake`` in the worker, repeated calls (median of ``--reads`` calls per round);
   *fresh process*: ``python -c`` that imports the store, opens ``Lake(...)`` and reads; the time
   inside the process from ``Lake(...)`` to the frame (the table open included), and the whole
   process' wall time beside ``python -c "import marketlake.store"`` (the interpreter + import
   floor) measured in the same rounds. The big lakes are cached under ``bench-data/delta/``
   (keyed by the store's source), their build time is reported once.
2. **Full scan into Polars**: ``Lake.read_candles()`` (all series) of the datagen set
   (``--symbols`` x ``--days`` of 1m, default 20 x 365 = 10.5 M candles): candles/s.
3. **Bytes per 1m candle** of that set: the data files (``*.parquet``), and the log / metadata
   beside them.
4. **Bulk write**: the set into an empty lake, one ``write_candles`` per symbol (the frames are
   in the worker's memory before the clock starts): candles/s. Then, for the new store, one
   extra untimed-by-the-table run with timers around its stages (encoding, fsync, commit,
   snapshot refresh) and a cProfile of the main thread (``--no-profile`` skips).
5. **Live-flush commit**: ``write_candles`` of 1 new candle after the newest one of BTCUSDT 1m,
   ``--flushes`` times (default 300, split over the rounds), on a lake of ``--flush-symbols`` (100)
   symbols x 3 timeframes x 1 year (sparse, as in 1) whose BTCUSDT 1m holds a full month:
   p50 / p99 / max per commit (the store's automatic compaction included, as it happens).
6. **check_lake** (``check_lake(lake, consistency=False)``) over the lake written in 4.

Usage::

    python -m benchmarks.bench_delta                      # full: ~10-15 min on 2 cores
    python -m benchmarks.bench_delta --quick              # 3 symbols x 30 days, 60 x 3 x 1 year
    python -m benchmarks.bench_delta --items 1,5 --big-symbols 500

Warm page cache throughout (each variant runs once untimed first).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import io
import time
from pathlib import Path
from typing import Any

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
    print_table,
)

PREVIOUS_COMMIT = "833164a"
WORK = BENCH_DATA / "delta"

GOAL_WARM_S = 0.010
GOAL_FRESH_S = 0.060
GOAL_BYTES = 18.5
GOAL_WRITE_RATE = 5e6
GOAL_FLUSH_P99_S = 0.050

# Run first in every subprocess: argv[1] is the previous release's code directory (or "-" for
# this tree). Dropping the editable-install finder is what makes the extracted package win.
_PRELUDE = r'''
import sys
_code = sys.argv.pop(1)
if _code != "-":
    sys.meta_path = [f for f in sys.meta_path if "editable" not in (getattr(f, "__module__", "") or "").lower()]
    sys.path.insert(0, _code)
    for _m in [m for m in sys.modules if m == "marketlake" or m.startswith("marketlake.")]:
        del sys.modules[_m]
'''

# The worker: JSON commands on stdin, one JSON answer per line on a private copy of stdout
# (anything a library prints goes to stderr).
_WORKER = _PRELUDE + r'''
import json, os, shutil, statistics, sys, time
_out = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
import numpy as np
import polars as pl
import marketlake
from marketlake.settings import Settings
from marketlake.store import Lake

SETTINGS = Settings.load(environ={})
FRAMES = {}
LAKES = {}
DAY = 86_400_000

def lake(root, fresh=False):
    if fresh or root not in LAKES:
        LAKES[root] = Lake(root, settings=SETTINGS)
    return LAKES[root]

def sparse_series(i, tf, start_ms, days, full_month=None):
    """One candle per day (at a minute/5m/hour slot that depends on i), prices a random walk;
    full_month=(lo, hi): also every minute of [lo, hi)."""
    rng = np.random.default_rng([11, i, int(tf)])
    step = int(tf) * 60_000
    slot = (i * 7 % (1440 // int(tf))) * step
    ts = start_ms + np.arange(days, dtype=np.int64) * DAY + slot
    if full_month is not None:
        ts = np.union1d(ts, np.arange(full_month[0], full_month[1], 60_000, dtype=np.int64))
    n = len(ts)
    close = np.round(100 * np.exp(np.cumsum(rng.normal(0, 0.01, n))), 2)
    open_ = np.concatenate([[close[0]], close[:-1]])
    hi = np.maximum(open_, close) + 0.01
    lo = np.minimum(open_, close) - 0.01
    vol = np.round(rng.gamma(2.0, 5.0, n), 3)
    return pl.DataFrame({"ts": ts, "open": open_, "high": hi, "low": lo, "close": close,
                         "volume": vol, "turnover": np.round(vol * close, 4)})

def build_sparse(dest, symbols, start_ms, days, month):
    """symbols x (1, 5, 60), one write_candles per series; BTCUSDT 1m also holds `month`."""
    lk = lake(dest, fresh=True)
    t0 = time.perf_counter()
    candles = 0
    for i, sym in enumerate(symbols):
        for tf in ("1", "5", "60"):
            fm = tuple(month) if (sym == "BTCUSDT" and tf == "1") else None
            df = sparse_series(i, tf, start_ms, days, fm)
            lk.write_candles(df, symbol=sym, timeframe=tf)
            candles += df.height
    return {"seconds": time.perf_counter() - t0, "candles": candles, "series": 3 * len(symbols)}

def load_frames(src):
    FRAMES.clear()
    df = pl.read_parquet(src)
    df = df.with_columns(pl.col("ts").dt.epoch("ms"))
    for (sym,), part in df.partition_by("symbol", as_dict=True, maintain_order=True).items():
        FRAMES[sym] = part.drop("symbol").rechunk()
    return {"rows": df.height, "symbols": len(FRAMES)}

def write_set(dest, limit=None):
    if os.path.exists(dest):
        shutil.rmtree(dest)
    lk = lake(dest, fresh=True)
    items = list(FRAMES.items())[: limit or None]
    t0 = time.perf_counter()
    for sym, f in items:
        lk.write_candles(f, symbol=sym, timeframe="1")
    return {"seconds": time.perf_counter() - t0, "rows": sum(f.height for _, f in items)}

def breakdown(dest, profile_path):
    """write_set with timers around the store's stages (new store only) and a cProfile."""
    import cProfile, threading
    import pyarrow.parquet as pq
    from marketlake.store import files, table, writer, lake as lake_mod
    import deltalake
    acc = {}
    lock = threading.Lock()
    def wrap(owner, name, label):
        orig = getattr(owner, name)
        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return orig(*a, **k)
            finally:
                d = time.perf_counter() - t0
                with lock:
                    s = acc.setdefault(label, [0.0, 0])
                    s[0] += d; s[1] += 1
        setattr(owner, name, timed)
        return (owner, name, orig)
    patches = [
        wrap(lake_mod, "normalize_candles", "normalize_candles (main)"),
        wrap(writer, "_to_table", "writer._to_table: frame -> Arrow (threads)"),
        wrap(writer, "write_data_file", "files.write_data_file total (threads)"),
        wrap(pq, "write_table", "  pq.write_table: Parquet encode+zstd (threads)"),
        wrap(os, "fsync", "  os.fsync, files + dirs (threads)"),
        wrap(files, "_makedirs", "  files._makedirs (mkdir + fsync parents)"),
        wrap(writer, "write_series", "writer.write_series total (main)"),
        wrap(table.DatasetTable, "commit", "  DatasetTable.commit (main)"),
        wrap(deltalake.DeltaTable, "create_write_transaction", "    delta-rs create_write_transaction"),
        wrap(table.DatasetTable, "snapshot", "  DatasetTable.snapshot (all calls)"),
        wrap(deltalake.DeltaTable, "update_incremental", "    delta-rs update_incremental"),
        wrap(deltalake.DeltaTable, "get_add_actions", "    delta-rs get_add_actions"),
        wrap(table, "files_frame_from_actions", "    files_frame_from_actions (polars)"),
        wrap(lake_mod.Lake, "_after_write", "  Lake._after_write (maintenance)"),
    ]
    if os.path.exists(dest):
        shutil.rmtree(dest)
    prof = cProfile.Profile()
    try:
        lk = lake(dest, fresh=True)
        t0 = time.perf_counter()
        prof.enable()
        for sym, f in FRAMES.items():
            lk.write_candles(f, symbol=sym, timeframe="1")
        prof.disable()
        wall = time.perf_counter() - t0
    finally:
        for owner, name, orig in reversed(patches):
            setattr(owner, name, orig)
    prof.dump_stats(profile_path)
    return {"wall": wall, "rows": sum(f.height for f in FRAMES.values()),
            "stages": [[k, v[0], v[1]] for k, v in acc.items()]}

def handle(cmd):
    op = cmd["op"]
    if op == "hello":
        has_delta = os.path.exists(os.path.join(os.path.dirname(marketlake.__file__), "store", "table.py"))
        return {"file": marketlake.__file__, "delta": has_delta, "pid": os.getpid()}
    if op == "build_sparse":
        return build_sparse(cmd["dest"], cmd["symbols"], cmd["start_ms"], cmd["days"], cmd["month"])
    if op == "read":
        lk = lake(cmd["root"])
        times, rows = [], 0
        for _ in range(cmd["n"]):
            t0 = time.perf_counter()
            rows = lk.read_candles(cmd["symbol"], "1", cmd["start"], cmd["end"]).height
            times.append(time.perf_counter() - t0)
        return {"times": times, "rows": rows}
    if op == "load_frames":
        return load_frames(cmd["src"])
    if op == "write":
        return write_set(cmd["dest"], cmd.get("limit"))
    if op == "breakdown":
        return breakdown(cmd["dest"], cmd["profile"])
    if op == "scan":
        lk = lake(cmd["root"])
        t0 = time.perf_counter()
        rows = lk.read_candles().height
        return {"seconds": time.perf_counter() - t0, "rows": rows}
    if op == "check":
        from marketlake.quality import check_lake
        lk = lake(cmd["root"], fresh=True)
        t0 = time.perf_counter()
        res = check_lake(lk, consistency=False)
        sec = time.perf_counter() - t0
        return {"seconds": sec, "repr": repr(res)[:200]}
    if op == "flush":
        lk = lake(cmd["root"])
        t = cmd["next_ms"]
        times = []
        for _ in range(cmd["n"]):
            c = 100.0 + (t // 60_000) % 97 / 100
            df = pl.DataFrame({"ts": [t], "open": [c], "high": [c + 0.01], "low": [c - 0.01], "close": [c],
                               "volume": [1.5], "turnover": [1.5 * c]})
            t0 = time.perf_counter()
            lk.write_candles(df, symbol=cmd["symbol"], timeframe="1")
            times.append(time.perf_counter() - t0)
            t += 60_000
        return {"times": times, "next_ms": t}
    if op == "quit":
        return {"bye": True}
    raise ValueError(op)

for line in sys.stdin:
    cmd = json.loads(line)
    try:
        ans = {"ok": True, **handle(cmd)}
    except Exception as exc:
        import traceback
        ans = {"ok": False, "error": traceback.format_exc()}
    _out.write(json.dumps(ans) + "\n")
    _out.flush()
    if cmd["op"] == "quit":
        break
'''

# A fresh process: import the store, open the lake, read one symbol-month.
_FRESH_READ = _PRELUDE + r'''
import time
t0 = time.perf_counter()
from marketlake.settings import Settings
from marketlake.store import Lake
t1 = time.perf_counter()
lake = Lake(sys.argv[1], settings=Settings.load(environ={}))
df = lake.read_candles(sys.argv[2], "1", int(sys.argv[3]), int(sys.argv[4]))
t2 = time.perf_counter()
print(t1 - t0, t2 - t1, df.height)
'''
_FRESH_IMPORT = _PRELUDE + "import marketlake.store\n"

# New store only, diagnostic: where a fresh process' table open goes.
_FRESH_OPEN_PARTS = r'''
import sys, time
from marketlake.settings import Settings
from marketlake.store import Lake
from marketlake.store.table import files_frame_from_actions
root, sym, lo, hi = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
t0 = time.perf_counter()
import deltalake
t1 = time.perf_counter()
handle = deltalake.DeltaTable(root + "/candles")
t2 = time.perf_counter()
actions = handle.get_add_actions(flatten=True)
t3 = time.perf_counter()
frame = files_frame_from_actions(actions)
t4 = time.perf_counter()
handle.update_incremental()
t5 = time.perf_counter()
lake = Lake(root, settings=Settings.load(environ={}))
lake.snapshot("candles")
t6 = time.perf_counter()
lake.read_candles(sym, "1", lo, hi)
t7 = time.perf_counter()
import os
log = os.listdir(root + "/candles/_delta_log")
print(t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5, t7 - t6, frame.height, handle.version(), len(log))
'''



class Worker:
    """A long-lived worker process for one store variant."""

    def __init__(self, name: str, code: str) -> None:
        self.name = name
        self.code = code
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER, code], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, bufsize=1,
        )
        hello = self.call(op="hello")
        if hello["delta"] != (name == "new"):
            raise RuntimeError(f"worker {name} imported the wrong marketlake: {hello['file']}")
        self.file = hello["file"]

    def call(self, **cmd: Any) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.name} died (exit {self.proc.wait()})")
        ans = json.loads(line)
        if not ans.pop("ok"):
            raise RuntimeError(f"worker {self.name}: {cmd['op']} failed:\n{ans['error']}")
        return ans

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.call(op="quit")
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=30)


# ------------------------------------------------------------------------------ helpers


def previous_code() -> Path:
    """The previous release's package, extracted once from git history."""
    dest = WORK / f"code-{PREVIOUS_COMMIT}"
    if (dest / "marketlake" / "store" / "lake.py").exists():
        return dest
    data = subprocess.run(["git", "-C", str(REPO), "archive", PREVIOUS_COMMIT, "marketlake"],
                          capture_output=True, check=True).stdout
    tmp = WORK / f".tmp-code-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        tf.extractall(tmp, filter="data")
    os.rename(tmp, dest)
    return dest


def store_key(name: str, code: Path) -> str:
    """A fingerprint of what decides a cached lake's files: for the previous store its source (it
    never changes); for the new one the on-disk format (candle schema, Parquet options, partition
    periods and columns) and the deltalake version, so a refactoring of the store does not force
    a rebuild of the big lake (~12 min) but a format change does."""
    h = hashlib.sha1()
    if name == "previous":
        for p in sorted((code / "marketlake" / "store").glob("*.py")):
            h.update(p.name.encode())
            h.update(p.read_bytes())
        return h.hexdigest()[:8]
    import deltalake

    from benchmarks.datagen import store_tag
    from marketlake.store.layout import partition_columns

    h.update(f"{store_tag()}|{partition_columns('candles')}|{deltalake.__version__}".encode())
    return h.hexdigest()[:8]


def data_bytes(root: Path) -> tuple[int, int, int]:
    """(bytes of *.parquet data files, their count, bytes of everything else) under a lake."""
    data = n = other = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            size = os.path.getsize(os.path.join(dirpath, name))
            in_log = "_delta_log" in dirpath or "_meta" in dirpath
            if name.endswith(".parquet") and not in_log and not name.startswith("."):
                data += size
                n += 1
            else:
                other += size
    return data, n, other


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def fmt_ss(seconds: float) -> str:
    """fmt_s with a sign (differences can be negative under noise)."""
    return ("-" if seconds < 0 else "") + fmt_s(abs(seconds))


def ratio_row(name: str, old: float, new: float, fmt=fmt_ss, goal: str = "") -> list[str]:
    return [name, fmt(old), fmt(new), fmt_x(new / old) if old > 0 and new > 0 else "-", goal]


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def month_bounds(year: int, month: int) -> tuple[int, int]:
    lo = dt.datetime(year, month, 1, tzinfo=dt.UTC)
    hi = dt.datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=dt.UTC)
    return int(lo.timestamp() * 1000), int(hi.timestamp() * 1000)


SUMMARY: list[list[str]] = []


# ------------------------------------------------------------------------------ items


def sparse_symbols(n: int) -> list[str]:
    return ["BTCUSDT", *[f"S{i:04d}USDT" for i in range(1, n)]]


def ensure_sparse(workers: dict[str, Worker], codes: dict[str, Path], kind: str, n_symbols: int,
                  years: int, scratch: bool = False) -> dict[str, Path]:
    """A sparse multi-symbol lake per variant (cached unless ``scratch``); prints build times."""
    start = dt.date(2024 - years + 1, 1, 1)
    days = (dt.date(2025, 1, 1) - start).days
    start_ms = int(dt.datetime(start.year, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)
    month = month_bounds(2024, 6)
    out: dict[str, Path] = {}
    rows = []
    for name, w in workers.items():
        path = WORK / f"{kind}-{name}-s{n_symbols}-y{years}-{store_key(name, codes[name])}"
        if scratch:
            path = WORK / f"scratch-{kind}-{name}"
            shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            print(f"[bench_delta] building {path.name} ({n_symbols} symbols x 3 tf x {years} y) ...",
                  file=sys.stderr, flush=True)
            r = w.call(op="build_sparse", dest=str(tmp), symbols=sparse_symbols(n_symbols), start_ms=start_ms,
                       days=days, month=list(month))
            os.rename(tmp, path)
            rows.append([name, f"{r['series']:,}", f"{r['candles']:,}", fmt_s(r["seconds"]),
                         f"{r['seconds'] / r['series'] * 1e3:.1f} ms"])
        out[name] = path
    if rows:
        print_table(f"building the {kind} lake (one write_candles per series; one run, not interleaved)",
                    ["store", "series", "candles", "time", "per series"], rows)
    for name, p in out.items():
        d, n, other = data_bytes(p)
        print(f"  {name}: {p}  {n:,} data files, {d / 2**20:.1f} MiB data, {other / 2**20:.1f} MiB log/meta")
    return out


def item_read(workers, codes, args) -> None:
    lakes = ensure_sparse(workers, codes, "big", args.big_symbols, args.big_years)
    full = ("BTCUSDT",) + month_bounds(2024, 6)
    sparse = (sparse_symbols(args.big_symbols)[-1],) + month_bounds(2024, 3)
    queries = {"full month (BTCUSDT 2024-06)": full, f"sparse month ({sparse[0]} 2024-03)": sparse}
    warm: dict[tuple[str, str], list[float]] = {}
    rows_read: dict[str, int] = {}
    for r in range(args.repeat + 1):
        for q, (sym, lo, hi) in queries.items():
            for name, w in workers.items():
                ans = w.call(op="read", root=str(lakes[name]), symbol=sym, start=lo, end=hi, n=args.reads)
                rows_read[q] = ans["rows"]
                if r:
                    warm.setdefault((q, name), []).extend(ans["times"])
    # fresh processes
    fresh: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    base: dict[str, list[float]] = {}
    py: list[float] = []

    def run(cmd: list[str]) -> tuple[float, str]:
        t0 = time.perf_counter()
        p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
        if p.returncode:
            raise RuntimeError(f"{cmd[:3]} failed:\n{p.stderr[-2000:]}")
        return wall, p.stdout

    for r in range(args.fresh_rounds + 1):
        wall, _ = run([sys.executable, "-c", "pass"])
        if r:
            py.append(wall)
        for name in workers:
            code = str(codes[name]) if name == "previous" else "-"
            wall, _ = run([sys.executable, "-c", _FRESH_IMPORT, code])
            if r:
                base.setdefault(name, []).append(wall)
            for q, (sym, lo, hi) in queries.items():
                wall, out = run([sys.executable, "-c", _FRESH_READ, code, str(lakes[name]), sym, str(lo), str(hi)])
                imp, inside, n = out.split()
                if int(n) != rows_read[q]:
                    raise RuntimeError(f"{name}: fresh read of {q} gave {n} rows, warm {rows_read[q]}")
                if r:
                    fresh.setdefault((q, name), []).append((wall, float(inside), float(imp)))
    rows = []
    for q in queries:
        o, n = med(warm[(q, "previous")]), med(warm[(q, "new")])
        rows.append(ratio_row(f"{q}, {rows_read[q]:,} rows: warm", o, n,
                              goal=f"<= 10 ms: {verdict(n <= GOAL_WARM_S)}"))
        SUMMARY.append([f"1. symbol-month warm, {q}", fmt_s(o), fmt_s(n), fmt_x(n / o), "<= 10 ms",
                        verdict(n <= GOAL_WARM_S)])
        oi, ni = med([x[1] for x in fresh[(q, "previous")]]), med([x[1] for x in fresh[(q, "new")]])
        rows.append(ratio_row(f"{q}: fresh process, Lake(...) -> frame", oi, ni,
                              goal=f"<= 60 ms: {verdict(ni <= GOAL_FRESH_S)}"))
        SUMMARY.append([f"1. symbol-month fresh process, Lake() -> frame, {q}", fmt_s(oi), fmt_s(ni),
                        fmt_x(ni / oi), "<= 60 ms", verdict(ni <= GOAL_FRESH_S)])
        ow, nw = med([x[0] for x in fresh[(q, "previous")]]), med([x[0] for x in fresh[(q, "new")]])
        rows.append(ratio_row(f"{q}: fresh `python -c` wall", ow, nw))
        rows.append(ratio_row(f"{q}: fresh wall - import floor", ow - med(base["previous"]), nw - med(base["new"])))
        SUMMARY.append([f"1. symbol-month fresh `python -c` wall minus import floor, {q}",
                        fmt_ss(ow - med(base["previous"])), fmt_ss(nw - med(base["new"])),
                        ratio_row("", ow - med(base["previous"]), nw - med(base["new"]))[3],
                        "- (noisy: the floor varies by 100s of ms)", ""])
    rows.append(ratio_row('floor: python -c "import marketlake.store"', med(base["previous"]), med(base["new"])))
    rows.append(["python -c pass", fmt_s(med(py)), fmt_s(med(py)), "", ""])
    oimp = med([x[2] for q in queries for x in fresh[(q, "previous")]])
    nimp = med([x[2] for q in queries for x in fresh[(q, "new")]])
    rows.append(ratio_row("in the fresh process: import Lake + Settings", oimp, nimp))
    # where the new store's fresh open goes (diagnostic, new store only)
    parts = []
    sym, lo, hi = full
    for _ in range(max(3, args.fresh_rounds // 2)):
        _, out = run([sys.executable, "-c", _FRESH_OPEN_PARTS, str(lakes["new"]), sym, str(lo), str(hi)])
        parts.append([float(x) for x in out.split()])
    labels = ["import deltalake", "DeltaTable(path): open, replay the log", "get_add_actions(flatten=True)",
              "files_frame_from_actions (polars)", "update_incremental (no new version)",
              "a second Lake(): snapshot('candles') (deltalake imported, page cache warm)",
              "read_candles after the open (plan + read)"]
    p = parts[0]
    nfiles, version, nlog = int(p[7]), int(p[8]), int(p[9])
    diag = [[lab, fmt_s(med([x[i] for x in parts]))] for i, lab in enumerate(labels)]
    print_table(f"1b. new store, fresh process, the open in parts (median of {len(parts)} processes; table at "
                f"version {version}, {nfiles:,} files, {nlog:,} entries in _delta_log)", ["step", "median"], diag)
    print_table(
        f"1. one symbol-month of 1m, lake of {args.big_symbols} symbols x (1, 5, 60) x {args.big_years} years "
        f"(warm: median of {args.repeat} rounds x {args.reads} calls; fresh: median of {args.fresh_rounds} rounds)",
        ["what", "previous", "new", "new/previous", "goal"], rows)


def item_write_scan_check(workers, codes, ds: DataSet, args, items: set[str]) -> dict[str, Path]:
    src = ds.ensure_single()
    for w in workers.values():
        w.call(op="load_frames", src=str(src))
    lakes = {name: WORK / f"scratch-set-{name}" for name in workers}
    # warm-up: a 2-symbol write per variant (imports, thread pools), then the timed rounds
    times: dict[str, list[float]] = {n: [] for n in workers}
    n_rounds = args.write_repeat if "4" in items else 1
    for r in range(n_rounds + 1):
        for name, w in workers.items():
            ans = w.call(op="write", dest=str(lakes[name]), limit=2 if r == 0 else None)
            if r:
                times[name].append(ans["seconds"])
    if "4" in items:
        o, n = med(times["previous"]), med(times["new"])
        rows = [
            ratio_row("bulk write, median", o, n),
            ["  best", fmt_s(min(times["previous"])), fmt_s(min(times["new"])), "", ""],
            ["candles/s (median)", fmt_rate(ds.rows / o), fmt_rate(ds.rows / n), fmt_x(o / n),
             f">= 5 M/s: {verdict(ds.rows / n >= GOAL_WRITE_RATE)}"],
        ]
        print_table(f"4. bulk write: {ds.rows:,} candles ({ds.n_symbols} write_candles calls) into an empty lake "
                    f"(median of {args.write_repeat} interleaved rounds; ratio column: speed new/previous)",
                    ["what", "previous", "new", "new/previous", "goal"], rows)
        SUMMARY.append(["4. bulk write, candles/s", fmt_rate(ds.rows / o), fmt_rate(ds.rows / n), fmt_x(o / n),
                        ">= 5 M/s", verdict(ds.rows / n >= GOAL_WRITE_RATE)])
    if "3" in items:
        rows = []
        bpc = {}
        for name, p in lakes.items():
            d, nf, other = data_bytes(p)
            bpc[name] = d / ds.rows
            rows.append([name, f"{nf:,}", f"{d / 2**20:.1f} MiB", f"{d / ds.rows:.2f}", f"{other / 2**10:.0f} KiB",
                         f"{(d + other) / ds.rows:.2f}"])
        print_table(f"3. bytes per 1m candle ({ds.rows:,} candles)",
                    ["store", "data files", "data bytes", "B/candle", "log + meta", "B/candle incl. log"], rows)
        SUMMARY.append(["3. bytes per 1m candle (data files)", f"{bpc['previous']:.2f}", f"{bpc['new']:.2f}",
                        fmt_x(bpc["new"] / bpc["previous"]), "<= 18.5 B", verdict(bpc["new"] <= GOAL_BYTES)])
    if "2" in items:
        st: dict[str, list[float]] = {n: [] for n in workers}
        for r in range(args.repeat + 1):
            for name, w in workers.items():
                ans = w.call(op="scan", root=str(lakes[name]))
                if ans["rows"] != ds.rows:
                    raise RuntimeError(f"{name}: full scan read {ans['rows']} rows, expected {ds.rows}")
                if r:
                    st[name].append(ans["seconds"])
        o, n = med(st["previous"]), med(st["new"])
        print_table(f"2. full scan into Polars, read_candles() of {ds.rows:,} candles (median of {args.repeat})",
                    ["what", "previous", "new", "new/previous", "goal"],
                    [ratio_row("time", o, n), ["  best", fmt_s(min(st["previous"])), fmt_s(min(st["new"])), "", ""],
                     ["candles/s", fmt_rate(ds.rows / o), fmt_rate(ds.rows / n), fmt_x(o / n),
                      f"no slower: {verdict(n <= o * 1.05)}"]])
        SUMMARY.append(["2. full scan, candles/s", fmt_rate(ds.rows / o), fmt_rate(ds.rows / n), fmt_x(o / n),
                        "no slower", verdict(n <= o * 1.05)])
    if "6" in items:
        ct: dict[str, list[float]] = {n: [] for n in workers}
        for r in range(args.repeat + 1):
            for name, w in workers.items():
                ans = w.call(op="check", root=str(lakes[name]))
                if r:
                    ct[name].append(ans["seconds"])
        o, n = med(ct["previous"]), med(ct["new"])
        print_table(f"6. check_lake(consistency=False) over the {ds.n_symbols}-symbol lake (median of {args.repeat})",
                    ["what", "previous", "new", "new/previous", "goal"],
                    [ratio_row("check_lake", o, n, goal=f"no slower: {verdict(n <= o * 1.05)}"),
                     ["  best", fmt_s(min(ct["previous"])), fmt_s(min(ct["new"])), "", ""],
                     ["candles/s", fmt_rate(ds.rows / o), fmt_rate(ds.rows / n), fmt_x(o / n), ""]])
        SUMMARY.append(["6. check_lake, 20-symbol lake" if ds.n_symbols == 20 else f"6. check_lake, {ds.n_symbols}-symbol lake",
                        fmt_s(o), fmt_s(n), fmt_x(n / o), "no slower", verdict(n <= o * 1.05)])
    if "4" in items and not args.no_profile:
        profile(workers["new"], ds)
    return lakes


def profile(w: Worker, ds: DataSet) -> None:
    prof_path = WORK / "write-profile-new.prof"
    ans = w.call(op="breakdown", dest=str(WORK / "scratch-set-profile"), profile=str(prof_path))
    shutil.rmtree(WORK / "scratch-set-profile", ignore_errors=True)
    wall = ans["wall"]
    rows = [[k, fmt_s(s), f"{c:,}", f"{s / wall * 100:.0f} %"] for k, s, c in ans["stages"]]
    print_table(f"4b. new store: where the bulk write's time goes (one instrumented run, wall {fmt_s(wall)} = "
                f"{fmt_rate(ans['rows'] / wall)}; stages in threads are summed over both threads, so they can "
                "exceed the wall)", ["stage", "seconds", "calls", "% of wall"], rows)
    import pstats

    buf = io.StringIO()
    pstats.Stats(str(prof_path), stream=buf).sort_stats("tottime").print_stats(14)
    lines = [ln for ln in buf.getvalue().splitlines() if ln.strip()]
    start = next((i for i, ln in enumerate(lines) if "ncalls" in ln), 0)
    print("\n4c. cProfile of the main thread (tottime, top 14; file " + str(prof_path) + "):")
    for ln in lines[start:start + 15]:
        print("   " + ln[:150])
    sys.stdout.flush()


def item_flush(workers, codes, args) -> None:
    lakes = ensure_sparse(workers, codes, "flush", args.flush_symbols, 1, scratch=True)
    per_round = max(1, args.flushes // args.repeat)
    nxt = {name: month_bounds(2024, 7)[0] for name in workers}
    lat: dict[str, list[float]] = {n: [] for n in workers}
    for r in range(args.repeat + 1):
        for name, w in workers.items():
            ans = w.call(op="flush", root=str(lakes[name]), symbol="BTCUSDT", next_ms=nxt[name],
                         n=5 if r == 0 else per_round)
            nxt[name] = ans["next_ms"]
            if r:
                lat[name].extend(ans["times"])
    rows = []
    for label, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)):
        o, n = pct(lat["previous"], q), pct(lat["new"], q)
        rows.append(ratio_row(label, o, n, goal=f"<= 50 ms: {verdict(n <= GOAL_FLUSH_P99_S)}" if label == "p99" else ""))
    print_table(f"5. live-flush commit: 1 candle appended to BTCUSDT 1m, {len(lat['new'])} commits per store "
                f"({args.repeat} interleaved rounds of {per_round}), lake of {args.flush_symbols} symbols x (1, 5, 60) x 1 year",
                ["latency", "previous", "new", "new/previous", "goal"], rows)
    for name, p in lakes.items():
        d, n, other = data_bytes(p)
        print(f"  after: {name}: {n:,} data files, log/meta {other / 2**20:.1f} MiB")
    o50, n50 = pct(lat["previous"], 0.5), pct(lat["new"], 0.5)
    o99, n99 = pct(lat["previous"], 0.99), pct(lat["new"], 0.99)
    SUMMARY.append(["5. live-flush commit p50", fmt_s(o50), fmt_s(n50), fmt_x(n50 / o50), "-", ""])
    SUMMARY.append(["5. live-flush commit p99", fmt_s(o99), fmt_s(n99), fmt_x(n99 / o99), "<= 50 ms",
                    verdict(n99 <= GOAL_FLUSH_P99_S)])
    for p in lakes.values():
        shutil.rmtree(p, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_dataset_args(p)
    p.add_argument("--quick", action="store_true",
                   help="small run: 3 symbols x 30 days, big lake 60 symbols x 1 year, 3 rounds")
    p.add_argument("--items", default="1,2,3,4,5,6",
                   help="which items to run (default all; 0 = only build the item-1 lakes)")
    p.add_argument("--big-symbols", type=int, default=500, help="symbols of the item-1 lake (default 500)")
    p.add_argument("--big-years", type=int, default=3, help="years of the item-1 lake (default 3)")
    p.add_argument("--reads", type=int, default=20, help="warm reads per round (item 1)")
    p.add_argument("--fresh-rounds", type=int, default=7, help="fresh-process rounds (item 1)")
    p.add_argument("--write-repeat", type=int, default=3, help="timed bulk-write rounds (item 4)")
    p.add_argument("--flushes", type=int, default=300, help="live-flush commits per store (item 5)")
    p.add_argument("--flush-symbols", type=int, default=100, help="symbols of the item-5 lake (x 3 timeframes)")
    p.add_argument("--no-profile", action="store_true", help="skip the instrumented new-store write")
    args = p.parse_args(argv)
    if args.quick:
        args.symbols, args.days, args.repeat = min(args.symbols, 3), min(args.days, 30), 3
        args.big_symbols, args.big_years, args.fresh_rounds = 60, 1, 3
        args.write_repeat, args.flushes, args.flush_symbols = 2, 60, 20
    items = {s.strip() for s in args.items.split(",") if s.strip()}
    ds = dataset_from_args(args)
    WORK.mkdir(parents=True, exist_ok=True)
    codes = {"previous": previous_code(), "new": REPO}
    t_start = time.perf_counter()
    header("bench_delta: the Delta Lake store (new) vs the previous store (" + PREVIOUS_COMMIT + ")", ds, args)
    import deltalake

    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--short", "marketlake/store"],
                           capture_output=True, text=True).stdout.strip()
    if dirty:
        print("new store has uncommitted changes: " + " ".join(dirty.split()))
    print(f"deltalake {deltalake.__version__}; previous store from {codes['previous']}; "
          f"new store from {REPO} (HEAD {subprocess.run(['git', '-C', str(REPO), 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()})")
    workers: dict[str, Worker] = {}
    try:
        workers["previous"] = Worker("previous", str(codes["previous"]))
        workers["new"] = Worker("new", "-")
        print(f"workers: previous = {workers['previous'].file}, new = {workers['new'].file}")
        if "0" in items:  # only build (or find) the item-1 lakes
            ensure_sparse(workers, codes, "big", args.big_symbols, args.big_years)
        if "1" in items:
            item_read(workers, codes, args)
            print(f"(load average {os.getloadavg()[0]:.2f})", flush=True)
        if items & {"2", "3", "4", "6"}:
            item_write_scan_check(workers, codes, ds, args, items)
            print(f"(load average {os.getloadavg()[0]:.2f})", flush=True)
        if "5" in items:
            item_flush(workers, codes, args)
    finally:
        for w in workers.values():
            w.close()
    for name in ("previous", "new"):
        shutil.rmtree(WORK / f"scratch-set-{name}", ignore_errors=True)
    print_table(f"summary (load average now {' / '.join(f'{x:.2f}' for x in os.getloadavg())}; "
                f"total {time.perf_counter() - t_start:.0f} s)",
                ["item", "previous", "new", "ratio", "goal", "verdict"], SUMMARY)
    print("ratio: new/previous of the time (or bytes) for times; of the speed for candles/s rows "
          "(above 1 = the new store is faster)")


if __name__ == "__main__":
    main()
