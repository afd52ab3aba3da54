"""The one source of *now* and *sleep* in marketlake, replaceable in tests.

Code that needs the time calls :func:`get_clock` (or takes a ``clock`` argument) instead of
``time.time()`` / ``asyncio.sleep()``; tests install a :class:`ManualClock` with :func:`use_clock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Iterator
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "ManualClock", "SystemClock", "get_clock", "use_clock"]


@runtime_checkable
class Clock(Protocol):
    """What marketlake needs from a clock."""

    def now_ms(self) -> int:
        """Wall-clock time as epoch milliseconds (UTC)."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin that never goes backwards."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """The real clock."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class ManualClock:
    """A clock that only moves when told to; ``sleep`` advances it instantly.

    Args:
        start_ms: The initial wall-clock time, epoch milliseconds.
    """

    def __init__(self, start_ms: int = 1_704_067_200_000) -> None:
        self._now_ms = float(start_ms)
        self._mono = 0.0

    def now_ms(self) -> int:
        return int(self._now_ms)

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self._now_ms += seconds * 1000.0
        self._mono += seconds

    async def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)  # still yield, so other tasks run as they would


_current: contextvars.ContextVar[Clock] = contextvars.ContextVar("marketlake_clock")
_default = SystemClock()


def get_clock() -> Clock:
    """Return the clock in force (the system clock unless a test installed another)."""
    return _current.get(_default)


@contextlib.contextmanager
def use_clock(clock: Clock) -> Iterator[Clock]:
    """Install ``clock`` for the duration of a ``with`` block (per context / task)."""
    token = _current.set(clock)
    try:
        yield clock
    finally:
        _current.reset(token)
