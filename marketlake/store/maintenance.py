"""Automatic, bounded upkeep of the lake's tables: vacuum (and delta-rs's own checkpoints).

delta-rs writes a checkpoint every 100 commits from its post-commit hook, so opening a table
replays at most 100 log entries. Vacuum deletes the files no version within the retention
(``settings.gc_grace_seconds``) and no named snapshot reads; it runs after a commit at most once
per ``_VACUUM_EVERY_S`` per lake (a time stamp in ``_meta/last-vacuum`` is shared by every
process), so its cost (one listing of the table's files) is paid rarely. It replaces the trash of
the previous format: a replaced file simply stays where it was until vacuum.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import TYPE_CHECKING, Final

from marketlake.errors import LakeError
from marketlake.store.files import remove_files
from marketlake.store.layout import DATASETS, META_DIR
from marketlake.store.snapshots import protected_paths

if TYPE_CHECKING:
    from marketlake.store.lake import Lake

__all__ = ["Maintenance"]

_VACUUM_EVERY_S: Final = 3600.0


class Maintenance:
    """The upkeep of one :class:`~marketlake.store.lake.Lake`."""

    def __init__(self, lake: Lake) -> None:
        self.lake = lake
        self._checked = 0.0

    def after_commit(self) -> None:
        """Vacuum when the lake was last vacuumed more than an hour ago (by any process)."""
        now = time.time()
        if now - self._checked < 60.0:
            return
        self._checked = now
        storage = self.lake.storage
        stamp = f"{META_DIR}/last-vacuum"
        try:
            info = storage.head(stamp)
            if info is not None and now - info.mtime < _VACUUM_EVERY_S:
                return
            storage.put(stamp, str(now).encode())
            self.vacuum(self.lake.settings.gc_grace_seconds)
        except (OSError, LakeError):
            return  # upkeep never fails a write; the next one tries again

    def vacuum(self, retention_s: float, *, dry_run: bool = False) -> list[str]:
        """Delete (or with ``dry_run`` only list) what no version within ``retention_s`` and no
        named snapshot needs. Returns paths relative to the lake root."""
        out: list[str] = []
        for ds in DATASETS:
            table = self.lake.table(ds)
            if not table.exists():
                continue
            storage = self.lake.storage
            keep = protected_paths(storage, ds)
            # (delta-rs lists tombstones of files a previous vacuum already deleted: skip those)
            doomed = [p for p in table.vacuum_candidates(retention_s) if p not in keep and storage.exists(f"{ds}/{p}")]
            if not dry_run:
                remove_files(storage, [f"{ds}/{p}" for p in doomed])
                if storage.is_local:
                    _prune_empty_dirs(table.path, doomed)
                # Log entries older than the log retention (7 days) and behind a checkpoint go
                # too: marketlake writes its commits itself, so delta-rs's post-commit clean-up
                # does not run.
                with contextlib.suppress(Exception):
                    table.cleanup_log()
            out.extend(f"{ds}/{p}" for p in doomed)
        return out


def _prune_empty_dirs(table_root: os.PathLike[str], removed: list[str]) -> None:
    """Remove partition directories that vacuum emptied (never the table root or the log)."""
    from pathlib import Path

    root = Path(table_root)
    dirs = sorted({(root / p).parent for p in removed}, key=lambda d: len(d.parts), reverse=True)
    for d in dirs:
        while d != root and root in d.parents:
            try:
                d.rmdir()
            except OSError:
                break
            d = d.parent
