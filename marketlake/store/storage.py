"""Where the lake's bytes live: one small interface, a local directory or an S3-compatible bucket.

Everything the store does to storage goes through :class:`Storage` (the pyiceberg ``FileIO``
idea): read an object, write a new one, write one only if it does not exist yet (the primitive
the Delta log's atomic commits rest on), list a prefix, delete. Keys are ``/``-separated and
relative to the lake root (``candles/_delta_log/00000000000000000012.json``).

* :class:`LocalStorage` keeps the guarantees the lake had on a local disk: files are fsynced
  with their directories, put-if-absent is ``link()`` of a fsynced temp file (atomic on POSIX
  filesystems), and a path that resolves outside the root (a planted symlink) is refused.
* :class:`~marketlake.store.s3.S3Storage` (``store/s3.py``) speaks to AWS S3, MinIO, R2, Ceph ...
  through ``obstore`` (the Rust ``object_store`` crate delta-rs uses itself); put-if-absent is a
  PUT with ``If-None-Match: *``, the store's conditional write, so several writers on several
  machines commit safely without a lock service. Its credentials never appear in a repr, a log
  line or an error.

Readers outside the store (Polars, pyarrow, delta-rs) get the matching options from
:meth:`Storage.polars_options`, :meth:`Storage.arrow_filesystem` and
:meth:`Storage.delta_options`.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from marketlake.errors import LakeError, LakeWriteError

__all__ = ["LocalStorage", "ObjectInfo", "Storage", "check_is_lake", "is_remote", "open_storage"]

_TMP: Final = ".tmp-"


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One stored object: its key (relative to the lake root), size in bytes, modification time."""

    key: str
    size: int
    mtime: float


class Storage(ABC):
    """The lake root: a local directory or an object-store prefix."""

    #: How the root is shown in messages (never carries credentials).
    display: str

    @property
    def is_local(self) -> bool:
        """True for a directory on this machine."""
        return isinstance(self, LocalStorage)

    @abstractmethod
    def uri(self, key: str = "") -> str:
        """The absolute location of ``key`` for other readers: a path, or ``s3://bucket/...``."""

    @abstractmethod
    def read(self, key: str) -> bytes:
        """The object's bytes. Raises FileNotFoundError when it does not exist."""

    @abstractmethod
    def head(self, key: str) -> ObjectInfo | None:
        """The object's size and time, None when it does not exist."""

    def exists(self, key: str) -> bool:
        """True when the object exists."""
        return self.head(key) is not None

    @abstractmethod
    def has_prefix(self, prefix: str) -> bool:
        """True when at least one object's key starts with ``prefix/``."""

    @abstractmethod
    def top_level(self) -> list[str]:
        """The names directly under the root (folders and objects), one request."""

    @abstractmethod
    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object under ``prefix/`` (recursively), in no particular order."""

    @abstractmethod
    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Write ``key`` unless it exists (atomically: of racing writers exactly one wins);
        True when this call wrote it."""

    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Write or replace ``key`` atomically (readers see the old or the new bytes)."""

    @abstractmethod
    def write_new(self, key: str, write: Callable[[IO[bytes]], None]) -> int:
        """Create ``key`` (which must not exist) with what ``write`` writes to a binary file,
        durably; return its size. Nothing is left behind when ``write`` fails."""

    @abstractmethod
    def delete(self, key: str) -> bool:
        """Delete ``key``; False when it was already gone."""

    @abstractmethod
    def identity(self, key: str) -> str:
        """A token that changes when ``key`` is deleted and created again (a re-created log)."""

    def polars_options(self) -> dict[str, str] | None:
        """``storage_options`` for Polars' readers (None for local files)."""
        return None

    def delta_options(self) -> dict[str, str] | None:
        """``storage_options`` for delta-rs (None for local tables)."""
        return None

    def arrow_filesystem(self) -> tuple[Any, Callable[[str], str]]:
        """A pyarrow filesystem and a function from a key to that filesystem's path."""
        import pyarrow.fs as pafs

        return pafs.LocalFileSystem(), self.uri

    #: Where this machine keeps its own state for this lake (rate budget, table-state cache):
    #: the lake's ``_meta`` folder for a local lake, a folder under ``settings.state_dir`` for a
    #: remote one (never shared: another machine has its own).
    state_dir: Path


def is_remote(root: str | os.PathLike[str]) -> bool:
    """True for an object-store URL (``s3://...``)."""
    return isinstance(root, str) and root.lower().startswith(("s3://", "s3a://"))


# ---------------------------------------------------------------------------------------- local


def fsync_dir(path: Path) -> None:
    """Make a rename, link or unlink in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def makedirs_durable(path: Path) -> None:
    """mkdir -p, fsyncing each new directory's parent so the directory entry itself is durable."""
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir()
        fsync_dir(d.parent)


class LocalStorage(Storage):
    """A lake in a directory of this machine.

    Args:
        root: The lake directory (resolved; created on the first write).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.display = str(root)
        self.state_dir = root / "_meta"

    def __repr__(self) -> str:
        return f"LocalStorage({self.display!r})"

    def path(self, key: str) -> Path:
        """The file of ``key``."""
        return self.root / key if key else self.root

    def uri(self, key: str = "") -> str:
        return str(self.path(key))

    def read(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def head(self, key: str) -> ObjectInfo | None:
        try:
            st = os.stat(self.path(key))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return ObjectInfo(key, st.st_size, st.st_mtime)

    def has_prefix(self, prefix: str) -> bool:
        p = self.path(prefix)
        if not p.is_dir():
            return False
        with os.scandir(p) as it:
            return any(True for _ in it)

    def top_level(self) -> list[str]:
        try:
            return sorted(os.listdir(self.root))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        base = self.path(prefix)
        stack = [base]
        while stack:
            d = stack.pop()
            try:
                it = os.scandir(d)
            except (FileNotFoundError, NotADirectoryError):
                continue
            with it:
                for e in it:
                    if e.is_dir():  # (a symlink to a directory is neither followed nor listed)
                        if not e.is_symlink():
                            stack.append(Path(e.path))
                        continue
                    try:
                        st = e.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    yield ObjectInfo(Path(e.path).relative_to(self.root).as_posix(), st.st_size, st.st_mtime)

    def _inside(self, directory: Path) -> None:
        if not directory.resolve().is_relative_to(self.root.resolve()):
            raise LakeWriteError(f"refusing to write {directory}: it resolves outside the lake root {self.root}")

    def _temp_copy(self, final: Path, data: bytes) -> Path:
        """``data`` in a fsynced temp file beside ``final`` (inside the root, directories made)."""
        self._inside(final.parent)
        makedirs_durable(final.parent)
        tmp = final.with_name(f"{_TMP}{final.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}")
        with open(tmp, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return tmp

    def put_if_absent(self, key: str, data: bytes) -> bool:
        final = self.path(key)
        tmp = self._temp_copy(final, data)
        try:
            try:
                os.link(tmp, final)  # fails if it exists: atomic put-if-absent
            except FileExistsError:
                return False
            fsync_dir(final.parent)
            return True
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def put(self, key: str, data: bytes) -> None:
        final = self.path(key)
        tmp = self._temp_copy(final, data)
        try:
            os.replace(tmp, final)
            fsync_dir(final.parent)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def write_new(self, key: str, write: Callable[[IO[bytes]], None]) -> int:
        path = self.path(key)
        directory = path.parent
        # Before anything is created: a planted symlink in the existing part of the path would
        # make mkdir -p create directories outside the lake.
        self._inside(directory)
        try:
            makedirs_durable(directory)
            self._inside(directory)  # (a race with a planter)
            with open(path, "xb") as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
            fsync_dir(directory)
            return os.stat(path).st_size
        except BaseException as exc:
            with contextlib.suppress(OSError):
                path.unlink()
            if isinstance(exc, OSError) and not isinstance(exc, LakeError):
                raise LakeWriteError(f"cannot write {path}: {exc.strerror or exc}") from exc
            raise

    def delete(self, key: str) -> bool:
        try:
            os.unlink(self.path(key))
            return True
        except FileNotFoundError:
            return False

    def identity(self, key: str) -> str:
        try:
            st = os.stat(self.path(key))
        except OSError:
            return ""
        return f"{st.st_dev}:{st.st_ino}"


#: What a lake's root may hold: its tables, the instrument history and ``_meta``.
LAKE_ENTRIES: Final = frozenset({
    "candles", "trades", "funding", "mark_candles", "index_candles", "premium_candles", "open_interest",
    "instruments", "_meta",
})


def check_is_lake(storage: Storage) -> None:
    """Refuse a remote root that holds something other than a lake (another team's data, a
    mistyped prefix): marketlake would otherwise write its tables among foreign objects.

    Raises:
        LakeError: the root holds names a lake never has (the first few are named); or the
            store cannot be reached, the bucket is missing, the credentials are refused.
    """
    if storage.is_local:
        return
    foreign = [n for n in storage.top_level() if n not in LAKE_ENTRIES]
    if foreign:
        shown = ", ".join(foreign[:3]) + (" ..." if len(foreign) > 3 else "")
        raise LakeError(f"{storage.display} holds objects that are not a marketlake lake ({shown}); "
                        "point --lake at an empty prefix or an existing lake")


def open_storage(root: str | os.PathLike[str], settings: Any) -> Storage:
    """The storage of a lake root: an ``s3://`` URL or a directory."""
    if is_remote(root):
        url = str(root)
        if url.lower().startswith("s3a://"):
            url = "s3://" + url[len("s3a://"):]
        from marketlake.store.s3 import S3Storage, s3_config_from

        return S3Storage(url, s3_config_from(settings), getattr(settings, "state_path", None))
    text = str(root)
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise LakeError(f"lake root {text}: the {scheme}:// scheme is not supported (use a directory or s3://bucket/prefix)")
    path = Path(text).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise LakeError(f"lake root {path} exists and is not a directory")
    return LocalStorage(path)
