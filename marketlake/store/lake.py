"""``Lake``: the public face of the store — write, scan, query, list and check the lake."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import polars as pl

from marketlake.clock import get_clock
from marketlake.core.schemas import normalize_candles, normalize_trades
from marketlake.core.symbols import parse_symbols
from marketlake.core.timeframes import Timeframe, parse_timeframes
from marketlake.core.timeutil import TimeLike, ms_to_text, to_ms
from marketlake.errors import DataValidationError, LakeError
from marketlake.settings import Settings
from marketlake.store.catalog import series_table
from marketlake.store.duck import create_views
from marketlake.store.files import purge_trash
from marketlake.store.fsck import FsckReport, run_fsck
from marketlake.store.layout import CANDLES, DATASETS, META_DIR, TRADES, SeriesId
from marketlake.store.ledger import Ledger
from marketlake.store.quarantine import read_quarantine, write_quarantine
from marketlake.store.reader import (
    PartitionFiles,
    find_series,
    plan_files,
    scan_files,
    subdir_values,
)
from marketlake.store.writer import (
    WriteResult,
    commit_rows,
    compact_partition,
    partition_slices,
    replace_range,
    rewrite_partition,
)

__all__ = ["Lake", "WriteResult"]


def _unique_sorted(df: pl.DataFrame, key: str) -> pl.DataFrame:
    """One row per key (the last wins, as in a merge), in time order (stable, so equal-ts trades
    keep their arrival order). Counting distinct keys first skips the costlier dedupe when
    there is nothing to drop, the usual case (an archive day: 75 instead of 200 ms per 1 M)."""
    if df.get_column(key).n_unique() != df.height:
        df = df.unique(subset=key, keep="last", maintain_order=True)
    return df if df.get_column("ts").is_sorted() else df.sort("ts", maintain_order=True)

T = TypeVar("T")
Symbols = str | Sequence[str] | None
Timeframes = str | int | Timeframe | Sequence[str | int | Timeframe] | None

_READ_RETRIES = 8
_WRITE_THREADS = max(1, min(4, os.cpu_count() or 1))
_PURGE_EVERY_S = 60.0


class Lake:
    """A lake of hive-partitioned Parquet files under one root directory.

    Args:
        root: The lake directory; defaults to ``settings.lake_root`` (``./lake``). Created on the
            first write.
        settings: Settings to use; loaded from file/environment when omitted.

    Example:
        >>> lake = Lake("lake")
        >>> lake.write_candles(df, symbol="BTCUSDT", timeframe="1")
        >>> lake.scan_candles("BTCUSDT", "1", start="2024-01-01").collect()
        >>> lake.sql("select symbol, count(*) from candles group by 1")
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, *, settings: Settings | None = None):
        self.settings = settings if settings is not None else Settings.load()
        self.root = Path(root if root is not None else self.settings.lake_root).expanduser().resolve()
        if self.root.exists() and not self.root.is_dir():
            raise LakeError(f"lake root {self.root} exists and is not a directory")
        self._con: duckdb.DuckDBPyConnection | None = None
        self._con_generation: bytes | None = None
        self._last_purge = 0.0
        self._ledger: Ledger | None = None

    def __repr__(self) -> str:
        return f"Lake({str(self.root)!r})"

    # ------------------------------------------------------------------ writing

    def write_candles(
        self,
        frame: pl.DataFrame | Any,
        *,
        symbol: str,
        timeframe: str | int | Timeframe,
        exchange: str | None = None,
        category: str | None = None,
    ) -> WriteResult:
        """Merge closed candles into the lake (by ``ts``; the incoming row wins).

        Args:
            frame: Polars DataFrame or Arrow table with ``ts`` (int64 epoch ms or datetime), open,
                high, low, close, volume, and optionally turnover, trades, buy_volume.
            symbol: Exchange symbol, e.g. ``BTCUSDT``.
            timeframe: e.g. ``"1"``, ``"1h"``, ``"D"``.
            exchange: Defaults to ``settings.exchange`` (``bybit``).
            category: Defaults to ``settings.category`` (``linear``).

        Returns:
            Counts of new / replaced / unchanged rows and the partitions written.

        Raises:
            InvalidSymbolError: a name outside the allowlist (nothing is touched).
            SchemaMismatchError: the frame cannot be read as candles.
            LakeWriteError: a partition could not be written (it keeps its previous state).
        """
        sid = self._sid(symbol, timeframe, exchange, category)
        return self._write(sid, normalize_candles(frame), "ts")

    def write_trades(
        self,
        frame: pl.DataFrame | Any,
        *,
        symbol: str,
        exchange: str | None = None,
        category: str | None = None,
    ) -> WriteResult:
        """Merge trades into the lake (by ``trade_id``; the incoming row wins).

        Args:
            frame: Polars DataFrame or Arrow table with ``ts``, price, size, side, trade_id and
                optionally tick_direction, is_block_trade.
            symbol: Exchange symbol.
            exchange: Defaults to ``settings.exchange``.
            category: Defaults to ``settings.category``.

        Raises:
            As :meth:`write_candles`.
        """
        sid = SeriesId.of(
            TRADES,
            exchange=exchange or self.settings.exchange,
            category=category or self.settings.category,
            symbol=symbol,
        )
        return self._write(sid, normalize_trades(frame), "trade_id")

    def replace_trades(
        self,
        frame: pl.DataFrame | Any,
        *,
        symbol: str,
        start: TimeLike,
        end: TimeLike,
        exchange: str | None = None,
        category: str | None = None,
    ) -> WriteResult:
        """Make ``frame`` the complete set of stored trades in ``[start, end)``.

        For a source that is complete over a range (a day of Bybit's trade archive): its rows
        replace the range's stored rows in one atomic step per partition: rows with the same
        ``trade_id`` are replaced or kept, stored rows of the range whose id the frame lacks are
        deleted (e.g. streamed spot trades, whose ids the spot archive does not carry), rows
        outside the range stay.

        Raises:
            DataValidationError: a row of ``frame`` lies outside ``[start, end)``.
            As :meth:`write_trades` otherwise.
        """
        sid = SeriesId.of(
            TRADES,
            exchange=exchange or self.settings.exchange,
            category=category or self.settings.category,
            symbol=symbol,
        )
        lo, hi = to_ms(start, what="start"), to_ms(end, what="end")
        df = normalize_trades(frame)
        if df.height:
            t = df.get_column("ts").dt.epoch("ms")
            if int(t.min()) < lo or int(t.max()) >= hi:  # type: ignore[arg-type]
                raise DataValidationError(
                    f"replace_trades of {symbol}: rows outside [{ms_to_text(lo)}, {ms_to_text(hi)})"
                )
            df = _unique_sorted(df, "trade_id")
        slices = {pkey: (a, b) for pkey, a, b in partition_slices(df.get_column("ts").dt.epoch("ms").to_numpy(), sid)}
        keys = sorted(set(slices) | {p.key for p in plan_files(self.root, [sid], lo, hi)})

        def commit(pkey: str) -> WriteResult:
            a, b = slices.get(pkey, (0, 0))
            p_lo, p_hi = sid.period.bounds(pkey)
            return replace_range(self.root, sid, pkey, max(lo, p_lo), min(hi, p_hi), df.slice(a, b - a))

        result = WriteResult()
        with ThreadPoolExecutor(max_workers=max(1, min(len(keys), _WRITE_THREADS))) as pool:
            for part in pool.map(commit, keys):
                result += part
        if result.changed:
            self._bump_generation()
            self._maybe_purge()
        return result

    def _write(self, sid: SeriesId, df: pl.DataFrame, key: str) -> WriteResult:
        result = WriteResult()
        if df.is_empty():
            return result
        ts = df.get_column("ts")
        if not (key == "ts" and bool((ts.dt.epoch("ms").diff().drop_nulls() > 0).all())):
            df = _unique_sorted(df, key)
        ts_ms = df.get_column("ts").dt.epoch("ms").to_numpy()
        slices = partition_slices(ts_ms, sid)

        def commit(piece: tuple[str, int, int]) -> WriteResult:
            pkey, a, b = piece
            return commit_rows(
                self.root, sid, pkey, df.slice(a, b - a), compact_after=self.settings.compact_after_deltas
            )

        if len(slices) > 1:
            # Partitions commit independently (own lock, own file); Parquet encoding releases the
            # GIL, so a bulk write (an import, a backfill) uses every core.
            with ThreadPoolExecutor(max_workers=min(len(slices), _WRITE_THREADS)) as pool:
                for part in pool.map(commit, slices):
                    result += part
        else:
            for piece in slices:
                result += commit(piece)
        if result.changed:
            self._bump_generation()
            self._maybe_purge()
        return result

    def delete_candles(
        self,
        *,
        symbol: str,
        timeframe: str | int | Timeframe,
        ts: Sequence[TimeLike] | None = None,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        exchange: str | None = None,
        category: str | None = None,
    ) -> WriteResult:
        """Remove candles by key (``ts``) or by range ``[start, end)``, atomically per partition."""
        sid = self._sid(symbol, timeframe, exchange, category)
        if ts is None and start is None and end is None:
            raise DataValidationError("delete_candles needs ts=[...] or a start/end range")
        lo = None if start is None else to_ms(start, what="start")
        hi = None if end is None else to_ms(end, what="end")
        keys_ms = None if ts is None else sorted({to_ms(t, what="ts") for t in ts})

        def drop(frame: pl.DataFrame) -> pl.DataFrame:
            t = pl.col("ts").dt.epoch("ms")
            cond = pl.lit(True)
            if keys_ms is not None:
                cond = cond & t.is_in(keys_ms)
            if lo is not None:
                cond = cond & (t >= lo)
            if hi is not None:
                cond = cond & (t < hi)
            return frame.filter(~cond)

        result = WriteResult()
        span_lo, span_hi = lo, hi
        if keys_ms is not None:
            if not keys_ms:
                return result
            span_lo = keys_ms[0] if lo is None else max(lo, keys_ms[0])
            span_hi = keys_ms[-1] + 1 if hi is None else min(hi, keys_ms[-1] + 1)
        for part in plan_files(self.root, [sid], span_lo, span_hi):
            result += rewrite_partition(self.root, sid, part.key, drop)
        if result.changed:
            self._bump_generation()
        return result

    def rewrite_candles(
        self,
        transform: Callable[[pl.DataFrame], pl.DataFrame],
        *,
        symbol: str,
        timeframe: str | int | Timeframe,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        exchange: str | None = None,
        category: str | None = None,
    ) -> WriteResult:
        """Replace each partition's rows by ``transform(rows)``, atomically, under its lock.

        ``transform`` receives a partition's stored rows (stored schema, in stored order) and may
        drop or change rows of that partition; partitions it leaves equal are not rewritten.
        Used by repair (dedupe, quarantine, unfill).
        """
        sid = self._sid(symbol, timeframe, exchange, category)
        lo = None if start is None else to_ms(start, what="start")
        hi = None if end is None else to_ms(end, what="end")
        result = WriteResult()
        for part in plan_files(self.root, [sid], lo, hi):
            result += rewrite_partition(self.root, sid, part.key, transform)
        if result.changed:
            self._bump_generation()
        return result

    def quarantine_candles(
        self,
        reasons: dict[int, str],
        *,
        symbol: str,
        timeframe: str | int | Timeframe,
        exchange: str | None = None,
        category: str | None = None,
    ) -> int:
        """Move the candles at ``ts`` (epoch ms → reason) out of the lake into the quarantine.

        Within each partition's lock the rows are first published to the quarantine, then
        removed from the partition, so no row is ever lost. Returns the rows moved.
        """
        sid = self._sid(symbol, timeframe, exchange, category)
        if not reasons:
            return 0
        keys = sorted(reasons)
        moved = 0
        now = get_clock().now_ms()

        def take_out(frame: pl.DataFrame) -> pl.DataFrame:
            nonlocal moved
            ts = frame.get_column("ts").dt.epoch("ms")
            hit = ts.is_in(keys)
            if not hit.any():
                return frame
            out = frame.filter(hit)
            why = pl.Series([reasons[int(t)] for t in out.get_column("ts").dt.epoch("ms")])
            write_quarantine(self.root, sid, out, why, now)
            moved += out.height
            return frame.filter(~hit)

        for part in plan_files(self.root, [sid], keys[0], keys[-1] + 1):
            rewrite_partition(self.root, sid, part.key, take_out)
        if moved:
            self._bump_generation()
        return moved

    def quarantined(self) -> pl.DataFrame:
        """Every row ``repair`` moved into the quarantine, with its reason and series."""
        return read_quarantine(self.root)

    def _sid(
        self, symbol: str, timeframe: str | int | Timeframe, exchange: str | None, category: str | None
    ) -> SeriesId:
        return SeriesId.of(
            CANDLES,
            exchange=exchange or self.settings.exchange,
            category=category or self.settings.category,
            symbol=symbol,
            timeframe=timeframe,
        )

    def compact(self, *, purge: bool = True) -> WriteResult:
        """Fold delta files into their partition's main file everywhere; purge old trash."""
        result = WriteResult()
        for dataset in DATASETS:
            for part in self._all_parts(dataset):
                if len(part.files) > 1:
                    result += compact_partition(self.root, part.series, part.key)
        if result.changed:
            self._bump_generation()
        if purge:
            purge_trash(self.root, self.settings.gc_grace_seconds)
        return result

    # ------------------------------------------------------------------ reading

    def scan_candles(
        self,
        symbols: Symbols = None,
        timeframes: Timeframes = None,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        *,
        exchange: str | None = None,
        category: str | None = None,
    ) -> pl.LazyFrame:
        """A LazyFrame over stored candles; only partitions that can match are opened.

        Args:
            symbols: A symbol, a comma-separated string or a list; all stored when None.
            timeframes: Likewise for timeframes (aliases accepted).
            start: Inclusive lower bound on ``ts`` (epoch ms, datetime, date or ISO string).
            end: Exclusive upper bound on ``ts``.
            exchange: Defaults to ``settings.exchange``.
            category: Defaults to ``settings.category``.

        Returns:
            Columns symbol, timeframe, ts, open, high, low, close, volume, turnover, trades,
            buy_volume. Rows are in (symbol, timeframe, ts) order. The file list is fixed when
            this is called; collect it promptly (see :func:`marketlake.store.reader.scan_files`).
        """
        sids, lo, hi = self._request(CANDLES, symbols, timeframes, start, end, exchange, category)
        return scan_files(CANDLES, plan_files(self.root, sids, lo, hi), lo, hi)

    def read_candles(
        self,
        symbols: Symbols = None,
        timeframes: Timeframes = None,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        *,
        exchange: str | None = None,
        category: str | None = None,
    ) -> pl.DataFrame:
        """:meth:`scan_candles`, collected (re-planned if a concurrent write moved a file away)."""
        return self._collect_retrying(
            lambda: self.scan_candles(symbols, timeframes, start, end, exchange=exchange, category=category)
        )

    def scan_trades(
        self,
        symbols: Symbols = None,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        *,
        exchange: str | None = None,
        category: str | None = None,
    ) -> pl.LazyFrame:
        """A LazyFrame over stored trades: symbol, ts, price, size, side, trade_id, tick_direction,
        is_block_trade. Arguments as for :meth:`scan_candles`."""
        sids, lo, hi = self._request(TRADES, symbols, None, start, end, exchange, category)
        return scan_files(TRADES, plan_files(self.root, sids, lo, hi), lo, hi)

    def read_trades(
        self,
        symbols: Symbols = None,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        *,
        exchange: str | None = None,
        category: str | None = None,
    ) -> pl.DataFrame:
        """:meth:`scan_trades`, collected."""
        return self._collect_retrying(
            lambda: self.scan_trades(symbols, start, end, exchange=exchange, category=category)
        )

    def series(self, dataset: str | None = None) -> pl.DataFrame:
        """One row per stored series (every exchange and category): dataset, exchange, category,
        symbol, timeframe, first_ts, last_ts, rows, partitions, files, bytes."""
        parts: list[PartitionFiles] = []
        for ds in DATASETS if dataset is None else (dataset,):
            parts.extend(self._all_parts(ds))
        return series_table(self.root, parts)

    # ------------------------------------------------------------------ SQL

    def connect(self, database: str = ":memory:") -> duckdb.DuckDBPyConnection:
        """A new DuckDB connection with views ``candles`` and ``trades`` over the lake.

        Hive columns (exchange, category, symbol, timeframe, date) are exposed; ``ts`` is a
        TIMESTAMPTZ and the session time zone is UTC. The views are a snapshot of the live files:
        call :meth:`refresh` on the connection to see later writes.
        """
        con = duckdb.connect(database)
        self.refresh(con)
        return con

    def refresh(self, con: duckdb.DuckDBPyConnection) -> None:
        """Rebuild ``con``'s views over the current live files (and ``coverage``, once a ledger exists)."""
        coverage = self.ledger.table().to_arrow() if self.has_ledger else None
        create_views(con, {ds: self._all_parts(ds) for ds in DATASETS}, coverage)

    @property
    def has_ledger(self) -> bool:
        """True once anything recorded coverage in this lake."""
        return (self.root / META_DIR / "ledger.sqlite").exists()

    @property
    def ledger(self) -> Ledger:
        """The coverage ledger of this lake (opened, and created, on first use)."""
        if self._ledger is None:
            self._ledger = Ledger(self.root)
        return self._ledger

    def sql(self, query: str, params: Sequence[Any] | dict[str, Any] | None = None) -> pl.DataFrame:
        """Run ``query`` (with bound ``params``) against the lake's views; return a Polars frame.

        Raises:
            DataValidationError: the query is not valid SQL or names unknown columns/tables.
        """
        for attempt in range(2):
            con = self._shared_connection()
            try:
                rel = con.sql(query, params=params)
                # Statements without a result (SET, CREATE ...) give no relation.
                return pl.DataFrame() if rel is None else rel.pl()
            except duckdb.IOException:
                if attempt:
                    raise
                self._con_generation = None  # a file moved away since the views were built
            except (duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException,
                    duckdb.InvalidInputException, duckdb.ConversionException) as exc:
                raise DataValidationError(f"SQL error: {str(exc).splitlines()[0]}") from None
        raise AssertionError("unreachable")

    def _shared_connection(self) -> duckdb.DuckDBPyConnection:
        generation = self._read_generation()
        if self._con is None:
            self._con = duckdb.connect(":memory:")
            self._con_generation = None
        if self._con_generation != generation or generation is None:
            self.refresh(self._con)
            self._con_generation = generation
        elif self.has_ledger:
            # The ledger changes without a data commit; it is small, so re-register it each query.
            self._con.register("coverage", self.ledger.table().to_arrow())
        return self._con

    # ------------------------------------------------------------------ checking

    def fsck(self, *, fix: bool = False) -> FsckReport:
        """Report (and with ``fix`` remove) leftovers and unreadable files; never a good one."""
        report = run_fsck(self.root, fix=fix, trash_grace_s=self.settings.gc_grace_seconds)
        if fix:
            self._bump_generation()
        return report

    # ------------------------------------------------------------------ internals

    def _request(
        self,
        dataset: str,
        symbols: Symbols,
        timeframes: Timeframes,
        start: TimeLike | None,
        end: TimeLike | None,
        exchange: str | None,
        category: str | None,
    ) -> tuple[list[SeriesId], int | None, int | None]:
        syms = None if symbols is None else parse_symbols(symbols)
        tfs = None if timeframes is None else parse_timeframes(timeframes)  # type: ignore[arg-type]
        lo = None if start is None else to_ms(start, what="start")
        hi = None if end is None else to_ms(end, what="end")
        sids = find_series(
            self.root, dataset,
            exchange=exchange or self.settings.exchange,
            category=category or self.settings.category,
            symbols=syms, timeframes=tfs,
        )
        return sids, lo, hi

    def _all_parts(self, dataset: str) -> list[PartitionFiles]:
        out: list[PartitionFiles] = []
        base = self.root / dataset
        for exchange in subdir_values(base, "exchange"):
            for category in subdir_values(base / f"exchange={exchange}", "category"):
                try:
                    sids = find_series(self.root, dataset, exchange=exchange, category=category)
                except DataValidationError:
                    continue  # a foreign directory; fsck reports it
                out.extend(plan_files(self.root, sids, None, None))
        return out

    def _collect_retrying(self, make: Callable[[], pl.LazyFrame]) -> pl.DataFrame:
        for attempt in range(_READ_RETRIES):
            try:
                return make().collect()
            except FileNotFoundError:
                # A writer replaced a partition between planning and reading: plan again.
                if attempt == _READ_RETRIES - 1:
                    raise
                time.sleep(0.001 * 2**attempt)
        raise AssertionError("unreachable")

    def _generation_path(self) -> Path:
        return self.root / META_DIR / "generation"

    def _read_generation(self) -> bytes | None:
        try:
            return self._generation_path().read_bytes()
        except FileNotFoundError:
            return None

    def _bump_generation(self) -> None:
        # A cache-invalidation hint for long-lived readers (Lake.sql); atomic replace, no fsync
        # needed: losing it in a crash only costs a reader one extra refresh.
        path = self._generation_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".generation.{uuid.uuid4().hex}")
        tmp.write_bytes(uuid.uuid4().bytes)
        os.replace(tmp, path)

    def _maybe_purge(self) -> None:
        now = time.monotonic()
        if now - self._last_purge >= _PURGE_EVERY_S:
            self._last_purge = now
            purge_trash(self.root, self.settings.gc_grace_seconds)

