"""One Delta Lake table per dataset: its snapshots (file lists) and optimistic commits.

The lake keeps each dataset (``candles``, ``trades``) as one Delta table at ``<root>/<dataset>``,
partitioned by the series' hive columns and ``date`` (the partition key of the series' period).
marketlake writes the Parquet files itself (its encodings, see :mod:`marketlake.store.files`) and
commits them through delta-rs as ``add``/``remove`` actions, so every reader that speaks Delta
(delta-rs, Polars ``scan_delta``, Spark, Trino, DuckDB's delta extension) sees exactly the
committed versions.

**Concurrency** is optimistic, per partition. A writer plans from a snapshot (version *v*), writes
its new files, then commits: under the table's in-process lock it brings the table to the newest
version, checks that every partition it planned from still has exactly the files it read
(``expect``), and commits at newest + 1 with delta-rs's own retries off. If another writer (thread,
process or machine) committed in between, delta-rs refuses (put-if-absent on the log entry) and
the check runs again; if a planned partition changed, :class:`CommitConflict` tells the writer to
re-read, re-merge and try again. Commits touching other partitions never force a re-merge.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import random
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import polars as pl
import pyarrow as pa

from marketlake.errors import LakeError, LakeWriteError
from marketlake.store import logwriter, statecache
from marketlake.store.datasets import spec
from marketlake.store.layout import SeriesId, partition_columns
from marketlake.store.storage import Storage

__all__ = [
    "CommitConflict",
    "DatasetTable",
    "FileEntry",
    "NewFile",
    "Snapshot",
    "TABLE_CONFIGURATION",
]

# Log entries (versions, time travel) are kept for 7 days; named snapshots keep their own file
# manifests (store/snapshots.py), so they outlive the log. delta-rs writes a checkpoint every
# 100 commits (the protocol default) from its post-commit hook, which keeps a table open cheap.
TABLE_CONFIGURATION: Final[dict[str, str | None]] = {
    "delta.logRetentionDuration": "interval 7 days",
    "delta.checkpointInterval": "100",
}
_COMMIT_ATTEMPTS: Final = 200
_SAVE_EVERY: Final = 50  # refresh the table-state cache every this many versions


class CommitConflict(Exception):
    """A partition a writer planned from changed before its commit: re-read, re-merge, retry."""


@dataclass(frozen=True, slots=True)
class FileEntry:
    """A data file the log references.

    Attributes:
        path: Relative to the table root (``exchange=bybit/.../date=2024-01/part-….parquet``).
        size: Bytes, as recorded in the log.
        rows: Row count from the log's statistics.
        first_ms: Smallest ``ts`` in epoch ms (None when the log has no statistics).
        last_ms: Largest ``ts`` in epoch ms.
        key: The partition key (``date`` value).
    """

    path: str
    size: int
    rows: int
    first_ms: int | None
    last_ms: int | None
    key: str


@dataclass(frozen=True, slots=True)
class NewFile:
    """A data file written by this writer, to be added by a commit."""

    path: str
    size: int
    rows: int
    first_us: int
    last_us: int
    partition_values: dict[str, str]


def data_arrow_schema(dataset: str) -> pa.Schema:
    """The columns stored in a data file of ``dataset`` (partition columns live in the paths)."""
    return spec(dataset).arrow_schema


def table_arrow_schema(dataset: str) -> pa.Schema:
    """The Delta table's schema: the data columns, then the partition columns (strings)."""
    base = data_arrow_schema(dataset)
    return pa.schema([*base, *(pa.field(c, pa.string()) for c in partition_columns(dataset))])


_SNAPSHOT_SCHEMA: Final = {
    "path": pl.String(), "size": pl.Int64(), "rows": pl.Int64(),
    "first_ms": pl.Int64(), "last_ms": pl.Int64(),
    "exchange": pl.String(), "category": pl.String(), "symbol": pl.String(),
    "timeframe": pl.String(), "date": pl.String(),
}


def empty_files_frame() -> pl.DataFrame:
    """A file list with no rows (a table that does not exist yet)."""
    return pl.DataFrame(schema=_SNAPSHOT_SCHEMA)


def files_frame_from_actions(actions: Any) -> pl.DataFrame:
    """The file list of a version from delta-rs's ``get_add_actions(flatten=True)``."""
    raw = pl.DataFrame(actions)
    if raw.height == 0:
        return empty_files_frame()

    def ms(col: str) -> pl.Expr:
        if col not in raw.columns:
            return pl.lit(None, dtype=pl.Int64)
        return pl.col(col).cast(pl.Datetime("us", "UTC")).dt.epoch("us").floordiv(1000)

    def part(name: str) -> pl.Expr:
        col = f"partition.{name}"
        return (pl.col(col) if col in raw.columns else pl.lit(None, dtype=pl.String)).alias(name)

    return raw.select(
        pl.col("path").cast(pl.String),
        pl.col("size_bytes").cast(pl.Int64).alias("size"),
        (pl.col("num_records") if "num_records" in raw.columns else pl.lit(None)).cast(pl.Int64).alias("rows"),
        ms("min.ts").alias("first_ms"),
        ms("max.ts").alias("last_ms"),
        part("exchange"), part("category"), part("symbol"), part("timeframe"), part("date"),
    ).sort("path")


@dataclass(slots=True)
class Snapshot:
    """The files of one table version (immutable; lookups are cached).

    Attributes:
        storage: The lake's storage.
        dataset: ``candles`` or ``trades``.
        version: The Delta version (-1 for a table that does not exist yet).
        files: One row per referenced file (see ``_SNAPSHOT_SCHEMA``).
    """

    storage: Storage
    dataset: str
    version: int
    files: pl.DataFrame
    _by_series: dict[SeriesId, dict[str, list[FileEntry]]] = field(default_factory=dict)
    _series: list[SeriesId] | None = None

    def series_ids(self) -> list[SeriesId]:
        """Every series with at least one file, in (exchange, category, symbol, timeframe) order."""
        if self._series is None:
            self._series = self._series_ids()
        return self._series

    def _series_ids(self) -> list[SeriesId]:
        has_tf = spec(self.dataset).has_timeframe
        cols = ["exchange", "category", "symbol"] + (["timeframe"] if has_tf else [])
        out: list[SeriesId] = []
        for row in self.files.select(cols).unique().sort(cols).iter_rows():
            try:
                out.append(SeriesId.of(
                    self.dataset, exchange=row[0], category=row[1], symbol=row[2],
                    timeframe=row[3] if has_tf else None,
                ))
            except ValueError:
                continue  # a name we would not write; fsck reports the files
        return out

    def partitions(self, sid: SeriesId) -> dict[str, list[FileEntry]]:
        """The series' files by partition key (keys in time order, files in path order)."""
        hit = self._by_series.get(sid)
        if hit is not None:
            return hit
        cond = (
            (pl.col("exchange") == sid.exchange) & (pl.col("category") == sid.category)
            & (pl.col("symbol") == sid.symbol)
        )
        if sid.timeframe is not None:
            cond = cond & (pl.col("timeframe") == sid.timeframe.name)
        out: dict[str, list[FileEntry]] = {}
        for path, size, rows, first, last, key in self.files.filter(cond).select(
            "path", "size", "rows", "first_ms", "last_ms", "date"
        ).iter_rows():
            out.setdefault(key, []).append(FileEntry(path, size, rows or 0, first, last, key))
        # Files of a partition in time order (appended files are strictly newer than the ones
        # before them), so concatenating them keeps ``ts`` sorted.
        hit = {k: sorted(out[k], key=lambda f: (f.first_ms if f.first_ms is not None else -(2**62), f.path))
               for k in sorted(out)}
        self._by_series[sid] = hit
        return hit

    def partition(self, sid: SeriesId, key: str) -> list[FileEntry]:
        """The files of one partition ([] when it holds nothing)."""
        return self.partitions(sid).get(key, [])


def _iso(us: int) -> str:
    return (dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _add_action(f: NewFile) -> Any:
    from deltalake.transaction import AddAction

    stats = json.dumps({
        "numRecords": f.rows,
        "minValues": {"ts": _iso(f.first_us)},
        "maxValues": {"ts": _iso(f.last_us)},
        "nullCount": {"ts": 0},
    })
    return AddAction(f.path, f.size, f.partition_values, int(time.time() * 1000), True, stats)


def _remove_action(f: FileEntry, sid_values: Mapping[str, str]) -> Any:
    from deltalake.transaction import RemoveAction

    return RemoveAction(
        path=f.path, data_change=True, deletion_timestamp=int(time.time() * 1000),
        size=f.size, partition_values=dict(sid_values),
    )


class DatasetTable:
    """The Delta table of one dataset under a lake root.

    Thread-safe: one lock serialises this object's use of its delta-rs handle (commits are short;
    data files are written outside it, in parallel).

    Args:
        storage: The lake's storage.
        dataset: ``candles`` or ``trades``.
        pinned: Read this fixed version instead of following the newest (read-only).
    """

    def __init__(self, storage: Storage, dataset: str, *, pinned: int | dt.datetime | None = None) -> None:
        self.storage = storage
        self.dataset = dataset
        # The table's location: a directory (local lake) or its ``s3://`` URL.
        self.path: Path | str = Path(storage.uri(dataset)) if storage.is_local else storage.uri(dataset)
        self.cache_dir = storage.state_dir  # the table-state cache: this machine's own
        self._pinned = pinned
        self._exists = False
        self._lock = threading.RLock()
        self._dt: Any = None
        self._snapshot: Snapshot | None = None
        self._saved = -(2**62)  # the version last written to the table-state cache
        self._plain: bool | None = None  # the table's protocol lets marketlake write its log

    # ------------------------------------------------------------------ reading

    def exists(self) -> bool:
        """True once the table's log exists (a table is never deleted by marketlake, so once
        seen it is not asked again: one request less per read on an object store)."""
        if not self._exists:
            self._exists = self.storage.has_prefix(f"{self.dataset}/_delta_log")
        return self._exists

    def _handle(self) -> Any:
        from deltalake import DeltaTable

        if self._dt is None:
            try:
                options = self.storage.delta_options()
                if isinstance(self._pinned, int):
                    self._dt = DeltaTable(str(self.path), version=self._pinned, storage_options=options)
                else:
                    self._dt = DeltaTable(str(self.path), storage_options=options)
                    if isinstance(self._pinned, dt.datetime):
                        self._dt.load_as_version(self._pinned)
            except Exception as exc:
                raise _lake_error(self.path, exc) from None
        return self._dt

    def snapshot(self) -> Snapshot:
        """The newest version's files (or the pinned version's); cached until the version moves.

        The newest version is found by listing the log; its file list comes from this object's
        previous snapshot or the lake's table-state cache plus the log entries since
        (:mod:`marketlake.store.statecache`), and only when neither can say it for certain from
        delta-rs (which replays the log from its last checkpoint).
        """
        with self._lock:
            if not self.exists():
                if self._pinned is not None:
                    raise LakeError(f"{self.path}: no {self.dataset} table to read as of {self._pinned}")
                return Snapshot(self.storage, self.dataset, -1, empty_files_frame())
            if self._pinned is None:
                fast = self._fast_snapshot()
                if fast is not None:
                    return fast
            handle = self._handle()
            if self._pinned is None:
                try:
                    handle.update_incremental()
                except Exception as exc:
                    raise _lake_error(self.path, exc) from None
            version = int(handle.version())
            if self._snapshot is None or self._snapshot.version != version:
                try:
                    frame = files_frame_from_actions(handle.get_add_actions(flatten=True))
                except Exception as exc:
                    raise _lake_error(self.path, exc) from None
                self._snapshot = Snapshot(self.storage, self.dataset, version, frame)
                if self._pinned is None:
                    statecache.save(self.storage, self.cache_dir, self.dataset, version, frame)
                    self._saved = version
            return self._snapshot

    def _fast_snapshot(self) -> Snapshot | None:
        if self._snapshot is None or self._snapshot.version < 0:
            # A fresh reader: the cache's version tells where to probe the log from (a few
            # requests on an object store, never a listing of the log).
            moved = statecache.load(self.storage, self.cache_dir, self.dataset, _SNAPSHOT_SCHEMA)
        else:
            newest = statecache.latest_version(self.storage, self.dataset, self._snapshot.version, known_exists=True)
            if newest < 0:
                return None
            if self._snapshot.version == newest:
                return self._snapshot
            moved = statecache.advance(self.storage, self.dataset, self._snapshot.version, self._snapshot.files,
                                       newest, _SNAPSHOT_SCHEMA)
        if moved is None:
            return None
        self._snapshot = Snapshot(self.storage, self.dataset, moved[0], moved[1])
        if moved[0] - self._saved >= _SAVE_EVERY:
            statecache.save(self.storage, self.cache_dir, self.dataset, moved[0], moved[1])
            self._saved = moved[0]
        return self._snapshot

    def version(self) -> int:
        """The newest (or pinned) version; -1 when the table does not exist."""
        return self.snapshot().version

    def history(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Commit infos, newest first (delta-rs's ``history``)."""
        if not self.exists():
            return []
        with self._lock:
            return list(self._current_handle().history(limit))

    # ------------------------------------------------------------------ writing

    def _create(self) -> None:
        from deltalake import Schema as DeltaSchema
        from deltalake.transaction import create_table_with_add_actions

        if self.storage.is_local:
            Path(self.path).mkdir(parents=True, exist_ok=True)
        try:
            create_table_with_add_actions(
                str(self.path), DeltaSchema.from_arrow(table_arrow_schema(self.dataset)), [],
                mode="ignore", partition_by=list(partition_columns(self.dataset)),
                configuration=TABLE_CONFIGURATION, storage_options=self.storage.delta_options(),
            )
        except Exception as exc:
            if not self.exists():  # (a concurrent creator winning is fine)
                raise LakeWriteError(f"cannot create the {self.dataset} table at {self.path}: {exc}") from None

    def ensure(self) -> None:
        """Create the table (an empty log) if it does not exist yet: before any data file is
        written, so a concurrent reader never sees data directories without a log."""
        if self._pinned is not None:
            raise LakeWriteError(f"this lake is read-only (as of {self._pinned})")
        if not self.exists():
            with self._lock:
                if not self.exists():
                    self._create()

    def commit(
        self,
        adds: Sequence[NewFile],
        removes: Sequence[tuple[FileEntry, Mapping[str, str]]],
        expect: Mapping[tuple[SeriesId, str], frozenset[str]],
        *,
        operation: str,
    ) -> int:
        """Commit ``adds`` and ``removes`` as one transaction; return the new version.

        Args:
            adds: Files already written under the table root.
            removes: Referenced files to drop, each with its partition values.
            expect: For every partition planned from, the paths it had when read.
            operation: Recorded in the commit info as ``marketlake.operation``.

        Raises:
            CommitConflict: a partition of ``expect`` changed since it was read.
            LakeWriteError: the commit could not be written.
        """
        if self._pinned is not None:
            raise LakeWriteError(f"this lake is read-only (as of {self._pinned})")
        from deltalake import CommitProperties
        from deltalake.exceptions import CommitFailedError

        actions = [*(_add_action(f) for f in adds), *(_remove_action(f, pv) for f, pv in removes)]
        props = CommitProperties(max_commit_retries=0, custom_metadata={"marketlake.operation": operation})
        schema = table_arrow_schema(self.dataset)
        with self._lock:
            if not self.exists():
                self._create()
            if self._plain is None:
                self._plain = logwriter.protocol_is_plain(self.storage, self.dataset)
            for attempt in range(_COMMIT_ATTEMPTS):
                snap = self.snapshot()
                for (sid, key), paths in expect.items():
                    if frozenset(f.path for f in snap.partition(sid, key)) != paths:
                        raise CommitConflict(f"{sid.label()} {key} changed at version {snap.version}")
                if self._plain and snap.version >= 0:
                    try:
                        won = logwriter.write_commit(
                            self.storage, self.dataset, snap.version + 1, adds, removes, operation=operation,
                            partition_by=partition_columns(self.dataset),
                        )
                    except OSError as exc:
                        raise LakeWriteError(f"cannot commit to {self.path}: {exc.strerror or exc}") from None
                    if not won:
                        # Another writer took the next version: re-check our partitions against it.
                        time.sleep(random.uniform(0, 0.002 * min(attempt + 1, 20)))
                        continue
                    return self._committed(snap, adds, removes)
                handle = self._handle()
                try:
                    handle.update_incremental()
                except Exception as exc:
                    raise _lake_error(self.path, exc) from None
                if int(handle.version()) != snap.version:
                    continue  # the log moved since the snapshot: validate against the newer one
                try:
                    handle.create_write_transaction(
                        actions, mode="append", schema=schema,
                        partition_by=list(partition_columns(self.dataset)), commit_properties=props,
                    )
                except CommitFailedError:
                    # Another writer took the next version: re-check our partitions against it.
                    time.sleep(random.uniform(0, 0.002 * min(attempt + 1, 20)))
                    continue
                except Exception as exc:
                    raise LakeWriteError(f"cannot commit to {self.path}: {_first_line(exc)}") from None
                return self._committed(snap, adds, removes)
        raise LakeWriteError(f"{self.path}: gave up committing after {_COMMIT_ATTEMPTS} concurrent commits")

    def _committed(
        self, snap: Snapshot, adds: Sequence[NewFile], removes: Sequence[tuple[FileEntry, Mapping[str, str]]]
    ) -> int:
        """Our commit is version ``snap.version + 1``, made of exactly these actions: derive its
        file list from the previous one instead of re-reading the log (no O(files) step per
        commit), keep the table-state cache fresh, and start a checkpoint when one is due."""
        version = snap.version + 1
        self._snapshot = Snapshot(self.storage, self.dataset, version, _apply(snap.files, adds, removes))
        if version - self._saved >= _SAVE_EVERY:
            statecache.save(self.storage, self.cache_dir, self.dataset, version, self._snapshot.files)
            self._saved = version
        if self._plain and logwriter.checkpoint_due(self.storage, self.dataset, version):
            logwriter.checkpoint_in_background(self.storage, self.dataset)
        return version

    def _current_handle(self) -> Any:
        """The delta-rs handle brought to the newest version (snapshots may come from the
        table-state cache, which leaves the handle where it was)."""
        handle = self._handle()
        if self._pinned is None:
            try:
                handle.update_incremental()
            except Exception as exc:
                raise _lake_error(self.path, exc) from None
        return handle

    def cleanup_log(self) -> None:
        """Delete log entries older than the log retention that a checkpoint makes unneeded."""
        with self._lock:
            if self.exists():
                self._current_handle().cleanup_metadata()

    def checkpoint(self) -> None:
        """Write a checkpoint at the newest version (opening the table then reads one file)."""
        with self._lock:
            if self.exists():
                self._current_handle().create_checkpoint()

    def vacuum_candidates(self, retention_s: float) -> list[str]:
        """Files storage holds that no version within the retention needs: removed files whose
        removal is older than it, and files never committed (a crashed writer's) older than it.

        delta-rs counts the retention in whole hours, so ``retention_s`` is rounded up. Paths are
        relative to the table root. Nothing is deleted here.
        """
        if not self.exists():
            return []
        with self._lock:
            handle = self._current_handle()
            referenced = set(self.snapshot().files.get_column("path").to_list())
            paths = handle.vacuum(
                retention_hours=math.ceil(max(0.0, retention_s) / 3600), dry_run=True,
                enforce_retention_duration=False, full=True,
            )
        base = str(self.path).rstrip("/") + "/"
        out = []
        for p in paths:
            rel = str(p).removeprefix("file://").removeprefix(base).removeprefix("s3a://")
            # The log and hidden files are never data; and, belt to the braces, a file the
            # newest version references is never a candidate whatever delta-rs says.
            if not rel.startswith(("_", ".")) and rel not in referenced:
                out.append(rel)
        return sorted(out)


def _apply(
    files: pl.DataFrame, adds: Sequence[NewFile], removes: Sequence[tuple[FileEntry, Mapping[str, str]]]
) -> pl.DataFrame:
    """``files`` after a commit of ``adds`` and ``removes``."""
    gone = {f.path for f, _ in removes}
    kept = files.filter(~pl.col("path").is_in(list(gone))) if gone else files
    if not adds:
        return kept
    new = pl.DataFrame(
        {
            "path": [a.path for a in adds], "size": [a.size for a in adds], "rows": [a.rows for a in adds],
            "first_ms": [a.first_us // 1000 for a in adds], "last_ms": [a.last_us // 1000 for a in adds],
            **{c: [a.partition_values.get(c) for a in adds]
               for c in ("exchange", "category", "symbol", "timeframe", "date")},
        },
        schema=_SNAPSHOT_SCHEMA,
    )
    return pl.concat([kept, new], how="vertical").sort("path")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _lake_error(path: Path | str, exc: BaseException) -> LakeError:
    # A damaged log is not something fsck can mend (the log is the truth it checks against):
    # say what delta-rs found, short, and where to look.
    reason = _first_line(exc).removeprefix("Kernel error: ")
    if len(reason) > 160:
        reason = reason[:157] + "..."
    return LakeError(
        f"{path}: the Delta log cannot be read ({reason}); restore {path}/_delta_log from a "
        "backup: marketlake never rewrites a log entry"
    )


def partition_values(sid: SeriesId, key: str) -> dict[str, str]:
    """The partition column values of one partition of ``sid``."""
    values = {"exchange": sid.exchange, "category": sid.category, "symbol": sid.symbol}
    if sid.timeframe is not None:
        values["timeframe"] = sid.timeframe.name
    values["date"] = key
    return values


def iter_series(snapshots: Iterable[Snapshot]) -> list[SeriesId]:
    """Every series of the given snapshots."""
    return [sid for s in snapshots for sid in s.series_ids()]
