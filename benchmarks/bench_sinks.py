"""Sinks: ``export-postgres`` rows/s vs row-by-row INSERT; state store get/set ops/s (SQLite, Redis).

Run: ``python -m benchmarks.bench_sinks [--rows 300000] [--baseline-rows 20000] [--ops 5000]``.

* PostgreSQL: a lake of ``--rows`` 1m candles (5 symbols) is exported into an empty database with
  :func:`marketlake.interop.postgres.export_postgres` (COPY into a staging table, then
  ``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` values differ), then exported again (every row
  already there, unchanged). Baselines,
  on ``--baseline-rows`` of the same rows: one ``INSERT ... ON CONFLICT DO NOTHING`` per row in
  one transaction (the generous row-by-row loop), and per row with a commit each (autocommit:
  how the old scripts wrote). Rates are rows per second; each figure is the median of
  ``--repeat`` rounds, the variants interleaved round by round.
* State store: ``set_state`` then ``get_state`` of ``--ops`` keys, one awaited call at a time
  (a trading loop's pattern), on SQLite (WAL file in a temp dir) and Redis.

Servers: ``--dsn`` / ``--redis-url`` to use existing ones; otherwise throwaway servers are started
on 127.0.0.1 with the test suite's helpers (``tests/servers.py``), which need Debian's
``postgresql`` and ``redis-server`` (``.ci/run`` installs them).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import psycopg

from marketlake.interop.postgres import COLUMNS, KEYS, ensure_schema, export_postgres
from marketlake.settings import Settings
from marketlake.state import open_state_store
from marketlake.store import Lake

T0 = 1_704_067_200_000
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT")


def make_lake(root: Path, rows: int) -> Lake:
    lake = Lake(root, settings=Settings.load(environ={}))
    per = rows // len(SYMBOLS)
    rng = np.random.default_rng(1)
    for sym in SYMBOLS:
        close = np.round(30_000 + np.cumsum(rng.normal(0, 15, per)), 1)
        lake.write_candles(pl.DataFrame({
            "ts": T0 + 60_000 * np.arange(per, dtype=np.int64), "open": close, "high": close + 5.5,
            "low": close - 4.5, "close": close, "volume": np.round(rng.gamma(0.8, 2.0, per), 3),
            "turnover": np.round(close * 1.25, 4),
        }), symbol=sym, timeframe="1")
    return lake


def fresh_db(admin_dsn: str, name: str) -> str:
    with psycopg.connect(admin_dsn, autocommit=True) as con:
        con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        con.execute(f'CREATE DATABASE "{name}"')
    return admin_dsn.rsplit("/", 1)[0] + "/" + name


def row_by_row(dsn: str, frame: pl.DataFrame, autocommit: bool) -> float:
    cols = COLUMNS["candles"]
    sql = (f"INSERT INTO candles ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))}) "
           f"ON CONFLICT ({', '.join(KEYS['candles'])}) DO NOTHING")
    rows = [("bybit", "linear", "BTCUSDT", "1", r["ts"], r["open"], r["high"], r["low"], r["close"], r["volume"],
             r["turnover"]) for r in frame.iter_rows(named=True)]
    with psycopg.connect(dsn, autocommit=autocommit) as con:
        ensure_schema(con)
        if not autocommit:
            con.commit()
        t = time.perf_counter()
        for row in rows:
            con.execute(sql, row)
        if not autocommit:
            con.commit()
        return len(rows) / (time.perf_counter() - t)


async def state_ops(url: str, n: int) -> tuple[float, float]:
    async with open_state_store(url) as store:
        t = time.perf_counter()
        for i in range(n):
            await store.set_state(f"strategy:s{i}:state", {"i": i, "pnl": 1.5, "open": [1, 2]})
        sets = n / (time.perf_counter() - t)
        t = time.perf_counter()
        for i in range(n):
            await store.get_state(f"strategy:s{i}:state")
        gets = n / (time.perf_counter() - t)
        await store.clear("strategy:*")
    return sets, gets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--baseline-rows", type=int, default=20_000)
    ap.add_argument("--ops", type=int, default=5_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dsn", help="admin DSN of an existing server (databases are created on it)")
    ap.add_argument("--redis-url")
    args = ap.parse_args()
    servers = []
    dsn, redis_url = args.dsn, args.redis_url
    if dsn is None or redis_url is None:
        from tests.servers import shared_postgres, shared_redis

        if dsn is None:
            pg = shared_postgres()
            assert not isinstance(pg, str), pg
            dsn, _ = pg.dsn(), servers.append(pg)
        if redis_url is None:
            rs = shared_redis()
            assert not isinstance(rs, str), rs
            redis_url, _ = rs.url, servers.append(rs)
    with tempfile.TemporaryDirectory() as tmp:
        lake = make_lake(Path(tmp) / "lake", args.rows)
        sample = lake.read_candles("BTCUSDT", "1").head(args.baseline_rows)
        rates: dict[str, list[float]] = {"export": [], "rerun": [], "rows_tx": [], "rows_auto": []}
        for r in range(args.repeat):
            target = fresh_db(dsn, f"bench_export_{r}")
            t = time.perf_counter()
            rep = export_postgres(lake, target)
            rates["export"].append(rep.rows_inserted / (time.perf_counter() - t))
            t = time.perf_counter()
            again = export_postgres(lake, target)
            assert again.rows_inserted == 0
            rates["rerun"].append(again.rows_read / (time.perf_counter() - t))
            rates["rows_tx"].append(row_by_row(fresh_db(dsn, f"bench_rows_{r}"), sample, autocommit=False))
            rates["rows_auto"].append(row_by_row(fresh_db(dsn, f"bench_auto_{r}"), sample.head(args.baseline_rows // 4),
                                                 autocommit=True))
        med = {k: statistics.median(v) for k, v in rates.items()}
        print(f"PostgreSQL ({args.rows:,} candles; baselines on {args.baseline_rows:,} / {args.baseline_rows // 4:,} rows)")
        print(f"  export-postgres, empty tables     {med['export']:>12,.0f} rows/s")
        print(f"  export-postgres, re-run (all dup) {med['rerun']:>12,.0f} rows/s")
        print(f"  row-by-row INSERT, one tx         {med['rows_tx']:>12,.0f} rows/s   export is {med['export'] / med['rows_tx']:.1f}x")
        print(f"  row-by-row INSERT, autocommit     {med['rows_auto']:>12,.0f} rows/s   export is {med['export'] / med['rows_auto']:.1f}x")
        for name, url in (("SQLite", str(Path(tmp) / "state.sqlite")), ("Redis", redis_url)):
            runs = [asyncio.run(state_ops(url, args.ops)) for _ in range(args.repeat)]
            sets = statistics.median(s for s, _ in runs)
            gets = statistics.median(g for _, g in runs)
            print(f"State store {name:<6}  set_state {sets:>9,.0f} ops/s   get_state {gets:>9,.0f} ops/s")
    for s in servers:
        s.close()


if __name__ == "__main__":
    main()
