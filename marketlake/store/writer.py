"""Committing rows to partitions: merge by key (last write wins), append deltas, compact.

Every commit of a partition happens under that partition's lock, so concurrent writers (threads
or processes) are serialised and no update is lost. Within the lock a writer either

* appends a ``delta`` file, when every incoming row is newer than everything stored (the live
  flush case; no stored byte is rewritten), folding the deltas into a new ``part`` once there are
  ``compact_after`` of them; or
* rewrites the partition as a new ``part``: stored rows merged with the incoming ones by key, the
  incoming row winning, sorted by ``ts`` — unless nothing would change, in which case nothing is
  written at all (an idempotent re-write leaves every file as it was).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from marketlake.core.schemas import CANDLE_ARROW_SCHEMA, TRADE_ARROW_SCHEMA
from marketlake.errors import CorruptLakeError, LakeWriteError
from marketlake.store.files import list_data_files, partition_lock, publish_table, to_trash
from marketlake.store.layout import CANDLES, DataFile, SeriesId, data_file_name, live_files
from marketlake.store.reader import scan_data_files

__all__ = ["WriteResult", "commit_rows", "compact_partition", "replace_range", "rewrite_partition"]


@dataclass(slots=True)
class WriteResult:
    """What a write did.

    Attributes:
        rows_new: Keys that were not stored before.
        rows_replaced: Keys that were stored with other values (the new values won).
        rows_unchanged: Keys stored with exactly these values (nothing rewritten for them).
        rows_deleted: Keys removed (by a delete or repair).
        partitions: Partition keys whose files changed, in time order.
        files_written: Data files published.
    """

    rows_new: int = 0
    rows_replaced: int = 0
    rows_unchanged: int = 0
    rows_deleted: int = 0
    partitions: list[str] = field(default_factory=list)
    files_written: int = 0

    def __iadd__(self, other: WriteResult) -> WriteResult:
        self.rows_new += other.rows_new
        self.rows_replaced += other.rows_replaced
        self.rows_unchanged += other.rows_unchanged
        self.rows_deleted += other.rows_deleted
        self.partitions.extend(other.partitions)
        self.files_written += other.files_written
        return self

    @property
    def changed(self) -> bool:
        """True when any file was written."""
        return self.files_written > 0


def _arrow_schema(sid: SeriesId) -> pa.Schema:
    return CANDLE_ARROW_SCHEMA if sid.dataset == CANDLES else TRADE_ARROW_SCHEMA


def _key_column(sid: SeriesId) -> str:
    return "ts" if sid.dataset == CANDLES else "trade_id"


def read_files(files: list[DataFile], dataset: str) -> pl.DataFrame:
    """Read data files of one partition (in sequence order) into one frame.

    Raises:
        CorruptLakeError: a file cannot be decoded.
    """
    frames = []
    for f in files:
        try:
            frames.append(scan_data_files(dataset, [f.path]).collect())
        except FileNotFoundError:
            raise
        except Exception as exc:  # polars raises several types for a damaged file
            raise CorruptLakeError(f.path, f"unreadable Parquet file: {str(exc).splitlines()[0]}") from None
    return pl.concat(frames, how="vertical") if len(frames) > 1 else frames[0]


def _max_ts_raw(f: DataFile) -> int:
    """The largest ``ts`` in a file, in the file's own unit, from the footer statistics."""
    try:
        meta = pq.ParquetFile(f.path).metadata
    except Exception as exc:
        raise CorruptLakeError(f.path, f"unreadable Parquet footer: {exc}") from None
    best: int | None = None
    for i in range(meta.num_row_groups):
        stats = meta.row_group(i).column(0).statistics
        if stats is None or not stats.has_min_max:
            return _max_ts_from_data(f)
        best = stats.max_raw if best is None else max(best, stats.max_raw)
    return -(2**63) if best is None else int(best)


def _max_ts_from_data(f: DataFile) -> int:
    ts = pl.read_parquet(f.path, columns=["ts"]).get_column("ts")
    return -(2**63) if ts.is_empty() else int(ts.cast(pl.Int64).max())  # type: ignore[arg-type]


def _to_table(df: pl.DataFrame, sid: SeriesId) -> pa.Table:
    schema = _arrow_schema(sid)
    return df.select(schema.names).to_arrow().cast(schema)


def _publish(df: pl.DataFrame, sid: SeriesId, pdir: Path, kind: str, seq: int) -> None:
    publish_table(_to_table(df, sid), pdir, data_file_name(kind, seq))


def _diff_counts(old: pl.DataFrame, new: pl.DataFrame, key: str) -> tuple[int, int, int]:
    """(new, replaced, unchanged) counts of ``new``'s keys against ``old``.

    Values compare equal when both are null or both NaN, so re-writing stored rows that hold
    NaN or null counts as unchanged.
    """
    value_cols = [c for c in new.columns if c != key]
    joined = new.join(old.with_columns(pl.lit(True).alias("__present")), on=key, how="left", suffix="__old")
    present = pl.col("__present").fill_null(False)
    same = present
    for c in value_cols:
        a, b = pl.col(c), pl.col(f"{c}__old")
        eq = a.eq_missing(b)
        if joined.schema[c].is_float():
            eq = eq | (a.is_nan() & b.is_nan()).fill_null(False)
        same = same & eq
    n_present, n_same = joined.select(present.sum().alias("p"), same.sum().alias("s")).row(0)
    return new.height - n_present, n_present - n_same, n_same


def _merge(old: pl.DataFrame, new: pl.DataFrame, key: str) -> pl.DataFrame:
    kept = old.join(new.select(key), on=key, how="anti")
    return pl.concat([kept, new], how="vertical").sort("ts", maintain_order=True)


@dataclass(frozen=True, slots=True)
class _Opened:
    """A partition under its lock: its data files, their live set, the next sequence number."""

    pdir: Path
    files: list[DataFile]
    live: list[DataFile]
    next_seq: int

    @property
    def superseded(self) -> list[Path]:
        """Files the live set no longer uses."""
        return [f.path for f in self.files if f not in self.live]


@contextmanager
def _opened(root: Path, sid: SeriesId, key: str) -> Iterator[_Opened]:
    pdir = sid.partition_dir(root, key)
    with partition_lock(root, pdir):
        files = list_data_files(pdir)
        yield _Opened(pdir, files, live_files(files), max((f.seq for f in files), default=0) + 1)


def commit_rows(
    root: Path,
    sid: SeriesId,
    key: str,
    rows: pl.DataFrame,
    *,
    compact_after: int,
) -> WriteResult:
    """Merge ``rows`` (normalised, unique by key, sorted by ts, all inside partition ``key``).

    Raises:
        LakeWriteError: the partition could not be written; it keeps its previous state.
        CorruptLakeError: a stored file of the partition cannot be read.
    """
    key_col = _key_column(sid)
    result = WriteResult()
    with _opened(root, sid, key) as part:
        pdir, live, next_seq, superseded = part.pdir, part.live, part.next_seq, part.superseded
        if not live:
            _publish(rows, sid, pdir, "part", next_seq)
            result.rows_new = rows.height
        else:
            new_min = int(rows.get_column("ts").cast(pl.Int64).min())  # type: ignore[arg-type]
            if new_min > _max_ts_raw(live[-1]):
                deltas = sum(1 for f in live if f.kind == "delta")
                if deltas + 1 >= compact_after:
                    merged = pl.concat([read_files(live, sid.dataset), rows], how="vertical")
                    _publish(merged, sid, pdir, "part", next_seq)
                    superseded += [f.path for f in live]
                else:
                    _publish(rows, sid, pdir, "delta", next_seq)
                result.rows_new = rows.height
            else:
                old = read_files(live, sid.dataset)
                n_new, n_replaced, n_same = _diff_counts(old, rows, key_col)
                result.rows_new, result.rows_replaced, result.rows_unchanged = n_new, n_replaced, n_same
                if n_new or n_replaced:
                    _publish(_merge(old, rows, key_col), sid, pdir, "part", next_seq)
                    superseded += [f.path for f in live]
        if result.rows_new or result.rows_replaced:
            result.partitions.append(key)
            result.files_written = 1
        to_trash(root, superseded)
    return result


def replace_range(
    root: Path,
    sid: SeriesId,
    key: str,
    lo: int,
    hi: int,
    rows: pl.DataFrame,
) -> WriteResult:
    """Make ``rows`` the partition's complete content within ``[lo, hi)`` (epoch ms), in one
    atomic step; stored rows outside the range stay.

    ``rows`` are normalised, unique by key, sorted by ts and inside both the partition and the
    range. Stored rows of the range are replaced, kept (equal) or deleted (absent from ``rows``);
    nothing is written when the partition would not change.

    Raises:
        LakeWriteError: the partition could not be written; it keeps its previous state.
        CorruptLakeError: a stored file of the partition cannot be read.
    """
    key_col = _key_column(sid)
    result = WriteResult()
    with _opened(root, sid, key) as part:
        pdir, live, next_seq = part.pdir, part.live, part.next_seq
        if not live:
            if rows.height:
                _publish(rows, sid, pdir, "part", next_seq)
                result.rows_new, result.partitions, result.files_written = rows.height, [key], 1
            return result
        old = read_files(live, sid.dataset)
        t = pl.col("ts").dt.epoch("ms")
        in_range = (t >= lo) & (t < hi)
        inside, outside = old.filter(in_range), old.filter(~in_range)
        n_new, n_replaced, n_same = _diff_counts(inside, rows, key_col)
        deleted = inside.height - n_replaced - n_same
        result.rows_new, result.rows_replaced, result.rows_unchanged = n_new, n_replaced, n_same
        result.rows_deleted = deleted
        if n_new or n_replaced or deleted:
            outside = outside.join(rows.select(key_col), on=key_col, how="anti")  # one row per key
            merged = pl.concat([outside, rows], how="vertical").sort("ts", maintain_order=True)
            _publish(merged, sid, pdir, "part", next_seq)
            result.partitions, result.files_written = [key], 1
            to_trash(root, [f.path for f in part.files])
    return result


def rewrite_partition(
    root: Path,
    sid: SeriesId,
    key: str,
    transform: Callable[[pl.DataFrame], pl.DataFrame],
) -> WriteResult:
    """Replace a partition's rows by ``transform(rows)`` atomically (used by deletes and repair).

    ``transform`` may only drop or change rows of this partition. Nothing is written when the
    result equals the input.
    """
    result = WriteResult()
    with _opened(root, sid, key) as part:
        live = part.live
        if not live:
            return result
        old = read_files(live, sid.dataset)
        new = transform(old)
        if new.equals(old):
            return result
        lo, hi = sid.period.bounds(key)
        ts = new.get_column("ts").dt.epoch("ms")
        if new.height and (int(ts.min()) < lo or int(ts.max()) >= hi):  # type: ignore[arg-type]
            raise LakeWriteError(f"rewrite of {sid.label()} {key} would move rows out of the partition")
        _publish(new.sort("ts", maintain_order=True), sid, part.pdir, "part", part.next_seq)
        kept = new.select(_key_column(sid)).join(old.select(_key_column(sid)), on=_key_column(sid), how="semi")
        result.rows_deleted = old.height - kept.height
        result.partitions.append(key)
        result.files_written = 1
        to_trash(root, [f.path for f in part.files])
    return result


def compact_partition(root: Path, sid: SeriesId, key: str) -> WriteResult:
    """Fold a partition's delta files into one ``part`` and move superseded files to the trash."""
    result = WriteResult()
    with _opened(root, sid, key) as part:
        live, superseded = part.live, part.superseded
        if len(live) > 1:
            _publish(read_files(live, sid.dataset), sid, part.pdir, "part", part.next_seq)
            superseded += [f.path for f in live]
            result.partitions.append(key)
            result.files_written = 1
        to_trash(root, superseded)
    return result


def partition_slices(ts_ms: np.ndarray, sid: SeriesId) -> list[tuple[str, int, int]]:
    """Split a sorted ts array into ``(partition key, start, stop)`` runs."""
    if ts_ms.size == 0:
        return []
    unit = {"day": "D", "month": "M", "year": "Y"}[sid.period.value]
    bucket = ts_ms.astype("datetime64[ms]").astype(f"datetime64[{unit}]").astype(np.int64)
    cuts = np.flatnonzero(bucket[1:] != bucket[:-1]) + 1
    starts = np.concatenate(([0], cuts))
    stops = np.concatenate((cuts, [ts_ms.size]))
    return [(sid.period.key(int(ts_ms[a])), int(a), int(b)) for a, b in zip(starts, stops)]
