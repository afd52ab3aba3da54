"""DataFeeder: loading, point lookups and streaming, against the old pandas feeder's ways.

(1) **load**: ``DataFeeder(lake).load_data(symbols, ["1"], first_day, last_day)`` vs the old
    ``DataFeeder.load_data``: per symbol ``pd.read_csv`` of the old ``{SYMBOL}_1.csv``, timestamp →
    datetime index, sorted, ``df.loc[start:end]`` (the date filter), kept in a dict. Goal: >= 10x
    faster. Peak RSS of each in a fresh subprocess (``--no-rss`` skips).
(2) **lookups**: ``--lookups`` random ``get_data_at_timestamp`` calls (random symbol, random minute),
    each call timed: the feeder after ``load_data`` (binary search in memory), the feeder without
    loading (one partition opened per lookup, cached), vs filtering a loaded DataFrame per call
    (pandas ``df[df.timestamp == t]`` as the old feeder, and Polars ``filter``).
(3) **stream**: in a fresh subprocess, ``iter_batches`` over every candle of the set with the
    feeder's budget configured (``memory_limit_percent``) below the data's in-memory size: peak RSS
    must stay under the budget. The same process shows ``load_data`` refusing the request.

Medians of ``--repeat`` runs after an untimed warm-up, the variants of a part interleaved round by
round (a burst of load from other processes hits them alike), ratios from the same run, load
average printed at start and end (the machine is shared).

Usage::

    python -m benchmarks.bench_feeder                                  # 20 symbols x 365 days
    python -m benchmarks.bench_feeder --symbols 3 --days 30 --repeat 3 --lookups 2000   # small run
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from benchmarks.datagen import (
    DataSet,
    add_dataset_args,
    child_rss,
    dataset_from_args,
    fmt_mib,
    fmt_s,
    fmt_x,
    goal,
    header,
    measure_many,
    open_lake,
    peak_rss_self,
    print_table,
)

GOAL_LOAD_X = 10.0
MODULE = "benchmarks.bench_feeder"


# ----------------------------------------------------------------------------- the data


def feeder_lake(ds: DataSet) -> Path:
    """The set's lake (datagen's cache), in the candle schema the code reads today.

    A lake cached by a datagen whose cache key did not include the schema may predate a schema
    change (the ``filled`` column) and be unreadable; then a lake keyed by the schema is built
    next to it, with datagen's own builder.
    """
    from marketlake.core.schemas import CANDLE_COLUMNS

    cached = ds.ensure_lake()
    if _has_columns(cached, CANDLE_COLUMNS):
        return cached
    tag = hashlib.sha1(",".join(CANDLE_COLUMNS).encode()).hexdigest()[:8]
    return ds._ensure(ds.dir / f"lake-schema-{tag}", ds._build_lake)


def _has_columns(lake_dir: Path, columns: tuple[str, ...]) -> bool:
    first = next((lake_dir / "candles").rglob("*.parquet"), None)
    return first is not None and set(columns) <= set(pq.read_schema(first).names)


def _window(ds: DataSet) -> tuple[str, str]:
    """The old feeder's date arguments covering the set: first day, last day (inclusive)."""
    last = ds.start.toordinal() + ds.days - 1
    import datetime as dt

    return ds.start.isoformat(), dt.date.fromordinal(last).isoformat()


def load_lake(ds: DataSet, lake_dir: Path) -> Any:
    """(1) the new way: a fresh feeder, ``load_data`` of every symbol's 1m candles."""
    from marketlake import DataFeeder

    feeder = DataFeeder(open_lake(lake_dir))
    start, end = _window(ds)
    if not feeder.load_data(ds.symbols, ["1"], start, end):
        raise AssertionError("load_data found nothing")
    return feeder


def load_pandas(ds: DataSet) -> dict[str, Any]:
    """(1) the old way, as the old ``DataFeeder.load_data`` did it per symbol file."""
    import pandas as pd

    start, end = _window(ds)
    cache: dict[str, Any] = {}
    for symbol in ds.symbols:
        df = pd.read_csv(ds.csv_path(symbol))
        df["datetime"] = pd.to_datetime(df["timestamp"], unit="ms")
        df = df.set_index("datetime").sort_index()
        cache[symbol] = df.loc[start:end]  # label slice: both ends included, dates = whole days
    return cache


def _rows(result: Any) -> int:
    if isinstance(result, dict):
        return sum(len(v) for v in result.values())
    return int(result.get_memory_usage()["loaded_rows"])


# ----------------------------------------------------------------------------- (1) load


def bench_load(ds: DataSet, lake_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    print("  (1) load: lake and pandas, interleaved rounds ...", file=sys.stderr, flush=True)
    timings = measure_many(
        {"lake": lambda: _rows(load_lake(ds, lake_dir)), "pandas": lambda: _rows(load_pandas(ds))},
        repeat=args.repeat,
    )
    lake_t, pandas_t = timings["lake"], timings["pandas"]
    if lake_t.result != pandas_t.result or lake_t.result != ds.rows:
        raise AssertionError(f"row counts differ: lake {lake_t.result}, pandas {pandas_t.result}, set {ds.rows}")
    rss: dict[str, dict] = {}
    if not args.no_rss:
        for variant in ("load-lake", "load-pandas"):
            print(f"  (1) rss: {variant} ...", file=sys.stderr, flush=True)
            rss[variant] = child_rss(MODULE, [*_ds_argv(ds), "--child", variant])
    ratio = pandas_t.median / lake_t.median
    rows = []
    for name, t, key in (("DataFeeder.load_data (lake)", lake_t, "load-lake"),
                         ("pandas read_csv + date filter (old)", pandas_t, "load-pandas")):
        r = rss.get(key)
        rows.append([name, fmt_s(t.median), fmt_s(t.best), f"{ds.rows / t.median / 1e6:.2f} M/s",
                     fmt_x(t.median / lake_t.median), fmt_mib(r["peak"] if r else None),
                     fmt_mib(r["peak"] - r["base"] if r else None)])
    print_table(f"(1) load {ds.n_symbols} symbols x {ds.days} days of 1m ({ds.rows:,} candles), median of {args.repeat}",
                ["variant", "median", "best", "candles/s", "time vs lake", "peak RSS", "RSS growth"], rows)
    return {"lake_s": lake_t.median, "pandas_s": pandas_t.median, "ratio": ratio,
            "rss": rss, "lake_runs": lake_t.runs, "pandas_runs": pandas_t.runs}


# ----------------------------------------------------------------------------- (2) lookups


def _per_call(fn: Callable[[str, int], Any], queries: list[tuple[str, int]]) -> list[float]:
    out = []
    clock = time.perf_counter_ns
    for sym, t in queries:
        t0 = clock()
        fn(sym, t)
        out.append((clock() - t0) / 1e9)
    return out


def bench_lookups(ds: DataSet, lake_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    from marketlake import DataFeeder

    rng = np.random.default_rng(11)
    syms = rng.integers(0, ds.n_symbols, args.lookups)
    minutes = rng.integers(0, ds.rows_per_symbol, args.lookups)
    queries = [(ds.symbols[s], ds.start_ms + int(m) * 60_000) for s, m in zip(syms, minutes)]
    in_order = sorted(queries, key=lambda q: (q[1], q[0]))

    loaded = load_lake(ds, lake_dir)
    old = load_pandas(ds)
    frames = {s: loaded.get_data_for_symbols(s, "1")[s]["1"] for s in ds.symbols}

    def pandas_filter(sym: str, t: int) -> dict:
        df = old[sym]
        return df[df["timestamp"] == t].iloc[0].to_dict()

    def polars_filter(sym: str, t: int) -> dict:
        return frames[sym].filter(pl.col("ts") == pl.lit(t).cast(pl.Datetime("ms", "UTC"))).row(0, named=True)

    # Same answers before timing anything (a sample).
    for sym, t in queries[:200]:
        a = loaded.get_data_at_timestamp(sym, "1", t)
        b = DataFeeder(loaded.lake).get_data_at_timestamp(sym, "1", t)
        c = pandas_filter(sym, t)
        if a is None or a != b or a["close"] != c["close"] or a["timestamp"] != c["timestamp"]:
            raise AssertionError(f"lookups disagree at {sym} {t}")

    # Each lake variant starts every run with a fresh feeder: its partition cache starts empty,
    # so the partition reads are part of the figures.
    fresh: dict[str, Any] = {}

    def lake_variant(name: str) -> Callable[[str, int], Any]:
        feeder = fresh[name] = DataFeeder(loaded.lake)
        return lambda s, t: feeder.get_data_at_timestamp(s, "1", t)

    variants: dict[str, tuple[Callable[[], Callable[[str, int], Any]], list[tuple[str, int]]]] = {
        "feeder, after load_data (memory)": (lambda: lambda s, t: loaded.get_data_at_timestamp(s, "1", t), queries),
        "feeder, no load: lake, random order": (lambda: lake_variant("random"), queries),
        "feeder, no load: lake, time order": (lambda: lake_variant("ordered"), in_order),
        "polars filter per call (loaded frame)": (lambda: polars_filter, queries),
        "pandas filter per call (old feeder)": (lambda: pandas_filter, queries),
    }
    runs: dict[str, list[list[float]]] = {name: [] for name in variants}
    for i in range(args.lookup_repeat + 1):  # interleaved rounds; round 0 is the warm-up
        print(f"  (2) lookups: round {i} of {args.lookup_repeat} ...", file=sys.stderr, flush=True)
        for name, (make, qs) in variants.items():
            calls = _per_call(make(), qs)
            if i:
                runs[name].append(calls)
    reads = {"feeder, no load: lake, random order": "random", "feeder, no load: lake, time order": "ordered"}
    results: dict[str, dict[str, Any]] = {
        name: {
            "median_s": statistics.median(statistics.median(r) for r in rs),
            "p99_s": statistics.median(float(np.percentile(r, 99)) for r in rs),
            "mean_s": statistics.median(statistics.fmean(r) for r in rs),
            "partitions_read": fresh[reads[name]].partitions_read if name in reads else None,
        }
        for name, rs in runs.items()
    }
    base = results["pandas filter per call (old feeder)"]["median_s"]
    rows = [[name, fmt_s(r["median_s"]), fmt_s(r["p99_s"]), fmt_s(r["mean_s"]), fmt_x(base / r["median_s"]),
             "-" if r["partitions_read"] is None else str(r["partitions_read"])] for name, r in results.items()]
    print_table(f"(2) {args.lookups:,} random get_data_at_timestamp calls over {ds.n_symbols} symbols "
                f"(per call; median of {args.lookup_repeat} runs)",
                ["variant", "median", "p99", "mean", "faster than pandas", "partitions read"], rows)
    return results


# ----------------------------------------------------------------------------- (3) stream


def bench_stream(ds: DataSet, lake_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    print("  (3) stream: iter_batches in a subprocess ...", file=sys.stderr, flush=True)
    runs = [child_rss(MODULE, [*_ds_argv(ds), "--budget-mib", str(args.budget_mib), "--child", "stream"])
            for _ in range(args.stream_runs)]
    r = runs[-1]
    peak = statistics.median(x["peak"] for x in runs)
    secs = statistics.median(x["seconds"] for x in runs)
    rows = [
        ["data (all candles, in memory, estimated)", fmt_mib(r["data_bytes"])],
        ["budget (memory_limit_percent " + f"{r['percent']:.3f}%)", fmt_mib(r["budget"])],
        ["load_data of it", f"refused: MemoryBudgetError ({fmt_mib(r['refused_needed'])} > {fmt_mib(r['refused_budget'])})"
         if r["refused_needed"] else "NOT refused"],
        ["RSS after imports", fmt_mib(r["base"])],
        [f"peak RSS, iter_batches(rows={r['rows_per_batch']:,}) (median of {len(runs)})", fmt_mib(peak)],
        ["candles streamed / time", f"{r['rows']:,} in {fmt_s(secs)} ({r['rows'] / secs / 1e6:.2f} M/s)"],
        ["batches, all in ts order", f"{r['batches']:,}, {'yes' if r['ordered'] else 'NO'}"],
    ]
    print_table("(3) iter_batches over more data than the budget", ["", ""], rows)
    return {"peak": peak, "budget": r["budget"], "data": r["data_bytes"], "seconds": secs, "runs": runs,
            "refused": bool(r["refused_needed"])}


def _child_stream(ds: DataSet, lake_dir: Path, budget_mib: int) -> None:
    from marketlake import DataFeeder, MemoryBudgetError
    from marketlake._feeder.budget import system_memory

    percent = budget_mib * 2**20 / system_memory().total * 100
    feeder = DataFeeder(open_lake(lake_dir), memory_limit_percent=percent)
    data_bytes = feeder.estimate_bytes(ds.symbols, ["1"])
    base = peak_rss_self()
    t0 = time.perf_counter()
    rows = batches = 0
    last = None
    ordered = True
    volume = 0.0
    for batch in feeder.iter_batches(ds.symbols, ["1"], rows=100_000):
        ts = batch.get_column("ts")
        ordered &= bool(ts.is_sorted()) and (last is None or ts[0] >= last)
        last = ts[-1]
        volume += float(batch.get_column("volume").sum())  # touch the data, as a consumer would
        rows += batch.height
        batches += 1
    seconds = time.perf_counter() - t0
    peak = peak_rss_self()
    refused = (0, 0)
    try:  # after the peak is taken: a small set may fit, and loading it would raise the peak
        feeder.load_data(ds.symbols, ["1"])
    except MemoryBudgetError as err:
        refused = (err.needed_bytes, err.budget_bytes)
    print(json.dumps({"base": base, "peak": peak, "rows": rows, "batches": batches,
                      "ordered": ordered, "seconds": seconds, "budget": feeder.budget_bytes,
                      "percent": percent, "data_bytes": data_bytes, "rows_per_batch": 100_000,
                      "refused_needed": refused[0], "refused_budget": refused[1]}))


# ----------------------------------------------------------------------------- driver


def _ds_argv(ds: DataSet) -> list[str]:
    return ["--symbols", str(ds.n_symbols), "--days", str(ds.days), "--start", ds.start.isoformat(),
            "--seed", str(ds.seed)]


def _child(ds: DataSet, lake_dir: Path, what: str, budget_mib: int) -> None:
    import marketlake  # noqa: F401

    if what == "stream":  # a research process: marketlake and its dependencies, no pandas
        _child_stream(ds, lake_dir, budget_mib)
        return
    import pandas  # noqa: F401  (imported in both load variants, so their base RSS compares)
    run = {"load-lake": lambda: load_lake(ds, lake_dir), "load-pandas": lambda: load_pandas(ds)}[what]
    base = peak_rss_self()
    out = run()
    print(json.dumps({"base": base, "peak": peak_rss_self(), "rows": _rows(out)}))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="DataFeeder: load, lookups, streaming vs the old pandas feeder")
    add_dataset_args(p)
    p.add_argument("--lookups", type=int, default=10_000, help="random get_data_at_timestamp calls (default 10000)")
    p.add_argument("--lookup-repeat", type=int, default=3,
                   help="timed runs of each lookup variant, after a warm-up run (default 3)")
    p.add_argument("--budget-mib", type=int, default=512, help="feeder budget for the stream part (default 512)")
    p.add_argument("--stream-runs", type=int, default=3, help="subprocess runs of the stream part (default 3)")
    p.add_argument("--parts", default="load,lookups,stream", help="which parts to run (default all)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    ds = dataset_from_args(args)
    ds.ensure_csv()
    lake_dir = feeder_lake(ds)
    if args.child:
        _child(ds, lake_dir, args.child, args.budget_mib)
        return
    parts = {s.strip() for s in args.parts.split(",") if s.strip()}
    header("bench_feeder", ds, args)
    print(f"lake: {lake_dir}")
    load_start = os.getloadavg()
    out: dict[str, Any] = {"loadavg_start": load_start}
    summary = []
    if "load" in parts:
        r = out["load"] = bench_load(ds, lake_dir, args)
        rss = r["rss"]
        summary.append(f"(1) load_data {fmt_s(r['lake_s'])} vs pandas {fmt_s(r['pandas_s'])}: {fmt_x(r['ratio'])} "
                       f"(goal >= {GOAL_LOAD_X:.0f}x: {goal(r['ratio'] >= GOAL_LOAD_X)})"
                       + (f"; peak RSS {fmt_mib(rss['load-lake']['peak'])} vs {fmt_mib(rss['load-pandas']['peak'])}"
                          if rss else ""))
    if "lookups" in parts:
        r = out["lookups"] = bench_lookups(ds, lake_dir, args)
        base = r["pandas filter per call (old feeder)"]["median_s"]
        mem = r["feeder, after load_data (memory)"]["median_s"]
        lake_t = r["feeder, no load: lake, time order"]["median_s"]
        summary.append(f"(2) get_data_at_timestamp per call: {fmt_s(mem)} loaded, {fmt_s(lake_t)} from the lake "
                       f"in time order, vs {fmt_s(base)} pandas filter ({fmt_x(base / mem)}, {fmt_x(base / lake_t)})")
    if "stream" in parts:
        r = out["stream"] = bench_stream(ds, lake_dir, args)
        verdict = (goal(r["peak"] < r["budget"]) if r["data"] > r["budget"]
                   else "not shown: the data fits the budget, run a larger set")
        summary.append(f"(3) iter_batches over {fmt_mib(r['data'])} of candles with a {fmt_mib(r['budget'])} budget: "
                       f"peak RSS {fmt_mib(r['peak'])} (goal: under the budget with more data than it: {verdict})")
    out["loadavg_end"] = os.getloadavg()
    print("\nsummary")
    for line in summary:
        print("  " + line)
    print(f"  load average (1, 5, 15 min): start {', '.join(f'{x:.2f}' for x in load_start)}; "
          f"end {', '.join(f'{x:.2f}' for x in out['loadavg_end'])} on {os.cpu_count()} cpus")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
