"""The small interface every state backend implements, and the embedded one: SQLite.

A backend stores opaque byte values under string keys, each with an optional expiry, and (where
it can) carries event messages to other processes. Everything above that (key names, TTLs, JSON,
events, fallbacks) lives once in :class:`~marketlake.state.store.StateStore`, so both backends
behave alike; ``tests/sinks/test_state_store.py`` runs one behaviour suite against both.

SQLite backend: one table in a WAL database (default ``<lake>/_meta/state.sqlite``). Every
operation is one autocommit statement, atomic on its own, so any number of processes can share
the file; SQLite's busy handler waits out another process's write. Expiry is a timestamp taken
from the injectable clock (:func:`marketlake.clock.get_clock`): a read ignores expired rows and
expired rows are purged every ``purge_every`` writes. The calls run on the caller's thread, not
in a worker: each takes tens of microseconds, less than the hop to a thread would cost.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

from marketlake._sqlite import open_wal
from marketlake.clock import get_clock
from marketlake.errors import SinkError

__all__ = ["SQLiteBackend", "StateBackend"]


@runtime_checkable
class StateBackend(Protocol):
    """Key/value storage with expiry, as the state store needs it."""

    #: ``sqlite`` or ``redis``.
    kind: str
    #: Where it stores (a path or a URL with any password masked).
    location: str

    async def get(self, key: str) -> bytes | None:
        """The value under ``key``, or None when absent or expired."""
        ...

    async def set(self, key: str, value: bytes, ttl_s: float | None) -> None:
        """Store ``value`` under ``key``, expiring after ``ttl_s`` seconds (never when None)."""
        ...

    async def delete(self, key: str) -> bool:
        """Remove ``key``; True when it existed (and had not expired)."""
        ...

    async def keys(self, pattern: str) -> list[str]:
        """Live keys matching a glob ``pattern`` (``*``, ``?``, ``[...]``), sorted."""
        ...

    async def clear(self, pattern: str) -> int:
        """Remove every key matching ``pattern``; returns how many live keys went."""
        ...

    async def publish(self, channel: str, message: bytes) -> None:
        """Send an event message to other processes (a no-op where the backend cannot)."""
        ...

    async def listen(self, pattern: str, on_message: Callable[[bytes], None]) -> None:
        """Start delivering messages of channels matching ``pattern`` to ``on_message``; returns
        once the subscription is in force (a no-op where the backend cannot)."""
        ...

    async def close(self) -> None:
        """Release connections (idempotent)."""
        ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS state (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    expires_ms INTEGER,            -- NULL: never
    updated_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS state_expiry ON state(expires_ms) WHERE expires_ms IS NOT NULL;
"""


class SQLiteBackend:
    """State in one SQLite file (WAL), shared safely by every process that opens it.

    Args:
        path: The database file (created with its directory).
        purge_every: Delete expired rows after this many writes (reads ignore them anyway).
        timeout_s: How long to wait for another process's write lock before failing.
    """

    kind = "sqlite"

    def __init__(self, path: str | Path, *, purge_every: int = 1000, timeout_s: float = 10.0) -> None:
        self.path = Path(path).expanduser().resolve()
        self.location = str(self.path)
        self.purge_every = max(1, int(purge_every))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # One connection, used from whichever thread calls (live callbacks may run in worker
            # threads); the lock keeps statements on it one at a time.
            self._con: sqlite3.Connection | None = open_wal(
                self.path, timeout_s=timeout_s, script=_SCHEMA, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise SinkError(f"state store {self.path}: cannot open: {exc}") from exc
        self._lock = threading.Lock()
        self._writes = 0

    def __repr__(self) -> str:
        return f"SQLiteBackend({self.location!r})"

    def _run(self, what: str, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        if self._con is None:
            raise SinkError(f"state store {self.path}: closed")
        try:
            with self._lock:
                return self._con.execute(sql, args)
        except sqlite3.Error as exc:
            raise SinkError(f"state store {self.path}: {what} failed: {exc}") from exc

    async def get(self, key: str) -> bytes | None:
        row = self._run(
            "get",
            "SELECT value FROM state WHERE key = ? AND (expires_ms IS NULL OR expires_ms > ?)",
            (key, get_clock().now_ms()),
        ).fetchone()
        return None if row is None else bytes(row[0])

    async def set(self, key: str, value: bytes, ttl_s: float | None) -> None:
        now = get_clock().now_ms()
        expires = None if ttl_s is None else now + int(ttl_s * 1000)
        self._run(
            "set",
            "INSERT INTO state (key, value, expires_ms, updated_ms) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value, expires_ms = excluded.expires_ms, "
            "updated_ms = excluded.updated_ms",
            (key, value, expires, now),
        )
        self._writes += 1
        if self._writes % self.purge_every == 0:
            self.purge_expired()

    async def delete(self, key: str) -> bool:
        # An expired row is gone as far as readers know: report it as not deleted.
        cur = self._run(
            "delete",
            "DELETE FROM state WHERE key = ? RETURNING expires_ms IS NULL OR expires_ms > ?",
            (key, get_clock().now_ms()),
        )
        row = cur.fetchone()
        return bool(row and row[0])

    async def keys(self, pattern: str) -> list[str]:
        rows = self._run(
            "keys",
            "SELECT key FROM state WHERE key GLOB ? AND (expires_ms IS NULL OR expires_ms > ?) ORDER BY key",
            (pattern, get_clock().now_ms()),
        ).fetchall()
        return [r[0] for r in rows]

    async def clear(self, pattern: str) -> int:
        rows = self._run(
            "clear",
            "DELETE FROM state WHERE key GLOB ? RETURNING expires_ms IS NULL OR expires_ms > ?",
            (pattern, get_clock().now_ms()),
        ).fetchall()
        return sum(1 for r in rows if r[0])

    def purge_expired(self) -> int:
        """Delete expired rows now; returns how many."""
        return self._run(
            "purge", "DELETE FROM state WHERE expires_ms <= ?", (get_clock().now_ms(),)
        ).rowcount

    async def publish(self, channel: str, message: bytes) -> None:
        """SQLite carries no messages between processes: events stay in the process."""
        return

    async def listen(self, pattern: str, on_message: Callable[[bytes], None]) -> None:
        """Nothing to listen to (see :meth:`publish`)."""
        return

    async def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None
