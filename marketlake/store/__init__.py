"""The lake on disk. Only this package writes under the lake root."""

from marketlake.store.fsck import FsckIssue, FsckReport
from marketlake.store.lake import Lake
from marketlake.store.writer import WriteResult

__all__ = ["FsckIssue", "FsckReport", "Lake", "WriteResult"]
