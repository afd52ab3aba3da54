"""Partition period and Parquet encoding: the figures behind ``_CANDLE_PERIODS`` and ``_WRITE_OPTIONS``.

Part 1 — 1-minute candles written with one partition per day, month or year. Part 2 — the same
question for 5m, 60m and D candles (resampled from the 1m set). For each layout:

* files, write time of the whole set into an empty lake (``Lake.write_candles`` per symbol;
  one run: it is minutes on the full set) and bytes/candle;
* ``Lake.read_candles`` medians: one symbol-month, one symbol-year, all symbols one day, full scan;
* what a plain glob reader pays: ``pl.scan_parquet("candles/**/*.parquet", hive_partitioning=True)``
  filtered to one symbol-month (no file list from marketlake);
* the cost of correcting one stored candle (a re-write of a stored key rewrites its partition,
  merged): median of ``--repeat``; this is what grows with the partition size.

Part 3 — Parquet encodings on the 1m monthly layout: zstd level 1/3/9, dictionary on/off,
BYTE_STREAM_SPLIT on the float columns, delta on ts, snappy: bytes/candle, write time, one
symbol-year and full-scan medians.

The layouts are produced by setting the store's two constants inside this process only
(``layout._CANDLE_PERIODS`` and ``files._WRITE_OPTIONS``); nothing in the store is changed.
Scratch lakes live under ``bench-data/<set>/partitioning/`` and are removed afterwards.

Usage::

    python -m benchmarks.bench_partitioning [--symbols 20 --days 365 --repeat 5 --parts 1,2,3]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from benchmarks.datagen import (
    DataSet,
    add_dataset_args,
    dataset_from_args,
    dir_bytes,
    fmt_rate,
    fmt_s,
    header,
    open_lake,
    print_table,
)
from marketlake.core.timeframes import parse_timeframe
from marketlake.store import files as store_files
from marketlake.store import layout as store_layout
from marketlake.store.layout import Period

UTC = dt.UTC
FLOATS = ("open", "high", "low", "close", "volume", "turnover", "buy_volume")
OHLC = ("open", "high", "low", "close")


@contextlib.contextmanager
def period_of(timeframe: str, period: Period) -> Iterator[None]:
    """Partition ``timeframe`` candles by ``period`` inside this process (restored on exit)."""
    table = store_layout._CANDLE_PERIODS
    had = timeframe in table
    old = table.get(timeframe)
    table[timeframe] = period  # type: ignore[index]
    try:
        yield
    finally:
        if had:
            table[timeframe] = old  # type: ignore[index]
        else:
            del table[timeframe]  # type: ignore[attr-defined]


@contextlib.contextmanager
def write_options(options: dict) -> Iterator[None]:
    """Write Parquet with ``options`` inside this process (restored on exit)."""
    old = store_files._WRITE_OPTIONS
    store_files._WRITE_OPTIONS = options  # type: ignore[misc]
    try:
        yield
    finally:
        store_files._WRITE_OPTIONS = old  # type: ignore[misc]


def resample(frame: pl.DataFrame, every: str) -> pl.DataFrame:
    """1m candles (ts int ms) → ``every`` candles, OHLC/volume/turnover aggregated."""
    out = (
        frame.with_columns(pl.from_epoch("ts", time_unit="ms").alias("t"))
        .group_by_dynamic("t", every=every, closed="left", label="left")
        .agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("volume").sum(),
            pl.col("turnover").sum(),
        )
        .with_columns(pl.col("t").dt.epoch("ms").alias("ts"))
        .select("ts", "open", "high", "low", "close", "volume", "turnover")
    )
    return out


@dataclass
class Layout:
    """One layout: its lake and its figures."""

    name: str
    tf: str
    period: Period
    options: dict | None
    root: Path
    files: int = 0
    bytes: int = 0
    rows: int = 0
    write_s: float = 0.0
    times: dict[str, list[float]] = field(default_factory=dict)
    lake: Any = None

    def t(self, query: str) -> float | None:
        runs = self.times.get(query)
        return statistics.median(runs) if runs else None

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """This layout's partition period (and write options) in force."""
        ctx = write_options(self.options) if self.options is not None else contextlib.nullcontext()
        with period_of(self.tf, self.period), ctx:
            yield


class Bench:
    """Writes layouts, then times the same queries on all of them in interleaved rounds (so a
    burst of load from other processes hits every layout alike, not one of them)."""

    def __init__(self, ds: DataSet, repeat: int, symbol: str, keep: bool) -> None:
        self.ds = ds
        self.repeat = repeat
        self.symbol = symbol
        self.keep = keep
        self.scratch = ds.dir / "partitioning"
        self._frames: dict[str, dict[str, pl.DataFrame]] = {}
        mid = ds.start + dt.timedelta(days=ds.days // 2)
        m0 = dt.datetime(mid.year, mid.month, 1, tzinfo=UTC)
        m1 = dt.datetime(mid.year + (mid.month == 12), mid.month % 12 + 1, 1, tzinfo=UTC)
        self.month = (max(int(m0.timestamp() * 1000), ds.start_ms), min(int(m1.timestamp() * 1000), ds.end_ms))
        d0 = int(dt.datetime(mid.year, mid.month, mid.day, tzinfo=UTC).timestamp() * 1000)
        self.day = (d0, d0 + 86_400_000)

    def frames(self, tf: str) -> dict[str, pl.DataFrame]:
        if tf not in self._frames:
            if "1" not in self._frames:
                print("  generating 1m frames ...", file=sys.stderr, flush=True)
                self._frames["1"] = dict(self.ds.frames())
            if tf != "1":
                every = {"5": "5m", "60": "1h", "D": "1d"}[tf]
                self._frames[tf] = {s: resample(f, every) for s, f in self._frames["1"].items()}
        return self._frames[tf]

    def build(self, name: str, tf: str, period: Period, options: dict | None = None) -> Layout:
        """Write the whole set into an empty lake with this layout (one timed run)."""
        print(f"  write {name} ...", file=sys.stderr, flush=True)
        frames = self.frames(tf)
        root = self.scratch / name.replace(" ", "_").replace("/", "_").replace(",", "")
        shutil.rmtree(root, ignore_errors=True)
        lay = Layout(name, tf, period, options, root)
        with lay.active():
            lay.lake = open_lake(root)
            t0 = time.perf_counter()
            for sym, f in frames.items():
                lay.lake.write_candles(f, symbol=sym, timeframe=tf)
            lay.write_s = time.perf_counter() - t0
        lay.bytes, lay.files = dir_bytes(root / "candles", ".parquet")
        lay.rows = sum(f.height for f in frames.values())
        return lay

    def queries(self, lay: Layout, glob: bool, fix: bool) -> dict[str, Callable[[], Any]]:
        lake, tf, sym = lay.lake, lay.tf, self.symbol
        q: dict[str, Callable[[], Any]] = {
            "month": lambda: lake.read_candles(sym, tf, *self.month).height,
            "year": lambda: lake.read_candles(sym, tf, self.ds.start_ms, self.ds.end_ms).height,
            "day": lambda: lake.read_candles(None, tf, *self.day).height,
            "full": lambda: lake.read_candles(None, tf).height,
        }
        if glob:
            pattern = str(lay.root / "candles" / "**" / "*.parquet")
            lo, hi = (dt.datetime.fromtimestamp(x / 1000, tz=UTC) for x in self.month)
            q["glob"] = lambda: (
                pl.scan_parquet(pattern, hive_partitioning=True)
                .filter(pl.col("symbol") == sym, pl.col("ts") >= lo, pl.col("ts") < hi)
                .collect()
                .height
            )
        if fix:
            # Correct one stored candle in the middle of the set: its partition is rewritten.
            f = self.frames(tf)[sym]
            row = f.slice(f.height // 2, 1)
            flip = [row.with_columns(pl.col("volume") + 1.0), row]
            count = [0]

            def fix_one() -> int:
                res = lake.write_candles(flip[count[0] % 2], symbol=sym, timeframe=tf)
                count[0] += 1
                if res.rows_replaced != 1:
                    raise AssertionError(f"{lay.name}: fixing one candle replaced {res.rows_replaced}")
                return 1

            q["fix"] = fix_one
        return q

    def measure(self, lays: list[Layout], glob: bool = True, fix: bool = True) -> None:
        """Round 0 untimed (warm-up), then ``repeat`` timed rounds over every layout and query."""
        plans = [(lay, self.queries(lay, glob, fix)) for lay in lays]
        print(f"  scans: {1 + self.repeat} interleaved rounds over {len(lays)} layouts ...",
              file=sys.stderr, flush=True)
        for rnd in range(1 + self.repeat):
            for lay, qs in plans:
                with lay.active():
                    for name, fn in qs.items():
                        c0 = time.process_time()
                        t0 = time.perf_counter()
                        out = fn()
                        elapsed = time.perf_counter() - t0
                        cpu = time.process_time() - c0
                        if name == "full" and out != lay.rows:
                            raise AssertionError(f"{lay.name}: full scan read {out} rows, wrote {lay.rows}")
                        if rnd:
                            lay.times.setdefault(name, []).append(elapsed)
                            if name == "full":  # CPU seconds (all threads): less at the mercy of load
                                lay.times.setdefault("full_cpu", []).append(cpu)

    def drop(self, lays: list[Layout]) -> None:
        if not self.keep:
            for lay in lays:
                shutil.rmtree(lay.root, ignore_errors=True)

    def run(self, specs: list[tuple[str, str, Period, dict | None]], glob: bool = True,
            fix: bool = True) -> list[Layout]:
        lays = [self.build(*spec) for spec in specs]
        try:
            self.measure(lays, glob, fix)
        finally:
            self.drop(lays)
        return lays


def _table(title: str, lays: list[Layout], with_glob: bool = True, with_fix: bool = True) -> None:
    headers = ["layout", "files", "rows/file", "B/candle", "write", "write rows/s", "sym-month", "sym-year",
               "all-sym day", "full scan", "full candles/s", "full scan CPU"]
    if with_glob:
        headers.append("glob sym-month")
    if with_fix:
        headers.append("fix 1 candle")
    rows = []
    for x in lays:
        full = x.t("full")
        row = [
            x.name, f"{x.files:,}", f"{x.rows / max(x.files, 1):,.0f}", f"{x.bytes / x.rows:.2f}",
            fmt_s(x.write_s), fmt_rate(x.rows / x.write_s),
            fmt_s(x.t("month")), fmt_s(x.t("year")), fmt_s(x.t("day")), fmt_s(full), fmt_rate(x.rows / full),
            fmt_s(x.t("full_cpu")),
        ]
        if with_glob:
            row.append(fmt_s(x.t("glob")))
        if with_fix:
            row.append(fmt_s(x.t("fix")))
        rows.append(row)
    print_table(title, headers, rows)


def encoding_variants() -> dict[str, dict]:
    current = dict(store_files._WRITE_OPTIONS)
    delta = {"ts": "DELTA_BINARY_PACKED"}
    bss = {**delta, **{c: "BYTE_STREAM_SPLIT" for c in FLOATS}}

    def opts(**kw: object) -> dict:
        return {"write_statistics": True, **kw}

    return {
        "current _WRITE_OPTIONS": current,
        "zstd3 defaults (dict on, plain ts)": opts(compression="zstd", compression_level=3),
        "zstd3 dict on, ts delta": opts(compression="zstd", compression_level=3,
                                        use_dictionary=list(FLOATS), column_encoding=delta),
        "zstd3 dict on OHLC only, ts delta": opts(compression="zstd", compression_level=3,
                                                  use_dictionary=list(OHLC), column_encoding=delta),
        "zstd3 no dict, ts delta": opts(compression="zstd", compression_level=3, use_dictionary=False,
                                        column_encoding=delta),
        "zstd3 BSS floats, ts delta": opts(compression="zstd", compression_level=3, use_dictionary=False,
                                           column_encoding=bss),
        "zstd1 no dict, ts delta": opts(compression="zstd", compression_level=1, use_dictionary=False,
                                        column_encoding=delta),
        "zstd1 BSS floats, ts delta": opts(compression="zstd", compression_level=1, use_dictionary=False,
                                           column_encoding=bss),
        "zstd9 no dict, ts delta": opts(compression="zstd", compression_level=9, use_dictionary=False,
                                        column_encoding=delta),
        "zstd9 BSS floats, ts delta": opts(compression="zstd", compression_level=9, use_dictionary=False,
                                           column_encoding=bss),
        "snappy no dict, ts delta": opts(compression="snappy", use_dictionary=False, column_encoding=delta),
        # Not an encoding: row groups of one week (10,080 1m rows) let a day query skip most of a
        # monthly file by its ts statistics (pyarrow's default is one row group per file here).
        "current + 1-week row groups": {**current, "row_group_size": 7 * 1440},
        "zstd3 dict on, ts delta, 1-week row groups": opts(
            compression="zstd", compression_level=3, use_dictionary=list(FLOATS), column_encoding=delta,
            row_group_size=7 * 1440),
        "zstd1 dict on, ts delta": opts(compression="zstd", compression_level=1,
                                        use_dictionary=list(FLOATS), column_encoding=delta),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Partition periods and Parquet encodings")
    add_dataset_args(p)
    p.add_argument("--symbol", default="BTCUSDT")
    p.add_argument("--parts", default="1,2,3", help="which parts to run: 1 (1m periods), 2 (5m/60m/D), 3 (encodings)")
    p.add_argument("--keep", action="store_true", help="keep the scratch lakes")
    p.add_argument("--encodings", default=None, help="part 3: only the variants whose name contains one of "
                   "these comma-separated words")
    args = p.parse_args(argv)
    ds = dataset_from_args(args)
    parts = {x.strip() for x in args.parts.split(",")}
    header("bench_partitioning", ds, args)
    current = {tf: store_layout.partition_period("candles", parse_timeframe(tf)) for tf in ("1", "5", "60", "D")}
    print("current _CANDLE_PERIODS: " + ", ".join(f"{tf}: {per.value}" for tf, per in current.items()))
    print(f"current _WRITE_OPTIONS: {store_files._WRITE_OPTIONS}")
    b = Bench(ds, args.repeat, args.symbol, args.keep)
    try:
        if "1" in parts:
            lays = b.run([(f"1m {per.value}", "1", per, None) for per in (Period.DAY, Period.MONTH, Period.YEAR)])
            _table("part 1 — 1m candles by partition period (write: one run; the rest: medians)", lays)
        if "2" in parts:
            for tf, pers in (("5", (Period.DAY, Period.MONTH, Period.YEAR)),
                             ("60", (Period.MONTH, Period.YEAR)),
                             ("D", (Period.MONTH, Period.YEAR))):
                lays = b.run([(f"{tf} {per.value}", tf, per, None) for per in pers])
                _table(f"part 2 — {tf} candles by partition period", lays)
        if "3" in parts:
            words = [w.strip() for w in (args.encodings or "").split(",") if w.strip()]
            lays = b.run([(f"enc {name}", "1", Period.MONTH, o) for name, o in encoding_variants().items()
                          if not words or any(w in name for w in words)], glob=False, fix=False)
            _table("part 3 — Parquet encodings, 1m candles in monthly partitions", lays,
                   with_glob=False, with_fix=False)
    finally:
        if not args.keep:
            shutil.rmtree(b.scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
