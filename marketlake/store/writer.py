"""Committing rows to partitions: merge by key (last write wins), append, replace, rewrite, compact.

A write of one series is planned from one table snapshot, partition by partition (in parallel
threads: Parquet encoding releases the GIL), and committed as ONE Delta transaction. Per
partition the plan is

* nothing stored: add the rows as a file;
* every incoming row newer than everything stored (the live-flush case): add them as one more
  file, nothing stored is rewritten; once the partition would hold ``compact_after`` files, fold
  it into one file instead;
* otherwise: merge stored and incoming rows by key (the incoming row wins, sorted by ``ts``) into
  one new file that replaces the partition's files — unless nothing would change, in which case
  nothing is written at all (an idempotent re-write commits nothing).

If another writer changed a planned partition before the commit (:class:`CommitConflict`), the
files this writer wrote are deleted and the whole write is planned again from the newer version,
so concurrent writers (threads, processes, machines) never lose an update.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np
import polars as pl
import pyarrow as pa

from marketlake.errors import CorruptLakeError, LakeWriteError
from marketlake.store.files import remove_files, write_data_file
from marketlake.store.datasets import spec
from marketlake.store.layout import SeriesId
from marketlake.store.reader import scan_data_files
from marketlake.store.storage import Storage
from marketlake.store.table import (
    CommitConflict,
    DatasetTable,
    FileEntry,
    NewFile,
    Snapshot,
    data_arrow_schema,
    partition_values,
)

__all__ = ["WriteResult", "partition_slices", "read_entries", "write_series", "write_series_chunks"]

_CONFLICT_ATTEMPTS: Final = 100


@dataclass(slots=True)
class WriteResult:
    """What a write did.

    Attributes:
        rows_new: Keys that were not stored before.
        rows_replaced: Keys that were stored with other values (the new values won).
        rows_unchanged: Keys stored with exactly these values (nothing rewritten for them).
        rows_deleted: Keys removed (by a delete, a replace or repair).
        partitions: Partition keys whose files changed, in time order.
        files_written: Data files added.
        version: The table version committed (None when nothing was committed).
    """

    rows_new: int = 0
    rows_replaced: int = 0
    rows_unchanged: int = 0
    rows_deleted: int = 0
    partitions: list[str] = field(default_factory=list)
    files_written: int = 0
    version: int | None = None

    def __iadd__(self, other: WriteResult) -> WriteResult:
        self.rows_new += other.rows_new
        self.rows_replaced += other.rows_replaced
        self.rows_unchanged += other.rows_unchanged
        self.rows_deleted += other.rows_deleted
        self.partitions.extend(other.partitions)
        self.files_written += other.files_written
        if other.version is not None:
            self.version = other.version if self.version is None else max(self.version, other.version)
        return self

    @property
    def changed(self) -> bool:
        """True when anything was committed."""
        return self.version is not None


def _key_column(sid: SeriesId) -> str:
    return spec(sid.dataset).key


def read_entries(storage: Storage, dataset: str, files: Sequence[FileEntry]) -> pl.DataFrame:
    """Read referenced data files (in the given order) into one frame.

    Raises:
        CorruptLakeError: a file is missing or cannot be decoded.
    """
    frames = []
    options = storage.polars_options()
    for f in files:
        key = f"{dataset}/{f.path}"
        path = storage.uri(key)
        try:
            frames.append(scan_data_files(dataset, [path], options).collect())
        except Exception as exc:  # polars raises several types for a missing or damaged file
            why = "referenced by the log but missing" if not storage.exists(key) else (
                f"unreadable Parquet file: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            )
            raise CorruptLakeError(path, why) from None
    return pl.concat(frames, how="vertical") if len(frames) > 1 else frames[0]


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


def _to_table(df: pl.DataFrame, dataset: str) -> pa.Table:
    schema = data_arrow_schema(dataset)
    return df.select(schema.names).to_arrow().cast(schema)


@dataclass(slots=True)
class _Plan:
    """One partition's part of a write: files to add and remove, and the counts."""

    key: str
    read: frozenset[str]
    adds: list[NewFile] = field(default_factory=list)
    removes: list[FileEntry] = field(default_factory=list)
    result: WriteResult = field(default_factory=WriteResult)


class _Writer:
    """Plans partitions of one series against one snapshot, writing the new files."""

    def __init__(self, storage: Storage, sid: SeriesId, snap: Snapshot) -> None:
        self.root, self.sid, self.snap = storage, sid, snap

    def files(self, key: str) -> list[FileEntry]:
        return self.snap.partition(self.sid, key)

    def read(self, files: Sequence[FileEntry]) -> pl.DataFrame:
        return read_entries(self.root, self.sid.dataset, files)

    def add(self, plan: _Plan, df: pl.DataFrame) -> None:
        if df.is_empty():
            return
        rel, size = write_data_file(
            self.root, self.sid.dataset, self.sid.partition_path(plan.key), _to_table(df, self.sid.dataset)
        )
        ts = df.get_column("ts").dt.epoch("us")
        plan.adds.append(NewFile(
            rel, size, df.height, int(ts.min()), int(ts.max()),  # type: ignore[arg-type]
            partition_values(self.sid, plan.key),
        ))

    def replace_all(self, plan: _Plan, files: list[FileEntry], df: pl.DataFrame) -> None:
        self.add(plan, df)
        plan.removes.extend(files)


def _merge_plan(w: _Writer, key: str, rows: pl.DataFrame, compact_after: int) -> _Plan:
    files = w.files(key)
    plan = _Plan(key, frozenset(f.path for f in files))
    key_col = _key_column(w.sid)
    res = plan.result
    if not files:
        w.add(plan, rows)
        res.rows_new = rows.height
        return plan
    last = [f.last_ms for f in files]
    new_min_ms = int(rows.get_column("ts").dt.epoch("ms").min())  # type: ignore[arg-type]
    if None not in last and new_min_ms > max(last):  # type: ignore[type-var]
        if len(files) + 1 >= compact_after:
            w.replace_all(plan, files, pl.concat([w.read(files), rows], how="vertical").sort("ts", maintain_order=True))
        else:
            w.add(plan, rows)
        res.rows_new = rows.height
        return plan
    old = w.read(files)
    res.rows_new, res.rows_replaced, res.rows_unchanged = _diff_counts(old, rows, key_col)
    if res.rows_new or res.rows_replaced:
        w.replace_all(plan, files, _merge(old, rows, key_col))
    return plan


def _replace_plan(w: _Writer, key: str, rows: pl.DataFrame, lo: int, hi: int) -> _Plan:
    files = w.files(key)
    plan = _Plan(key, frozenset(f.path for f in files))
    res = plan.result
    if not files:
        w.add(plan, rows)
        res.rows_new = rows.height
        return plan
    key_col = _key_column(w.sid)
    old = w.read(files)
    t = pl.col("ts").dt.epoch("ms")
    in_range = (t >= lo) & (t < hi)
    inside, outside = old.filter(in_range), old.filter(~in_range)
    res.rows_new, res.rows_replaced, res.rows_unchanged = _diff_counts(inside, rows, key_col)
    res.rows_deleted = inside.height - res.rows_replaced - res.rows_unchanged
    if res.rows_new or res.rows_replaced or res.rows_deleted:
        outside = outside.join(rows.select(key_col), on=key_col, how="anti")  # one row per key
        w.replace_all(plan, files, pl.concat([outside, rows], how="vertical").sort("ts", maintain_order=True))
    return plan


def _transform_plan(w: _Writer, key: str, transform: Callable[[pl.DataFrame], pl.DataFrame]) -> _Plan:
    files = w.files(key)
    plan = _Plan(key, frozenset(f.path for f in files))
    if not files:
        return plan
    old = w.read(files)
    new = transform(old)
    if new.equals(old):
        return plan
    lo, hi = w.sid.period.bounds(key)
    ts = new.get_column("ts").dt.epoch("ms")
    if new.height and (int(ts.min()) < lo or int(ts.max()) >= hi):  # type: ignore[arg-type]
        raise LakeWriteError(f"rewrite of {w.sid.label()} {key} would move rows out of the partition")
    key_col = _key_column(w.sid)
    kept = new.select(key_col).join(old.select(key_col), on=key_col, how="semi")
    plan.result.rows_deleted = old.height - kept.height
    w.replace_all(plan, files, new.sort("ts", maintain_order=True))
    return plan


def _compact_plan(w: _Writer, key: str) -> _Plan:
    files = w.files(key)
    plan = _Plan(key, frozenset(f.path for f in files))
    if len(files) > 1:
        w.replace_all(plan, files, w.read(files).sort("ts", maintain_order=True))
    return plan


PlanFn = Callable[[_Writer, str], _Plan]


def write_series(
    table: DatasetTable,
    sid: SeriesId,
    keys: Sequence[str],
    plan_fn: PlanFn,
    *,
    operation: str,
    threads: int = 1,
) -> WriteResult:
    """Plan every partition in ``keys`` with ``plan_fn`` and commit them as one transaction,
    re-planning from the newer version whenever a planned partition changed meanwhile.

    Raises:
        LakeWriteError: the files or the commit could not be written; the lake is unchanged.
        CorruptLakeError: a stored file of a planned partition cannot be read.
    """
    root = table.storage
    table.ensure()
    for attempt in range(_CONFLICT_ATTEMPTS):
        snap = table.snapshot()
        w = _Writer(root, sid, snap)
        plans: list[_Plan] = []
        try:
            if threads > 1 and len(keys) > 1:
                with ThreadPoolExecutor(max_workers=min(threads, len(keys))) as pool:
                    futures = [pool.submit(plan_fn, w, k) for k in keys]
                    errors = []
                    for fut in futures:
                        try:
                            plans.append(fut.result())
                        except BaseException as exc:  # collect, so every written file is cleaned up
                            errors.append(exc)
                    if errors:
                        raise errors[0]
            else:
                for k in keys:
                    plans.append(plan_fn(w, k))
            adds = [a for p in plans for a in p.adds]
            removes = [(f, partition_values(sid, p.key)) for p in plans for f in p.removes]
            result = WriteResult()
            for p in plans:
                result += p.result
            if not adds and not removes:
                return result
            expect = {(sid, p.key): p.read for p in plans if p.adds or p.removes}
            result.version = table.commit(adds, removes, expect, operation=operation)
        except CommitConflict:
            _discard(root, sid, plans)
            time.sleep(random.uniform(0, 0.001 * min(2**attempt, 64)))
            continue
        except BaseException:
            _discard(root, sid, plans)
            raise
        result.partitions = [p.key for p in plans if p.adds or p.removes]
        result.files_written = len(adds)
        return result
    raise LakeWriteError(f"{sid.label()}: gave up after {_CONFLICT_ATTEMPTS} conflicting concurrent writes")


def write_series_chunks(
    table: DatasetTable,
    sid: SeriesId,
    chunks: Callable[[], Iterable[pl.DataFrame]],
    prepare: Callable[[pl.DataFrame], pl.DataFrame],
    *,
    compact_after: int,
    operation: str,
) -> WriteResult:
    """Merge a stream of row chunks into ``sid`` as ONE transaction, holding only the partitions
    the current chunk touches in memory (a file of any size imports in bounded memory).

    A partition is planned and its file written once a chunk moves past it (time-sorted input
    writes each partition once). If a later chunk comes back to a written partition, the file
    is read back, merged with the new rows (the later row wins) and rewritten; the count of
    unchanged rows then includes stored rows of that partition. ``chunks`` is called again to
    replay the input when a concurrent writer changed a planned partition before the commit.

    Raises:
        As :func:`write_series`; and whatever ``chunks`` or ``prepare`` raise (nothing committed).
    """
    root = table.storage
    table.ensure()
    for attempt in range(_CONFLICT_ATTEMPTS):
        snap = table.snapshot()
        w = _Writer(root, sid, snap)
        plans: dict[str, _Plan] = {}
        buffer: dict[str, list[pl.DataFrame]] = {}
        key_col = _key_column(sid)

        def flush(key: str) -> None:
            rows = pl.concat(buffer.pop(key), how="vertical")
            rows = rows.unique(subset=key_col, keep="last", maintain_order=True).sort("ts", maintain_order=True)
            earlier = plans.pop(key, None)
            if earlier is not None:  # back to a partition already written: fold it in again
                mine = [a for a in earlier.adds]
                if mine:
                    staged = read_entries(root, sid.dataset, [
                        FileEntry(a.path, a.size, a.rows, None, None, key) for a in mine
                    ])
                    rows = _merge(staged, rows, key_col)
                    remove_files(root, [f"{sid.dataset}/{a.path}" for a in mine])
            plans[key] = _merge_plan(w, key, rows, compact_after)

        try:
            for chunk in chunks():
                df = prepare(chunk)
                if df.is_empty():
                    continue
                df = df.sort("ts", maintain_order=True)
                pieces = partition_slices(df.get_column("ts").dt.epoch("ms").to_numpy(), sid)
                for pkey, a, b in pieces:
                    buffer.setdefault(pkey, []).append(df.slice(a, b - a))
                newest = pieces[-1][0]
                for pkey in [k for k in buffer if k != newest]:
                    flush(pkey)
            for pkey in list(buffer):
                flush(pkey)
            result = WriteResult()
            for p in plans.values():
                result += p.result
            adds = [a for p in plans.values() for a in p.adds]
            removes = [(f, partition_values(sid, p.key)) for p in plans.values() for f in p.removes]
            if not adds and not removes:
                return result
            expect = {(sid, p.key): p.read for p in plans.values() if p.adds or p.removes}
            result.version = table.commit(adds, removes, expect, operation=operation)
        except CommitConflict:
            _discard(root, sid, list(plans.values()))
            time.sleep(random.uniform(0, 0.001 * min(2**attempt, 64)))
            continue
        except BaseException:
            _discard(root, sid, list(plans.values()))
            raise
        result.partitions = sorted(p.key for p in plans.values() if p.adds or p.removes)
        result.files_written = len(adds)
        return result
    raise LakeWriteError(f"{sid.label()}: gave up after {_CONFLICT_ATTEMPTS} conflicting concurrent writes")


def _discard(root: Storage, sid: SeriesId, plans: list[_Plan]) -> None:
    remove_files(root, [f"{sid.dataset}/{a.path}" for p in plans for a in p.adds])


def merge_plan(rows_by_key: dict[str, pl.DataFrame], compact_after: int) -> PlanFn:
    """Plan function of a merge write (see the module docstring)."""
    return lambda w, key: _merge_plan(w, key, rows_by_key[key], compact_after)


def replace_plan(rows_by_key: dict[str, pl.DataFrame], lo: int, hi: int, sid: SeriesId) -> PlanFn:
    """Plan function making ``rows_by_key`` the whole content of ``[lo, hi)`` per partition."""
    def plan(w: _Writer, key: str) -> _Plan:
        p_lo, p_hi = sid.period.bounds(key)
        rows = rows_by_key.get(key)
        if rows is None:
            rows = next(iter(rows_by_key.values())).clear() if rows_by_key else _empty_rows(w)
        return _replace_plan(w, key, rows, max(lo, p_lo), min(hi, p_hi))

    return plan


def _empty_rows(w: _Writer) -> pl.DataFrame:
    return pl.DataFrame(schema=spec(w.sid.dataset).schema)


def transform_plan(transform: Callable[[pl.DataFrame], pl.DataFrame]) -> PlanFn:
    """Plan function replacing each partition's rows by ``transform(rows)``."""
    return lambda w, key: _transform_plan(w, key, transform)


def compact_plan() -> PlanFn:
    """Plan function folding each partition's files into one."""
    return _compact_plan


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
