"""Callbacks of the live stream: each one behind its own bounded queue, so none blocks the socket.

Every callback gets a queue of ``queue_size`` items and one consumer task. The stream only
appends to queues (never waits), so a slow callback delays nothing but itself:

* an ``async def`` callback is awaited by its consumer task (it should not block the loop);
* a plain function runs in its own worker thread, one call at a time, in order, so even a
  blocking or CPU-heavy callback leaves the event loop (and the socket) alone.

When a queue is full, ``drop_oldest`` (the default) discards the oldest waiting item to make room,
``drop_newest`` discards the new one; either way the drop is counted (``dropped``) and the lake
is unaffected: callbacks are a view of the stream, the lake is its record. An exception raised by
a callback is logged and counted (``errors``), and the next item is delivered as usual.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from marketlake.ingest.live_types import LiveCandle, Overflow, TradeBatch

__all__ = ["Callback", "CallbackHub"]

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Callback:
    """One registered callback and its figures.

    Attributes:
        fn: The callable (sync or async), called with one :class:`LiveCandle` or
            :class:`TradeBatch`.
        candles: Receives closed candles.
        trades: Receives trade batches.
        queue_size: Items its queue holds.
        overflow: ``drop_oldest`` or ``drop_newest``.
        delivered: Items handed to ``fn`` so far.
        dropped: Items discarded because the queue was full.
        errors: Calls that raised.
        is_async: True for ``async def`` callables (awaited on the loop).
    """

    fn: Callable[[Any], Any]
    candles: bool = True
    trades: bool = False
    queue_size: int = 10_000
    overflow: Overflow = "drop_oldest"
    delivered: int = 0
    dropped: int = 0
    errors: int = 0
    _queue: deque[Any] = field(default_factory=deque)
    _ready: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None
    _busy: bool = False
    _pool: concurrent.futures.ThreadPoolExecutor | None = None

    is_async: bool = False

    def __post_init__(self) -> None:
        # Decided once: ``async def`` callables (or objects with an async ``__call__``) are
        # awaited on the loop, anything else runs in the callback's worker thread.
        self.is_async = inspect.iscoroutinefunction(self.fn) or inspect.iscoroutinefunction(
            getattr(self.fn, "__call__", None)  # noqa: B004
        )

    @property
    def waiting(self) -> int:
        """Items queued, not yet delivered."""
        return len(self._queue)


class CallbackHub:
    """The callbacks of one live runner."""

    def __init__(self) -> None:
        self.callbacks: list[Callback] = []
        self._running = False

    def add(
        self,
        fn: Callable[[Any], Any],
        *,
        candles: bool = True,
        trades: bool = False,
        queue_size: int = 10_000,
        overflow: Overflow = "drop_oldest",
    ) -> Callback:
        """Register ``fn``; it starts receiving with the next item published."""
        if not callable(fn):
            raise TypeError("a callback must be callable")
        if queue_size < 1 or overflow not in ("drop_oldest", "drop_newest"):
            raise ValueError("queue_size must be >= 1 and overflow drop_oldest or drop_newest")
        cb = Callback(fn, candles, trades, queue_size, overflow)
        self.callbacks.append(cb)
        if self._running:
            self._start_one(cb)
        return cb

    @property
    def dropped(self) -> int:
        """Items dropped by all callbacks."""
        return sum(c.dropped for c in self.callbacks)

    @property
    def delivered(self) -> int:
        """Items delivered to all callbacks."""
        return sum(c.delivered for c in self.callbacks)

    @property
    def errors(self) -> int:
        """Callback calls that raised."""
        return sum(c.errors for c in self.callbacks)

    def publish_candle(self, candle: LiveCandle) -> None:
        """Queue a closed candle for every candle callback (never blocks)."""
        for cb in self.callbacks:
            if cb.candles:
                self._put(cb, candle)

    def publish_trades(self, batch: TradeBatch) -> None:
        """Queue a trade batch for every trade callback (never blocks)."""
        for cb in self.callbacks:
            if cb.trades:
                self._put(cb, batch)

    @staticmethod
    def _put(cb: Callback, item: Any) -> None:
        if len(cb._queue) >= cb.queue_size:
            cb.dropped += 1
            if cb.overflow == "drop_newest":
                return
            cb._queue.popleft()
        cb._queue.append(item)
        cb._ready.set()

    def start(self) -> None:
        """Start a consumer task per callback (on the running loop)."""
        self._running = True
        for cb in self.callbacks:
            self._start_one(cb)

    def _start_one(self, cb: Callback) -> None:
        cb._ready = asyncio.Event()
        if cb._queue:
            cb._ready.set()
        if not cb.is_async:
            cb._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="marketlake-callback")
        cb._task = asyncio.ensure_future(self._consume(cb))

    async def _consume(self, cb: Callback) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not cb._queue:
                cb._ready.clear()
                await cb._ready.wait()
                continue
            item = cb._queue.popleft()
            cb._busy = True
            try:
                if cb.is_async:
                    await cb.fn(item)
                else:
                    await loop.run_in_executor(cb._pool, cb.fn, item)
            except asyncio.CancelledError:
                raise
            except Exception:  # a user's callback: report, count, go on
                cb.errors += 1
                log.exception("live callback %r raised", getattr(cb.fn, "__name__", cb.fn))
            finally:
                cb._busy = False
            cb.delivered += 1

    async def stop(self, drain_s: float = 5.0) -> None:
        """Deliver what is queued (for at most ``drain_s`` seconds), then stop every consumer."""
        self._running = False
        deadline = asyncio.get_running_loop().time() + drain_s
        while (
            any(cb._queue or cb._busy for cb in self.callbacks)
            and asyncio.get_running_loop().time() < deadline
        ):
            await asyncio.sleep(0.01)
        for cb in self.callbacks:
            if cb._task is not None:
                cb._task.cancel()
                with contextlib.suppress(BaseException):
                    await cb._task
                cb._task = None
            if cb._pool is not None:
                cb._pool.shutdown(wait=False, cancel_futures=True)
                cb._pool = None
