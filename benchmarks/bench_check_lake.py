"""``check`` on a whole lake, end to end from disk (issue 3, benchmark 3).

The lake is the generated data set of :mod:`benchmarks.datagen` (``--symbols`` x ``--days`` of 1m;
default 20 x 365 = 10.5 M candles, monthly partitions), as ``DataSet.ensure_lake`` writes it.
A cached lake that the current reader cannot read (written before a schema change) is not used:
the set is then written afresh under ``bench-data/check-lake/`` with the current code.

Measured (median of ``--repeat`` runs after one untimed warm-up; warm page cache):

1. ``check_lake(lake, consistency=False)`` end to end (series discovery, reading every file,
   the numba scan, gap classification against the ledger): seconds and rows/s;
2. the same work split into phases by a loop over the same public functions
   (``find_series``, ``read_series``, ``check_candles``, the ledger classification): read time
   vs kernel time, each as seconds and rows/s;
3. a cold run: the lake's files evicted from the page cache first (``posix_fadvise(DONTNEED)``
   on each file, nothing else on the machine is touched), median of 3;
4. the CLI end to end: ``marketlake check --lake DIR --no-consistency --json > /dev/null`` in a
   subprocess, wall time with ``time.perf_counter`` around it; and the same command on an empty
   lake: the interpreter + imports + CLI floor that every command pays; and the first
   ``check_candles`` call in a fresh process (numba loading its cached kernels), which the CLI
   pays once on top of the floor.

Usage::

    python -m benchmarks.bench_check_lake [--symbols 20 --days 365 --repeat 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.datagen import (
    BENCH_DATA,
    DataSet,
    add_dataset_args,
    dataset_from_args,
    dir_bytes,
    fmt_rate,
    fmt_s,
    header,
    measure,
    open_lake,
    print_table,
)
from marketlake.core.integrity import check_candles
from marketlake.quality.check import _classify, check_lake, read_series
from marketlake.store.layout import CANDLES
from marketlake.store.reader import find_series


def usable_lake(ds: DataSet) -> tuple[DataSet, str]:
    """The data set whose lake the current code reads; rebuilt under a private root if the
    shared cached one predates a schema change."""
    ds.ensure_lake()
    lake = open_lake(ds.lake_dir)
    try:
        read_series(lake, find_series(ds.lake_dir, CANDLES, exchange="bybit", category="linear")[0])
        return ds, "cached"
    except Exception as exc:  # noqa: BLE001 - any reader failure means: not usable as is
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    fresh = DataSet(ds.n_symbols, ds.days, ds.start, ds.seed, root=BENCH_DATA / "check-lake")
    print(
        f"note: the cached lake {ds.lake_dir} is unreadable by the current reader ({reason}); "
        f"using a lake written with the current code: {fresh.lake_dir}",
        flush=True,
    )
    fresh.ensure_lake()
    return fresh, "rebuilt"


def evict(root: Path) -> int:
    """Drop the lake's files from the page cache (clean pages only; other files untouched)."""
    n = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                n += 1
            finally:
                os.close(fd)
    return n


def phases(root: Path) -> dict[str, Any]:
    """check_lake's work, phase by phase (same functions, same order)."""
    t: dict[str, Any] = {"find": 0.0, "read": 0.0, "kernel": 0.0, "classify": 0.0, "rows": 0, "issues": 0}
    w0 = time.perf_counter()
    lake = open_lake(root)
    sids = find_series(lake.root, CANDLES, exchange="bybit", category="linear")
    w1 = time.perf_counter()
    t["find"] = w1 - w0
    for sid in sids:
        a = time.perf_counter()
        frame = read_series(lake, sid)
        b = time.perf_counter()
        assert sid.timeframe is not None
        result = check_candles(frame.drop("filled"), sid.timeframe)
        c = time.perf_counter()
        unexplained, _explained = _classify(lake, sid, result)
        int(frame.get_column("filled").sum())
        d = time.perf_counter()
        t["read"] += b - a
        t["kernel"] += c - b
        t["classify"] += d - c
        t["rows"] += frame.height
        t["issues"] += len(unexplained) + result.invalid_count + result.duplicate_count
    t["total"] = time.perf_counter() - w0
    t["series"] = len(sids)
    return t


def cli_cmd(root: Path) -> list[str]:
    exe = shutil.which("marketlake")
    base = [exe] if exe else [sys.executable, "-m", "marketlake"]
    return [*base, "check", "--lake", str(root), "--no-consistency", "--json"]


def time_cmd(cmd: list[str], repeat: int) -> tuple[list[float], int]:
    """Wall seconds of ``cmd`` (stdout to /dev/null), one untimed warm-up run first."""
    runs, rc = [], 0
    for i in range(repeat + 1):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
        dt_s = time.perf_counter() - t0
        rc = proc.returncode
        if rc not in (0, 1):
            raise RuntimeError(f"{' '.join(cmd)} exited {rc}: {proc.stderr.decode()[-1500:]}")
        if i:
            runs.append(dt_s)
    return runs, rc


_FIRST_CALL = """
import sys, time
import numpy as np, polars as pl
from marketlake.core.integrity import check_candles
from marketlake.core.timeframes import parse_timeframe
ts = 1_700_000_000_000 + np.arange(1000, dtype=np.int64) * 60_000
one = np.ones(1000)
frame = pl.DataFrame({"ts": ts, "open": one, "high": one, "low": one, "close": one, "volume": one,
                      "turnover": one}).with_columns(pl.from_epoch("ts", time_unit="ms").dt.replace_time_zone("UTC"))
t0 = time.perf_counter()
check_candles(frame, parse_timeframe("1"))
t1 = time.perf_counter()
check_candles(frame, parse_timeframe("1"))
print(t1 - t0, time.perf_counter() - t1)
"""


def first_call(repeat: int) -> list[float]:
    """Seconds of the first ``check_candles`` call in a fresh process (numba loads its cached
    kernels then), after imports; one untimed run first (it may compile and fill the cache)."""
    runs = []
    for i in range(repeat + 1):
        out = subprocess.run(
            [sys.executable, "-c", _FIRST_CALL], capture_output=True, text=True, check=True
        ).stdout.split()
        if i:
            runs.append(float(out[0]))
    return runs


def _med(runs: list[float]) -> float:
    return statistics.median(runs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_dataset_args(p)
    p.add_argument("--no-cli", action="store_true", help="skip the CLI runs")
    p.add_argument("--no-cold", action="store_true", help="skip the cold-cache runs")
    args = p.parse_args(argv)
    ds, origin = usable_lake(dataset_from_args(args))
    header("bench_check_lake", ds, args)
    root = ds.lake_dir
    size, files = dir_bytes(root / "candles", ".parquet")
    print(f"lake: {root} ({origin}); {files} Parquet files, {size / 2**20:,.1f} MiB")
    loads = [os.getloadavg()[0]]

    # 1. check_lake end to end
    def run_check() -> Any:
        return check_lake(open_lake(root), consistency=False)

    e2e = measure(run_check, repeat=args.repeat)
    res = e2e.result
    loads.append(os.getloadavg()[0])
    if res.rows != ds.rows or len(res.series) != ds.n_symbols:
        raise AssertionError(f"checked {res.rows} rows of {len(res.series)} series; the set has {ds.rows}")
    issues = sum(1 for s in res.series if s.has_issues)

    # 2. phases
    ph_runs = []
    phases(root)  # warm-up
    for _ in range(args.repeat):
        ph_runs.append(phases(root))
    loads.append(os.getloadavg()[0])
    ph = {k: _med([r[k] for r in ph_runs]) for k in ("find", "read", "kernel", "classify", "total")}
    rows = ph_runs[0]["rows"]

    # 3. cold
    cold: list[float] = []
    if not args.no_cold:
        for _ in range(3):
            evict(root)
            t0 = time.perf_counter()
            run_check()
            cold.append(time.perf_counter() - t0)
        loads.append(os.getloadavg()[0])

    # 4. CLI
    cli = helpr = None
    first: list[float] = []
    rc = None
    if not args.no_cli:
        cli, rc = time_cmd(cli_cmd(root), args.repeat)
        first = first_call(args.repeat)
        empty = BENCH_DATA / "check-lake" / f"empty-{os.getpid()}"
        empty.mkdir(parents=True, exist_ok=True)
        try:
            helpr, _ = time_cmd(cli_cmd(empty), args.repeat)
        finally:
            shutil.rmtree(empty, ignore_errors=True)
        loads.append(os.getloadavg()[0])

    # report
    n = ds.rows
    tab = [
        ["check_lake() end to end (warm)", fmt_s(e2e.median), fmt_rate(n / e2e.median), "100%"],
    ]
    if cold:
        tab.append(
            [
                "check_lake() end to end (cold page cache, median of 3)",
                fmt_s(_med(cold)),
                fmt_rate(n / _med(cold)),
                f"{_med(cold) / e2e.median:.0%}",
            ]
        )
    tab += [
        ["  phases: find series", fmt_s(ph["find"]), "-", f"{ph['find'] / ph['total']:.0%}"],
        [
            "  phases: read (Parquet -> frame)",
            fmt_s(ph["read"]),
            fmt_rate(rows / ph["read"]),
            f"{ph['read'] / ph['total']:.0%}",
        ],
        [
            "  phases: kernel (check_candles)",
            fmt_s(ph["kernel"]),
            fmt_rate(rows / ph["kernel"]),
            f"{ph['kernel'] / ph['total']:.0%}",
        ],
        [
            "  phases: classify gaps (ledger)",
            fmt_s(ph["classify"]),
            "-",
            f"{ph['classify'] / ph['total']:.0%}",
        ],
        ["  phases: total", fmt_s(ph["total"]), fmt_rate(rows / ph["total"]), "100%"],
    ]
    if cli is not None and helpr is not None:
        tab += [
            [
                "marketlake check --no-consistency --json > /dev/null",
                fmt_s(_med(cli)),
                fmt_rate(n / _med(cli)),
                f"exit {rc}",
            ],
            ["same on an empty lake (interpreter, imports, CLI)", fmt_s(_med(helpr)), "-", "-"],
            ["CLI minus floor", fmt_s(_med(cli) - _med(helpr)), fmt_rate(n / (_med(cli) - _med(helpr))), "-"],
            [
                "  of which: first check_candles call in a fresh process (numba cache load)",
                fmt_s(_med(first)),
                "-",
                "-",
            ],
        ]
    print_table(
        f"check on {ds.n_symbols} series, {n:,} rows ({issues} series with issues); "
        f"median of {args.repeat} (cold: 3)",
        ["what", "seconds", "rows/s", "share"],
        tab,
    )
    print(
        f"runs: end to end {', '.join(f'{x:.3f}' for x in e2e.runs)} s; cold {', '.join(f'{x:.3f}' for x in cold)} s"
        + (f"; CLI {', '.join(f'{x:.3f}' for x in cli)} s" if cli else "")
    )
    print(f"load average (1 min) during the runs: {', '.join(f'{x:.2f}' for x in loads)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
