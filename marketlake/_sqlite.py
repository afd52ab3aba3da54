"""Opening the small SQLite files marketlake keeps under ``_meta`` (ledger, rate budget, stats).

Several processes may open the same file at the same moment. Switching a new database to WAL
takes a lock that SQLite's busy handler does not wait for, so a concurrent first open can fail
with "database is locked" at once; the set-up is retried here until ``timeout_s``.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

__all__ = ["open_wal"]


def open_wal(
    path: str | Path,
    *,
    timeout_s: float = 30.0,
    synchronous: str = "NORMAL",
    script: str = "",
    check_same_thread: bool = True,
) -> sqlite3.Connection:
    """Open ``path`` in WAL mode (autocommit; use explicit ``BEGIN IMMEDIATE``) and run ``script``.

    Raises:
        sqlite3.OperationalError: the file stayed locked for ``timeout_s``, or cannot be opened.
    """
    deadline = time.monotonic() + timeout_s
    delay = 0.005
    while True:
        conn = sqlite3.connect(path, timeout=timeout_s, isolation_level=None, check_same_thread=check_same_thread)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={synchronous}")
            if script:
                conn.executescript(script)
            return conn
        except sqlite3.OperationalError as exc:
            conn.close()
            if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
