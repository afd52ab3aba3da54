"""Harness for ingest tests: the emulator in-process (async) or in a background thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import polars as pl

from marketlake_emulator import BybitEmulator
from marketlake.exchanges.bybit.rest import BybitRestClient
from marketlake.net.backoff import Backoff
from marketlake.net.ratelimit import BanLatch, RateBudget
from marketlake.store import Lake

# A fixed market time (2024-07-03 09:46:40 UTC), frozen unless a test sets a speed.
NOW = 1_720_000_000_000


def client_for(emu_url: str, lake: Lake, **kw: Any) -> BybitRestClient:
    """A client with a lake-shared budget, its own ban latch and quick retries."""
    kw.setdefault("budget", RateBudget(500, state_dir=lake.root / "_meta"))
    kw.setdefault("ban_latch", BanLatch())
    kw.setdefault("backoff", Backoff(base=0.01, cap=0.2, max_attempts=12))
    return BybitRestClient(emu_url, **kw)


def run_with_emulator(test: Callable[[BybitEmulator], Awaitable[None]], **emu_kw: Any) -> None:
    """Run ``test(emu)`` against a fresh emulator on 127.0.0.1."""
    emu_kw.setdefault("symbols", 6)
    emu_kw.setdefault("seed", 7)
    emu_kw.setdefault("start_ms", NOW)
    emu_kw.setdefault("speed", 0.0)

    async def main() -> None:
        async with BybitEmulator(**emu_kw) as emu:
            await test(emu)

    asyncio.run(main())


@contextmanager
def emulator_thread(**emu_kw: Any) -> Iterator[BybitEmulator]:
    """The emulator served from a background thread (for subprocess clients)."""
    emu_kw.setdefault("symbols", 6)
    emu_kw.setdefault("seed", 7)
    emu_kw.setdefault("start_ms", NOW)
    emu_kw.setdefault("speed", 0.0)
    ready = threading.Event()
    holder: dict[str, Any] = {}

    def serve() -> None:
        async def main() -> None:
            emu = BybitEmulator(**emu_kw)
            await emu.start()
            holder["emu"], holder["stop"] = emu, asyncio.Event()
            holder["loop"] = asyncio.get_running_loop()
            ready.set()
            await holder["stop"].wait()
            await emu.stop()

        asyncio.run(main())

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    assert ready.wait(30), "emulator did not start"
    try:
        yield holder["emu"]
    finally:
        holder["loop"].call_soon_threadsafe(holder["stop"].set)
        t.join(10)


def truth(emu: BybitEmulator, symbol: str, tf: str, start: int, end: int) -> pl.DataFrame:
    """Ground truth for ``[start, end)`` (the market's API is inclusive of end)."""
    return emu.market.candles(symbol, tf, start, end - 1)
