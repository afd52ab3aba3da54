"""The coverage ledger of a lake on object storage: a log of changes in the lake, replicas per machine.

On a local disk the ledger is one SQLite file beside the tables (:mod:`marketlake.store.ledger`).
A lake on S3 has writers on several machines, and nothing a writer plans from may live on one
machine's disk only. So there the ledger is kept the way the tables are, as a log:

* every change (a recorded range, a forgotten one, a run opened, a heartbeat, a run closed, an
  event) is a JSON entry ``_meta/ledger/<version>.json`` in the lake, written put-if-absent: of
  two machines racing for a version exactly one wins, the other replays the winner's entry and
  takes the next version. The versions give every machine the same order of changes;
* each machine keeps a replica: the same SQLite tables as the local ledger, in its own state
  directory (``settings.state_dir``), with the version it has applied. Before every read and
  every write it applies the entries after that version (probing for the next one: a HEAD
  request, usually a miss). A change applies deterministically (all its values are in the
  entry), so every replica that applied version *v* holds the same ledger;
* every :data:`CHECKPOINT_EVERY` versions a machine uploads its replica as
  ``_meta/ledger/checkpoints/<version>.sqlite`` and points ``_meta/ledger/_last_checkpoint`` at
  it, so a new machine starts from there instead of replaying the whole history.

Several processes of one machine share its replica: a version is applied inside one SQLite
transaction that first checks the replica is exactly one version behind, so no change is applied
twice. The replica is only a cache: deleting it costs a replay, never data.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Final

from marketlake._sqlite import open_wal
from marketlake.errors import LakeError
from marketlake.store.layout import META_DIR
from marketlake.store.ledger import _SCHEMA, Ledger, _apply
from marketlake.store.storage import Storage

__all__ = ["CHECKPOINT_EVERY", "SharedLedger"]

LEDGER_LOG: Final = f"{META_DIR}/ledger"
CHECKPOINT_EVERY: Final = 500
_REPLICA: Final = "CREATE TABLE IF NOT EXISTS replica (name TEXT PRIMARY KEY, value TEXT NOT NULL);"
_ATTEMPTS: Final = 1000


def _entry(version: int) -> str:
    return f"{LEDGER_LOG}/{version:020d}.json"


class SharedLedger(Ledger):
    """The ledger of a lake on object storage (see the module docstring).

    Args:
        storage: The lake's storage; the replica lives in ``storage.state_dir``.
    """

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.path = Path(storage.state_dir) / "ledger-replica.sqlite"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = open_wal(self.path, script=_SCHEMA + _REPLICA)
        except (OSError, sqlite3.Error) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise LakeError(
                f"cannot keep this machine's replica of the ledger of {storage.display} in {self.path.parent}: "
                f"{reason} (set state_dir / MARKETLAKE_STATE_DIR to a writable directory)"
            ) from None
        self._check_identity()

    # ------------------------------------------------------------------ replica state

    def _get(self, name: str, default: str) -> str:
        row = self._db.execute("SELECT value FROM replica WHERE name = ?", (name,)).fetchone()
        return default if row is None else str(row[0])

    def _applied(self) -> int:
        return int(self._get("version", "-1"))

    def _log_identity(self) -> str:
        info = self.storage.head(_entry(0))
        return "" if info is None else f"{info.mtime}:{info.size}"

    def _check_identity(self) -> None:
        """A replica of another life of the lake (deleted and created again) starts over."""
        identity = self._log_identity()
        if self._applied() >= 0 and self._get("identity", "") != identity:
            with self._tx() as db:
                for table in ("coverage", "runs", "run_procs", "events", "replica"):
                    db.execute(f"DELETE FROM {table}")

    # ------------------------------------------------------------------ replay

    def _refresh(self) -> None:
        """Apply every entry after the replica's version (a checkpoint first, when far behind)."""
        applied = self._applied()
        if applied < 0:
            applied = self._load_checkpoint()
        while True:
            try:
                body = self.storage.read(_entry(applied + 1))
            except FileNotFoundError:
                return
            self._apply_version(applied + 1, json.loads(body))
            applied = self._applied()

    def _apply_version(self, version: int, ops: list[dict[str, Any]]) -> None:
        with self._tx() as db:
            if int(self._get("version", "-1")) != version - 1:
                return  # another process of this machine applied it meanwhile
            for op in ops:
                _apply(db, op)
            db.execute("INSERT OR REPLACE INTO replica VALUES ('version', ?)", (str(version),))
            if version == 0:
                db.execute("INSERT OR REPLACE INTO replica VALUES ('identity', ?)", (self._log_identity(),))

    def _submit(self, op: dict[str, Any]) -> None:
        body = json.dumps([op], separators=(",", ":")).encode()
        for _ in range(_ATTEMPTS):
            self._refresh()
            version = self._applied() + 1
            if self.storage.put_if_absent(_entry(version), body):
                self._apply_version(version, [op])
                if version and version % CHECKPOINT_EVERY == 0:
                    self._write_checkpoint(version)
                return
            # Another machine took that version: apply its change, then try the next one.
        from marketlake.errors import LakeWriteError

        raise LakeWriteError(f"{self.storage.display}: gave up recording to the ledger after {_ATTEMPTS} races")

    # ------------------------------------------------------------------ checkpoints

    def _write_checkpoint(self, version: int) -> None:
        """Upload this replica (at ``version``) so new machines need not replay everything."""
        tmp = self.path.with_name(f".checkpoint-{version}.sqlite")
        try:
            tmp.unlink(missing_ok=True)
            self._db.execute("VACUUM INTO ?", (str(tmp),))
            if int(self._get("version", "-1")) != version:
                return  # (moved on meanwhile: the next checkpoint will do)
            key = f"{LEDGER_LOG}/checkpoints/{version:020d}.sqlite"
            self.storage.put_if_absent(key, tmp.read_bytes())
            self.storage.put(f"{LEDGER_LOG}/_last_checkpoint", json.dumps({"version": version}).encode())
        except (OSError, sqlite3.Error):
            return  # a checkpoint only saves replay time; the next one tries again
        finally:
            tmp.unlink(missing_ok=True)

    def _load_checkpoint(self) -> int:
        """Start an empty replica from the newest checkpoint; return the version it holds."""
        try:
            version = int(json.loads(self.storage.read(f"{LEDGER_LOG}/_last_checkpoint"))["version"])
            data = self.storage.read(f"{LEDGER_LOG}/checkpoints/{version:020d}.sqlite")
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return -1
        tmp = self.path.with_name(f".restore-{version}.sqlite")
        tmp.write_bytes(data)
        try:
            src = sqlite3.connect(tmp)
            try:
                tables = ("coverage", "runs", "run_procs", "events")
                rows = {t: src.execute(f"SELECT * FROM {t}").fetchall() for t in tables}
            finally:
                src.close()
        except sqlite3.Error:
            return -1
        finally:
            tmp.unlink(missing_ok=True)
        with self._tx() as db:
            if int(self._get("version", "-1")) >= 0:
                return self._applied()  # another process restored meanwhile
            for t, data_rows in rows.items():
                if data_rows:
                    marks = ", ".join("?" * len(data_rows[0]))
                    db.executemany(f"INSERT INTO {t} VALUES ({marks})", data_rows)
            db.execute("INSERT OR REPLACE INTO replica VALUES ('version', ?)", (str(version),))
            db.execute("INSERT OR REPLACE INTO replica VALUES ('identity', ?)", (self._log_identity(),))
        return version
