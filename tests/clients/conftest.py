"""Fixtures of the client suite: the emulator on 127.0.0.1 (a real aiohttp server in a thread),
driven by clients written against the real Bybit (pybit, ccxt)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from marketlake_emulator import BybitEmulator
from tests.integration.emulated import emulator_thread

#: Market time of the frozen emulator: 2024-03-01 01:30:30 UTC.
NOW = 1_709_251_200_000 + 90 * 60_000 + 30_000


@pytest.fixture(scope="module")
def frozen() -> Iterator[BybitEmulator]:
    """Market time stands still: answers can be compared with the market's truth exactly."""
    with emulator_thread(symbols=8, seed=11, start_ms=NOW, speed=0.0) as emu:
        yield emu


@pytest.fixture(scope="module")
def running() -> Iterator[BybitEmulator]:
    """Market time runs 30x: a few real seconds carry a minute of trades and candle pushes."""
    with emulator_thread(symbols=4, seed=12, start_ms=NOW, speed=30.0) as emu:
        # 20 ms per answer: the round trip pybit's subscribe relies on (see WsFaultConfig).
        emu.ws.configure(push_interval_s=0.05, reply_latency_s=0.02)
        yield emu
