"""``marketlake migrate``: turn a lake of the previous format into Delta Lake tables.

The previous format kept each partition's state in file names: ``part-N.parquet`` holds
everything up to sequence N, ``delta-M.parquet`` (M > N) rows newer than that; superseded files
moved to ``_meta/trash``. Migration, per dataset:

1. reads every partition's live set by that rule; a partition with one live file keeps it in
   place (it is already a valid Parquet file at a valid hive path), a partition with deltas is
   folded into one new file;
2. verifies, row for row, that what will be committed equals the old live set (for a kept file,
   its rows and ``ts`` range; for a folded one, the frames are compared);
3. commits every file in ONE transaction that creates the table — before it the lake is the old
   lake, after it the new one; a kill anywhere leaves one or the other;
4. only then deletes superseded old files, folded deltas, temp files and the old bookkeeping
   (``_meta/trash``, ``_meta/locks``, ``_meta/filestats.sqlite``, ``_meta/generation``).

Running it again resumes step 4 (or starts over before step 3); on a migrated lake it is a no-op.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import polars as pl

from marketlake.errors import LakeError, LakeWriteError
from marketlake.store.files import write_data_file
from marketlake.store.storage import LocalStorage
from marketlake.store.layout import DATASETS, META_DIR, SeriesId, partition_columns
from marketlake.store.reader import scan_data_files
from marketlake.store.table import TABLE_CONFIGURATION, NewFile, table_arrow_schema
from marketlake.store.writer import _to_table

__all__ = ["MigrationReport", "is_legacy_lake", "migrate_lake"]

_OLD_FILE: Final = re.compile(r"(part|delta)-(\d{8})\.parquet")
_NEW_FILE: Final = re.compile(r"part-[0-9a-f]{32}\.parquet")
_OLD_META: Final = ("trash", "locks", "filestats.sqlite", "filestats.sqlite-wal", "filestats.sqlite-shm", "generation")


@dataclass(slots=True)
class MigrationReport:
    """What a migration did.

    Attributes:
        datasets: Datasets converted by this run.
        partitions: Partitions committed.
        files_kept: Old files adopted in place.
        files_folded: Partitions whose delta files were folded into one new file.
        rows: Rows committed (equal, verified, to the old lake's).
        files_removed: Superseded, folded and temp files deleted after the commit.
    """

    datasets: list[str] = field(default_factory=list)
    partitions: int = 0
    files_kept: int = 0
    files_folded: int = 0
    rows: int = 0
    files_removed: int = 0

    @property
    def changed(self) -> bool:
        """True when this run converted or cleaned anything."""
        return bool(self.datasets or self.files_removed)


def _has_partitions(path: Path) -> bool:
    try:
        return any(e.name.startswith("exchange=") and e.is_dir() for e in os.scandir(path))
    except (FileNotFoundError, NotADirectoryError):
        return False


def is_legacy_lake(root: Path) -> bool:
    """True when a dataset of ``root`` is still in the previous format: no Delta log, and a data
    file named by the old protocol (``part-NNNNNNNN``/``delta-NNNNNNNN``) under it."""
    return any(
        not (root / ds / "_delta_log").is_dir() and _has_old_file(root / ds) for ds in DATASETS
    )


def _has_old_file(table_root: Path) -> bool:
    if not _has_partitions(table_root):
        return False
    for _, dirnames, filenames in os.walk(table_root):
        dirnames.sort()
        if any(_OLD_FILE.fullmatch(n) for n in filenames):
            return True
    return False


def _partitions(table_root: Path, dataset: str) -> list[tuple[dict[str, str], Path]]:
    depth = len(partition_columns(dataset))
    out = []
    for dirpath, dirnames, _ in os.walk(table_root):
        rel = Path(dirpath).relative_to(table_root)
        if rel.parts and rel.parts[0] == "_delta_log":
            dirnames.clear()
            continue
        dirnames.sort()
        if len(rel.parts) == depth:
            dirnames.clear()
            values = dict(p.split("=", 1) for p in rel.parts if "=" in p)
            if list(values) == list(partition_columns(dataset)):
                out.append((values, Path(dirpath)))
    return out


def _live(names: list[str]) -> tuple[list[str], list[str]]:
    """(live files in sequence order, superseded files) of one partition, by the old rule."""
    files = []
    for n in names:
        m = _OLD_FILE.fullmatch(n)
        if m:
            files.append((int(m.group(2)), m.group(1), n))
    files.sort()
    base = max((seq for seq, kind, _ in files if kind == "part"), default=-1)
    live = [n for seq, kind, n in files if seq >= base and (kind == "delta" or seq == base)]
    return live, [n for _, _, n in files if n not in live]


def _stats_of(path: Path, dataset: str) -> tuple[int, int, int]:
    ts = pl.read_parquet(path, columns=["ts"]).get_column("ts").cast(pl.Int64)
    mult = 1000 if dataset == "candles" else 1
    if ts.is_empty():
        return 0, 0, 0
    return ts.len(), int(ts.min()) * mult, int(ts.max()) * mult  # type: ignore[arg-type]


def migrate_lake(root: Path) -> MigrationReport:
    """Convert every dataset of ``root`` still in the previous format (see the module docstring).

    Raises:
        LakeError: an old file cannot be read or verification failed (nothing was committed).
        LakeWriteError: the new files or the commit could not be written (the old lake stands).
    """
    from deltalake import Schema as DeltaSchema
    from deltalake.transaction import create_table_with_add_actions

    from marketlake.store.table import _add_action

    report = MigrationReport()
    for dataset in DATASETS:
        table_root = root / dataset
        if not _has_partitions(table_root):
            continue
        if (table_root / "_delta_log").is_dir():
            report.files_removed += _cleanup(table_root, dataset)
            continue
        adds: list[NewFile] = []
        doomed: list[Path] = []
        for values, pdir in _partitions(table_root, dataset):
            names = sorted(os.listdir(pdir))
            for n in names:
                if _NEW_FILE.fullmatch(n):  # a fold of an earlier, interrupted run: redo it
                    (pdir / n).unlink()
            live, superseded = _live(names)
            doomed += [pdir / n for n in superseded]
            doomed += [pdir / n for n in names if n.startswith(".tmp-")]
            if not live:
                continue
            rel_dir = str(pdir.relative_to(table_root))
            SeriesId.of(dataset,  # validates every name before anything is adopted
                        exchange=values["exchange"], category=values["category"],
                              symbol=values["symbol"], timeframe=values.get("timeframe"))
            try:
                old = pl.concat([scan_data_files(dataset, [pdir / n]).collect() for n in live], how="vertical")
            except Exception as exc:
                raise LakeError(f"cannot migrate {pdir}: an old file does not read ({str(exc).splitlines()[0]}); "
                                "run the previous version's fsck --fix first") from None
            if len(live) == 1:
                path = pdir / live[0]
                rows, first, last = _stats_of(path, dataset)
                if rows != old.height:
                    raise LakeError(f"cannot migrate {path}: {rows} rows in its footer, {old.height} read")
                adds.append(NewFile(f"{rel_dir}/{live[0]}", path.stat().st_size, rows, first, last, values))
                report.files_kept += 1
            else:
                merged = old.sort("ts", maintain_order=True)
                rel, size = write_data_file(LocalStorage(root), dataset, rel_dir, _to_table(merged, dataset))
                again = scan_data_files(dataset, [table_root / rel]).collect()
                if not again.equals(merged):
                    raise LakeError(f"cannot migrate {pdir}: the folded file does not read back equal")
                ts = merged.get_column("ts").dt.epoch("us")
                adds.append(NewFile(rel, size, merged.height, int(ts.min()), int(ts.max()), values))  # type: ignore[arg-type]
                doomed += [pdir / n for n in live]
                report.files_folded += 1
            report.rows += old.height
            report.partitions += 1
        try:
            create_table_with_add_actions(
                str(table_root), DeltaSchema.from_arrow(table_arrow_schema(dataset)),
                [_add_action(a) for a in adds], mode="error",
                partition_by=list(partition_columns(dataset)), configuration=TABLE_CONFIGURATION,
            )
        except Exception as exc:
            raise LakeWriteError(f"cannot create the {dataset} table in {table_root}: {exc}") from None
        report.datasets.append(dataset)
        report.files_removed += remove_files(doomed) + _cleanup(table_root, dataset)
    _remove_old_meta(root)
    return report


def remove_files(paths: list[Path]) -> int:
    """Delete local files (already absent ones are skipped); return how many were deleted."""
    removed = 0
    for path in paths:
        try:
            os.unlink(path)
            removed += 1
        except FileNotFoundError:
            continue
    return removed


def _cleanup(table_root: Path, dataset: str) -> int:
    """Delete old-format files the new log does not reference (after a kill between commit and
    clean-up); return how many."""
    from marketlake.store.fsck import ever_referenced

    known = ever_referenced(LocalStorage(table_root.parent), table_root.name)
    doomed = []
    for _, pdir in _partitions(table_root, dataset):
        for n in os.listdir(pdir):
            rel = f"{pdir.relative_to(table_root)}/{n}"
            if (_OLD_FILE.fullmatch(n) or n.startswith(".tmp-")) and rel not in known:
                doomed.append(pdir / n)
    return remove_files(doomed)


def _remove_old_meta(root: Path) -> None:
    meta = root / META_DIR
    for name in _OLD_META:
        path = meta / name
        with contextlib.suppress(FileNotFoundError):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()

