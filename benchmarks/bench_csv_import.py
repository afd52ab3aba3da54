"""CSV import throughput: marketlake's importer vs the old design's csv-module reader and pandas.

Reads the generated set's old-format files (``{SYMBOL}_1.csv``) and reports rows/s of:

* ``csv module (old way)``: ``csv.DictReader`` into a list of dicts with int/float conversion,
  sorted chronologically — what the seed's ``CSVManager.read_csv_data`` does, one file at a time;
* ``pandas.read_csv`` (C engine, defaults) and ``pandas.read_csv(engine="pyarrow")``;
* ``polars.read_csv`` (no validation; the floor of any Polars-based parser), and the two
  streaming readers considered for the import, raw: ``pyarrow.csv.open_csv`` with explicit column
  types and ``polars.scan_csv(...).collect_batches()``;
* ``marketlake parse_old_csv``: marketlake's whole-file parser with all its validation (parse only);
* ``marketlake whole-file import (before)``: the previous import design, kept as the same-run
  baseline of issue 14: ``parse_old_csv`` + one ``Lake.write_candles`` per file;
* ``marketlake import_csv``: the streaming import (8 MiB chunks parsed and validated by a reader
  thread while the lake merges the previous chunk, one transaction per file) into a fresh, empty
  lake (fsync included);
* ``marketlake import_csv (re-import)``: the same files again into the filled lake (idempotent:
  parses and compares, writes nothing).

Goals: marketlake's import >= 15x the csv-module way (issue 2), no slower than the whole-file
import and in memory that does not grow with the file (issue 14). Each variant's peak RSS is
measured in a fresh subprocess (``--no-rss`` skips that).

Usage::

    python -m benchmarks.bench_csv_import [--symbols 20 --days 365 --files N --repeat 5]
"""

from __future__ import annotations

import argparse
import csv
import functools
import shutil
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

from benchmarks.datagen import (
    DataSet,
    Timing,
    add_dataset_args,
    child_report,
    child_rss,
    dataset_from_args,
    fmt_mib,
    fmt_rate,
    fmt_s,
    fmt_x,
    goal,
    header,
    measure_many,
    open_lake,
    print_table,
)

GOAL_X = 15.0


def read_csv_old_way(path: Path) -> list[dict]:
    """The seed's CSVManager.read_csv_data: DictReader, numbers converted, oldest first."""
    data: list[dict] = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            data.append(
                {
                    "timestamp": int(row["timestamp"]),
                    "datetime": row["datetime"],
                    "open": float(row["open"]),
                    "high": float(row["high"]),
                    "low": float(row["low"]),
                    "close": float(row["close"]),
                    "volume": float(row["volume"]),
                    "turnover": float(row["turnover"]),
                }
            )
    data.sort(key=lambda c: c["timestamp"])
    return data


def _per_file(read: Callable[[Path], object], count: Callable[[object], int]) -> Callable[[list[Path]], int]:
    def run(files: list[Path]) -> int:
        rows = 0
        for f in files:
            rows += count(read(f))  # each file's result is dropped before the next, as the old code did
        return rows

    return run


def _pandas_c(path: Path):
    import pandas as pd

    return pd.read_csv(path)


def _pandas_arrow(path: Path):
    import pandas as pd

    return pd.read_csv(path, engine="pyarrow")


def _polars(path: Path):
    import polars as pl

    return pl.read_csv(path)


def _parse(path: Path):
    from marketlake.interop.csv import parse_old_csv

    return parse_old_csv(path)


def _arrow_stream(path: Path) -> int:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    floats = {c: pa.float64() for c in ("open", "high", "low", "close", "volume", "turnover")}
    types = {"timestamp": pa.int64(), "datetime": pa.string(), **floats}
    reader = pacsv.open_csv(path, convert_options=pacsv.ConvertOptions(column_types=types),
                            read_options=pacsv.ReadOptions(block_size=8 << 20))
    return sum(batch.num_rows for batch in reader)


def _polars_batches(path: Path) -> int:
    import polars as pl

    schema = {"timestamp": pl.Int64, "datetime": pl.String,
              **{c: pl.Float64 for c in ("open", "high", "low", "close", "volume", "turnover")}}
    return sum(b.height for b in pl.scan_csv(path, schema=schema).collect_batches(chunk_size=100_000))


VARIANTS: dict[str, Callable[[list[Path]], int]] = {
    "csv module (old way)": _per_file(read_csv_old_way, len),
    "pandas.read_csv": _per_file(_pandas_c, len),
    "pandas.read_csv pyarrow": _per_file(_pandas_arrow, len),
    "polars.read_csv (raw)": _per_file(_polars, lambda d: d.height),
    "pyarrow.csv.open_csv (raw, streaming)": _per_file(_arrow_stream, int),
    "polars.scan_csv batches (raw, streaming)": _per_file(_polars_batches, int),
    "marketlake parse_old_csv": _per_file(_parse, lambda d: d.height),
}
WHOLE = "marketlake whole-file import (before)"
IMPORT = "marketlake import_csv"
REIMPORT = "marketlake import_csv (re-import)"


def _import(lake_root: Path, files: list[Path]) -> int:
    from marketlake.interop.csv import import_csv

    report = import_csv(open_lake(lake_root), files)
    if not report.ok:
        raise RuntimeError(f"import rejected files: {report.rejected}")
    return sum(i.rows for i in report.imported)


def _import_whole(lake_root: Path, files: list[Path]) -> int:
    """The import before issue 14: each file parsed whole in memory, then written in one call."""
    from marketlake.interop.csv import parse_old_csv, series_from_filename

    lake = open_lake(lake_root)
    rows = 0
    for f in files:
        frame = parse_old_csv(f)
        symbol, tf = series_from_filename(f)
        lake.write_candles(frame, symbol=symbol, timeframe=tf)
        rows += frame.height
        del frame
    return rows


def _scratch(ds: DataSet) -> Path:
    return ds.dir / "tmp" / f"import-{uuid.uuid4().hex[:8]}"


def run_all(names: list[str], ds: DataSet, files: list[Path], repeat: int) -> dict[str, Timing]:
    """Every variant, interleaved round by round; the import variants get a fresh (empty) lake
    before each run and the re-import variant a lake filled once beforehand."""
    fresh_root = _scratch(ds)
    whole_root = _scratch(ds)
    full_root = _scratch(ds)
    fns: dict[str, Callable[[], int]] = {}
    setups: dict[str, Callable[[], object]] = {}
    for name in names:
        if name in VARIANTS:
            fns[name] = functools.partial(VARIANTS[name], files)
        elif name == IMPORT:
            fns[name] = lambda: _import(fresh_root, files)
            setups[name] = lambda: shutil.rmtree(fresh_root, ignore_errors=True)
        elif name == WHOLE:
            fns[name] = lambda: _import_whole(whole_root, files)
            setups[name] = lambda: shutil.rmtree(whole_root, ignore_errors=True)
        else:
            fns[name] = lambda: _import(full_root, files)
    try:
        if REIMPORT in names:
            _import(full_root, files)  # fill once; every timed run re-imports the same files
        return measure_many(fns, repeat=repeat, setups=setups)
    finally:
        for root in (fresh_root, whole_root, full_root):
            shutil.rmtree(root, ignore_errors=True)


def child(name: str, ds: DataSet, files: list[Path]) -> None:
    if name in VARIANTS:
        child_report(lambda: VARIANTS[name](files))
        return
    root = _scratch(ds)
    try:
        if name == REIMPORT:
            _import(root, files)
        child_report(lambda: (_import_whole if name == WHOLE else _import)(root, files))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="CSV import throughput vs the csv module and pandas")
    add_dataset_args(p)
    p.add_argument("--files", type=int, default=None, help="import only the first N symbol files")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    ds = dataset_from_args(args)
    ds.ensure_csv()
    files = [ds.csv_path(s) for s in ds.symbols[: args.files]]
    names = [*VARIANTS, WHOLE, IMPORT, REIMPORT]
    if args.child:
        child(args.child, ds, files)
        return

    header("bench_csv_import", ds, args)
    rows_expected = len(files) * ds.rows_per_symbol
    size = sum(f.stat().st_size for f in files)
    print(f"input: {len(files)} files, {rows_expected:,} rows, {size / 2**20:,.0f} MiB of CSV")
    print(f"  {len(names)} variants, {1 + args.repeat} interleaved rounds ...", file=sys.stderr, flush=True)
    results: dict[str, tuple[float, list[float]]] = {}
    for name, t in run_all(names, ds, files, args.repeat).items():
        if t.result != rows_expected:
            raise AssertionError(f"{name} read {t.result} rows, expected {rows_expected}")
        results[name] = (t.median, t.runs)
    rss: dict[str, dict] = {}
    if not args.no_rss:
        base_argv = ["--symbols", str(ds.n_symbols), "--days", str(ds.days), "--start", ds.start.isoformat(),
                     "--seed", str(ds.seed)] + (["--files", str(args.files)] if args.files else [])
        for name in names:
            print(f"  rss: {name} ...", file=sys.stderr, flush=True)
            rss[name] = child_rss("benchmarks.bench_csv_import", [*base_argv, "--child", name])

    old = results["csv module (old way)"][0]
    table = []
    for name in names:
        med, runs = results[name]
        r = rss.get(name)
        table.append([
            name,
            fmt_s(med),
            fmt_s(min(runs)),
            fmt_rate(rows_expected / med),
            f"{size / med / 2**20:,.0f} MiB/s",
            fmt_x(old / med),
            fmt_mib(r["peak"] if r else None),
            fmt_mib(r["peak"] - r["base"] if r else None),
        ])
    print_table(
        f"CSV import of {len(files)} files / {rows_expected:,} rows (median of {args.repeat})",
        ["variant", "median", "best", "rows/s", "CSV MiB/s", "vs csv module", "peak RSS", "RSS growth"],
        table,
    )
    x_import = old / results[IMPORT][0]
    x_parse = old / results["marketlake parse_old_csv"][0]
    x_pandas = results["pandas.read_csv"][0] / results[IMPORT][0]
    x_whole = results[WHOLE][0] / results[IMPORT][0]
    print(f"\nmarketlake import_csv (parse + write) = {fmt_x(x_import)} the csv-module way "
          f"(goal >= {GOAL_X:.0f}x: {goal(x_import >= GOAL_X)}); parse only {fmt_x(x_parse)}; "
          f"import vs pandas.read_csv (parse only) {fmt_x(x_pandas)}; "
          f"streaming vs whole-file import {fmt_x(x_whole)} (goal >= 1x: {goal(x_whole >= 1.0)})")
    if rss:
        growth = {n: rss[n]["peak"] - rss[n]["base"] for n in (WHOLE, IMPORT)}
        print(f"RSS growth: whole-file import {fmt_mib(growth[WHOLE])}, streaming {fmt_mib(growth[IMPORT])}")


if __name__ == "__main__":
    main()
