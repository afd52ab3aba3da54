"""Time-ordered batches over many series, holding about one partition per series at a time.

Each series is read partition by partition (a cursor). A merge step takes, from every cursor, the
rows up to a *watermark*: no larger than the smallest last ``ts`` any cursor holds (so every row up
to it is in memory: a series' next partition only holds later rows), and small enough that each
cursor gives at most ``ceil(rows / cursors)`` rows (so a step is about one batch, not one partition
per series). The step is sorted by ``ts`` (stable, so ties keep series order: symbol, then
timeframe as requested) and cut into batches of exactly ``rows`` rows, the last one shorter.

Memory held: one partition per series plus about two batches, whatever the length of the range.
:func:`working_set_bytes` estimates what that costs the process, and the feeder checks it against
its budget.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import polars as pl

from marketlake._feeder.budget import LABEL_BYTES, ROW_BYTES
from marketlake._feeder.parts import ts_array
from marketlake.store.layout import SeriesId
from marketlake.store.reader import PartitionFiles

__all__ = ["merged_batches", "working_set_bytes"]

PartReader = Callable[[Path, SeriesId, str], tuple[tuple[Path, ...], pl.DataFrame]]


#: Process memory grows by up to this multiple of the bytes the merge holds: Parquet read and
#: decompression buffers, and freed memory the allocator keeps (measured with
#: ``benchmarks/bench_feeder.py`` part 3: 1, 3 and 20 series, 10k and 100k rows per batch).
READ_OVERHEAD = 3.0


def working_set_bytes(partition_rows: Sequence[int], rows: int) -> int:
    """Memory :func:`merged_batches` needs at most: the largest partition of each series, a step
    being sorted and the batch handed out (with label columns), times :data:`READ_OVERHEAD`."""
    held = sum(partition_rows) * ROW_BYTES + 3 * rows * (ROW_BYTES + LABEL_BYTES)
    return int(READ_OVERHEAD * held)


class _Cursor:
    """Reads one series partition by partition, restricted to ``[lo, hi)``."""

    def __init__(
        self, root: Any, sid: SeriesId, parts: list[PartitionFiles], lo: int | None, hi: int | None,
        read: PartReader,
    ) -> None:
        self.root, self.sid, self.lo, self.hi, self.read = root, sid, lo, hi, read
        self.keys = [p.key for p in parts]
        self.frame: pl.DataFrame | None = None
        self.ts = np.empty(0, dtype=np.int64)
        self.pos = 0

    def fill(self) -> bool:
        """Make sure rows are buffered; False once the series is exhausted."""
        while self.pos >= self.ts.size:
            self.frame = None  # let the previous partition go before reading the next
            if not self.keys:
                return False
            _, frame = self.read(self.root, self.sid, self.keys.pop(0))
            ts = ts_array(frame)
            a = 0 if self.lo is None else int(np.searchsorted(ts, self.lo, "left"))
            b = ts.size if self.hi is None else int(np.searchsorted(ts, self.hi, "left"))
            self.frame, self.ts, self.pos = frame.slice(a, b - a), ts[a:b], 0
        return True

    @property
    def last_ts(self) -> int:
        return int(self.ts[-1])

    def ts_at(self, k: int) -> int:
        """``ts`` of the k-th buffered row from the current position (clamped to the last)."""
        return int(self.ts[min(self.pos + k, self.ts.size - 1)])

    def take_through(self, watermark: int) -> pl.DataFrame:
        """Buffered rows with ``ts <= watermark``, labelled with symbol and timeframe."""
        assert self.frame is not None
        end = int(np.searchsorted(self.ts, watermark, "right"))
        piece = self.frame.slice(self.pos, end - self.pos)
        self.pos = end
        tf = self.sid.timeframe
        return piece.select(
            pl.lit(self.sid.symbol, dtype=pl.String).alias("symbol"),
            pl.lit(tf.name if tf else None, dtype=pl.String).alias("timeframe"),
            pl.all(),
        )


def merged_batches(
    root: Any,
    series: Sequence[tuple[SeriesId, list[PartitionFiles]]],
    lo: int | None,
    hi: int | None,
    rows: int,
    read: PartReader,
) -> Iterator[pl.DataFrame]:
    """Batches of ``rows`` rows (the last one shorter) of every series, in ``ts`` order.

    Args:
        root: The lake (handed to ``read``).
        series: Each series with its partitions (in time order) overlapping ``[lo, hi)``.
        lo: Inclusive lower bound on ``ts`` (epoch ms), or None.
        hi: Exclusive upper bound, or None.
        rows: Rows per batch.
        read: Reads one partition (the feeder's partition reader, retried across rewrites).
    """
    cursors = [_Cursor(root, sid, parts, lo, hi, read) for sid, parts in series]
    pending: pl.DataFrame | None = None
    while True:
        active = [c for c in cursors if c.fill()]
        if not active:
            break
        per = max(1, -(-rows // len(active)))
        watermark = min(min(c.last_ts for c in active), min(c.ts_at(per - 1) for c in active))
        step = pl.concat([c.take_through(watermark) for c in active], how="vertical")
        step = step.sort("ts", maintain_order=True)
        pending = step if pending is None else pl.concat([pending, step], how="vertical", rechunk=True)
        while pending.height >= rows:
            yield pending.slice(0, rows)
            pending = pending.slice(rows)
    if pending is not None and pending.height:
        yield pending
