"""The coverage ledger: which time ranges of each series were fetched, and what was found.

For every series the ledger holds non-overlapping ``[start, end)`` ranges (epoch ms of candle open
times, end exclusive) with a status:

* ``present`` — fetched; the lake holds what the exchange had there;
* ``empty`` — fetched and verified empty: the exchange has no data there (an outage, before
  listing); not a gap to repair;
* ``failed`` — a fetch was attempted and failed; still missing.

Ingest plans from it (fetch only what is neither present nor empty, resume after interruption),
``check`` tells unexplained gaps from verified-empty ones, ``repair`` re-fetches. It also keeps a
log of ingest runs and of stream events (disconnects, backfills).

A run records the process that owns it (host, pid and, on Linux, the process's start time, so a
recycled pid is not mistaken for it) and a heartbeat the runner renews every
:data:`RUN_HEARTBEAT_S`. A run killed outright (SIGKILL, a power cut) cannot close its record, so
each new run first marks ``killed`` every ``running`` run whose owner is gone: on this host the
process check decides (it is exact); for a run of another host (a lake on a shared filesystem)
a heartbeat older than :data:`RUN_STALE_MS` does.

It lives in ``_meta/ledger.sqlite`` (WAL; every change is one ``BEGIN IMMEDIATE`` transaction, so
several processes can record at once). SQLite rather than Parquet because the ledger is many small
updates under concurrency, which is what SQLite is for; it is exposed to DuckDB as a registered
Arrow table (no DuckDB extension needed).
"""

from __future__ import annotations

import bisect
import contextlib
import json
import os
import socket
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import polars as pl

from marketlake._sqlite import open_wal
from marketlake.clock import get_clock
from marketlake.core.intervals import Interval, merge, subtract
from marketlake.store.layout import META_DIR, SeriesId

__all__ = ["RUN_HEARTBEAT_S", "RUN_STALE_MS", "Coverage", "Ledger", "Status", "process_token"]

#: Seconds between a runner's heartbeats.
RUN_HEARTBEAT_S = 60.0
#: A run of another host whose heartbeat is older than this is dead (10 beats missed: a paused
#: laptop or a slow shared filesystem must not declare a live run killed).
RUN_STALE_MS = 10 * 60_000


class Status(StrEnum):
    """What a fetch of a range found."""

    PRESENT = "present"
    EMPTY = "empty"
    FAILED = "failed"


_DONE = (Status.PRESENT.value, Status.EMPTY.value)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS coverage (
    dataset TEXT NOT NULL, exchange TEXT NOT NULL, category TEXT NOT NULL, symbol TEXT NOT NULL,
    timeframe TEXT NOT NULL, start_ms INTEGER NOT NULL, end_ms INTEGER NOT NULL,
    status TEXT NOT NULL, updated_ms INTEGER NOT NULL, run_id TEXT, detail TEXT
);
CREATE INDEX IF NOT EXISTS coverage_series
    ON coverage (dataset, exchange, category, symbol, timeframe, start_ms);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, kind TEXT NOT NULL, started_ms INTEGER NOT NULL, finished_ms INTEGER,
    status TEXT NOT NULL, args TEXT, stats TEXT
);
CREATE TABLE IF NOT EXISTS run_procs (
    run_id TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL, proc_token TEXT,
    heartbeat_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    ts_ms INTEGER NOT NULL, run_id TEXT, kind TEXT NOT NULL, dataset TEXT, exchange TEXT,
    category TEXT, symbol TEXT, timeframe TEXT, start_ms INTEGER, end_ms INTEGER, detail TEXT
);
"""


@dataclass(frozen=True, slots=True)
class Coverage:
    """One recorded range of a series."""

    start_ms: int
    end_ms: int
    status: Status
    updated_ms: int
    run_id: str | None = None
    detail: str | None = None


def _key(sid: SeriesId) -> tuple[str, str, str, str, str]:
    return (sid.dataset, sid.exchange, sid.category, sid.symbol, sid.timeframe.name if sid.timeframe else "")


_WHERE = "dataset = ? AND exchange = ? AND category = ? AND symbol = ? AND timeframe = ?"


class Ledger:
    """The coverage ledger of one lake.

    Args:
        root: The lake root; the ledger lives in ``root/_meta/ledger.sqlite``.
    """

    def __init__(self, root: Path) -> None:
        self.path = Path(root) / META_DIR / "ledger.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = open_wal(self.path, script=_SCHEMA)

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _refresh(self) -> None:
        """Bring the local state up to date before a read (a shared ledger replays new entries)."""

    def _read(self, query: str, params: tuple = ()) -> list[tuple]:
        self._refresh()
        return self._db.execute(query, params).fetchall()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # ----------------------------------------------------------------- coverage

    def record(
        self,
        sid: SeriesId,
        start_ms: int,
        end_ms: int,
        status: Status | str,
        *,
        detail: str | None = None,
        run_id: str | None = None,
    ) -> None:
        """Record that ``[start_ms, end_ms)`` of ``sid`` was fetched with ``status``.

        The newest knowledge wins over the range, except that ``failed`` never overrides
        ``present`` or ``empty`` (a failed re-fetch does not un-store data).
        """
        self.record_many(sid, [(start_ms, end_ms)], status, detail=detail, run_id=run_id)

    def record_many(
        self,
        sid: SeriesId,
        ranges: list[tuple[int, int]],
        status: Status | str,
        *,
        detail: str | None = None,
        run_id: str | None = None,
    ) -> None:
        """:meth:`record` for many ranges of one series in one transaction and one pass (the
        thousands of empty runs of a day of 1s candles cost one commit, not thousands)."""
        status = Status(status)
        if not merge(ranges):
            return
        self._submit({"op": "record", "key": list(_key(sid)), "ranges": [list(r) for r in merge(ranges)],
                      "status": status.value, "now": get_clock().now_ms(), "run_id": run_id, "detail": detail})

    def _submit(self, op: dict[str, Any]) -> None:
        """Apply one change (a plain dict, so a shared ledger can log and replay it)."""
        with self._tx() as db:
            _apply(db, op)

    def forget(self, sid: SeriesId, start_ms: int, end_ms: int) -> None:
        """Drop what is recorded over ``[start_ms, end_ms)`` (so that ingest fetches it again)."""
        self._submit({"op": "forget", "key": list(_key(sid)), "start": start_ms, "end": end_ms})

    def ranges(self, sid: SeriesId, start_ms: int | None = None, end_ms: int | None = None) -> list[Coverage]:
        """Recorded ranges of ``sid`` overlapping ``[start_ms, end_ms)``, in time order."""
        lo = -(2**62) if start_ms is None else start_ms
        hi = 2**62 if end_ms is None else end_ms
        self._refresh()
        rows = [r for r in _touching(self._db, _key(sid), lo, hi) if r[1] > lo and r[0] < hi]
        return [Coverage(s, e, Status(st), up, run, det) for s, e, st, up, run, det in rows]

    def missing(self, sid: SeriesId, start_ms: int, end_ms: int) -> list[Interval]:
        """Parts of ``[start_ms, end_ms)`` that are neither present nor verified empty."""
        done = [(c.start_ms, c.end_ms) for c in self.ranges(sid, start_ms, end_ms) if c.status.value in _DONE]
        return subtract([(start_ms, end_ms)], done)

    def covered(self, sid: SeriesId, start_ms: int, end_ms: int, status: Status | str) -> list[Interval]:
        """Parts of ``[start_ms, end_ms)`` recorded with ``status``."""
        st = Status(status)
        got = [(max(c.start_ms, start_ms), min(c.end_ms, end_ms)) for c in self.ranges(sid, start_ms, end_ms) if c.status is st]
        return merge(got)

    def table(self) -> pl.DataFrame:
        """Every recorded range as a frame (the DuckDB ``coverage`` view)."""
        rows = self._read("SELECT * FROM coverage ORDER BY dataset, exchange, category, symbol, timeframe, start_ms")
        schema = {
            "dataset": pl.String, "exchange": pl.String, "category": pl.String, "symbol": pl.String,
            "timeframe": pl.String, "start_ms": pl.Int64, "end_ms": pl.Int64, "status": pl.String,
            "updated_ms": pl.Int64, "run_id": pl.String, "detail": pl.String,
        }
        df = pl.DataFrame(rows, schema=schema, orient="row")
        return df.with_columns(
            pl.col("start_ms").cast(pl.Datetime("ms", "UTC")).alias("start"),
            pl.col("end_ms").cast(pl.Datetime("ms", "UTC")).alias("end"),
        )

    # ----------------------------------------------------------------- runs and events

    def start_run(self, kind: str, args: dict[str, Any]) -> str:
        """Open a run record (``ingest``, ``stream``, ``repair`` ...) owned by this process;
        return its id. Runs whose process is gone are marked ``killed`` first
        (:meth:`reap_dead_runs`)."""
        self.reap_dead_runs()
        now = get_clock().now_ms()
        run_id = f"{now}-{uuid.uuid4().hex[:8]}"
        pid = os.getpid()
        self._submit({"op": "run_start", "run_id": run_id, "kind": kind, "now": now,
                      "args": json.dumps(args, default=str), "host": socket.gethostname(), "pid": pid,
                      "token": process_token(pid)})
        return run_id

    def heartbeat(self, run_id: str) -> None:
        """Record that ``run_id``'s process is still alive (runners call it every
        :data:`RUN_HEARTBEAT_S`)."""
        self._submit({"op": "heartbeat", "run_id": run_id, "now": get_clock().now_ms()})

    def reap_dead_runs(self, *, stale_ms: int = RUN_STALE_MS) -> list[str]:
        """Mark ``killed`` every ``running`` run whose process is gone; return their ids.

        A run of this host is dead when its pid is not alive, or is alive as another process (a
        recycled pid: the start-time token differs). A run of another host, or one recorded
        without an owner (by an older marketlake), is dead when its last sign of life (heartbeat,
        else its start) is older than ``stale_ms``. A killed run's ``finished_ms`` is that last
        sign of life: the run ended some time after it.
        """
        host = socket.gethostname()
        now = get_clock().now_ms()
        rows = self._read(
            "SELECT r.run_id, r.started_ms, p.host, p.pid, p.proc_token, p.heartbeat_ms "
            "FROM runs r LEFT JOIN run_procs p USING (run_id) WHERE r.status = 'running'"
        )
        dead: list[tuple[int, str]] = []
        for run_id, started, run_host, pid, token, beat in rows:
            last_seen = beat if beat is not None else started
            if run_host == host and pid is not None:
                alive = _process_alive(pid) and (token is None or process_token(pid) in (None, token))
            else:
                alive = now - last_seen <= stale_ms
            if not alive:
                dead.append((last_seen, run_id))
        if dead:
            self._submit({"op": "reap", "dead": [list(d) for d in dead]})
        return [run_id for _, run_id in dead]

    def finish_run(self, run_id: str, status: str, stats: dict[str, Any]) -> None:
        """Close a run record with its outcome (``ok``, ``failed``, ``interrupted``) and figures."""
        self._submit({"op": "finish", "run_id": run_id, "now": get_clock().now_ms(), "status": status,
                      "stats": json.dumps(stats, default=str)})

    def runs(self) -> pl.DataFrame:
        """Every run, newest first, with its owner (host, pid) and last heartbeat when known."""
        rows = self._read(
            "SELECT r.run_id, r.kind, r.started_ms, r.finished_ms, r.status, r.args, r.stats, "
            "p.host, p.pid, p.heartbeat_ms FROM runs r LEFT JOIN run_procs p USING (run_id) "
            "ORDER BY r.started_ms DESC"
        )
        return pl.DataFrame(
            rows,
            schema={"run_id": pl.String, "kind": pl.String, "started_ms": pl.Int64, "finished_ms": pl.Int64,
                    "status": pl.String, "args": pl.String, "stats": pl.String, "host": pl.String,
                    "pid": pl.Int64, "heartbeat_ms": pl.Int64},
            orient="row",
        )

    def event(
        self,
        kind: str,
        *,
        sid: SeriesId | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        detail: str | None = None,
        run_id: str | None = None,
    ) -> None:
        """Log an event (``disconnect``, ``backfill``, ``quarantine`` ...)."""
        key: tuple = _key(sid) if sid is not None else (None,) * 5
        self._submit({"op": "event", "row": [get_clock().now_ms(), run_id, kind, *key, start_ms, end_ms, detail]})

    def events(self, kind: str | None = None) -> pl.DataFrame:
        """Logged events, oldest first (optionally of one kind)."""
        q = "SELECT * FROM events" + (" WHERE kind = ?" if kind else "") + " ORDER BY ts_ms"
        rows = self._read(q, (kind,) if kind else ())
        return pl.DataFrame(
            rows,
            schema={"ts_ms": pl.Int64, "run_id": pl.String, "kind": pl.String, "dataset": pl.String,
                    "exchange": pl.String, "category": pl.String, "symbol": pl.String, "timeframe": pl.String,
                    "start_ms": pl.Int64, "end_ms": pl.Int64, "detail": pl.String},
            orient="row",
        )


def _apply(db: sqlite3.Connection, op: dict[str, Any]) -> None:
    """Apply one change to the ledger's tables. Deterministic: every value it writes is in
    ``op`` (times, ids, owners), so replicas replaying the same changes in the same order agree."""
    kind = op["op"]
    if kind == "record":
        key = tuple(op["key"])
        status = Status(op["status"])
        pieces = [(int(a), int(b)) for a, b in op["ranges"]]
        lo, hi = pieces[0][0], pieces[-1][1]
        rows = _touching(db, key, lo, hi)
        if status is Status.FAILED:
            pieces = subtract(pieces, [(s, e) for s, e, st, *_ in rows if st in _DONE])
        keep = [(s, e, *rest) for (s0, e0, *rest) in rows for s, e in _minus_sorted(s0, e0, pieces)]
        new = keep + [(s, e, status.value, op["now"], op["run_id"], op["detail"]) for s, e in pieces]
        first = rows[0][0] if rows else lo
        db.execute(f"DELETE FROM coverage WHERE {_WHERE} AND start_ms >= ? AND start_ms <= ?", (*key, first, hi))
        db.executemany(
            "INSERT INTO coverage VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(*key, *row) for row in _coalesce(new)],
        )
    elif kind == "forget":
        key = tuple(op["key"])
        start_ms, end_ms = op["start"], op["end"]
        rows = db.execute(
            f"SELECT start_ms, end_ms, status, updated_ms, run_id, detail FROM coverage "
            f"WHERE {_WHERE} AND end_ms > ? AND start_ms < ?",
            (*key, start_ms, end_ms),
        ).fetchall()
        db.execute(f"DELETE FROM coverage WHERE {_WHERE} AND end_ms > ? AND start_ms < ?", (*key, start_ms, end_ms))
        rest = [
            (*key, rs, re_, st, up, run, det)
            for s, e, st, up, run, det in rows
            for rs, re_ in subtract([(s, e)], [(start_ms, end_ms)])
        ]
        db.executemany("INSERT INTO coverage VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rest)
    elif kind == "run_start":
        db.execute("INSERT OR IGNORE INTO runs VALUES (?, ?, ?, NULL, 'running', ?, NULL)",
                   (op["run_id"], op["kind"], op["now"], op["args"]))
        db.execute("INSERT OR IGNORE INTO run_procs VALUES (?, ?, ?, ?, ?)",
                   (op["run_id"], op["host"], op["pid"], op["token"], op["now"]))
    elif kind == "heartbeat":
        db.execute("UPDATE run_procs SET heartbeat_ms = ? WHERE run_id = ?", (op["now"], op["run_id"]))
    elif kind == "reap":
        db.executemany("UPDATE runs SET status = 'killed', finished_ms = ? WHERE run_id = ? AND status = 'running'",
                       [tuple(d) for d in op["dead"]])
    elif kind == "finish":
        db.execute("UPDATE runs SET finished_ms = ?, status = ?, stats = ? WHERE run_id = ?",
                   (op["now"], op["status"], op["stats"], op["run_id"]))
    elif kind == "event":
        db.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", tuple(op["row"]))
    else:
        raise ValueError(f"unknown ledger change {kind!r}")


def _process_alive(pid: int) -> bool:
    """True when a process ``pid`` exists on this host (signal 0 probes without signalling)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by another user
    except OSError:
        return False
    return True


def process_token(pid: int) -> str | None:
    """What tells process ``pid`` apart from a later one given the same pid: the boot id and the
    process's start time (Linux ``/proc``); None where that is not available, or it is gone."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 is the start time; field 2 (the command name) may hold spaces and parentheses,
    # so count from the last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    return f"{boot}:{fields[19]}" if len(fields) > 19 else None


def _touching(db: sqlite3.Connection, key: tuple[str, ...], lo: int, hi: int) -> list[tuple]:
    """Rows of a series overlapping or touching ``[lo, hi]``, in time order.

    Ranges of a series never overlap, so at most one starts before ``lo`` and reaches it: two
    index seeks instead of a scan of every earlier range.
    """
    cols = "start_ms, end_ms, status, updated_ms, run_id, detail"
    prev = db.execute(
        f"SELECT {cols} FROM coverage WHERE {_WHERE} AND start_ms < ? ORDER BY start_ms DESC LIMIT 1", (*key, lo)
    ).fetchone()
    rest = db.execute(
        f"SELECT {cols} FROM coverage WHERE {_WHERE} AND start_ms >= ? AND start_ms <= ? ORDER BY start_ms",
        (*key, lo, hi),
    ).fetchall()
    return ([prev] if prev is not None and prev[1] >= lo else []) + rest


def _minus_sorted(s: int, e: int, cut: list[Interval]) -> list[Interval]:
    """``[s, e)`` minus ``cut`` (sorted, disjoint), finding the overlapping cuts by bisection."""
    i = max(bisect.bisect_right(cut, (s, 2**63)) - 1, 0)
    out: list[Interval] = []
    cur = s
    while i < len(cut) and cut[i][0] < e:
        cs, ce = cut[i]
        if ce > cur:
            if cs > cur:
                out.append((cur, cs))
            cur = ce
        i += 1
    if cur < e:
        out.append((cur, e))
    return out


def _coalesce(rows: list[tuple]) -> list[tuple]:
    """Sort ranges and join touching ones of equal status (the later one's metadata wins)."""
    out: list[list] = []
    for row in sorted(rows, key=lambda r: r[0]):
        if out and out[-1][2] == row[2] and out[-1][1] >= row[0]:
            prev = out[-1]
            newer = row if row[3] >= prev[3] else prev
            out[-1] = [prev[0], max(prev[1], row[1]), row[2], newer[3], newer[4], newer[5]]
        else:
            out.append(list(row))
    return [tuple(r) for r in out]
