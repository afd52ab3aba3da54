"""Bytes per candle on disk: the lake vs the old CSV files vs one single-file Parquet.

Reports, for the generated 1-minute set:

* total bytes, files and bytes/candle of the lake (live ``*.parquet`` files under ``candles/``),
  of the old CSV files and of the single unpartitioned Parquet file (Polars defaults);
* the per-column split of the compressed Parquet bytes (from the file footers), lake and single
  file, to show where the bytes go (timestamps delta-encode to almost nothing; prices and volumes
  are the cost);
* the spread over symbols (a BTC minute costs more than an illiquid alt's).

Goal (issue 2): <= 25 B/candle for the lake. Nothing is timed here.

Usage::

    python -m benchmarks.bench_storage [--symbols 20 --days 365]
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq

from benchmarks.datagen import (
    add_dataset_args,
    dataset_from_args,
    dir_bytes,
    goal,
    header,
    print_table,
)

GOAL_B = 25.0


def parquet_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.parquet") if not any(part.startswith((".", "_")) for part in p.parts[-8:]))


def column_bytes(files: list[Path]) -> dict[str, int]:
    """Compressed bytes of each column over ``files`` (from the footers)."""
    out: dict[str, int] = defaultdict(int)
    for f in files:
        meta = pq.ParquetFile(f).metadata
        for rg in range(meta.num_row_groups):
            g = meta.row_group(rg)
            for c in range(g.num_columns):
                col = g.column(c)
                out[col.path_in_schema] += col.total_compressed_size
    return dict(out)


def footer_bytes(files: list[Path]) -> int:
    total = 0
    for f in files:
        meta = pq.ParquetFile(f).metadata
        total += meta.serialized_size + 8
    return total


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Bytes per candle: lake vs CSV vs single-file Parquet")
    add_dataset_args(p)
    args = p.parse_args(argv)
    ds = dataset_from_args(args)
    ds.ensure(("csv", "lake", "single"))
    header("bench_storage", ds, args, timed=False)
    n = ds.rows

    lake_files = parquet_files(ds.lake_dir / "candles")
    lake_bytes = sum(f.stat().st_size for f in lake_files)
    csv_bytes, csv_files = dir_bytes(ds.csv_dir, ".csv")
    single_bytes = ds.single_file.stat().st_size
    rows = [
        ["lake (Parquet, monthly 1m partitions)", f"{len(lake_files):,}", f"{lake_bytes / 2**20:,.1f} MiB",
         f"{lake_bytes / n:.2f}", f"{csv_bytes / lake_bytes:.2f}x"],
        ["old CSV files", f"{csv_files:,}", f"{csv_bytes / 2**20:,.1f} MiB", f"{csv_bytes / n:.2f}", "1.00x"],
        ["single-file Parquet (Polars defaults)", "1", f"{single_bytes / 2**20:,.1f} MiB",
         f"{single_bytes / n:.2f}", f"{csv_bytes / single_bytes:.2f}x"],
    ]
    print_table(f"storage of {n:,} candles", ["form", "files", "bytes", "B/candle", "CSV / form"], rows)

    lake_cols = column_bytes(lake_files)
    single_files = [ds.single_file]
    single_cols = column_bytes(single_files)
    names = list(dict.fromkeys([*lake_cols, *single_cols]))
    crow = []
    for c in names:
        lb, sb = lake_cols.get(c), single_cols.get(c)
        crow.append([c, "-" if lb is None else f"{lb / n:.2f}", "-" if sb is None else f"{sb / n:.2f}"])
    crow.append(["(footers, headers)", f"{(lake_bytes - sum(lake_cols.values())) / n:.2f}",
                 f"{(single_bytes - sum(single_cols.values())) / n:.2f}"])
    print_table("bytes per candle by column (compressed)", ["column", "lake", "single file"], crow)

    per_symbol = []
    for s in ds.symbols:
        files = [f for f in lake_files if f"symbol={s}" in f.parts]
        b = sum(f.stat().st_size for f in files)
        per_symbol.append((b / ds.rows_per_symbol, s, ds.csv_path(s).stat().st_size / ds.rows_per_symbol))
    per_symbol.sort()
    shown = per_symbol if len(per_symbol) <= 6 else [*per_symbol[:3], *per_symbol[-3:]]
    print_table(
        "bytes per candle by symbol (cheapest and dearest)",
        ["symbol", "lake B/candle", "CSV B/candle"],
        [[s, f"{b:.2f}", f"{c:.2f}"] for b, s, c in shown],
    )

    per = lake_bytes / n
    print(f"\nlake: {per:.2f} B/candle (goal <= {GOAL_B:.0f}: {goal(per <= GOAL_B)}), "
          f"{csv_bytes / lake_bytes:.2f}x smaller than the CSV files ({csv_bytes / n:.2f} B/candle), "
          f"{single_bytes / lake_bytes:.2f}x the single file's size ({single_bytes / n:.2f} B/candle)")


if __name__ == "__main__":
    main()
