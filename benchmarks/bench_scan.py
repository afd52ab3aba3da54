"""Scan speed: the lake vs the old CSV files and vs one unpartitioned Parquet file, same rows.

Queries (1-minute candles of the generated set):

* (a) one symbol, the whole year (``lake.read_candles(symbol, "1", start, end)``);
* (b) all symbols, one day;
* (c) one symbol, one calendar month;
* (d) everything (full scan; candles/s).

Each query is answered by

* ``lake``: ``Lake.read_candles`` (plans the partition files from the request, reads them with Polars);
* ``single-file Parquet``: ``pl.scan_parquet(single.parquet).filter(symbol == ..., ts in range)``
  on one file holding the same rows (sorted by symbol, ts; Polars' default writer settings);
* ``csv module (old way)``: ``csv.DictReader`` into lists of dicts with float conversion (the
  seed's ``CSVManager.read_csv_data``), then the rows in range kept — per symbol file;
* ``pandas (DataFeeder way)``: ``pd.read_csv``, timestamp → datetime index, ``df[start:end]``
  slice — what the old ``DataFeeder.load_data`` does per symbol file;
* ``polars.read_csv + filter``: the fastest way to answer from the CSV files.

Goals (issue 2): (a) <= 2x the single-file Parquet time and >= 20x faster than the CSV way
(csv module); (c) <= 25 ms; (d) >= 8 M candles/s. Warm page cache (one untimed run first), median
of ``--repeat`` runs. Peak RSS of each (a) variant in a fresh subprocess (``--no-rss`` skips).

Usage::

    python -m benchmarks.bench_scan [--symbols 20 --days 365 --repeat 5 --symbol BTCUSDT]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from benchmarks.bench_csv_import import read_csv_old_way
from benchmarks.datagen import (
    DataSet,
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

GOAL_VS_SINGLE = 2.0
GOAL_VS_CSV = 20.0
GOAL_MONTH_S = 0.025
GOAL_FULL_RATE = 8e6
UTC = dt.UTC


@dataclass(frozen=True)
class Query:
    """One question: which symbols (None = all) and [start, end) in epoch ms."""

    key: str
    title: str
    symbols: list[str] | None
    start: int | None
    end: int | None


def _ms_dt(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=UTC)


def queries(ds: DataSet, symbol: str) -> list[Query]:
    mid = ds.start + dt.timedelta(days=ds.days // 2)
    day0 = int(dt.datetime(mid.year, mid.month, mid.day, tzinfo=UTC).timestamp() * 1000)
    m0 = dt.datetime(mid.year, mid.month, 1, tzinfo=UTC)
    m1 = dt.datetime(mid.year + (mid.month == 12), mid.month % 12 + 1, 1, tzinfo=UTC)
    mlo = max(int(m0.timestamp() * 1000), ds.start_ms)
    mhi = min(int(m1.timestamp() * 1000), ds.end_ms)
    return [
        Query("a", f"(a) {symbol}, one year ({ds.days} days)", [symbol], ds.start_ms, ds.end_ms),
        Query("b", f"(b) all {ds.n_symbols} symbols, one day ({mid})", None, day0, day0 + 86_400_000),
        Query("c", f"(c) {symbol}, one month ({m0:%Y-%m})", [symbol], mlo, mhi),
        Query("d", f"(d) full scan, all {ds.n_symbols} symbols x {ds.days} days", None, None, None),
    ]


# ------------------------------------------------------------------------------- the variants


def v_lake(ds: DataSet) -> Callable[[Query], Callable[[], int]]:
    lake = open_lake(ds.lake_dir)

    def make(q: Query) -> Callable[[], int]:
        return lambda: lake.read_candles(q.symbols, "1", q.start, q.end).height

    return make


def v_single(ds: DataSet) -> Callable[[Query], Callable[[], int]]:
    path = ds.single_file

    def make(q: Query) -> Callable[[], int]:
        def run() -> int:
            lf = pl.scan_parquet(path)
            if q.symbols is not None:
                lf = lf.filter(pl.col("symbol").is_in(q.symbols)) if len(q.symbols) > 1 else lf.filter(
                    pl.col("symbol") == q.symbols[0]
                )
            if q.start is not None:
                lf = lf.filter(pl.col("ts") >= _ms_dt(q.start))
            if q.end is not None:
                lf = lf.filter(pl.col("ts") < _ms_dt(q.end))
            return lf.collect().height

        return run

    return make


def _files(ds: DataSet, q: Query) -> list[Path]:
    return [ds.csv_path(s) for s in (q.symbols or ds.symbols)]


def v_csv_module(ds: DataSet) -> Callable[[Query], Callable[[], int]]:
    def make(q: Query) -> Callable[[], int]:
        lo = -(2**63) if q.start is None else q.start
        hi = 2**63 if q.end is None else q.end

        def run() -> int:
            n = 0
            for f in _files(ds, q):
                data = [c for c in read_csv_old_way(f) if lo <= c["timestamp"] < hi]
                n += len(data)
            return n

        return run

    return make


def v_pandas(ds: DataSet) -> Callable[[Query], Callable[[], int]]:
    import pandas as pd

    def make(q: Query) -> Callable[[], int]:
        def run() -> int:
            n = 0
            for f in _files(ds, q):
                df = pd.read_csv(f)
                df["datetime"] = pd.to_datetime(df["timestamp"], unit="ms")
                df = df.set_index("datetime").sort_index()
                if q.start is not None or q.end is not None:
                    lo = None if q.start is None else pd.Timestamp(q.start, unit="ms")
                    hi = None if q.end is None else pd.Timestamp(q.end - 1, unit="ms")
                    df = df.loc[lo:hi]
                n += len(df)
            return n

        return run

    return make


def v_polars_csv(ds: DataSet) -> Callable[[Query], Callable[[], int]]:
    def make(q: Query) -> Callable[[], int]:
        def run() -> int:
            n = 0
            for f in _files(ds, q):
                lf = pl.scan_csv(f)
                if q.start is not None:
                    lf = lf.filter(pl.col("timestamp") >= q.start)
                if q.end is not None:
                    lf = lf.filter(pl.col("timestamp") < q.end)
                n += lf.collect().height
            return n

        return run

    return make


VARIANTS: dict[str, Callable[[DataSet], Callable[[Query], Callable[[], int]]]] = {
    "lake": v_lake,
    "single-file Parquet": v_single,
    "csv module (old way)": v_csv_module,
    "pandas (DataFeeder way)": v_pandas,
    "polars.read_csv + filter": v_polars_csv,
}


def _child(ds: DataSet, spec: str, symbol: str) -> None:
    qkey, name = spec.split(":", 1)
    q = next(q for q in queries(ds, symbol) if q.key == qkey)
    child_report(VARIANTS[name](ds)(q))


def _check_same(ds: DataSet, symbol: str, q: Query) -> None:
    """The lake and the single file return the same candles for (a) (checked once, untimed)."""
    a = open_lake(ds.lake_dir).read_candles([symbol], "1", q.start, q.end)
    cols = ["ts", "open", "high", "low", "close", "volume", "turnover"]
    b = (
        pl.scan_parquet(ds.single_file)
        .filter(pl.col("symbol") == symbol)
        .filter(pl.col("ts") >= _ms_dt(q.start), pl.col("ts") < _ms_dt(q.end))  # type: ignore[arg-type]
        .collect()
    )
    if not a.select(cols).equals(b.select(cols)):
        raise AssertionError(f"lake and single-file Parquet disagree on {symbol}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Scan speed: lake vs CSV vs single-file Parquet")
    add_dataset_args(p)
    p.add_argument("--symbol", default="BTCUSDT", help="the symbol of queries (a) and (c)")
    p.add_argument("--skip", default="", help="variants to leave out, comma-separated (e.g. 'csv module (old way)')")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    ds = dataset_from_args(args)
    if args.symbol not in ds.symbols:
        p.error(f"--symbol {args.symbol} is not in the set ({', '.join(ds.symbols)})")
    ds.ensure(("csv", "lake", "single"))
    if args.child:
        _child(ds, args.child, args.symbol)
        return

    header("bench_scan", ds, args)
    qs = queries(ds, args.symbol)
    _check_same(ds, args.symbol, qs[0])
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    names = [n for n in VARIANTS if n not in skip]
    makers = {n: VARIANTS[n](ds) for n in names}
    res: dict[tuple[str, str], tuple[float, float, int]] = {}
    for q in qs:
        fns = {}
        for name in names:
            if q.key == "d" and name == "csv module (old way)" and ("b", name) in res:
                continue  # (b) already reads every CSV file in full with the csv module
            fns[name] = makers[name](q)
        print(f"  {q.key}: {', '.join(fns)} ...", file=sys.stderr, flush=True)
        for name, t in measure_many(fns, repeat=args.repeat).items():
            res[(q.key, name)] = (t.median, t.best, t.result)
        rows = {res[(q.key, n)][2] for n in names if (q.key, n) in res}
        if len(rows) != 1:
            raise AssertionError(f"{q.title}: variants disagree on the row count: {rows}")

    rss: dict[str, dict] = {}
    if not args.no_rss:
        base = ["--symbols", str(ds.n_symbols), "--days", str(ds.days), "--start", ds.start.isoformat(),
                "--seed", str(ds.seed), "--symbol", args.symbol]
        for name in names:
            print(f"  rss (a): {name} ...", file=sys.stderr, flush=True)
            rss[name] = child_rss("benchmarks.bench_scan", [*base, "--child", f"a:{name}"])

    summary: list[str] = []
    for q in qs:
        lake_t = res[(q.key, "lake")][0]
        single_t = res.get((q.key, "single-file Parquet"), (None,))[0]
        rows_n = res[(q.key, "lake")][2]
        table = []
        for name in names:
            key = (q.key, name) if (q.key, name) in res else ("b", name)
            med, best, _ = res[key]
            note = " (= b)" if key[0] != q.key else ""
            r = rss.get(name) if q.key == "a" else None
            row = [
                name + note,
                fmt_s(med),
                fmt_s(best),
                fmt_rate(rows_n / med),
                fmt_x(med / lake_t),
            ]
            if q.key == "a":
                row += [fmt_mib(r["peak"] if r else None), fmt_mib(r["peak"] - r["base"] if r else None)]
            table.append(row)
        headers = ["variant", "median", "best", "candles/s", "time vs lake"]
        if q.key == "a":
            headers += ["peak RSS", "RSS growth"]
        print_table(f"{q.title}: {rows_n:,} candles (median of {args.repeat})", headers, table)
        if q.key == "a":
            csv_t = res.get(("a", "csv module (old way)"), (None,))[0]
            if single_t:
                x = lake_t / single_t
                summary.append(f"(a) one-year scan: lake {fmt_s(lake_t)} = {fmt_x(x)} the single-file Parquet time "
                               f"(goal <= {GOAL_VS_SINGLE:.0f}x: {goal(x <= GOAL_VS_SINGLE)})")
            if csv_t:
                x = csv_t / lake_t
                summary.append(f"(a) one-year scan: lake is {fmt_x(x)} faster than the csv-module way "
                               f"(goal >= {GOAL_VS_CSV:.0f}x: {goal(x >= GOAL_VS_CSV)}); "
                               f"vs pandas {fmt_x(res[('a', 'pandas (DataFeeder way)')][0] / lake_t)}"
                               if ("a", "pandas (DataFeeder way)") in res else "")
        if q.key == "b" and single_t:
            summary.append(f"(b) one day, all symbols: lake {fmt_s(lake_t)} = {fmt_x(lake_t / single_t)} "
                           f"the single-file time")
        if q.key == "c":
            summary.append(f"(c) one symbol-month: lake {fmt_s(lake_t)} "
                           f"(goal <= {GOAL_MONTH_S * 1e3:.0f} ms: {goal(lake_t <= GOAL_MONTH_S)})")
        if q.key == "d":
            rate = rows_n / lake_t
            summary.append(f"(d) full scan: lake {fmt_rate(rate)} candles "
                           f"(goal >= {GOAL_FULL_RATE / 1e6:.0f} M/s: {goal(rate >= GOAL_FULL_RATE)})"
                           + (f"; single file {fmt_rate(rows_n / single_t)}" if single_t else ""))
    print("\nsummary")
    for line in summary:
        print("  " + line)


if __name__ == "__main__":
    main()
