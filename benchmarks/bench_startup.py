"""Start-up time of the command line and of ``import marketlake``.

Each variant is a fresh process (what a person or a script pays each time):

* ``python -c pass``: the baseline: the interpreter and site-packages alone (``.pth`` files of
  editable installs included), measured in the same run, so the other rows can be read as
  "baseline + what marketlake adds";
* ``python -c "import marketlake"``;
* ``marketlake --help`` (run as ``python -m marketlake --help``: the same code as the console
  script, and it honours ``PYTHONPATH``, so an older checkout can be measured for a before/after);
* ``marketlake info`` on an empty lake (a new, empty directory).

One untimed round first (page cache, ``__pycache__``), then ``--repeat`` rounds with the variants
interleaved round by round, so a burst of load from other processes hits every variant alike.
Wall time of ``subprocess.run`` by ``time.perf_counter``; the table shows medians and best.

Goals (issue 14): ``marketlake --help`` <= 0.3 s, ``info`` on an empty lake <= 0.5 s.

Usage::

    python -m benchmarks.bench_startup [--repeat 15]
    PYTHONPATH=/path/to/old/checkout python -m benchmarks.bench_startup   # the same for another tree
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["main", "measure"]


def _variants(empty_lake: Path) -> dict[str, list[str]]:
    py = sys.executable
    return {
        "python -c pass (baseline)": [py, "-c", "pass"],
        'python -c "import marketlake"': [py, "-c", "import marketlake"],
        "marketlake --help": [py, "-m", "marketlake", "--help"],
        "marketlake info (empty lake)": [py, "-m", "marketlake", "info", "--lake", str(empty_lake)],
    }


def _once(argv: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def measure(repeat: int) -> dict[str, list[float]]:
    """Seconds per run of each variant (``repeat`` interleaved rounds after one untimed one).

    Args:
        repeat: Timed rounds.

    Returns:
        Variant name -> its run times in seconds.
    """
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        cwd = Path(tmp)
        empty = cwd / "empty-lake"
        empty.mkdir()
        variants = _variants(empty)
        for argv in variants.values():
            _once(argv, cwd)
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(repeat):
            for name, argv in variants.items():
                times[name].append(_once(argv, cwd))
        return times


def main(argv: list[str] | None = None) -> int:
    """Print the table (markdown) of medians, bests and the excess over the baseline."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeat", type=int, default=15, help="timed rounds (default 15)")
    args = parser.parse_args(argv)
    times = measure(args.repeat)
    base = statistics.median(times["python -c pass (baseline)"])
    load = os.getloadavg()
    print(
        f"# {dt.date.today()}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
        f"load {load[0]:.2f} {load[1]:.2f}, {args.repeat} rounds, PYTHONPATH={os.environ.get('PYTHONPATH', '')!r}"
    )
    print("| variant | median | best | median - baseline |")
    print("|---|---:|---:|---:|")
    for name, runs in times.items():
        med = statistics.median(runs)
        print(f"| {name} | {med:.3f} s | {min(runs):.3f} s | {med - base:+.3f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
