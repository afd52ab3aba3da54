"""Integrity scan of 1m candles: ``marketlake.check_candles`` vs Polars, DuckDB and a Python loop.

Generates ``--symbols`` x ``--days`` of realistic 1m candles in-process (``benchmarks.datagen``:
tick-grid prices, lot-step volumes; 50 x 365 days = 26.3 M rows by default) and injects faults
into every series: gaps (deleted runs), duplicates (copies and conflicting copies), swapped rows,
misaligned timestamps and invalid candles. Each engine counts the same findings per series
(gaps and missing candles, duplicates, out-of-order, misaligned, invalid), and the counts are
checked to agree. Baselines:

* ``polars expressions``: one lazy ``group_by("symbol")`` query over all series, and the same
  expressions per series; the faster is "best Polars". Gaps and duplicates are counted over the
  sorted timestamps (as marketlake does; out-of-order rows must not invent gaps);
* ``duckdb window SQL``: ``lag`` over ``PARTITION BY symbol ORDER BY ts`` (gaps, duplicates) and
  over the input order (out-of-order rows);
* ``python loop``: a per-row loop over lists like the old DataIntegrityChecker, timed on the first
  ``--loop-symbols`` series (it is slow) and reported as rows/s.

marketlake runs per series (one call per symbol, as a lake holds them), 1 and 2 threads.
Goals (issue 3): >= 150 M rows/s on 2 cores, >= 6x the best Polars form, >= 20x DuckDB, >= 30x
the Python loop.

Usage::

    python -m benchmarks.bench_check_candles [--symbols 50 --days 365 --repeat 5 --rows N]
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os

import duckdb
import numpy as np
import polars as pl

from benchmarks._kernels_common import rate_row
from benchmarks.datagen import UNIVERSE, SymbolSpec, fmt_rate, generate_symbol, goal, measure, print_table
from marketlake import check_candles

MIN = 60_000


def inject_faults(df: pl.DataFrame, rng: np.random.Generator, per_kind: int = 20) -> pl.DataFrame:
    """Every fault kind ``per_kind`` times at random rows (well apart from each other)."""
    n = df.height
    slots = rng.choice(np.arange(10, n // 10 - 10), size=6 * per_kind, replace=False) * 10
    kinds = np.repeat(np.arange(6), per_kind)
    drop = np.zeros(n, bool)
    ts = df["ts"].to_numpy().copy()
    high = df["high"].to_numpy().copy()
    vol = df["volume"].to_numpy().copy()
    dup_rows, order = [], np.arange(n)
    for s, k in zip(slots, kinds):
        if k == 0:
            drop[s : s + rng.integers(1, 6)] = True  # gap
        elif k in (1, 2):
            dup_rows.append((s, k == 2))  # duplicate / conflicting duplicate
        elif k == 3:
            order[s], order[s + 1] = order[s + 1], order[s]  # out of order
        elif k == 4:
            ts[s] += 30_000  # misaligned
        else:
            high[s] = -1.0  # invalid
    out = df.with_columns(pl.Series("ts", ts), pl.Series("high", high), pl.Series("volume", vol))[order]
    extra = [out[int(s)].with_columns(pl.col("volume") + (1.0 if c else 0.0)) for s, c in dup_rows]
    out = pl.concat([out, *extra]).with_row_index("_r")
    # Put each copy right after its original (stable by position), then drop the gap rows.
    pos = np.r_[np.arange(n), [s + 0.5 for s, _ in dup_rows]]
    out = out.with_columns(pl.Series("_p", pos)).sort("_p").drop("_r", "_p")
    keep = np.r_[~drop[order], np.ones(len(dup_rows), bool)][np.argsort(pos, kind="stable")]
    return out.filter(pl.Series(keep))


def make_series(symbols: int, days: int, rows: int | None) -> dict[str, pl.DataFrame]:
    rng = np.random.default_rng(3)
    out = {}
    specs = [UNIVERSE[i % len(UNIVERSE)] for i in range(symbols)]
    for i, spec in enumerate(specs):
        spec = SymbolSpec(f"{spec.symbol}{i // len(UNIVERSE) or ''}", spec.price, spec.tick, spec.lot, spec.vol, spec.quote_per_min)
        df = generate_symbol(spec, days=days, start=dt.date(2024, 1, 1), seed=i)
        if rows:
            df = df.head(max(2_000, rows // symbols))
        out[spec.symbol] = inject_faults(df, rng).with_columns(pl.col("ts").cast(pl.Datetime("ms", "UTC")))
    return out


def counts_of(r) -> tuple[int, ...]:  # type: ignore[no-untyped-def]
    return (r.gap_count, r.missing_candles, r.duplicate_count, int(r.out_of_order_rows.size),
            int(r.misaligned_rows.size), r.invalid_count)


def ours(series: dict[str, pl.DataFrame], threads: int) -> dict[str, tuple[int, ...]]:
    return {s: counts_of(check_candles(df, "1", threads=threads)) for s, df in series.items()}


def _polars_exprs() -> list[pl.Expr]:
    """Per-series expressions: gaps and duplicates in time order, out-of-order in input order."""
    ts = pl.col("ts").dt.epoch("ms")
    srt = ts.sort()
    bucket = srt - srt % MIN
    gap_missing = bucket.diff() // MIN - 1
    o, h, lo, c, v, tv = (pl.col(x) for x in ("open", "high", "low", "close", "volume", "turnover"))
    finite = pl.all_horizontal([x.is_finite() for x in (o, h, lo, c, v, tv)])
    invalid = (~finite | (pl.min_horizontal(o, h, lo, c) <= 0) | (h < pl.max_horizontal(o, c))
               | (lo > pl.min_horizontal(o, c)) | (h < lo) | (v < 0) | (tv < 0))
    return [
        (gap_missing > 0).sum().alias("gaps"), gap_missing.clip(lower_bound=0).sum().alias("missing"),
        (srt.diff() == 0).sum().alias("dups"), (ts.diff() < 0).sum().alias("ooo"),
        (ts % MIN != 0).sum().alias("misaligned"), invalid.sum().alias("invalid"),
    ]


def polars_all(frame: pl.DataFrame) -> dict[str, tuple[int, ...]]:
    out = frame.lazy().group_by("symbol", maintain_order=True).agg(_polars_exprs()).collect()
    return {r[0]: tuple(int(x) for x in r[1:]) for r in out.iter_rows()}


def polars_each(series: dict[str, pl.DataFrame]) -> dict[str, tuple[int, ...]]:
    exprs = _polars_exprs()
    return {s: tuple(int(x) for x in df.lazy().select(exprs).collect().row(0)) for s, df in series.items()}


DUCK_SQL = """
WITH w AS (
  SELECT symbol, epoch_ms(ts) AS t,
         lag(epoch_ms(ts)) OVER (PARTITION BY symbol ORDER BY r) AS p_in,
         lag(epoch_ms(ts)) OVER (PARTITION BY symbol ORDER BY ts, r) AS p,
         open, high, low, close, volume, turnover
  FROM candles)
SELECT symbol,
  count(*) FILTER ((t // 60000) - (p // 60000) > 1) AS gaps,
  coalesce(sum((t // 60000) - (p // 60000) - 1) FILTER ((t // 60000) - (p // 60000) > 1), 0) AS missing,
  count(*) FILTER (t = p) AS dups, count(*) FILTER (t < p_in) AS ooo,
  count(*) FILTER (t % 60000 <> 0) AS misaligned,
  count(*) FILTER (NOT (isfinite(open) AND isfinite(high) AND isfinite(low) AND isfinite(close)
                       AND isfinite(volume) AND isfinite(turnover))
                   OR least(open, high, low, close) <= 0 OR high < greatest(open, close)
                   OR low > least(open, close) OR high < low OR volume < 0 OR turnover < 0) AS invalid
FROM w GROUP BY symbol"""


def python_loop(rows: list[tuple]) -> tuple[int, ...]:  # type: ignore[type-arg]
    """A per-row loop in the manner of the old checker: rows sorted by time for gaps/duplicates."""
    gaps = missing = dups = ooo = mis = inv = 0
    prev = None
    for row in rows:
        ts, o, h, lo, c, v, tv = row
        if prev is not None and ts < prev:
            ooo += 1
        prev = ts
        if ts % MIN:
            mis += 1
        vals = (o, h, lo, c, v, tv)
        if (not all(math.isfinite(x) for x in vals) or min(o, h, lo, c) <= 0 or h < max(o, c)
                or lo > min(o, c) or h < lo or v < 0 or tv < 0):
            inv += 1
    prev = None
    for row in sorted(rows, key=lambda r: r[0]):
        ts = row[0]
        if prev is not None:
            d = ts // MIN - prev // MIN
            if ts == prev:
                dups += 1
            elif d > 1:
                gaps += 1
                missing += d - 1
        prev = ts
    return gaps, missing, dups, ooo, mis, inv


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--symbols", type=int, default=50)
    p.add_argument("--days", type=int, default=365)
    p.add_argument("--rows", type=int, default=None, help="cap the total rows (quick runs)")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--loop-symbols", type=int, default=3, help="series timed with the Python loop")
    args = p.parse_args(argv)
    series = make_series(args.symbols, args.days, args.rows)
    n = sum(df.height for df in series.values())
    print(f"# check_candles; {os.cpu_count()} cpus; load average {os.getloadavg()[0]:.2f}; "
          f"{len(series)} series, {n:,} 1m rows with injected faults; median of {args.repeat} runs")
    one = measure(lambda: ours(series, 1), args.repeat)
    two = measure(lambda: ours(series, 2), args.repeat)
    assert one.result == two.result
    want = one.result
    frame = pl.concat([df.with_columns(symbol=pl.lit(s)) for s, df in series.items()])
    t_all = measure(lambda: polars_all(frame), args.repeat)
    t_each = measure(lambda: polars_each(series), args.repeat)
    assert t_all.result == want and t_each.result == want, "Polars counts differ from marketlake's"
    con = duckdb.connect()
    con.register("candles", frame.with_row_index("r").to_arrow())
    t_duck = measure(lambda: {r[0]: tuple(int(x) for x in r[1:]) for r in con.sql(DUCK_SQL).fetchall()}, args.repeat)
    assert t_duck.result == want, "DuckDB counts differ from marketlake's"
    loop_series = list(series)[: args.loop_symbols]
    loop_rows = {s: series[s].with_columns(pl.col("ts").dt.epoch("ms"))
                 .select("ts", "open", "high", "low", "close", "volume", "turnover").rows() for s in loop_series}
    loop_n = sum(len(r) for r in loop_rows.values())
    t_loop = measure(lambda: {s: python_loop(r) for s, r in loop_rows.items()}, max(1, min(args.repeat, 3)))
    assert t_loop.result == {s: want[s] for s in loop_series}, "Python loop counts differ"
    loop_equiv = t_loop.median * n / loop_n  # the loop's time scaled to all rows
    results = {
        "marketlake 1 thread": one.median, "marketlake 2 threads": two.median,
        "polars expressions (one group_by query)": t_all.median,
        "polars expressions (per series)": t_each.median,
        "duckdb window SQL": t_duck.median,
        f"python loop (rate on {loop_n:,} rows, scaled)": loop_equiv,
    }
    rows = [rate_row(name, s, n, two.median) for name, s in results.items()]
    print_table(f"integrity scan, {n:,} rows", ["engine", "median", "rows/s", "marketlake 2 threads faster by"], rows)
    best_polars = min(t_all.median, t_each.median)
    print("\ngoals (issue 3):")
    print(f"  2 threads {fmt_rate(n / two.median)} (goal >= 150 M rows/s): {goal(n / two.median >= 150e6)}")
    print(f"  vs best Polars {best_polars / two.median:.1f}x (goal >= 6x): {goal(best_polars / two.median >= 6)}")
    print(f"  vs DuckDB {t_duck.median / two.median:.1f}x (goal >= 20x): {goal(t_duck.median / two.median >= 20)}")
    print(f"  vs Python loop {loop_equiv / two.median:.0f}x (goal >= 30x): {goal(loop_equiv / two.median >= 30)}")
    print(f"  (1 thread: {fmt_rate(n / one.median)}; found per series e.g. {loop_series[0]}: "
          f"gaps, missing, duplicates, out-of-order, misaligned, invalid = {want[loop_series[0]]})")


if __name__ == "__main__":
    main()
