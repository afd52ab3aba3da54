"""One partition at a time: reading it, caching it, and the point lookups built on that.

A point lookup (the candle at ``t``, the last candle closed at ``t``, the last ``n`` candles)
computes the partition key from the time, looks that one partition's files up in the table
version the lake reads, and binary-searches its sorted ``ts``. Earlier partitions are opened only when the answer lies before the first one (a gap), so a
lookup never scans a whole series.

Partitions read for lookups are kept in a small LRU cache, keyed by series and partition and
checked against the partition's file list on every use: a commit to the partition changes the list
(files are never rewritten in place, names never reused), so a cached partition is never stale.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, TypeVar

import numpy as np
import polars as pl

from marketlake.core.schemas import CANDLE_SCHEMA
from marketlake.errors import CorruptLakeError
from marketlake.store.datasets import CANDLES, spec
from marketlake.store.layout import SeriesId

if TYPE_CHECKING:
    from marketlake.store.lake import Lake

__all__ = ["Part", "PartitionCache", "read_files", "read_partition_files", "retrying", "ts_array"]

T = TypeVar("T")
_RETRIES: Final = 8


def ts_array(frame: pl.DataFrame) -> np.ndarray:
    """The ``ts`` column as contiguous int64 epoch ms (what ``np.searchsorted`` wants)."""
    return frame.get_column("ts").dt.epoch("ms").to_numpy()


def read_files(
    files: Sequence[Path | str], schema: dict[str, pl.DataType] | None = None,
    storage_options: dict[str, str] | None = None,
) -> pl.DataFrame:
    """Read stored candle files (or another dataset's, given its ``schema``) into one frame
    (stored columns, in file order).

    Raises:
        FileNotFoundError: a file was moved away by a concurrent writer (re-plan and retry).
        CorruptLakeError: a file exists but cannot be decoded.
    """
    schema = CANDLE_SCHEMA if schema is None else schema
    if not files:
        return pl.DataFrame(schema=schema)
    try:
        # The same reading contract as the store's scans: the stored schema, no hive parsing,
        # no globbing of the (already exact) file list.
        return pl.read_parquet(
            [str(f) for f in files], schema=schema, hive_partitioning=False, glob=False,
            storage_options=storage_options,
        )
    except FileNotFoundError:
        raise
    except (pl.exceptions.ComputeError, pl.exceptions.SchemaError, OSError) as exc:
        missing = [f for f in files if "://" not in str(f) and not Path(f).exists()]
        if missing:  # the log references it, so this is damage, not a race (fsck, then repair)
            raise CorruptLakeError(missing[0], "referenced by the log but missing") from None
        raise CorruptLakeError(files[0], f"cannot read candles: {str(exc).splitlines()[0]}") from None


def retrying(action: Callable[[], T]) -> T:
    """Run ``action``; when a writer moved a planned file into the trash meanwhile, plan and run again."""
    for attempt in range(_RETRIES):
        try:
            return action()
        except FileNotFoundError:
            if attempt == _RETRIES - 1:
                raise
            time.sleep(0.001 * 2**attempt)
    raise AssertionError("unreachable")


def live_partition_files(lake: Lake, sid: SeriesId, key: str) -> tuple[str, ...]:
    """The files of one partition in the version ``lake`` reads (empty when it holds nothing)."""
    base = lake.storage.uri(sid.dataset)
    return tuple(f"{base}/{f.path}" for f in lake.snapshot(sid.dataset).partition(sid, key))


def read_partition_files(lake: Lake, sid: SeriesId, key: str) -> tuple[tuple[Path, ...], pl.DataFrame]:
    """List and read one partition (of any time-series dataset: its stored schema)."""
    files = live_partition_files(lake, sid, key)
    return files, read_files(files, None if sid.dataset == CANDLES else spec(sid.dataset).schema,
                             lake.storage.polars_options())


@dataclass(frozen=True, slots=True)
class Part:
    """One partition in memory: its live files when read, its rows, their ``ts`` in epoch ms."""

    key: str
    files: tuple[Path, ...]
    frame: pl.DataFrame
    ts: np.ndarray
    names: tuple[Path, ...] = ()  # the file list it was read under (the freshness check)

    @property
    def nbytes(self) -> int:
        """Memory held (frame plus the ts array)."""
        return int(self.frame.estimated_size()) + int(self.ts.nbytes)


class PartitionCache:
    """LRU cache of partitions read for point lookups, bounded in bytes.

    Args:
        root: The lake root.
        max_bytes: Evict least recently used partitions beyond this many bytes (the most recent
            partition is always kept, whatever its size).
        reader: How a partition is read; ``read_partition_files`` (replaceable in tests to count
            reads).
    """

    def __init__(
        self,
        lake: Lake,
        max_bytes: int,
        reader: Callable[[Lake, SeriesId, str], tuple[tuple[Path, ...], pl.DataFrame]] = read_partition_files,
    ) -> None:
        self.lake = lake
        self.root = lake.root
        self.max_bytes = max_bytes
        self.reader = reader
        self._parts: OrderedDict[tuple[SeriesId, str], Part] = OrderedDict()
        self._bytes = 0
        self.reads = 0  # partitions read from disk so far (tests and benchmarks look at it)

    @property
    def nbytes(self) -> int:
        """Bytes held by cached partitions."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._parts)

    def clear(self) -> None:
        """Drop every cached partition."""
        self._parts.clear()
        self._bytes = 0

    def get(self, sid: SeriesId, key: str) -> Part | None:
        """Partition ``key`` of ``sid`` (None when it holds no rows), from cache when still current.

        A cached partition is current while the table version lists the same files for it:
        every commit adds a file (names are never reused), so the list is enough to tell.
        """
        names = live_partition_files(self.lake, sid, key)
        hit = self._parts.get((sid, key))
        if hit is not None and hit.names == names:
            self._parts.move_to_end((sid, key))
            return hit if hit.frame.height else None
        if not names:
            self._drop((sid, key))
            return None
        files, frame = self.reader(self.lake, sid, key)
        self.reads += 1
        part = Part(key, files, frame, ts_array(frame), names)
        self._drop((sid, key))
        self._parts[(sid, key)] = part
        self._bytes += part.nbytes
        while self._bytes > self.max_bytes and len(self._parts) > 1:
            _, old = self._parts.popitem(last=False)
            self._bytes -= old.nbytes
        return part if frame.height else None

    def _drop(self, k: tuple[SeriesId, str]) -> None:
        old = self._parts.pop(k, None)
        if old is not None:
            self._bytes -= old.nbytes

    # ------------------------------------------------------------------ lookups

    def exact(self, sid: SeriesId, t_ms: int) -> tuple[Part, int] | None:
        """The row whose open time is ``t_ms``: (partition, index), or None."""
        part = self.get(sid, sid.period.key(t_ms))
        if part is None:
            return None
        i = int(np.searchsorted(part.ts, t_ms, side="left"))
        if i < part.ts.size and part.ts[i] == t_ms:
            return part, i
        return None

    def last_before(self, sid: SeriesId, bound_ms: int) -> tuple[Part, int] | None:
        """The row with the greatest open time ``< bound_ms``: (partition, index), or None.

        Opens the partition holding ``bound_ms - 1`` and, only if it has no such row, walks back
        through earlier partitions (a gap in the data) until one has rows.
        """
        key = sid.period.key(bound_ms - 1)
        part = self.get(sid, key)
        if part is not None:
            i = int(np.searchsorted(part.ts, bound_ms, side="left"))
            if i > 0:
                return part, i - 1
        for earlier in reversed(self._keys_before(sid, key)):
            part = self.get(sid, earlier)
            if part is not None:
                return part, part.ts.size - 1  # the whole partition lies before bound_ms
        return None

    def last_rows(self, sid: SeriesId, n: int, bound_ms: int | None = None) -> pl.DataFrame:
        """The last ``n`` rows with open time ``< bound_ms`` (all rows when None), oldest first."""
        keys = self._keys(sid)
        if bound_ms is not None:
            last = sid.period.key(bound_ms - 1)
            keys = [k for k in keys if k <= last]
        pieces: list[pl.DataFrame] = []
        have = 0
        for key in reversed(keys):
            part = self.get(sid, key)
            if part is None:
                continue
            stop = part.ts.size if bound_ms is None else int(np.searchsorted(part.ts, bound_ms, "left"))
            take = min(n - have, stop)
            if take > 0:
                pieces.append(part.frame.slice(stop - take, take))
                have += take
            if have >= n:
                break
        if not pieces:
            return pl.DataFrame(schema=CANDLE_SCHEMA)
        return pl.concat(list(reversed(pieces)))

    def _keys(self, sid: SeriesId) -> list[str]:
        """Partition keys of ``sid`` in time order (keys of one period sort chronologically)."""
        return list(self.lake.snapshot(sid.dataset).partitions(sid))

    def _keys_before(self, sid: SeriesId, key: str) -> list[str]:
        return [k for k in self._keys(sid) if k < key]
