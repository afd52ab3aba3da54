"""Streaming pieces of the CSV import: safe opening, line-aligned byte chunks, a reader thread,
and an exact count of repeated timestamps in bounded memory.

Nothing here knows the candle format; :mod:`marketlake.interop.csv` parses and validates each
chunk. A chunk is the file's header line followed by whole data lines, so every chunk parses as
a small CSV file of its own and a row's file line is ``first_line + row index``.
"""

from __future__ import annotations

import os
import queue
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, TypeVar

import numpy as np

from marketlake.errors import ImportRejectedError

__all__ = ["Chunk", "DistinctTimes", "background", "open_regular", "read_chunks"]

T = TypeVar("T")

# 8 MiB of CSV is ~100,000 old-format rows (~83 B a line). Measured importing a 2.5 M-row file
# (206 MB) on 2 cores: 8, 16 and 32 MiB chunks import at the same speed within noise (a chunk
# costs a few ms of fixed work), while peak memory grows by ~7 bytes per chunk byte (the block,
# its copy with the header, polars' parse, the frame queued and the one being merged): growth
# ~205 / 280 / 380 MiB. 8 MiB still hands polars' parser enough to use every core.
CHUNK_BYTES: Final = 8 << 20
# The longest legitimate line is ~8 fields of at most 64 bytes; a line of 1 MiB is corrupt (or
# binary) and must not make the reader buffer an unbounded line.
MAX_LINE_BYTES: Final = 1 << 20


@dataclass(frozen=True, slots=True)
class Chunk:
    """Part of a CSV file that parses on its own.

    Attributes:
        data: The header line followed by whole data lines (the last line may lack its newline).
        first_line: The 1-based file line number of the first data line.
        index: 0 for the chunk that starts the file.
    """

    data: bytes
    first_line: int
    index: int


def open_regular(path: Path) -> BinaryIO:
    """Open ``path`` for reading only if it is a regular file.

    ``O_NONBLOCK`` makes opening a FIFO return at once instead of waiting for a writer, and the
    type is checked on the opened descriptor (``fstat``), so a path swapped for a FIFO or a device
    between a check and the open is refused too; ``/dev/zero`` would otherwise be read forever.

    Raises:
        ImportRejectedError: missing, unreadable, or not a regular file.
    """
    try:
        # Checked before opening too: a device is never opened at all (opening some has effects).
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise ImportRejectedError(path, f"not a regular file ({_kind(mode)})")
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ImportRejectedError(path, f"cannot read: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ImportRejectedError(path, f"not a regular file ({_kind(mode)})")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise


def _kind(mode: int) -> str:
    return "a directory" if stat.S_ISDIR(mode) else "a FIFO, socket or device"


def read_chunks(path: Path, chunk_bytes: int | None = None) -> Iterator[Chunk]:
    """Yield ``path`` as line-aligned chunks of about ``chunk_bytes`` (default
    :data:`CHUNK_BYTES`) each, the header line repeated at the start of every chunk.

    Memory: one block read plus its copy with the header; lines are never split, a line longer
    than :data:`MAX_LINE_BYTES` is refused.

    Raises:
        ImportRejectedError: the file cannot be opened as a regular file, or a line is too long.
    """
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    with open_regular(path) as fh:
        header, rest = _header_line(path, fh)
        first_line, index = 2, 0
        carry = rest
        while True:
            block = fh.read(chunk_bytes)
            eof = not block
            if eof:
                data = header + carry
            else:
                cut = block.rfind(b"\n") + 1
                if cut == 0:  # no line end in a whole block: keep reading, within the line limit
                    carry += block
                    if len(carry) > MAX_LINE_BYTES:
                        raise ImportRejectedError(
                            path, f"a line longer than {MAX_LINE_BYTES >> 20} MiB (corrupt file?)", first_line
                        )
                    continue
                # One copy of the block (the memoryview avoids a second one for the slice).
                data = b"".join((header, carry, memoryview(block)[:cut]))
                carry = block[cut:]
                del block
            yield Chunk(data, first_line, index)
            if eof:
                return
            first_line += data.count(b"\n") - header.count(b"\n")
            del data  # not kept alive while the next block is read
            index += 1


def _header_line(path: Path, fh: BinaryIO) -> tuple[bytes, bytes]:
    """The first line (with its line end) and whatever was read after it."""
    got = b""
    while True:
        block = fh.read(64 << 10)
        got += block
        end = got.find(b"\n")
        if end >= 0:
            return got[: end + 1], got[end + 1 :]
        if not block:
            return got, b""
        if len(got) > MAX_LINE_BYTES:
            raise ImportRejectedError(
                path, f"the header line is longer than {MAX_LINE_BYTES >> 20} MiB (not a CSV file?)", 1
            )


class _Failed:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_END: Final = object()


def background(make: Callable[[], Iterator[T]], depth: int = 1) -> Iterator[T]:
    """Run the iterator ``make()`` in a thread, ``depth`` items ahead of the consumer.

    This overlaps producing (reading + parsing a chunk) with consuming (the lake merging and
    encoding the previous one); both release the GIL in their heavy parts. The bounded queue keeps
    at most ``depth`` finished items waiting, so memory stays a few chunks. An exception in the
    producer is raised in the consumer; a consumer that stops early stops the producer.
    """
    q: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in make():
                if not put(item):
                    return
            put(_END)
        except BaseException as exc:  # handed to the consumer, who raises it
            put(_Failed(exc))

    thread = threading.Thread(target=produce, name="csv-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.exc
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join()


def _sorted_unique(a: np.ndarray) -> np.ndarray:
    """``np.unique`` for int64, fast on sorted input: numpy 2's ``unique`` hashes (~1 s per
    million values here) where a sorted check plus a sort is ~1-10 ms."""
    if a.size > 1 and not bool((a[1:] > a[:-1]).all()):
        a = np.sort(a)
        a = a[np.concatenate(([True], a[1:] != a[:-1]))]
    return a


class DistinctTimes:
    """Counts repeated timestamps over a whole file, chunk by chunk, exactly.

    Rows arriving in time order (nearly every file) cost nothing to remember: distinct times are
    kept as arithmetic runs (start, step, count), so a regular series is one run per gap and per
    chunk. Only irregular or out-of-order times are kept one by one (8 bytes each), the price of an
    exact count for a file that is not sorted.
    """

    def __init__(self) -> None:
        self.repeated = 0
        self._last: int | None = None
        self._starts = np.empty(0, np.int64)
        self._steps = np.empty(0, np.int64)
        self._counts = np.empty(0, np.int64)
        self._points = np.empty(0, np.int64)  # sorted

    def add(self, ts: np.ndarray) -> None:
        """Take one chunk's timestamps (any order)."""
        u = _sorted_unique(ts)
        self.repeated += int(ts.size - u.size)
        cut = 0 if self._last is None else int(np.searchsorted(u, self._last, side="right"))
        head, tail = u[:cut], u[cut:]
        if head.size:  # back in time: compare with everything seen
            seen = self._contains(head)
            self.repeated += int(seen.sum())
            self._points = _sorted_unique(np.concatenate((self._points, head[~seen])))
        if tail.size:
            self._append(tail)
            self._last = int(tail[-1])

    def _append(self, tail: np.ndarray) -> None:
        if tail.size < 3:
            self._points = np.concatenate((self._points, tail))
            return
        d = np.diff(tail)
        # Segments of equal steps; neighbouring runs share their boundary element, harmless for
        # membership and it keeps the runs sorted with no gaps between them.
        starts = np.concatenate(([0], np.flatnonzero(d[1:] != d[:-1]) + 1))
        stops = np.concatenate((starts[1:], [d.size]))
        if starts.size * 3 > tail.size:  # irregular: runs would cost more than the values
            self._points = np.concatenate((self._points, tail))
            return
        self._starts = np.concatenate((self._starts, tail[starts]))
        self._steps = np.concatenate((self._steps, d[starts]))
        self._counts = np.concatenate((self._counts, stops - starts + 1))

    def _contains(self, x: np.ndarray) -> np.ndarray:
        found = np.zeros(x.size, bool)
        if self._points.size:
            i = np.searchsorted(self._points, x).clip(max=self._points.size - 1)
            found |= self._points[i] == x
        if self._starts.size:
            # The run with the largest start <= x is the only one that can hold x.
            j = np.searchsorted(self._starts, x, side="right") - 1
            ok = j >= 0
            jj = j.clip(min=0)
            off = x - self._starts[jj]
            step = self._steps[jj]
            found |= ok & (off % step == 0) & (off // step < self._counts[jj])
        return found
