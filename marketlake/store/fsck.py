"""``fsck``: check each table's log against storage (and with ``fix``, act on what is provably bad).

For every file the newest version references:

* ``missing``: not on disk (a hand deleted it, a disk lost it);
* ``unreadable``: does not decode, or has columns of another dataset;
* ``mismatch``: decodes, but its size, row count or ``ts`` range differ from what the log
  recorded at commit, or it holds rows outside its partition — reported, never touched: a reader
  can still read it and nobody can say which side is right;

and for every other file under a table:

* ``orphan``: no version in the log ever referenced it (a writer that died before its commit, a
  planted file) — deleted by ``fix`` once older than the vacuum retention, never sooner (it may
  be a commit in flight).

``fix`` commits the removal of ``missing`` and ``unreadable`` references (an unreadable file is
moved to ``_meta/quarantine/``, never deleted). The coverage ledger keeps claiming their ranges,
so ``check`` reports them as fetched-but-not-stored and ``repair`` re-fetches them from the
exchange. It then vacuums.
A referenced file a reader can read is never removed.
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq

from marketlake.store.datasets import spec
from marketlake.store.layout import DATASETS, META_DIR, SeriesId
from marketlake.store.storage import LocalStorage, Storage
from marketlake.store.table import CommitConflict, FileEntry, data_arrow_schema, partition_values

if TYPE_CHECKING:
    from marketlake.store.lake import Lake

__all__ = ["FsckIssue", "FsckReport", "run_fsck"]


@dataclass(frozen=True, slots=True)
class FsckIssue:
    """One finding. ``fixed`` says whether ``fix`` dealt with it."""

    kind: str
    path: str
    detail: str
    fixed: bool = False


@dataclass(slots=True)
class FsckReport:
    """What fsck found.

    Attributes:
        files_checked: Referenced data files decoded and matched against the log.
        rows_checked: Rows in them.
        issues: Every finding, in walk order.
        vacuumed: Files deleted by the vacuum of ``fix``.
        versions: The version checked, per dataset.
    """

    files_checked: int = 0
    rows_checked: int = 0
    issues: list[FsckIssue] = field(default_factory=list)
    vacuumed: int = 0
    versions: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when nothing needs attention (fixed issues count as dealt with)."""
        return all(i.fixed for i in self.issues)

    @property
    def trash_purged(self) -> int:
        """Files deleted by vacuum (the name of the previous format's report)."""
        return self.vacuumed

    def to_dict(self) -> dict:
        """Plain data for ``--json``."""
        return {
            "ok": self.ok,
            "files_checked": self.files_checked,
            "rows_checked": self.rows_checked,
            "vacuumed": self.vacuumed,
            "versions": self.versions,
            "issues": [
                {"kind": i.kind, "path": i.path, "detail": i.detail, "fixed": i.fixed}
                for i in self.issues
            ],
        }


def _check_file(storage: Storage, key: str, f: FileEntry, dataset: str, sid: SeriesId | None) -> tuple[str, str] | None:
    """None if the file matches the log, else (kind, what is wrong)."""
    try:
        info = storage.head(key)
    except OSError as exc:
        return "unreadable", f"cannot stat: {exc.strerror}"
    if info is None:
        return "missing", "referenced by the log but not on disk"
    size = info.size
    try:
        source: Any = storage.uri(key) if storage.is_local else io.BytesIO(storage.read(key))
        table = pq.ParquetFile(source).read()
    except Exception as exc:  # any decoding failure means unreadable
        text = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        return "unreadable", f"cannot decode: {text}"
    expected = data_arrow_schema(dataset).names
    names = table.schema.names
    if [n for n in expected if n in names] != names or any(c not in names for c in spec(dataset).required):
        return "unreadable", f"columns {names} are not {expected}"
    if size != f.size:
        return "mismatch", f"{size} bytes on disk, {f.size} in the log"
    if table.num_rows != f.rows:
        return "mismatch", f"{table.num_rows} rows on disk, {f.rows} in the log"
    if table.num_rows:
        ts = table.column("ts").cast("int64")
        div = 1 if spec(dataset).ts_unit == "ms" else 1000
        first, last = min(ts.to_numpy()) // div, max(ts.to_numpy()) // div
        if f.first_ms is not None and (first, last) != (f.first_ms, f.last_ms):
            return "mismatch", "ts range differs from the log"
        if sid is not None:
            lo, hi = sid.period.bounds(f.key)
            if first < lo or last >= hi:
                return "mismatch", f"rows outside partition {f.key}"
    return None


def ever_referenced(storage: Storage, table: str) -> set[str]:
    """Every path any version still in the log added or removed (checkpoint and commits)."""
    log = f"{table}/_delta_log"
    out: set[str] = set()
    names = sorted(o.key.rsplit("/", 1)[-1] for o in storage.list(log))
    for name in names:
        key = f"{log}/{name}"
        if name.endswith(".json") and name[:20].isdigit():
            try:
                body = storage.read(key)
            except FileNotFoundError:
                continue  # (cleaned up meanwhile)
            for line in body.splitlines():
                if b'"add"' not in line and b'"remove"' not in line:
                    continue
                action: dict[str, Any] = json.loads(line)
                for kind in ("add", "remove"):
                    if kind in action and action[kind]:
                        out.add(_unquote(action[kind]["path"]))
        elif ".checkpoint" in name and name.endswith(".parquet"):
            try:
                table = pq.read_table(io.BytesIO(storage.read(key)), columns=["add", "remove"])
            except FileNotFoundError:
                continue
            for col in ("add", "remove"):
                for item in table.column(col).to_pylist():
                    if item and item.get("path"):
                        out.add(_unquote(item["path"]))
    return out


def _unquote(path: str) -> str:
    from urllib.parse import unquote

    return unquote(path)


def _storage_files(storage: Storage, table: str) -> list[tuple[str, float]]:
    """(path relative to the table root, modification time) of every object under the table
    but its log."""
    out = []
    for o in storage.list(table):
        rel = o.key[len(table) + 1:]
        if not rel.startswith("_delta_log/"):
            out.append((rel, o.mtime))
    return sorted(out)


def _sid_of(dataset: str, values: dict[str, Any]) -> SeriesId | None:
    try:
        return SeriesId.of(
            dataset, exchange=values["exchange"], category=values["category"], symbol=values["symbol"],
            timeframe=values.get("timeframe") if spec(dataset).has_timeframe else None,
        )
    except (KeyError, ValueError):
        return None


def run_fsck(
    lake: Lake,
    *,
    fix: bool = False,
    series: set[SeriesId] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> FsckReport:
    """Check every table of ``lake``; see the module docstring.

    ``series`` limits the check to the referenced files of those series (no orphan scan, no
    vacuum): what ``repair`` runs for the series ``check`` found damaged. ``progress(done, total)``
    is called after each referenced file is checked.
    """
    report = FsckReport()
    retention = lake.settings.gc_grace_seconds
    # One progress total across every table, so a bar does not restart per table.
    total = sum(lake.table(ds).snapshot().files.height for ds in DATASETS if lake.table(ds).exists())
    done = 0
    for dataset in DATASETS:
        table = lake.table(dataset)
        if not table.exists():
            continue
        snap = table.snapshot()
        report.versions[dataset] = snap.version
        bad: list[tuple[SeriesId, FileEntry, str]] = []
        for row in snap.files.iter_rows(named=True):
            done += 1
            if progress is not None:
                progress(done, total)
            f = FileEntry(row["path"], row["size"], row["rows"] or 0, row["first_ms"], row["last_ms"], row["date"])
            sid = _sid_of(dataset, row)
            if series is not None and sid not in series:
                continue
            found = _check_file(lake.storage, f"{dataset}/{f.path}", f, dataset, sid)
            if found is None:
                report.files_checked += 1
                report.rows_checked += f.rows
                continue
            kind, detail = found
            report.issues.append(FsckIssue(kind, f"{table.path}/{f.path}", detail, fix and kind != "mismatch" and sid is not None))
            if kind != "mismatch" and sid is not None:
                bad.append((sid, f, kind))
        if fix and bad:
            _drop_bad(lake, dataset, bad)
        if series is not None:
            continue
        referenced = set(snap.files.get_column("path").to_list())
        known = ever_referenced(lake.storage, dataset)
        now = time.time()
        for rel, mtime in _storage_files(lake.storage, dataset):
            if rel in referenced or rel in known:
                continue
            old = now - mtime >= retention
            if fix and old:
                lake.storage.delete(f"{dataset}/{rel}")
            report.issues.append(FsckIssue(
                "orphan", f"{table.path}/{rel}",
                "no version of the log references it" + ("" if old else f" (younger than the {retention:.0f} s retention: kept)"),
                fix and old,
            ))
    if fix and series is None:
        report.vacuumed = len(lake.vacuum())
    return report


def _drop_bad(lake: Lake, dataset: str, bad: list[tuple[SeriesId, FileEntry, str]]) -> None:
    """Commit the removal of missing/unreadable references; quarantine the unreadable files."""
    table = lake.table(dataset)
    for _ in range(50):
        snap = table.snapshot()
        current = {(sid, f.key): frozenset(x.path for x in snap.partition(sid, f.key)) for sid, f, _ in bad}
        live = [(sid, f, kind) for sid, f, kind in bad if f.path in current[(sid, f.key)]]
        if not live:
            return
        try:
            table.commit([], [(f, partition_values(sid, f.key)) for sid, f, _ in live],
                         {k: v for k, v in current.items()}, operation="fsck_fix")
            break
        except CommitConflict:
            continue
    storage = lake.storage
    for sid, f, kind in live:
        src = f"{dataset}/{f.path}"
        if kind == "unreadable" and storage.exists(src):
            target = f"{META_DIR}/quarantine/{dataset}/{f.path}"
            if isinstance(storage, LocalStorage):
                dest = storage.path(target)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.rename(storage.path(src), dest)
            else:  # an object store has no rename: copy, then delete the original
                storage.put(target, storage.read(src))
                storage.delete(src)
