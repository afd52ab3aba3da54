"""Child process of the CSV import memory tests: peak RSS growth of importing one file.

Usage: ``python -m tests.unit.csv_import_rss streaming|whole LAKE WARMUP_CSV BIG_CSV``. A small
file is imported first so that libraries, thread pools and allocator arenas are in place; the
baseline is the peak RSS after that, and the growth is what the big file adds on top. ``whole`` is
the previous design (the whole file parsed in memory, then one write), kept to show that the
bound the tests assert is one the old reader would break. Prints one JSON line.
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path


def _peak_mib() -> float:
    # VmHWM, not getrusage's ru_maxrss: Linux keeps ru_maxrss across execve, so a child of a big
    # pytest process would start with the parent's peak (~1 GB in a full run) and show no growth.
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str]) -> None:
    mode, root, warmup, big = argv[0], Path(argv[1]), Path(argv[2]), Path(argv[3])
    from marketlake.interop.csv import import_csv, parse_old_csv
    from marketlake.settings import Settings
    from marketlake.store import Lake

    lake = Lake(root, settings=Settings.load(environ={}))

    def run(path: Path) -> int:
        if mode == "whole":
            frame = parse_old_csv(path)
            lake.write_candles(frame, symbol="BTCUSDT", timeframe="1")
            return frame.height
        report = import_csv(lake, [path], symbol="BTCUSDT", timeframe="1")
        if not report.ok:
            raise SystemExit(f"rejected: {report.rejected}")
        return report.imported[0].rows

    run(warmup)
    base = _peak_mib()
    rows = run(big)
    print(json.dumps({"base_mib": base, "growth_mib": _peak_mib() - base, "rows": rows}))


if __name__ == "__main__":
    main(sys.argv[1:])
