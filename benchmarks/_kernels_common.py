"""Helpers shared by the kernel benchmarks: fresh-process start-up timing and ratio rows."""

from __future__ import annotations

import statistics
import subprocess
import sys

from benchmarks.datagen import REPO, fmt_rate, fmt_s, fmt_x

# Imports marketlake and runs each public kernel once on tiny input; prints the seconds taken.
_READY_SNIPPET = """
import time
t0 = time.perf_counter()
import polars as pl
import marketlake
from marketlake.core.kernels.calendar import floor_ts
t1 = time.perf_counter()
floor_ts(0, 0, 1, 0)  # first numba dispatch: numba's one-time runtime init (probes BLAS via scipy)
t2 = time.perf_counter()
tr = pl.DataFrame({"ts": pl.Series([1_700_000_000_000_000, 1_700_000_000_100_000]).cast(pl.Datetime("us", "UTC")),
                   "price": [1.0, 2.0], "size": [1.0, 1.0], "side": ["Buy", "Sell"]})
c = marketlake.candles_from_trades(tr, "1", threads=1)
marketlake.candles_from_trades(tr, "1", threads=2)
marketlake.check_candles(c, "1", threads=1)
marketlake.check_candles(c, "1", threads=2)
t3 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2)
"""


def fresh_process_ready(runs: int = 5) -> tuple[float, float, float]:
    """Median seconds over ``runs`` fresh interpreters of: importing marketlake, numba's one-time
    runtime start (first dispatch of any jitted function), then loading and running every
    public kernel once from the cache.

    One untimed run first fills numba's on-disk cache if it is cold, so the figures are what
    every later process pays with ``cache=True``.
    """
    cmd = [sys.executable, "-c", _READY_SNIPPET]
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
    imports, inits, calls = [], [], []
    for _ in range(runs):
        out = subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, text=True).stdout.split()
        imports.append(float(out[0]))
        inits.append(float(out[1]))
        calls.append(float(out[2]))
    return statistics.median(imports), statistics.median(inits), statistics.median(calls)


def rate_row(name: str, seconds: float, n: int, ours: float) -> list[str]:
    """A table row: name, median time, throughput, and how many times faster ``ours`` is."""
    return [name, fmt_s(seconds), fmt_rate(n / seconds), fmt_x(seconds / ours)]
