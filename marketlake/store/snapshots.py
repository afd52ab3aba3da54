"""Named snapshots and ``as_of`` reads: the lake as it was, for reproducible backtests.

A named snapshot records, per dataset table, the version and that version's complete file list
(path, size, rows, ts range, partition values) in ``_meta/snapshots/<name>/``. Reading a snapshot
needs only that manifest, never the Delta log, so a snapshot survives log clean-up; vacuum never
deletes a file any snapshot lists (:func:`protected_paths`). A snapshot's inputs are therefore
bit-identical after any later ingest, repair, compaction or vacuum.

``as_of`` may also be a version of the ``candles`` table (the other tables are read as of that
commit's time), a timestamp (every table as of then), or ``{"candles": v, "trades": w}``.
Versions and timestamps reach back as far as the log is kept (7 days, ``store/table.py``).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import polars as pl

from marketlake.errors import DataValidationError, LakeError, LakeWriteError
from marketlake.store.files import publish_table
from marketlake.store.layout import CANDLES, DATASETS, META_DIR
from marketlake.store.storage import Storage
from marketlake.store.table import DatasetTable, Snapshot, empty_files_frame

__all__ = [
    "AsOf",
    "SnapshotInfo",
    "create_snapshot",
    "delete_snapshot",
    "list_snapshots",
    "protected_paths",
    "resolve_as_of",
]

AsOf = int | str | dt.datetime | dt.date | Mapping[str, int]
_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """A named snapshot.

    Attributes:
        name: Its name.
        note: Free text given at creation.
        created_ms: When it was taken (epoch ms).
        versions: Table version per dataset (-1: the table did not exist).
        rows: Rows per dataset.
    """

    name: str
    note: str
    created_ms: int
    versions: dict[str, int]
    rows: dict[str, int]


SNAPSHOTS_DIR: Final = f"{META_DIR}/snapshots"


def snapshots_dir(root: Storage) -> str:
    """Where named snapshots live (a key prefix of the lake)."""
    return SNAPSHOTS_DIR


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        shown = repr(name) if len(repr(name)) <= 40 else repr(name)[:37] + "..."
        raise DataValidationError(
            f"snapshot name {shown}: use 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def _manifest(name: str) -> str:
    return f"{SNAPSHOTS_DIR}/{name}/manifest.json"


def snapshot_exists(root: Storage, name: str) -> bool:
    """True when a snapshot of that name exists (its manifest does)."""
    return bool(_NAME_RE.fullmatch(name)) and root.exists(_manifest(name))


def create_snapshot(
    root: Storage, name: str, note: str, snapshots: Mapping[str, Snapshot], now_ms: int,
    instruments: pl.DataFrame | None = None,
) -> SnapshotInfo:
    """Record ``snapshots`` (one per dataset) under ``name``.

    The file lists are written first and the manifest last, put-if-absent: the snapshot exists
    once its manifest does (all or nothing, on a disk or an object store), and of two machines
    creating the same name exactly one succeeds.

    Raises:
        DataValidationError: a bad name, or a snapshot of that name exists.
        LakeWriteError: the manifest could not be written.
    """
    _check_name(name)
    if root.exists(_manifest(name)):
        raise DataValidationError(f"snapshot {name!r} exists; delete it first or pick another name")
    info = SnapshotInfo(
        name, note, now_ms,
        {ds: s.version for ds, s in snapshots.items()},
        {ds: int(s.files.get_column("rows").sum() or 0) for ds, s in snapshots.items()},
    )
    base = f"{SNAPSHOTS_DIR}/{name}"
    try:
        for ds, snap in snapshots.items():
            publish_table(root, f"{base}/{ds}.parquet", snap.files.to_arrow())
        if instruments is not None and instruments.height:
            # The instrument history is small: the snapshot keeps a copy of it, not a file list.
            publish_table(root, f"{base}/instruments.parquet", instruments.to_arrow())
        manifest = {"name": name, "note": note, "created_ms": now_ms, "versions": info.versions, "rows": info.rows}
        won = root.put_if_absent(_manifest(name), json.dumps(manifest, indent=1).encode())
    except OSError as exc:
        raise LakeWriteError(f"cannot write snapshot {name!r}: {exc.strerror or exc}") from None
    if not won:
        raise DataValidationError(f"snapshot {name!r} exists; delete it first or pick another name")
    return info


def _read_info(root: Storage, name: str) -> SnapshotInfo:
    try:
        m = json.loads(root.read(_manifest(name)))
        return SnapshotInfo(m["name"], m.get("note", ""), int(m["created_ms"]),
                            {k: int(v) for k, v in m["versions"].items()}, {k: int(v) for k, v in m["rows"].items()})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LakeError(f"snapshot {name!r} is damaged ({exc}); delete it with marketlake snapshot delete") from None


def _names(root: Storage) -> list[str]:
    out = []
    for o in root.list(SNAPSHOTS_DIR):
        parts = o.key.split("/")
        if len(parts) == 4 and parts[3] == "manifest.json" and _NAME_RE.fullmatch(parts[2]):
            out.append(parts[2])
    return out


def list_snapshots(root: Storage) -> list[SnapshotInfo]:
    """Every named snapshot, oldest first."""
    out = [_read_info(root, n) for n in _names(root)]
    return sorted(out, key=lambda s: (s.created_ms, s.name))


def delete_snapshot(root: Storage, name: str) -> None:
    """Delete a named snapshot (its files become ordinary garbage for vacuum).

    Raises:
        DataValidationError: no snapshot has that name.
    """
    _check_name(name)
    # The manifest goes first: from then on the snapshot does not exist, whatever is left.
    if not root.delete(_manifest(name)):
        raise DataValidationError(f"no snapshot named {name!r}")
    for o in list(root.list(f"{SNAPSHOTS_DIR}/{name}")):
        root.delete(o.key)


def _read_frame(root: Storage, key: str, columns: list[str] | None = None) -> pl.DataFrame | None:
    try:
        data = root.read(key)
    except FileNotFoundError:
        return None
    return pl.read_parquet(io.BytesIO(data), columns=columns)


def snapshot_files(root: Storage, name: str) -> dict[str, Snapshot]:
    """The per-dataset file lists of a named snapshot."""
    _check_name(name)
    if not root.exists(_manifest(name)):
        raise DataValidationError(f"no snapshot named {name!r} (marketlake snapshot list shows them)")
    info = _read_info(root, name)
    out = {}
    for ds in DATASETS:
        files = _read_frame(root, f"{SNAPSHOTS_DIR}/{name}/{ds}.parquet")
        out[ds] = Snapshot(root, ds, info.versions.get(ds, -1), files if files is not None else empty_files_frame())
    return out


def snapshot_instruments(root: Storage, name: str) -> pl.DataFrame | None:
    """The instrument history a named snapshot kept (None when it kept none)."""
    return _read_frame(root, f"{SNAPSHOTS_DIR}/{_check_name(name)}/instruments.parquet")


def protected_paths(root: Storage, dataset: str) -> set[str]:
    """Paths (relative to the table root) that some named snapshot still reads."""
    out: set[str] = set()
    for name in _names(root):
        frame = _read_frame(root, f"{SNAPSHOTS_DIR}/{name}/{dataset}.parquet", ["path"])
        if frame is not None:
            out.update(frame.get_column("path").to_list())
    return out


def _parse_time(value: str | dt.datetime | dt.date) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def resolve_as_of(root: Storage, as_of: AsOf) -> dict[str, Snapshot]:
    """The per-dataset snapshots ``as_of`` names (see the module docstring).

    Raises:
        DataValidationError: ``as_of`` names no snapshot, version or time of this lake.
    """
    if isinstance(as_of, bool):
        raise DataValidationError(f"as_of={as_of!r}: give a version, a time or a snapshot name")
    if isinstance(as_of, Mapping):
        out = {}
        for ds in DATASETS:
            v = as_of.get(ds)
            out[ds] = _at_version(root, ds, int(v)) if v is not None else _empty(root, ds)
        return out
    if isinstance(as_of, int):
        candles = _at_version(root, CANDLES, as_of)
        when = _commit_time(root, CANDLES, as_of)
        out = {CANDLES: candles}
        for ds in DATASETS:
            if ds != CANDLES:
                out[ds] = _at_time(root, ds, when)
        return out
    if isinstance(as_of, str) and _NAME_RE.fullmatch(as_of) and snapshot_exists(root, as_of):
        return snapshot_files(root, as_of)
    when = _parse_time(as_of) if isinstance(as_of, (str, dt.date)) else None
    if when is None:
        raise DataValidationError(
            f"as_of={as_of!r} is neither a snapshot of this lake, a version nor a time (ISO 8601)"
        )
    return {ds: _at_time(root, ds, when) for ds in DATASETS}


def _empty(root: Storage, ds: str) -> Snapshot:
    return Snapshot(root, ds, -1, empty_files_frame())


def _at_version(root: Storage, ds: str, version: int) -> Snapshot:
    if version < 0:
        raise DataValidationError(f"as_of version {version}: versions start at 0")
    if not DatasetTable(root, ds).exists():
        raise DataValidationError(f"as_of version {version}: this lake has no {ds} table")
    newest = DatasetTable(root, ds).version()
    if version > newest:
        raise DataValidationError(f"as_of version {version}: the {ds} table is at version {newest}")
    table = DatasetTable(root, ds, pinned=version)
    try:
        return table.snapshot()
    except LakeError as exc:
        raise DataValidationError(
            f"as_of version {version} of {ds} is no longer in the log (it keeps 7 days; "
            f"name a snapshot to keep a version longer)"
        ) from None


def _commit_time(root: Storage, ds: str, version: int) -> dt.datetime:
    table = DatasetTable(root, ds, pinned=version)
    for entry in table.history(1):
        ts = entry.get("timestamp")
        if ts is not None:
            return dt.datetime.fromtimestamp(int(ts) / 1000, tz=dt.UTC)
    raise DataValidationError(f"as_of version {version}: no commit time in the log")


def _at_time(root: Storage, ds: str, when: dt.datetime) -> Snapshot:
    table = DatasetTable(root, ds, pinned=when)
    if not table.exists():
        return _empty(root, ds)
    try:
        return table.snapshot()
    except LakeError:
        # The table was created after ``when``: it held nothing then.
        return _empty(root, ds)


def as_of_time(root: Storage, as_of: AsOf) -> dt.datetime:
    """The moment an ``as_of`` that is not a named snapshot stands for (a version: its commit
    time; a mapping: the candles version's commit time, or now without one)."""
    if isinstance(as_of, Mapping):
        v = as_of.get(CANDLES)
        return _commit_time(root, CANDLES, int(v)) if v is not None and int(v) >= 0 else dt.datetime.now(dt.UTC)
    if isinstance(as_of, int):
        return _commit_time(root, CANDLES, as_of)
    when = _parse_time(as_of) if isinstance(as_of, (str, dt.date)) else None
    if when is None:
        raise DataValidationError(f"as_of={as_of!r} is not a time")
    return when


def describe(info: SnapshotInfo) -> dict[str, Any]:
    """Plain data for ``--json`` and tables."""
    return {
        "name": info.name, "note": info.note,
        "created": dt.datetime.fromtimestamp(info.created_ms / 1000, tz=dt.UTC).isoformat(),
        "versions": info.versions, "rows": info.rows,
    }
