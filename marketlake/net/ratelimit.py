"""The request budget: never more than ``limit`` requests in any ``window`` seconds, machine-wide.

Bybit bans an IP that sends more than 600 requests in any 5-second window (HTTP 403, at least
10 minutes). marketlake keeps under a configurable share of that (``Settings.rate_limit_per_5s``,
500 by default) with two rules checked together on every grant:

1. **a sliding-window log** of grant times: a grant is refused while ``limit`` grants already lie
   in the last ``window`` seconds. This is the hard guarantee "at most ``limit`` in any window",
   and it still lets a steady client use the whole budget;
2. **a token bucket** refilled at ``limit / window`` per second with a small capacity (``burst``):
   it paces grants evenly, so network jitter cannot squeeze a window's worth of requests into a
   shorter stretch at the server.

The state lives either in memory (one process) or in a small SQLite file in a directory passed in
(the lake's ``_meta/``), so every process using the same lake shares one budget: each grant is one
``BEGIN IMMEDIATE`` transaction, which SQLite serialises across processes.

The budget also adapts to the server: when a response says no requests remain
(``X-Bapi-Limit-Status: 0``) or answers retCode 10006, everyone waits until the reset time; a
ban blocks everyone until it lifts. Server timestamps are only ever used as *differences*
(``reset - time`` of the same response), never compared with the local clock.
"""

from __future__ import annotations

import asyncio
import math
import os
import sqlite3
import threading
import weakref
from collections import deque
from pathlib import Path
from typing import Final, Protocol

from marketlake._sqlite import open_wal
from marketlake.clock import Clock, get_clock
from marketlake.errors import ConfigError

__all__ = ["BanLatch", "RateBudget", "process_ban_latch"]

#: Longest pause a server header may impose (guards against a garbage reset timestamp).
MAX_HEADER_BLOCK_MS: Final = 15 * 60 * 1000


class _State(Protocol):
    """Where a budget keeps its grants; all times are epoch ms on the budget's clock."""

    def grant(self, now: int, limit: int, window: int, burst: int) -> int:
        """Take a slot at ``now`` and return 0, or return the ms to wait before asking again."""
        ...

    def block_until(self, until: int) -> None:
        """Refuse every grant before ``until`` (keeps the later of two blocks)."""
        ...

    def blocked_until(self) -> int:
        """The current block (0 when never blocked)."""
        ...

    def close(self) -> None:
        """Release resources."""
        ...


# While the sliding window is full, the pacing bucket must not fill up. If it did, the slots
# freed when a burst of grants leaves the window would be granted again as a burst of the same
# size one window later, and again every window: "echo bursts" (the initial burst of ``burst``
# requests recurring forever). A burst is where a little delay between grant and arrival at the
# server (a busy event loop, a new connection, network jitter) crowds more than ``limit`` requests
# into one server-side window; with 590 of Bybit's 600 the headroom is 10 requests. So a refusal
# by the window moves the bucket's clock to the moment the window frees a slot, without minting
# for the time in between: grants then resume at the paced rate. The long-run rate is unchanged.


def _bucket(tokens: float, last: int, now: int, rate: float, burst: int) -> float:
    if now < last:  # paused while the window is full (or the clock went back): mint nothing
        return tokens
    return min(float(burst), tokens + (now - last) * rate)


class _MemoryState:
    """Budget state of one process."""

    def __init__(self) -> None:
        self._grants: deque[int] = deque()
        self._blocked = 0
        self._tokens: float | None = None
        self._last = 0
        self._lock = threading.Lock()

    def grant(self, now: int, limit: int, window: int, burst: int) -> int:
        with self._lock:
            if self._blocked > now:
                return self._blocked - now
            g = self._grants
            while g and (g[0] <= now - window or g[0] > now + window):
                g.popleft()
            if len(g) >= limit:
                free_at = g[len(g) - limit] + window
                if self._tokens is not None:  # the bucket mints nothing before then (see above)
                    self._last = max(self._last, free_at)
                return max(1, free_at - now)
            rate = limit / window
            tokens = (
                float(burst) if self._tokens is None else _bucket(self._tokens, self._last, now, rate, burst)
            )
            if tokens < 1.0:
                self._tokens, self._last = tokens, max(self._last, now)
                return max(1, self._last - now + math.ceil((1.0 - tokens) / rate))
            self._tokens, self._last = tokens - 1.0, max(self._last, now)
            g.append(now)
            return 0

    def block_until(self, until: int) -> None:
        with self._lock:
            self._blocked = max(self._blocked, until)

    def blocked_until(self) -> int:
        return self._blocked

    def close(self) -> None:
        pass


class _SqliteState:
    """Budget state shared by every process opening the same file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        self._lock = threading.Lock()

    def _db(self) -> sqlite3.Connection:
        # A connection must not cross a fork: reopen in a child process.
        if self._conn is None or self._pid != os.getpid():
            conn = open_wal(
                self.path,
                synchronous="OFF",  # the budget is ephemeral: no need to fsync
                check_same_thread=False,
                script="CREATE TABLE IF NOT EXISTS grants (t INTEGER NOT NULL);"
                "CREATE INDEX IF NOT EXISTS grants_t ON grants (t);"
                "CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v REAL NOT NULL);",
            )
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def _meta(self, db: sqlite3.Connection, key: str, default: float) -> float:
        row = db.execute("SELECT v FROM meta WHERE k = ?", (key,)).fetchone()
        return default if row is None else float(row[0])

    def _set(self, db: sqlite3.Connection, key: str, value: float) -> None:
        db.execute(
            "INSERT INTO meta (k, v) VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v", (key, value)
        )

    def grant(self, now: int, limit: int, window: int, burst: int) -> int:
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                wait = self._grant(db, now, limit, window, burst)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return wait

    def _grant(self, db: sqlite3.Connection, now: int, limit: int, window: int, burst: int) -> int:
        blocked = int(self._meta(db, "blocked_until", 0))
        if blocked > now:
            return blocked - now
        db.execute("DELETE FROM grants WHERE t <= ? OR t > ?", (now - window, now + window))
        (count,) = db.execute("SELECT COUNT(*) FROM grants").fetchone()
        if count >= limit:
            (oldest,) = db.execute(
                "SELECT t FROM grants ORDER BY t LIMIT 1 OFFSET ?", (count - limit,)
            ).fetchone()
            free_at = int(oldest) + window
            last = self._meta(db, "bucket_t", -1)
            if last >= 0:  # the bucket mints nothing before then (see above)
                self._set(db, "bucket_t", max(last, free_at))
            return max(1, free_at - now)
        rate = limit / window
        last = int(self._meta(db, "bucket_t", now))
        tokens = _bucket(self._meta(db, "bucket_tokens", float(burst)), last, now, rate, burst)
        if tokens < 1.0:
            self._set(db, "bucket_tokens", tokens)
            self._set(db, "bucket_t", max(last, now))
            return max(1, max(last, now) - now + math.ceil((1.0 - tokens) / rate))
        self._set(db, "bucket_tokens", tokens - 1.0)
        self._set(db, "bucket_t", max(last, now))
        db.execute("INSERT INTO grants (t) VALUES (?)", (now,))
        return 0

    def block_until(self, until: int) -> None:
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                if until > self._meta(db, "blocked_until", 0):
                    self._set(db, "blocked_until", until)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def blocked_until(self) -> int:
        with self._lock:
            return int(self._meta(self._db(), "blocked_until", 0))

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None


class RateBudget:
    """At most ``limit`` requests in any ``window_s`` seconds, shared through ``state_dir``.

    Args:
        limit: Requests allowed per window (Bybit's IP limit is 600 per 5 s; default 500).
        window_s: Window length in seconds (tests shrink it to run in a moment).
        state_dir: Directory of the shared state file (e.g. ``lake/_meta``); None keeps the
            budget in this process only.
        name: Budget name (one file per name): separate budgets for separate hosts.
        burst: Capacity of the pacing bucket; default ``limit // 10`` (at least 1).
        clock: Clock for now/sleep; default: :func:`marketlake.clock.get_clock` at each call.

    Raises:
        ConfigError: a non-positive limit or window, or an unusable ``state_dir``.
    """

    def __init__(
        self,
        limit: int = 500,
        window_s: float = 5.0,
        *,
        state_dir: str | Path | None = None,
        name: str = "bybit-rest",
        burst: int | None = None,
        clock: Clock | None = None,
    ) -> None:
        if limit < 1:
            raise ConfigError(f"rate limit must be >= 1 request per window, got {limit}")
        if window_s <= 0:
            raise ConfigError(f"rate-limit window must be > 0 seconds, got {window_s}")
        if not name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"rate budget name {name[:40]!r} must be letters, digits, - and _")
        self.limit = int(limit)
        self.window_ms = max(1, round(window_s * 1000))
        self.burst = max(1, int(burst if burst is not None else limit // 10))
        self._clock = clock
        self._state: _State
        if state_dir is None:
            self._state = _MemoryState()
            self.path: Path | None = None
        else:
            directory = Path(state_dir)
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"cannot create rate-budget directory {directory}: {exc}") from None
            self.path = directory / f"ratelimit-{name}.sqlite"
            self._state = _SqliteState(self.path)
        self.waits = 0  # how often acquire() had to wait (for progress reports)
        self._waiters: tuple[weakref.ref[asyncio.AbstractEventLoop], asyncio.Lock] | None = None

    @property
    def clock(self) -> Clock:
        """The clock in use."""
        return self._clock if self._clock is not None else get_clock()

    def try_acquire(self) -> float:
        """Take one request slot if one is free now.

        Returns:
            0.0 when granted, else the seconds to wait before asking again.
        """
        wait_ms = self._state.grant(self.clock.now_ms(), self.limit, self.window_ms, self.burst)
        return wait_ms / 1000.0

    def _queue(self) -> asyncio.Lock:
        """The lock the coroutines of the running event loop queue on (one per loop)."""
        loop = asyncio.get_running_loop()
        held = self._waiters
        if held is None or held[0]() is not loop:
            held = self._waiters = (weakref.ref(loop), asyncio.Lock())
        return held[1]

    async def acquire(self) -> int:
        """Wait for a request slot and take it.

        The coroutines of one event loop queue for slots in arrival order and only the head of the
        queue polls the (possibly shared) state: with N workers waiting on the budget, a grant
        costs one poll and one wake-up, not N of each.

        Returns:
            The grant time (epoch ms on the budget's clock).
        """
        async with self._queue():
            clock = self.clock
            while True:
                now = clock.now_ms()
                wait_ms = self._state.grant(now, self.limit, self.window_ms, self.burst)
                if wait_ms <= 0:
                    return now
                self.waits += 1
                await clock.sleep(wait_ms / 1000.0)

    def block_until(self, until_ms: int) -> None:
        """Grant nothing (to any process sharing the budget) before ``until_ms`` (local epoch ms)."""
        self._state.block_until(int(until_ms))

    @property
    def blocked_until_ms(self) -> int:
        """Local epoch ms before which nothing is granted (0 or past when not blocked)."""
        return self._state.blocked_until()

    def observe(self, remaining: int | None, reset_ms: int | None, server_time_ms: int | None) -> None:
        """Adapt to a response's ``X-Bapi-Limit-Status`` / ``X-Bapi-Limit-Reset-Timestamp``.

        When the server says no request remains, everyone waits until its reset time. The wait is
        ``reset_ms - server_time_ms`` (both on the server's clock), capped at 15 minutes.
        """
        if remaining is None or remaining > 0 or reset_ms is None or server_time_ms is None:
            return
        delta = reset_ms - server_time_ms
        if delta > 0:
            self.block_until(self.clock.now_ms() + min(delta, MAX_HEADER_BLOCK_MS))

    def close(self) -> None:
        """Release the state file (the budget can be reopened by using it again)."""
        self._state.close()


class BanLatch:
    """Process-wide memory of an IP ban: once an HTTP 403 arrives, nothing is sent until it lifts.

    Args:
        clock: Clock for now/sleep; default :func:`~marketlake.clock.get_clock` at each call.
    """

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock
        self._until = 0

    @property
    def clock(self) -> Clock:
        """The clock in use."""
        return self._clock if self._clock is not None else get_clock()

    @property
    def banned_until_ms(self) -> int:
        """Local epoch ms when the ban lifts (0 or past when none)."""
        return self._until

    def is_banned(self) -> bool:
        """True while a ban is in force."""
        return self.clock.now_ms() < self._until

    def trip(self, until_ms: int) -> bool:
        """Record a ban lasting until ``until_ms``.

        Returns:
            True when this starts a new ban (the caller surfaces it); False when a ban was already
            in force (a late 403 of a request sent before it): nothing changes then.
        """
        if self.is_banned():
            return False
        self._until = int(until_ms)
        return True

    def lift(self) -> None:
        """Forget the ban (an operator knows better, or a test)."""
        self._until = 0

    async def wait(self) -> None:
        """Return once no ban is in force (at once when none is)."""
        clock = self.clock
        while True:
            remaining = self._until - clock.now_ms()
            if remaining <= 0:
                return
            await clock.sleep(remaining / 1000.0)


_PROCESS_LATCH: Final = BanLatch()


def process_ban_latch() -> BanLatch:
    """The ban latch every client of this process shares by default."""
    return _PROCESS_LATCH
