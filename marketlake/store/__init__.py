"""The lake on disk. Only this package writes under the lake root.

The names below load on first use: the CLI's fast paths import light modules of this package
(``store.storage``) without paying for Polars, pyarrow and delta-rs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from marketlake.store.fsck import FsckIssue, FsckReport
    from marketlake.store.lake import Lake
    from marketlake.store.writer import WriteResult

__all__ = ["FsckIssue", "FsckReport", "Lake", "WriteResult"]

_WHERE = {"FsckIssue": "fsck", "FsckReport": "fsck", "Lake": "lake", "WriteResult": "writer"}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'marketlake.store' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"marketlake.store.{module}"), name)
    globals()[name] = value
    return value
