"""A Bybit v5 exchange emulator: the test double of marketlake's Bybit clients.

One entry point: :class:`Emulator` (an aiohttp server on 127.0.0.1 speaking Bybit's public REST,
WebSocket and daily-archive wire formats over a deterministic synthetic market) and
:func:`serve` (run it until interrupted); :func:`serve_command` is ``marketlake serve``'s body
(option checks, lake replay). The knobs a test turns are re-exported here too.

Product code (``marketlake.*``) never imports this package, except lazily inside the ``serve``
and ``demo`` CLI commands; ``tests/unit/test_emulator_package.py`` holds it to that. The
dependency runs one way only: the emulator speaks the wire format defined by
:mod:`marketlake.exchanges.bybit.constants`.

Usage::

    from marketlake_emulator import Emulator

    async with Emulator(symbols=5, seed=1, speed=0) as emu:
        emu.control.schedule("429")
        ... BybitRestClient(emu.url) ...
"""

from __future__ import annotations

from marketlake_emulator.cli import serve_command
from marketlake_emulator.control import EmulatorClock, FaultConfig
from marketlake_emulator.market import SyntheticMarket
from marketlake_emulator.server import BybitEmulator, serve
from marketlake_emulator.ws_config import WsFaultConfig

#: The emulator server (the package's entry point); ``BybitEmulator`` is the same class.
Emulator = BybitEmulator

__all__ = [
    "BybitEmulator",
    "Emulator",
    "EmulatorClock",
    "FaultConfig",
    "SyntheticMarket",
    "WsFaultConfig",
    "serve",
    "serve_command",
]
