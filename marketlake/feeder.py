"""``DataFeeder``: the research API over the lake — the old backtest feeder's methods on Polars,
plus lazy, memory-bounded and lookahead-free access.

The old pandas ``DataFeeder`` (``simple_strategy/shared/data_feeder.py``) read per-symbol CSV files
into memory. This one reads the lake; its methods and return shapes are the old ones:

* ``load_data`` loads series into memory (after checking the memory budget);
* ``get_data_for_symbols`` returns ``{symbol: {timeframe: polars.DataFrame}}``;
* ``get_data_at_timestamp``, ``get_latest_data`` and ``get_multi_timeframe_data`` return candles
  as dicts of Python values (``timestamp`` / ``timestamp_ms`` in epoch ms, ``datetime``, prices);
* ``get_memory_usage`` reports memory, ``percent`` included.

New: ``scan`` (a Polars LazyFrame), ``iter_batches`` (time-ordered batches of any size in bounded
memory) and ``aligned`` (several timeframes of one symbol side by side without lookahead).

Perpetuals (issue 13): ``funding``, ``funding_rate_at``, ``price_candles``, ``price_candle_at``,
``mark_price_at``, ``funding_payments`` / ``funding_paid`` and ``universe``; ``aligned`` joins
funding and mark/index/premium candles too (``funding=True``, ``mark="1"``), without lookahead: a
funding rate is known at its settlement time, a price candle once closed.

The no-lookahead rule, the time-window conventions and the examples are in ``docs/research.md``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import numpy as np
import polars as pl

from marketlake._feeder.align import aligned_frame
from marketlake._feeder.args import (
    SymbolsArg,
    TimeframeArg,
    TimeframesArg,
    reject_csv_dir,
    symbol_items,
    timeframe_items,
)
from marketlake._feeder.budget import ROW_BYTES, estimate_rows, system_memory
from marketlake._feeder.loaded import Loaded, frame_dicts, slice_window
from marketlake._feeder.perp import PRICE_KINDS, LONGEST_FUNDING_MS, funding_holes, join_funding, join_price
from marketlake._feeder.parts import (
    PartitionCache,
    read_files,
    read_partition_files,
    retrying,
)
from marketlake._feeder.rules import (
    available_before,
    candle_dict,
    close_ms,
    close_time_expr,
    half_open_window,
    old_window,
    time_ms,
)
from marketlake._feeder.stream import merged_batches, working_set_bytes
from marketlake.core.symbols import parse_symbols, validate_category, validate_exchange
from marketlake.core.timeframes import TIMEFRAMES, Timeframe, parse_timeframe
from marketlake.core.timeutil import TimeLike
from marketlake.errors import (
    ConfigError,
    DataValidationError,
    InvalidSymbolError,
    InvalidTimeframeError,
    MemoryBudgetError,
)
from marketlake.store import Lake
from marketlake.store.datasets import FUNDING, spec
from marketlake.store.layout import CANDLES, SeriesId
from marketlake.store.reader import scan_files
from marketlake.store.snapshots import AsOf

__all__ = ["DataFeeder"]

# Partitions kept for point lookups: up to an eighth of the budget, at most this much (a year of
# 1m candles of 20 symbols is ~0.9 GB). The cache gives way whenever a request needs the room.
_MAX_CACHE_BYTES: Final = 2**30
_DEFAULT_BATCH_ROWS: Final = 100_000


class DataFeeder:
    """Candles of the lake for backtests and notebooks, within a memory budget, without lookahead.

    Args:
        lake_or_dir: A :class:`~marketlake.Lake`, or the lake directory (default ``lake``).
        memory_limit_percent: Share (0-100] of the machine's memory the feeder's data may take;
            defaults to ``Settings.memory_limit_percent`` (90).
        memory_budget_bytes: An absolute budget instead of the percentage.
        exchange: Exchange of the series (default: the lake's settings, ``bybit``).
        category: Market category (default: the lake's settings, ``linear``).

    Attributes:
        lake: The lake read.
        budget_bytes: The memory budget: what loaded series, cached partitions and a new request
            together may take (the process's own baseline is not counted).
        memory_limit_percent: The percentage the budget came from.
        exchange: Exchange of the series read.
        category: Market category of the series read.
        partitions_read: Partitions read from disk by point lookups and ``iter_batches``.

    Raises:
        ConfigError: a budget outside its range, or a directory that holds the old CSV files
            instead of a lake (import them with ``marketlake import-csv``).

    Example:
        >>> feeder = DataFeeder("lake")
        >>> feeder.load_data(["BTCUSDT"], ["1", "60"], "2024-01-01", "2024-03-31")
        True
        >>> feeder.get_multi_timeframe_data("BTCUSDT", ["1", "60"], "2024-02-01 10:30")
        {'1': {'timestamp': 1706783340000, ...}, '60': {'timestamp': 1706778000000, ...}}
    """

    def __init__(
        self,
        lake_or_dir: Lake | str | os.PathLike[str] = "lake",
        memory_limit_percent: float | None = None,
        *,
        memory_budget_bytes: int | None = None,
        exchange: str | None = None,
        category: str | None = None,
        as_of: AsOf | None = None,
    ) -> None:
        if isinstance(lake_or_dir, Lake):
            self.lake = lake_or_dir if as_of is None else Lake(lake_or_dir.root, settings=lake_or_dir.settings, as_of=as_of)
        else:
            reject_csv_dir(Path(lake_or_dir))
            self.lake = Lake(lake_or_dir, as_of=as_of)
        settings = self.lake.settings
        pct = settings.memory_limit_percent if memory_limit_percent is None else memory_limit_percent
        if isinstance(pct, bool) or not isinstance(pct, (int, float)) or not 0 < pct <= 100:
            raise ConfigError(f"memory_limit_percent must be a number in (0, 100], got {pct!r}")
        self.memory_limit_percent = float(pct)
        total = system_memory().total
        if memory_budget_bytes is None:
            self.budget_bytes = int(total * self.memory_limit_percent / 100)
        elif isinstance(memory_budget_bytes, bool) or not isinstance(memory_budget_bytes, int) or memory_budget_bytes <= 0:
            raise ConfigError(f"memory_budget_bytes must be a positive int, got {memory_budget_bytes!r}")
        else:
            self.budget_bytes = memory_budget_bytes
        self.exchange = validate_exchange(exchange or settings.exchange)
        self.category = validate_category(category or settings.category)
        self.partitions_read = 0
        self._loaded: dict[SeriesId, Loaded] = {}
        self._known: dict[tuple[object, object], SeriesId] = {}
        self._cache = PartitionCache(
            self.lake, min(_MAX_CACHE_BYTES, self.budget_bytes // 8), reader=self._read_partition
        )

    def __repr__(self) -> str:
        return f"DataFeeder({str(self.lake.root)!r}, loaded={len(self._loaded)} series)"

    # ------------------------------------------------------------------ the old API

    def load_data(
        self,
        symbols: SymbolsArg,
        timeframes: TimeframesArg,
        start_date: TimeLike | None = None,
        end_date: TimeLike | None = None,
    ) -> bool:
        """Load series into memory, after checking that they fit the memory budget.

        ``end_date`` is inclusive, as in the old feeder (a pandas label slice): a date
        (``'2023-12-31'``) includes that whole day, a time includes the candle opening at it.
        Loading a series again replaces what was loaded of it.

        Args:
            symbols: Symbols (a list, or a comma-separated string).
            timeframes: Timeframes (a list, or a comma-separated string); aliases accepted.
            start_date: First open time to load (inclusive); the series' start when None.
            end_date: Last open time or day to load (inclusive); the series' end when None.

        Returns:
            True when the loaded window holds at least one candle, False when it holds none.

        Raises:
            InvalidSymbolError / InvalidTimeframeError: a malformed name, or a series the lake
                does not hold (the message lists what it holds).
            DataValidationError: a bound is not a time, or start is after end.
            MemoryBudgetError: the estimate (Parquet footers x row width) exceeds what is left of
                the budget; ``needed_bytes`` and ``budget_bytes`` carry the figures.
        """
        pairs = self._pairs(symbols, timeframes)
        lo, hi = old_window(start_date, end_date)
        sids = list(dict.fromkeys(sid for _, _, sid in pairs))
        self._check_budget(sids, lo, hi, f"load_data of {len(sids)} series", replacing=set(sids))
        for sid in sids:  # replaced data goes first, so old and new never coexist
            self._loaded.pop(sid, None)
        rows = 0
        for sid in sids:
            frame = self._read_window(sid, lo, hi)
            assert sid.timeframe is not None
            self._loaded[sid] = Loaded(sid.timeframe, lo, hi, frame)
            rows += frame.height
        return rows > 0

    def get_data_for_symbols(
        self,
        symbols: SymbolsArg,
        timeframes: TimeframesArg,
        start_date: TimeLike | None = None,
        end_date: TimeLike | None = None,
    ) -> dict[str, dict[str, pl.DataFrame]]:
        """Candles of several series, ``{symbol: {timeframe: DataFrame}}``.

        Answered from loaded data (zero-copy slices) where ``load_data`` covered the window, and
        read from the lake otherwise (budget-checked, not kept). Timeframe keys are spelled as
        passed (``"1h"`` stays ``"1h"``; ints become canonical names). ``end_date`` is inclusive,
        as for :meth:`load_data`.

        Returns:
            Frames with the stored candle columns (``ts`` Datetime(ms, UTC) open time, ``open
            high low close volume turnover trades buy_volume filled``), sorted by ``ts``.

        Raises:
            As :meth:`load_data`.
        """
        pairs = self._pairs(symbols, timeframes)
        lo, hi = old_window(start_date, end_date)
        out: dict[str, dict[str, pl.DataFrame]] = {}
        missing = [sid for _, _, sid in pairs if not self._covered(sid, lo, hi)]
        if missing:
            self._check_budget(list(dict.fromkeys(missing)), lo, hi, f"get_data_for_symbols of {len(missing)} series")
        for symbol, key, sid in pairs:
            held = self._loaded.get(sid)
            if held is not None and held.covers(lo, hi):
                frame = held.window(lo, hi)
            else:
                frame = self._read_window(sid, lo, hi)
            out.setdefault(symbol, {})[key] = frame
        return out

    def get_data_at_timestamp(
        self, symbol: str, timeframe: TimeframeArg, timestamp: TimeLike
    ) -> dict[str, Any] | None:
        """The candle whose **open time** equals ``timestamp``, or None when there is none.

        An exact key lookup, as the old feeder's index lookup was: an unaligned time (10:00:30
        for 1m) matches nothing. For "what was known at time t" use
        :meth:`get_multi_timeframe_data`, which never returns a candle that had not closed.

        Args:
            symbol: e.g. ``BTCUSDT``.
            timeframe: e.g. ``"1"``, ``"1h"``.
            timestamp: Epoch ms (int), ``datetime`` (naive = UTC), or an ISO string.

        Returns:
            ``{"timestamp", "timestamp_ms", "datetime", "close_time_ms", "open", "high", "low",
            "close", "volume", "turnover", "trades", "buy_volume", "filled"}``.

        Raises:
            InvalidSymbolError / InvalidTimeframeError / DataValidationError: bad input.
        """
        sid = self._series(symbol, timeframe)
        t = time_ms(timestamp, what="timestamp")
        tf = _tf(sid)
        held = self._loaded.get(sid)
        if held is not None and held.contains(t):
            i = int(np.searchsorted(held.ts, t, "left"))
            if i < held.ts.size and held.ts[i] == t:
                return candle_dict(held.frame, i, t, tf)
            return None
        hit = self._cache.exact(sid, t)
        return None if hit is None else candle_dict(hit[0].frame, hit[1], t, tf)

    def get_latest_data(
        self, symbol: str, timeframe: TimeframeArg, lookback_periods: int = 1
    ) -> list[dict[str, Any]] | None:
        """The last ``lookback_periods`` candles, oldest first (fewer when fewer exist).

        From the loaded window when the series was loaded (the old feeder answered from its
        cache, so a backtest over 2023 sees the end of 2023), else the newest in the lake.

        Returns:
            A list of candle dicts (see :meth:`get_data_at_timestamp`), or None when there is
            no candle at all.

        Raises:
            DataValidationError: ``lookback_periods`` is not a positive int; bad names as above.
        """
        if isinstance(lookback_periods, bool) or not isinstance(lookback_periods, (int, np.integer)) or lookback_periods < 1:
            raise DataValidationError(f"lookback_periods must be a positive int, got {lookback_periods!r}")
        sid = self._series(symbol, timeframe)
        held = self._loaded.get(sid)
        n = int(lookback_periods)
        frame = held.frame.tail(n) if held is not None else self._cache.last_rows(sid, n)
        return frame_dicts(frame, _tf(sid)) or None

    def get_multi_timeframe_data(
        self, symbol: str, timeframes: TimeframesArg, timestamp: TimeLike
    ) -> dict[str, dict[str, Any]] | None:
        """For each timeframe, the latest candle that had **closed** at ``timestamp``.

        A candle opening at ``o`` is closed at ``t`` when ``o + duration <= t`` (calendar months
        for ``M``). So at 10:30 the 60-minute entry is the 09:00 candle (closed at 10:00), never
        the 10:00 one still forming; at exactly 11:00 it is the 10:00 candle. Gaps are skipped:
        the entry is the latest closed candle however old.

        Args:
            symbol: e.g. ``BTCUSDT``.
            timeframes: Timeframes to report; keys of the result are spelled as passed.
            timestamp: The time ``t`` (epoch ms, ``datetime`` or ISO string).

        Returns:
            ``{timeframe: candle dict}`` for the timeframes with a closed candle at ``t``;
            None when none has one.

        Raises:
            InvalidSymbolError / InvalidTimeframeError / DataValidationError: bad input.
        """
        t = time_ms(timestamp, what="timestamp")
        out: dict[str, dict[str, Any]] = {}
        for _, key, sid in self._pairs([symbol], timeframes):
            found = self._closed_at(sid, available_before(_tf(sid), t))
            if found is not None:
                out[key] = found
        return out or None

    def get_memory_usage(self) -> dict[str, Any]:
        """Memory figures: the machine's, this process's, and the feeder's share of its budget.

        Returns:
            ``percent`` (share of the machine's memory in use, as the old feeder reported),
            ``total_bytes``, ``available_bytes``, ``used_bytes``, ``rss_bytes`` (this process),
            ``process_percent``, ``limit_percent``, ``budget_bytes``, ``loaded_bytes`` /
            ``loaded_rows`` / ``loaded_series`` (what ``load_data`` holds), ``cache_bytes``
            (partitions kept for point lookups) and ``free_budget_bytes``.
        """
        mem = system_memory()
        loaded = sum(h.nbytes for h in self._loaded.values())
        return {
            "percent": mem.percent,
            "total_bytes": mem.total,
            "available_bytes": mem.available,
            "used_bytes": mem.total - mem.available,
            "rss_bytes": mem.rss,
            "process_percent": 100.0 * mem.rss / mem.total,
            "limit_percent": self.memory_limit_percent,
            "budget_bytes": self.budget_bytes,
            "loaded_bytes": loaded,
            "loaded_rows": sum(h.frame.height for h in self._loaded.values()),
            "loaded_series": len(self._loaded),
            "cache_bytes": self._cache.nbytes,
            "free_budget_bytes": self.budget_bytes - loaded - self._cache.nbytes,
        }

    def unload(self) -> None:
        """Drop everything loaded and cached (memory goes back to the budget)."""
        self._loaded.clear()
        self._cache.clear()

    # ------------------------------------------------------------------ new API

    def estimate_bytes(
        self,
        symbols: SymbolsArg,
        timeframes: TimeframesArg,
        start_date: TimeLike | None = None,
        end_date: TimeLike | None = None,
    ) -> int:
        """What :meth:`load_data` with these arguments would hold, in bytes, from footers only."""
        pairs = self._pairs(symbols, timeframes)
        lo, hi = old_window(start_date, end_date)
        parts = self.lake.plan_files(CANDLES, list(dict.fromkeys(s for _, _, s in pairs)), lo, hi)
        return int(sum(estimate_rows(parts, lo, hi).values()) * ROW_BYTES)

    def scan(
        self,
        symbols: SymbolsArg | None = None,
        timeframes: TimeframesArg | None = None,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
    ) -> pl.LazyFrame:
        """A Polars LazyFrame over the candles in ``[start, end)`` (end excluded).

        Only the partitions overlapping the range are opened. Columns: ``symbol``, ``timeframe``,
        then the stored candle columns. The file list is fixed when this is called: collect
        promptly (a later rewrite of a partition makes ``collect()`` raise, never return wrong rows).

        Raises:
            InvalidSymbolError / InvalidTimeframeError: a malformed name, or a named series the
                lake does not hold.
        """
        lo, hi = half_open_window(start, end)
        if symbols is not None and timeframes is not None:
            sids = [sid for _, _, sid in self._pairs(symbols, timeframes)]
        else:
            syms = None if symbols is None else parse_symbols(symbol_items(symbols))
            for sym in syms or []:
                if not self._stored_timeframes(sym):
                    raise self._missing_symbol(sym)
            tfs = None if timeframes is None else [parse_timeframe(t) for t in timeframe_items(timeframes)]
            sids = self.lake.find_series(
                CANDLES, exchange=self.exchange, category=self.category, symbols=syms, timeframes=tfs,
            )
        return scan_files(CANDLES, self.lake.plan_files(CANDLES, sids, lo, hi), lo, hi)

    def iter_batches(
        self,
        symbols: SymbolsArg,
        timeframes: TimeframesArg,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        rows: int = _DEFAULT_BATCH_ROWS,
    ) -> Iterator[pl.DataFrame]:
        """Stream candles of many series in time order, in batches, within bounded memory.

        Batches hold exactly ``rows`` rows (the last one fewer), ordered by ``ts``, ties by symbol
        then timeframe in the order requested; columns as :meth:`scan`. About one partition per
        series is held at a time (a month of 1m candles, a year of 5m), plus two batches, however
        long the range: that working set is checked against the budget before anything is read.

        Raises:
            DataValidationError: ``rows`` is not a positive int; bad names or times as above.
            MemoryBudgetError: even the working set does not fit the budget (lower ``rows``).
        """
        if isinstance(rows, bool) or not isinstance(rows, (int, np.integer)) or rows < 1:
            raise DataValidationError(f"rows must be a positive int, got {rows!r}")
        pairs = self._pairs(symbols, timeframes)
        lo, hi = half_open_window(start, end)
        sids = list(dict.fromkeys(sid for _, _, sid in pairs))
        series = [(sid, self.lake.plan_files(CANDLES, [sid], lo, hi)) for sid in sids]
        per_part = estimate_rows([p for _, ps in series for p in ps], None, None)
        largest = [max((per_part[p] for p in ps), default=0) for _, ps in series]
        needed = working_set_bytes(largest, int(rows))
        allowed = self._room_for(needed, set())
        if needed > allowed:
            err = MemoryBudgetError(needed, allowed, "iter_batches")
            # The stock advice ("use iter_batches()") is this very call: say what helps here.
            err.args = (
                (
                    f"iter_batches over {len(sids)} series holds about {needed / 2**20:.1f} MiB at a "
                    f"time (one partition per series plus batches of {rows:,} rows) but the budget "
                    f"is {allowed / 2**20:.1f} MiB; lower rows= or ask for fewer series at once"
                ),
            )
            raise err
        # Validation above runs now; the reading happens as the caller iterates.
        return merged_batches(self.lake, series, lo, hi, int(rows), self._read_partition)

    def aligned(
        self,
        symbol: str,
        base_timeframe: TimeframeArg,
        other_timeframes: TimeframesArg = (),
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        *,
        funding: bool = False,
        mark: TimeframeArg | None = None,
        index: TimeframeArg | None = None,
        premium: TimeframeArg | None = None,
    ) -> pl.LazyFrame:
        """Base candles in ``[start, end)`` with, on each row, every other timeframe's latest
        candle that had closed when the base candle closed (no lookahead).

        Row for the 10:04 one-minute candle (closing 10:05): ``*_5`` is the 10:00 five-minute
        candle (it closed at 10:05 too), ``*_60`` the 09:00 hour candle (closed at 10:00).

        Args:
            funding: Add the funding known at each row's close: ``funding_ts`` (settlement time
                of the rate in force, the last ``<= close_time``), ``funding_rate``,
                ``funding_interval_minutes``, ``funding_settled`` (a settlement fell within the
                row's candle: ``ts < funding_ts <= close_time``).
            mark / index / premium: A timeframe: add that price candle kind's latest candle
                closed by the row's close, as ``ts_mark``, ``open_mark`` ... ``close_mark``.

        Returns:
            ``ts``, ``close_time`` (base candle close: the time the row is valid at), the base
            columns, then each other timeframe's columns suffixed with its canonical name
            (``ts_60``, ``close_60``, ``volume_D`` ...), then the funding and price columns asked
            for; nulls where nothing had closed or settled yet.

        Raises:
            InvalidSymbolError / InvalidTimeframeError / DataValidationError: bad input (also a
                funding or price series the lake does not hold).
        """
        base_sid = self._series(symbol, base_timeframe)
        base_tf = _tf(base_sid)
        lo, hi = half_open_window(start, end)
        base = scan_files(CANDLES, self.lake.plan_files(CANDLES, [base_sid], lo, hi), lo, hi)
        # Other series are read only over what the join can use: from the candle already closed
        # at `start` (however far back a gap puts it) to the close of the last base candle.
        o_hi = None if hi is None else close_ms(base_tf, base_tf.floor(hi - 1))
        others: list[tuple[Timeframe, pl.LazyFrame]] = []
        other_pairs = self._pairs([symbol], other_timeframes) if timeframe_items(other_timeframes) else []
        for _, _, sid in other_pairs:
            tf = _tf(sid)
            o_lo = None
            if lo is not None:
                bound = available_before(tf, lo)
                hit = self._cache.last_before(sid, bound)
                o_lo = bound if hit is None else int(hit[0].ts[hit[1]])
            others.append((tf, scan_files(CANDLES, self.lake.plan_files(CANDLES, [sid], o_lo, o_hi), o_lo, o_hi)))
        lf = aligned_frame(base, base_tf, others)
        for kind, tf_arg in (("mark", mark), ("index", index), ("premium", premium)):
            if tf_arg is None:
                continue
            psid = self._perp_series(PRICE_KINDS[kind], symbol, tf_arg)
            ptf = _tf(psid)
            p_lo = None
            if lo is not None:
                bound = available_before(ptf, lo)
                hit = self._cache.last_before(psid, bound)
                p_lo = bound if hit is None else int(hit[0].ts[hit[1]])
            lf = join_price(lf, kind, ptf, self._scan_dataset(psid, p_lo, o_hi))
        if funding:
            fsid = self._perp_series(FUNDING, symbol)
            f_lo = None
            if lo is not None:  # from the settlement in force at `start` (the first close is later)
                hit = self._cache.last_before(fsid, lo + 1)
                f_lo = lo if hit is None else int(hit[0].ts[hit[1]])
            f_hi = None if o_hi is None else o_hi + 1  # a settlement at the last close counts
            lf = join_funding(lf, self._scan_dataset(fsid, f_lo, f_hi))
        return lf

    # ------------------------------------------------------------------ perpetuals (issue 13)

    def funding(self, symbol: str, start: TimeLike | None = None, end: TimeLike | None = None) -> pl.DataFrame:
        """Funding settlements of ``symbol`` with settlement time in ``[start, end)``.

        Returns:
            ``ts`` (settlement time: when the rate becomes known), ``rate`` (per settlement,
            longs pay shorts when positive), ``interval_minutes`` (the period ending at ``ts``).

        Raises:
            InvalidSymbolError: the lake holds no funding of ``symbol``.
        """
        sid = self._perp_series(FUNDING, symbol)
        lo, hi = half_open_window(start, end)
        return self._read_dataset(sid, lo, hi)

    def funding_rate_at(self, symbol: str, t: TimeLike) -> float | None:
        """The funding rate known at ``t``: the last one whose settlement time is ``<= t`` (a rate
        is known at its settlement, not before); None when none had settled yet."""
        sid = self._perp_series(FUNDING, symbol)
        hit = self._cache.last_before(sid, time_ms(t, what="t") + 1)
        return None if hit is None else float(hit[0].frame.get_column("rate")[hit[1]])

    def price_candles(
        self, kind: str, symbol: str, timeframe: TimeframeArg = "1",
        start: TimeLike | None = None, end: TimeLike | None = None,
    ) -> pl.DataFrame:
        """``mark`` / ``index`` / ``premium`` candles (``ts`` open, ``open high low close``) with
        open time in ``[start, end)``."""
        sid = self._perp_series(_price_dataset(kind), symbol, timeframe)
        lo, hi = half_open_window(start, end)
        return self._read_dataset(sid, lo, hi)

    def price_candle_at(self, kind: str, symbol: str, t: TimeLike, timeframe: TimeframeArg = "1") -> dict[str, Any] | None:
        """The latest ``kind`` candle **closed** at ``t`` (open + duration <= ``t``), as a dict
        (``timestamp``, ``datetime``, ``close_time_ms``, ``open high low close``), or None."""
        sid = self._perp_series(_price_dataset(kind), symbol, timeframe)
        tf = _tf(sid)
        hit = self._cache.last_before(sid, available_before(tf, time_ms(t, what="t")))
        if hit is None:
            return None
        part, i = hit
        return candle_dict(part.frame, i, int(part.ts[i]), tf)

    def mark_price_at(self, symbol: str, t: TimeLike, timeframe: TimeframeArg = "1") -> float | None:
        """The mark price known at ``t``: the close of the last mark candle closed by ``t``."""
        got = self.price_candle_at("mark", symbol, t, timeframe)
        return None if got is None else float(got["close"])

    def funding_payments(
        self,
        symbol: str,
        position: float | pl.DataFrame,
        start: TimeLike,
        end: TimeLike,
        *,
        mark_timeframe: TimeframeArg = "1",
        inverse: bool | None = None,
        complete: bool = True,
    ) -> pl.DataFrame:
        """Funding paid by a position at each settlement in ``(start, end]``, one row each.

        Args:
            position: A constant signed size (base units; inverse: contracts) held over the whole
                range, or a frame of changes: ``ts`` and ``size`` (or ``notional``, signed, in
                the settle currency: then no price is needed). A change exactly at a settlement
                takes effect after it.
            start: Exclusive start; end: inclusive end (a settlement at ``end`` is paid).
            mark_timeframe: Mark candles pricing a size: the notional at a settlement is size x
                the close of the last mark candle closed by then.
            inverse: Inverse contract (notional = size / price); default: the feeder's category
                is ``inverse``.
            complete: Refuse (``DataValidationError``) when stored settlements are missing in the
                range, rather than count them as zero; False sums what is stored.

        Returns:
            ts, rate, position, price, notional, payment (positive: paid; negative: received);
            see :func:`marketlake.core.funding.funding_payments`.
        """
        from marketlake.core.funding import funding_payments

        lo, hi = time_ms(start, what="start"), time_ms(end, what="end")
        if hi < lo:
            raise DataValidationError(f"start {start!r} is after end {end!r}")
        fsid = self._perp_series(FUNDING, symbol)
        fund = self._read_dataset(fsid, lo - LONGEST_FUNDING_MS, hi + LONGEST_FUNDING_MS + 1)
        if complete:
            holes = funding_holes(fund, lo, hi)
            if holes:
                raise DataValidationError(
                    f"funding of {fsid.symbol} is incomplete in ({start}, {end}]: {'; '.join(holes)}; fetch it "
                    f"(marketlake ingest --data funding) or pass complete=False to sum what is stored"
                )
        if isinstance(position, pl.DataFrame):
            pos = position
        elif isinstance(position, (int, float, np.integer, np.floating)) and not isinstance(position, bool):
            pos = pl.DataFrame({"ts": [lo], "size": [float(position)]})
        else:
            raise DataValidationError("position must be a number (a constant size) or a frame of ts and size/notional")
        prices = None
        settle = fund.filter((pl.col("ts").dt.epoch("ms") > lo) & (pl.col("ts").dt.epoch("ms") <= hi))
        if "size" in pos.columns and "notional" not in pos.columns and settle.height:
            msid = self._perp_series(PRICE_KINDS["mark"], symbol, mark_timeframe)
            mtf = _tf(msid)
            first = int(settle.get_column("ts").dt.epoch("ms")[0])
            hit = self._cache.last_before(msid, available_before(mtf, first))
            m_lo = available_before(mtf, first) if hit is None else int(hit[0].ts[hit[1]])
            marks = self._read_dataset(msid, m_lo, available_before(mtf, hi))
            prices = marks.select(close_time_expr(mtf).alias("ts"), pl.col("close").alias("price"))
        if inverse is None:
            inverse = self.category == "inverse"
        return funding_payments(fund.select("ts", "rate"), pos, lo, hi, prices=prices, inverse=inverse)

    def funding_paid(
        self,
        symbol: str,
        position: float | pl.DataFrame,
        start: TimeLike,
        end: TimeLike,
        *,
        mark_timeframe: TimeframeArg = "1",
        inverse: bool | None = None,
        complete: bool = True,
    ) -> float:
        """Total funding paid over ``(start, end]`` (positive: paid, negative: received): the sum
        of :meth:`funding_payments` (same arguments)."""
        pays = self.funding_payments(symbol, position, start, end, mark_timeframe=mark_timeframe,
                                     inverse=inverse, complete=complete)
        return float(pays.get_column("payment").sum())

    def universe(self, at: TimeLike, category: str | None = None, *, statuses: Any = ("Trading",)) -> pl.DataFrame:
        """The instruments listed at ``at`` with the attributes in force then (tick size, funding
        interval ...), from the lake's instrument history: delisted symbols are there before their
        delivery time, not after (:meth:`marketlake.Lake.universe`). Category: the feeder's."""
        return self.lake.universe(time_ms(at, what="at"), validate_category(category or self.category),
                                  exchange=self.exchange, statuses=statuses)

    # ------------------------------------------------------------------ internals

    def _scan_dataset(self, sid: SeriesId, lo: int | None, hi: int | None) -> pl.LazyFrame:
        """Stored rows of a series of any dataset in ``[lo, hi)`` (no label columns), lazily."""
        return scan_files(sid.dataset, self.lake.plan_files(sid.dataset, [sid], lo, hi), lo, hi).select(
            list(spec(sid.dataset).schema)
        )

    def _read_dataset(self, sid: SeriesId, lo: int | None, hi: int | None) -> pl.DataFrame:
        return retrying(lambda: self._scan_dataset(sid, lo, hi).collect())

    def _perp_series(self, dataset: str, symbol: str, timeframe: TimeframeArg | None = None) -> SeriesId:
        """A stored series of a perpetual dataset; a typed error naming what is stored otherwise."""
        key = (dataset, symbol, timeframe)
        try:
            memo = self._known.get(key)  # type: ignore[arg-type]
        except TypeError:
            memo = None
        if memo is not None:
            return memo
        has_tf = spec(dataset).has_timeframe
        sid = SeriesId.of(dataset, exchange=self.exchange, category=self.category, symbol=symbol,
                          timeframe=timeframe if has_tf else None)
        stored = self.lake.find_series(dataset, exchange=self.exchange, category=self.category, symbols=[sid.symbol])
        if sid in stored:
            self._known[key] = sid  # type: ignore[index]
            return sid
        what = dataset.replace("_", " ")
        if stored and has_tf:
            raise InvalidTimeframeError(
                f"no {_tf(sid).name} {what} of {sid.symbol} in {self.lake.root} ({self.exchange}/{self.category}); "
                f"stored timeframes: {', '.join(s.timeframe.name for s in stored if s.timeframe)}"
            )
        held = sorted({s.symbol for s in self.lake.find_series(dataset, exchange=self.exchange, category=self.category)})
        shown = ", ".join(held[:10]) + (f" ... ({len(held)} in all)" if len(held) > 10 else "")
        raise InvalidSymbolError(
            f"no {what} of {sid.symbol} in {self.lake.root} ({self.exchange}/{self.category}); "
            f"stored symbols: {shown or 'none'} (marketlake ingest --data ... fetches it)"
        )

    def _read_partition(self, lake: Lake, sid: SeriesId, key: str) -> tuple[tuple[Path, ...], pl.DataFrame]:
        self.partitions_read += 1
        return read_partition_files(lake, sid, key)

    def _read_window(self, sid: SeriesId, lo: int | None, hi: int | None) -> pl.DataFrame:
        """Rows of ``sid`` with open time in ``[lo, hi)``: the planned partitions, read at once."""

        def once() -> pl.DataFrame:
            files = [f for p in self.lake.plan_files(CANDLES, [sid], lo, hi) for f in p.files]
            # Partitions are planned in time order and a partition's live files are in time
            # order, so the concatenation is sorted: cut the boundary partitions by slicing.
            return slice_window(read_files(files, None, self.lake.storage.polars_options()), lo, hi)

        return retrying(once)

    def _closed_at(self, sid: SeriesId, bound: int) -> dict[str, Any] | None:
        """The candle of ``sid`` with the greatest open time ``< bound``, as a dict."""
        tf = _tf(sid)
        held = self._loaded.get(sid)
        if held is not None and (held.hi is None or bound <= held.hi):
            i = int(np.searchsorted(held.ts, bound, "left"))
            if i > 0:
                return candle_dict(held.frame, i - 1, int(held.ts[i - 1]), tf)
            if held.lo is None:
                return None  # loaded from the series' start: nothing earlier exists
        hit = self._cache.last_before(sid, bound)
        if hit is None:
            return None
        part, i = hit
        return candle_dict(part.frame, i, int(part.ts[i]), tf)

    def _covered(self, sid: SeriesId, lo: int | None, hi: int | None) -> bool:
        held = self._loaded.get(sid)
        return held is not None and held.covers(lo, hi)

    def _allowance(self, replacing: set[SeriesId]) -> int:
        """Bytes a new request may take: the budget minus what is held (except what it replaces),
        and never more than the machine has available."""
        held = sum(h.nbytes for s, h in self._loaded.items() if s not in replacing) + self._cache.nbytes
        freed = sum(h.nbytes for s, h in self._loaded.items() if s in replacing)
        return max(0, min(self.budget_bytes - held, system_memory().available + freed))

    def _room_for(self, needed: int, replacing: set[SeriesId]) -> int:
        """The allowance for a request of ``needed`` bytes, after dropping cached partitions if
        that is what it takes (they only speed up lookups; loaded data is never dropped)."""
        allowed = self._allowance(replacing)
        if needed > allowed and self._cache.nbytes:
            self._cache.clear()
            allowed = self._allowance(replacing)
        return allowed

    def _check_budget(
        self, sids: list[SeriesId], lo: int | None, hi: int | None, what: str, replacing: set[SeriesId] | None = None
    ) -> int:
        parts = self.lake.plan_files(CANDLES, sids, lo, hi)
        rows = sum(estimate_rows(parts, lo, hi).values())
        needed = int(rows * ROW_BYTES)
        allowed = self._room_for(needed, replacing or set())
        if needed > allowed:
            raise MemoryBudgetError(needed, allowed, f"{what} ({rows:,} candles)")
        return needed

    def _pairs(self, symbols: SymbolsArg, timeframes: TimeframesArg) -> list[tuple[str, str, SeriesId]]:
        """(symbol, timeframe key as the caller spelled it, series) for every requested pair."""
        syms = parse_symbols(symbol_items(symbols))
        items = timeframe_items(timeframes)
        if not syms:
            raise InvalidSymbolError("no symbols given")
        if not items:
            raise InvalidTimeframeError("no timeframes given")
        keys = [(item.strip() if isinstance(item, str) else parse_timeframe(item).name, item) for item in items]
        return [(sym, key, self._series(sym, item)) for sym in syms for key, item in keys]

    def _series(self, symbol: str, timeframe: TimeframeArg) -> SeriesId:
        """The stored series, validated; a typed error naming what exists when it is not stored."""
        try:
            memo = self._known.get((symbol, timeframe))
        except TypeError:  # an unhashable argument: let validation below say what is wrong
            memo = None
        if memo is not None:
            return memo
        sid = SeriesId.of(CANDLES, exchange=self.exchange, category=self.category, symbol=symbol, timeframe=timeframe)
        stored = self._stored_timeframes(sid.symbol)
        if _tf(sid).name in stored:
            self._known[(symbol, timeframe)] = sid  # stored series stay stored: remember them
            return sid
        if not stored:
            raise self._missing_symbol(sid.symbol)
        raise InvalidTimeframeError(
            f"no {_tf(sid).name} candles of {sid.symbol} in {self.lake.root} "
            f"({self.exchange}/{self.category}); stored timeframes: {', '.join(stored) or 'none'}"
        )

    def _stored_timeframes(self, symbol: str) -> list[str]:
        sids = self.lake.find_series(CANDLES, exchange=self.exchange, category=self.category, symbols=[symbol])
        return [s.timeframe.name for s in sids if s.timeframe is not None]

    def _missing_symbol(self, symbol: str) -> InvalidSymbolError:
        sids = self.lake.find_series(CANDLES, exchange=self.exchange, category=self.category)
        stored = sorted({s.symbol for s in sids})
        shown = ", ".join(stored[:10]) + (f" ... ({len(stored)} in all)" if len(stored) > 10 else "")
        return InvalidSymbolError(
            f"no candles of {symbol} in {self.lake.root} ({self.exchange}/{self.category}); "
            f"stored symbols: {shown or 'none'}"
        )


def _price_dataset(kind: str) -> str:
    try:
        return PRICE_KINDS[kind]
    except KeyError:
        raise DataValidationError(f"price kind {kind!r}: use mark, index or premium") from None


def _tf(sid: SeriesId) -> Timeframe:
    assert sid.timeframe is not None  # candle series always have one
    return sid.timeframe
