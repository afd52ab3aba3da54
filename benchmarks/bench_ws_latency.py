"""End-to-end latency of the live stream: the emulator's push → the user's callback, at a given rate.

The emulator runs in its own process (its own core), serving ``publicTrade`` topics of ``N``
symbols, one trade per push, at a market speed chosen for the target rate (the synthetic market
has ~7 trades per symbol-minute). It notes the wall clock (``time.time_ns``, the same clock in
both processes) right after handing each push to the socket. This process runs the real
:class:`~marketlake.ingest.live.LiveRunner` (socket, decode, dedup, trade bookkeeping, micro-batch
writes to a temporary lake every second) with an ``async`` trade callback that notes the clock
when it is called. Latency = callback time − send time, per push, after a warm-up.

Usage::

    python -m benchmarks.bench_ws_latency [--rates 1000,10000 --seconds 6 --symbols 20]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import statistics
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

from benchmarks.datagen import print_table
from marketlake_emulator import BybitEmulator
from marketlake.exchanges.bybit.rest import BybitRestClient
from marketlake.ingest.live import LiveRunner
from marketlake.ingest.live_types import LiveConfig, TradeBatch
from marketlake.net.backoff import Backoff
from marketlake.settings import Settings
from marketlake.store import Lake

T0 = 1_720_000_000_000
TRADES_PER_SYMBOL_MINUTE = 7.0  # the synthetic market's mean (2..12 trades a minute)


def _serve(conn: Connection, symbols: int, speed: float, tick_s: float) -> None:
    async def main() -> None:
        emu = BybitEmulator(symbols=symbols, seed=3, start_ms=T0, speed=speed)
        emu.ws.configure(push_interval_s=tick_s, trade_batch_max=1, record_sends=True)
        await emu.start()
        conn.send(emu.url)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, conn.recv)  # "stop"
        sends = emu.ws.sends
        await emu.stop()
        conn.send(sends)

    asyncio.run(main())


async def _measure(url: str, symbols: list[str], seconds: float, warmup: float) -> tuple[int, dict[str, int]]:
    """Stream for ``seconds`` after ``warmup``; return the callbacks counted and, per push (its
    first trade id), the wall clock at its callback."""
    root = Path(tempfile.mkdtemp(prefix="bench_ws_latency_"))
    lake = Lake(root / "lake", settings=Settings.load(environ={}))
    got: dict[str, int] = {}
    counting = False
    delivered = 0

    async def on_trades(batch: TradeBatch) -> None:
        nonlocal delivered
        now = time.time_ns()
        if counting:
            delivered += 1
            got[batch.trades[0].trade_id] = now

    cfg = LiveConfig.of(symbols, [], trades=True, flush_interval_s=1.0, status_interval_s=3600)
    async with BybitRestClient(url, backoff=Backoff(0.01, 0.2, 12)) as rest:
        runner = LiveRunner(lake, rest, cfg, ws_options={"backoff": Backoff(0.01, 0.2, 10**9)})
        runner.add_callback(on_trades, candles=False, trades=True, queue_size=100_000)
        task = asyncio.create_task(runner.run())
        await asyncio.sleep(warmup)
        counting = True
        await asyncio.sleep(seconds)
        counting = False
        runner.stop()
        await task
    return delivered, got


def run_rate(rate: int, symbols: int, seconds: float) -> list[str]:
    """One rate: start the emulator process, stream, join send and receive times."""
    per_symbol_s = rate / symbols
    speed = per_symbol_s * 60_000 / TRADES_PER_SYMBOL_MINUTE / 1000  # market ms per real ms
    parent, child = mp.Pipe()
    proc = mp.Process(target=_serve, args=(child, symbols, speed, 0.01), daemon=True)
    proc.start()
    url = parent.recv()
    names = (["BTCUSDT", "ETHUSDT"] + [f"SYM{i:03d}USDT" for i in range(1, symbols - 1)])[:symbols]
    delivered, got = asyncio.run(_measure(url, names, seconds, warmup=2.0))
    parent.send("stop")
    sends = parent.recv()
    proc.join(10)
    sent_at = {key: ns for _, key, ns in sends}
    lat_ms = sorted((got[k] - sent_at[k]) / 1e6 for k in got if k in sent_at)
    if not lat_ms:
        return [f"{rate:,}", "0", "-", "-", "-", "-"]
    q = statistics.quantiles(lat_ms, n=100)
    return [
        f"{rate:,}",
        f"{delivered / seconds:,.0f}",
        f"{q[49]:.2f}",
        f"{q[98]:.2f}",
        f"{lat_ms[-1]:.1f}",
        f"{speed:,.0f}x",
    ]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="1000,10000")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--symbols", type=int, default=20)
    args = ap.parse_args(argv)
    mp.set_start_method("spawn", force=True)
    rows = [run_rate(int(r), args.symbols, args.seconds) for r in args.rates.split(",")]
    print(f"# bench_ws_latency: {args.symbols} symbols, publicTrade, one trade per push, pushes every 10 ms")
    print_table(
        "emulator push → async callback (wall clock, ms)",
        ["target msg/s", "delivered msg/s", "p50 ms", "p99 ms", "max ms", "market speed"],
        rows,
    )


if __name__ == "__main__":
    main()
