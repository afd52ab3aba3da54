"""``fsck``: find (and with ``fix``, clear away) what a crash or a foreign hand left in the lake.

What it looks for, partition by partition, holding that partition's lock (so a temp file of a
write in progress is never mistaken for a leftover):

* ``temp``: a temp file of a writer that died before publishing — removed by ``fix``;
* ``superseded``: a file replaced by a newer ``part`` but not yet moved out (a crash between the
  rename and the move) — moved to the trash by ``fix``;
* ``unreadable``: a live file that cannot be decoded, has the wrong columns, or holds rows outside
  its partition — moved to ``_meta/quarantine`` by ``fix`` (never deleted: it may be salvageable);
* ``foreign``: anything else under the data tree — reported, never touched.

A good file is never moved. Trash older than the grace period is purged by ``fix``.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from marketlake.core.schemas import CANDLE_ARROW_SCHEMA, REQUIRED_COLUMNS, TRADE_ARROW_SCHEMA
from marketlake.core.timeframes import TIMEFRAMES
from marketlake.store.files import (
    is_temp_name,
    list_data_files,
    partition_lock,
    purge_trash,
    to_trash,
)
from marketlake.store.layout import (
    CANDLES,
    DATASETS,
    META_DIR,
    Period,
    live_files,
    partition_period,
)

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
        files_checked: Live data files decoded.
        rows_checked: Rows in them.
        issues: Every finding, in walk order.
        trash_purged: Trashed files deleted (``fix`` only).
    """

    files_checked: int = 0
    rows_checked: int = 0
    issues: list[FsckIssue] = field(default_factory=list)
    trash_purged: int = 0

    @property
    def ok(self) -> bool:
        """True when nothing needs attention (fixed issues count as dealt with)."""
        return all(i.fixed for i in self.issues)

    def to_dict(self) -> dict:
        """Plain data for ``--json``."""
        return {
            "ok": self.ok,
            "files_checked": self.files_checked,
            "rows_checked": self.rows_checked,
            "trash_purged": self.trash_purged,
            "issues": [
                {"kind": i.kind, "path": i.path, "detail": i.detail, "fixed": i.fixed}
                for i in self.issues
            ],
        }


def _period_of(pdir: Path, dataset: str) -> Period | None:
    if dataset != CANDLES:
        return partition_period(dataset, None)
    tf = pdir.parent.name.removeprefix("timeframe=")
    return partition_period(dataset, TIMEFRAMES[tf]) if tf in TIMEFRAMES else None


def _check_file(path: Path, dataset: str, period: Period, key: str) -> str | None:
    """None if the file is good, else what is wrong with it."""
    expected = CANDLE_ARROW_SCHEMA if dataset == CANDLES else TRADE_ARROW_SCHEMA
    try:
        table = pq.ParquetFile(path).read()
    except Exception as exc:  # any decoding failure means unreadable
        return f"cannot decode: {str(exc).splitlines()[0][:200]}"
    names = table.schema.names
    required = REQUIRED_COLUMNS[dataset]
    # Older files may lack columns added later (read with their defaults); nothing else may differ.
    if [n for n in expected.names if n in names] != names or any(c not in names for c in required):
        return f"columns {names} are not {expected.names}"
    if table.num_rows:
        lo, hi = period.bounds(key)
        ts = table.column("ts").cast("int64")
        div = 1 if dataset == CANDLES else 1000
        first = ts[0].as_py() // div
        last = ts[-1].as_py() // div
        if first < lo or last >= hi:
            return f"rows outside partition {key}"
    return None


def run_fsck(root: Path, *, fix: bool = False, trash_grace_s: float = 300.0) -> FsckReport:
    """Check every partition of the lake under ``root``; see the module docstring."""
    report = FsckReport()
    for dataset in DATASETS:
        base = root / dataset
        if not base.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            here = Path(dirpath)
            if here.name.startswith("date="):
                _check_partition(root, here, dataset, sorted(filenames), fix, report)
                dirnames.clear()
                continue
            for name in sorted(filenames):
                report.issues.append(FsckIssue("foreign", str(here / name), "not a lake file"))
    if fix:
        report.trash_purged = purge_trash(root, trash_grace_s)
    return report


def _check_partition(
    root: Path, pdir: Path, dataset: str, names: list[str], fix: bool, report: FsckReport
) -> None:
    key = pdir.name.removeprefix("date=")
    period = _period_of(pdir, dataset)
    if period is None:
        report.issues.append(FsckIssue("foreign", str(pdir), "not under a known timeframe"))
        return
    try:
        period.bounds(key)
    except ValueError:
        report.issues.append(FsckIssue("foreign", str(pdir), f"not a {period.value} partition"))
        return
    with partition_lock(root, pdir):
        files = list_data_files(pdir)
        known = {f.path.name for f in files}
        live = live_files(files)
        for name in names:
            if name in known:
                continue
            path = pdir / name
            if is_temp_name(name):
                if fix:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                report.issues.append(FsckIssue("temp", str(path), "leftover of an interrupted write", fix))
            else:
                report.issues.append(FsckIssue("foreign", str(path), "not a lake file"))
        superseded = [f.path for f in files if f not in live]
        for path in superseded:
            report.issues.append(FsckIssue("superseded", str(path), "replaced by a newer part", fix))
        if fix:
            to_trash(root, superseded)
        for f in live:
            problem = _check_file(f.path, dataset, period, key)
            if problem is None:
                report.files_checked += 1
                report.rows_checked += pq.ParquetFile(f.path).metadata.num_rows
                continue
            if fix:
                target = root / META_DIR / "quarantine" / f.path.relative_to(root)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.rename(f.path, target)
            report.issues.append(FsckIssue("unreadable", str(f.path), problem, fix))
