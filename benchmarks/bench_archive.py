"""Bybit daily trade archives: decoding a day file, and a whole archive ingest, against what users write.

The data: synthetic ``trading/`` day files in the real format (``timestamp`` in seconds with 4
decimals, UUID ``trdMatchID``, prices on a 0.1 tick, sizes on a 0.001 lot, newest first, gzip
level 6), ``--trades`` rows per day (default 1,000,000: a busy BTCUSDT day of 2024 holds 1-3 M).

Part 1, one day file, gzip bytes → trades frame (time, price, size, side, id), medians of
``--repeat`` interleaved rounds:

* ``marketlake`` — :func:`~marketlake.exchanges.bybit.parse_archive.parse_trade_dump` (bounded
  gunzip, typed columns, exact µs from the text, validation, sort);
* ``pandas`` — ``pd.read_csv(..., compression="gzip")`` + ``pd.to_datetime(unit="s")``, the way
  public download scripts do it (no validation; float seconds);
* ``polars naive`` — ``pl.read_csv`` of the decompressed bytes with inferred types, float
  seconds x 1e6 cast to a datetime.

Both float paths are also checked for exactness: the share of trades whose time differs from the
exact microsecond of the text is printed.

Part 2, ``--days`` day files served by a local aiohttp server (no latency added) into a fresh lake:

* ``marketlake`` — :func:`~marketlake.ingest.archive.run_archive_ingest` (``--concurrency``
  downloads; parse and write in threads; ledger);
* ``script`` — the loop a user writes: download each file with aiohttp, ``pd.read_csv``, write
  one Parquet file per day with ``df.to_parquet`` (pyarrow, snappy), one day at a time.

Usage::

    python -m benchmarks.bench_archive [--trades 1000000 --days 4 --repeat 5 --concurrency 3]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gzip
import io
import shutil
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

import aiohttp
import numpy as np
import pandas as pd
import polars as pl
from aiohttp import web

from benchmarks.datagen import fmt_rate, fmt_s, measure_many, print_table
from marketlake.exchanges.bybit.parse_archive import parse_trade_dump
from marketlake.ingest.archive import day_bounds, run_archive_ingest
from marketlake.store import Lake

HEADER = "timestamp,symbol,side,size,price,tickDirection,trdMatchID,grossValue,homeNotional,foreignNotional,RPI"
DAY0 = dt.date(2024, 3, 1)


def make_day(day: dt.date, n: int, seed: int) -> tuple[bytes, bytes]:
    """One day file: (gzip bytes, plain CSV bytes)."""
    rng = np.random.default_rng(seed)
    a, _ = day_bounds(day)
    tenth_ms = np.sort(rng.integers(0, 864_000_000, n)) + a * 10  # 0.1 ms ticks, as real files
    price = np.round(60_000 + np.cumsum(rng.normal(0, 0.8, n)), 1)
    size = np.round(rng.gamma(0.6, 0.05, n), 3) + 0.001
    side = np.where(rng.random(n) < 0.5, "Buy", "Sell")
    move = np.sign(np.diff(price, prepend=price[0]))
    tick = np.where(move > 0, "PlusTick", np.where(move < 0, "MinusTick", "ZeroPlusTick"))
    ids = [str(uuid.UUID(int=int(x), version=4)) for x in rng.integers(0, 2**63, n)]
    frame = pl.DataFrame(
        {
            "timestamp": pl.Series(tenth_ms // 10_000).cast(pl.String)
            + "."
            + pl.Series(tenth_ms % 10_000).cast(pl.String).str.pad_start(4, "0"),
            "symbol": "BTCUSDT",
            "side": side,
            "size": size,
            "price": price,
            "tickDirection": tick,
            "trdMatchID": ids,
            "grossValue": price * size * 1e8,
            "homeNotional": size,
            "foreignNotional": np.round(price * size, 6),
            "RPI": 0,
        }
    ).reverse()  # newest first
    buf = io.BytesIO()
    frame.write_csv(buf, float_precision=None)
    plain = buf.getvalue()
    return gzip.compress(plain, compresslevel=6, mtime=0), plain


def with_pandas(gz: bytes) -> pd.DataFrame:
    df = pd.read_csv(io.BytesIO(gz), compression="gzip")
    df["timestamp"] = pd.to_datetime(df["timestamp"], unit="s", utc=True)
    return df[["timestamp", "price", "size", "side", "trdMatchID"]].sort_values("timestamp", kind="stable")


def with_polars_naive(gz: bytes) -> pl.DataFrame:
    df = pl.read_csv(gzip.decompress(gz))
    return df.select(
        (pl.col("timestamp") * 1_000_000).cast(pl.Int64).cast(pl.Datetime("us", "UTC")).alias("ts"),
        "price", "size", "side", pl.col("trdMatchID").alias("trade_id"),
    ).sort("ts", maintain_order=True)


def exact_micros(plain: bytes) -> np.ndarray:
    text = pl.read_csv(plain, columns=["timestamp"], schema_overrides={"timestamp": pl.String})["timestamp"]
    return np.array([int(Decimal(t) * 1_000_000) for t in text.to_list()], dtype=np.int64)


# ---------------------------------------------------------------------------- part 2

def archive_app(files: dict[str, bytes]) -> web.Application:
    async def index(request: web.Request) -> web.Response:
        return web.Response(text="".join(f'<a href="{n}">{n}</a>\n' for n in files), content_type="text/html")

    async def file(request: web.Request) -> web.Response:
        return web.Response(body=files[request.match_info["name"]], content_type="application/gzip")

    app = web.Application()
    app.router.add_get("/trading/BTCUSDT/", index)
    app.router.add_get("/trading/BTCUSDT/{name}", file)
    return app


async def script_loop(url: str, days: list[dt.date], out: Path) -> int:
    rows = 0
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        for day in days:
            async with session.get(f"{url}/trading/BTCUSDT/BTCUSDT{day.isoformat()}.csv.gz") as resp:
                body = await resp.read()
            df = pd.read_csv(io.BytesIO(body), compression="gzip")
            df["timestamp"] = pd.to_datetime(df["timestamp"], unit="s", utc=True)
            df.to_parquet(out / f"{day.isoformat()}.parquet")
            rows += len(df)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trades", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--concurrency", type=int, default=3)
    args = ap.parse_args()

    gz, plain = make_day(DAY0, args.trades, 1)
    print(f"day file: {args.trades:,} trades, {len(plain) / 2**20:.1f} MiB CSV, {len(gz) / 2**20:.1f} MiB gzip")
    variants = {
        "marketlake": lambda: parse_trade_dump(gz, symbol="BTCUSDT", category="linear", day=DAY0),
        "pandas": lambda: with_pandas(gz),
        "polars naive": lambda: with_polars_naive(gz),
    }
    t = measure_many(variants, repeat=args.repeat)
    exact = np.sort(exact_micros(plain))
    ours = t["marketlake"].result["ts"].dt.epoch("us").to_numpy()
    pand = t["pandas"].result["timestamp"].dt.tz_localize(None).to_numpy().astype("datetime64[us]").astype(np.int64)
    naive = t["polars naive"].result["ts"].dt.epoch("us").to_numpy()
    off = {
        "marketlake": float(np.mean(ours != exact)),
        "pandas": float(np.mean(np.sort(pand) != exact)),
        "polars naive": float(np.mean(np.sort(naive) != exact)),
    }
    base = t["pandas"].median
    print_table(
        "one day file: gzip bytes -> trades frame",
        ["variant", "median", "trades/s", "vs pandas", "times off the exact us"],
        [[k, fmt_s(v.median), fmt_rate(args.trades / v.median), f"{base / v.median:.2f}x", f"{off[k]:.2%}"]
         for k, v in t.items()],
    )

    days = [DAY0 + dt.timedelta(days=i) for i in range(args.days)]
    files = {f"BTCUSDT{d.isoformat()}.csv.gz": make_day(d, args.trades, 10 + i)[0] for i, d in enumerate(days)}

    async def part2() -> None:
        runner = web.AppRunner(archive_app(files))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        ours_s: list[float] = []
        script_s: list[float] = []
        size: dict[str, int] = {}
        try:
            for _ in range(args.repeat):
                for name in ("marketlake", "script"):
                    tmp = Path(tempfile.mkdtemp(prefix="bench-archive-"))
                    t0 = time.perf_counter()
                    if name == "marketlake":
                        _, st = await run_archive_ingest(
                            Lake(tmp / "lake"), ["BTCUSDT"], category="linear", start=days[0],
                            end=days[-1] + dt.timedelta(days=1), base_url=url, concurrency=args.concurrency,
                            today=days[-1] + dt.timedelta(days=1),
                        )
                        assert st is not None and st.trades_new == args.trades * args.days, st
                        ours_s.append(time.perf_counter() - t0)
                    else:
                        rows = await script_loop(url, days, tmp)
                        assert rows == args.trades * args.days
                        script_s.append(time.perf_counter() - t0)
                    size[name] = sum(p.stat().st_size for p in tmp.rglob("*.parquet"))
                    shutil.rmtree(tmp)
        finally:
            await runner.cleanup()
        total = args.trades * args.days
        m_ours, m_script = float(np.median(ours_s)), float(np.median(script_s))
        print_table(
            f"archive ingest: {args.days} day files x {args.trades:,} trades from a local server",
            ["variant", "median", "trades/s", "vs script", "bytes/trade"],
            [
                ["marketlake (ledger, validation, exact times, merge)", fmt_s(m_ours), fmt_rate(total / m_ours),
                 f"{m_script / m_ours:.2f}x", f"{size['marketlake'] / total:.1f}"],
                ["script (aiohttp + pandas + to_parquet, sequential)", fmt_s(m_script), fmt_rate(total / m_script),
                 "1.00x", f"{size['script'] / total:.1f}"],
            ],
        )

    asyncio.run(part2())


if __name__ == "__main__":
    main()
