"""``check`` over the lake: integrity of every stored candle series, gaps told apart by the ledger.

For each series the numba scan (:func:`marketlake.check_candles`) finds duplicates, gaps,
out-of-order and misaligned rows and invalid candles in one pass. Gaps are then classified with
the coverage ledger: a gap the exchange itself has (recorded as verified empty: an outage, the
time before listing) is *explained* and not an issue; any other gap is. Higher timeframes that have
a stored 1-minute series beside them are compared with its resample (cross-timeframe consistency).

The ledger is also checked against the data: every candle of a range it records as ``present``
must be stored (for exchange timeframes, where ``present`` means "fetched, all of it kept").
Ranges that are not (*unstored*: a file lost, quarantined by ``fsck --fix`` or deleted by hand,
at the edge of a series where no gap shows) are issues, and ``repair`` re-fetches them. Series
the ledger knows but the lake no longer holds at all are checked too.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from marketlake.core.consistency import ConsistencyResult, check_consistency
from marketlake.core.integrity import CheckResult, Gap, check_candles, format_ts
from marketlake.core.intervals import merge
from marketlake.core.schemas import CANDLE_SCHEMA
from marketlake.core.symbols import parse_symbols
from marketlake.core.timeframes import Timeframe, parse_timeframe, parse_timeframes
from marketlake.errors import CorruptLakeError
from marketlake.store import Lake
from marketlake.store.layout import CANDLES, TRADES, SeriesId
from marketlake.store.ledger import Status
from marketlake.store.reader import find_series
from marketlake.quality.perp import (
    PERP_KINDS,
    PerpSeriesCheck,
    check_funding,
    check_open_interest,
    check_price_candles,
    kind_of,
    parse_data,
    perp_series,
    series_name,
)

__all__ = ["CheckPlan", "LakeCheck", "SeriesCheck", "check_lake", "check_one", "finish_check", "plan_check", "read_series"]

#: Higher timeframes compared with the resample of a stored 1m series.
CONSISTENCY_TIMEFRAMES = ("3", "5", "15", "30", "60", "120", "240", "360", "720", "D")
_COLUMNS = ("ts", "open", "high", "low", "close", "volume", "turnover", "trades", "filled")


@dataclass(slots=True)
class SeriesCheck:
    """The check of one series.

    Attributes:
        sid: The series.
        result: Everything the scan found (gaps include the explained ones).
        unexplained: Gaps the ledger does not explain; these are issues.
        explained: Gaps the exchange itself has (verified empty in the ledger).
        filled: Flat candles written by ``repair --fill`` (not issues, but not real data).
        consistency: The comparison with the resampled 1m series, when one exists.
    """

    sid: SeriesId
    result: CheckResult
    unexplained: list[Gap] = field(default_factory=list)
    explained: list[Gap] = field(default_factory=list)
    filled: int = 0
    consistency: ConsistencyResult | None = None
    unstored: list[tuple[int, int]] = field(default_factory=list)
    damaged: str | None = None

    @property
    def has_issues(self) -> bool:
        """Any fault other than an explained gap."""
        r = self.result
        return bool(
            self.unexplained or self.unstored or self.damaged or r.invalid_count or r.duplicate_count
            or r.misaligned_rows.size or r.out_of_order_rows.size
            or (self.consistency is not None and not self.consistency.ok)
        )

    def file_report(self) -> dict[str, Any]:
        """This series in the old per-file report structure (gaps: the unexplained ones)."""
        out = self.result.file_report()
        out["has_issues"] = self.has_issues
        out["gaps"] = [self.result.gap_entry(g) for g in self.unexplained]
        return out

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready."""
        out = self.result.to_dict()
        out.update(
            series=series_name(self.sid),
            has_issues=self.has_issues,
            gaps=[self.result.gap_entry(g) for g in self.unexplained],
            explained_gaps=[self.result.gap_entry(g) for g in self.explained],
            filled_candles=self.filled,
            unstored=[[a, b] for a, b in self.unstored],
            damaged=self.damaged,
            consistency=None if self.consistency is None else self.consistency.to_dict(),
        )
        if self.sid.dataset != CANDLES:
            out["data"] = kind_of(self.sid.dataset)
        return out


@dataclass(slots=True)
class LakeCheck:
    """The check of many series."""

    series: list[SeriesCheck] = field(default_factory=list)
    rows: int = 0
    seconds: float = 0.0
    #: Per trades series (label), ranges the ledger records as failed: trades lost while
    #: streaming that REST could not return. ``marketlake archive`` recovers them.
    trade_gaps: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    #: Mark, index and premium-index candle series (``series`` holds the klines only).
    price_series: list[SeriesCheck] = field(default_factory=list)
    #: Funding series.
    funding: list[PerpSeriesCheck] = field(default_factory=list)
    #: Open-interest series (one per interval).
    open_interest: list[PerpSeriesCheck] = field(default_factory=list)
    #: Rows of the perpetual datasets checked (``rows`` counts candles).
    perp_rows: int = 0

    def add(self, kind: str, check: SeriesCheck | PerpSeriesCheck) -> None:
        """Take in the check of one series of ``kind`` (``klines`` or a
        :data:`~marketlake.quality.perp.PERP_KINDS` kind), counting its rows."""
        if kind == "klines":
            assert isinstance(check, SeriesCheck)
            self.series.append(check)
            self.rows += check.result.total_candles
        elif kind == "funding":
            assert isinstance(check, PerpSeriesCheck)
            self.funding.append(check)
            self.perp_rows += check.rows
        elif kind == "oi":
            assert isinstance(check, PerpSeriesCheck)
            self.open_interest.append(check)
            self.perp_rows += check.rows
        else:
            assert isinstance(check, SeriesCheck)
            self.price_series.append(check)
            self.perp_rows += check.result.total_candles

    @property
    def perp_series(self) -> list[SeriesCheck | PerpSeriesCheck]:
        """Every checked series of the perpetual datasets: funding, price candles, open interest."""
        return [*self.funding, *self.price_series, *self.open_interest]

    @property
    def has_issues(self) -> bool:
        """True when any series (of any dataset) has an issue, or trades were lost."""
        return (any(s.has_issues for s in self.series) or bool(self.trade_gaps)
                or any(s.has_issues for s in self.perp_series))

    def report(self) -> dict[str, Any]:
        """The old ``DataIntegrityChecker`` report structure, one entry per series (by label)."""
        items = {s.sid.label(): s.file_report() for s in self.series}
        return {
            "files_checked": len(self.series),
            "files_with_issues": sum(1 for s in self.series if s.has_issues),
            "total_gaps": sum(len(s.unexplained) for s in self.series),
            "total_duplicates": sum(s.result.duplicate_count for s in self.series),
            "total_invalid_candles": sum(s.result.invalid_count for s in self.series),
            "issues": items,
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready (``--json``)."""
        return {
            "has_issues": self.has_issues,
            "series_checked": len(self.series),
            "rows_checked": self.rows,
            "seconds": round(self.seconds, 3),
            "series": [s.to_dict() for s in self.series],
            "trade_gaps": {k: [[a, b] for a, b in v] for k, v in self.trade_gaps.items()},
            "perp_rows_checked": self.perp_rows,
            "funding": [s.to_dict() for s in self.funding],
            "price_candles": [s.to_dict() for s in self.price_series],
            "open_interest": [s.to_dict() for s in self.open_interest],
        }


def read_series(lake: Lake, sid: SeriesId) -> pl.DataFrame:
    """Every stored row of a candle series, in stored order."""
    assert sid.timeframe is not None
    return lake.read_candles(
        sid.symbol, sid.timeframe, exchange=sid.exchange, category=sid.category
    ).select(_COLUMNS)


_DAY_MS = 86_400_000
_EMPTY = pl.DataFrame(schema={c: CANDLE_SCHEMA[c] for c in _COLUMNS})


def _classify(
    lake: Lake, sid: SeriesId, result: CheckResult, *, from_trades: bool = True
) -> tuple[list[Gap], list[Gap]]:
    tf = result.timeframe
    gaps = result.gaps
    if not gaps or not lake.has_ledger:
        return gaps, []
    lo = min(tf.next_open(tf.floor(g.previous_ts)) for g in gaps)
    hi = max(tf.floor(g.current_ts) for g in gaps)
    empty = lake.ledger.covered(sid, lo, hi, Status.EMPTY)  # merged: sorted, disjoint, not touching
    quiet = _tradeless(lake, sid, lo, hi) if not tf.is_bybit and from_trades else None
    starts = [s for s, _ in empty]
    unexplained, explained = [], []
    for g in gaps:
        a, b = tf.next_open(tf.floor(g.previous_ts)), tf.floor(g.current_ts)
        # Explained when one verified-empty range holds the whole hole (bisection: a 1s series
        # can have thousands of gaps and of empty ranges) ...
        i = bisect.bisect_right(starts, a) - 1
        ok = i >= 0 and empty[i][1] >= b
        # ... or, for candles built from trades, when the trades there are complete and none
        # of them falls in the hole: no trade, no candle.
        ok = ok or (quiet is not None and quiet(a, b))
        (explained if ok else unexplained).append(g)
    return unexplained, explained


def _tradeless(lake: Lake, sid: SeriesId, lo: int, hi: int) -> Callable[[int, int], bool]:
    """For a series built from trades: a test of ``[a, b)`` (within ``[lo, hi)``) being covered
    by the trades' ledger (present or verified empty) with no stored trade inside.

    Holes come in time order; the trade times of one UTC day at a time are held (a year of a
    busy symbol's trades would not fit), and a hole spanning days is counted by a scan.
    """
    tsid = SeriesId(TRADES, sid.exchange, sid.category, sid.symbol)
    done = merge(
        (c.start_ms, c.end_ms) for c in lake.ledger.ranges(tsid, lo, hi) if c.status is not Status.FAILED
    )
    starts = [s for s, _ in done]
    where = {"exchange": sid.exchange, "category": sid.category}
    held: dict[int, np.ndarray] = {}

    def times_of_day(day: int) -> np.ndarray:
        if day not in held:
            held.clear()
            frame = lake.scan_trades(sid.symbol, day * _DAY_MS, (day + 1) * _DAY_MS, **where)
            held[day] = frame.select(pl.col("ts").dt.epoch("ms")).collect().get_column("ts").sort().to_numpy()
        return held[day]

    def test(a: int, b: int) -> bool:
        i = bisect.bisect_right(starts, a) - 1
        if i < 0 or done[i][1] < b:
            return False
        if a // _DAY_MS == (b - 1) // _DAY_MS:
            t = times_of_day(a // _DAY_MS)
            return int(np.searchsorted(t, a, "left")) == int(np.searchsorted(t, b, "left"))
        return lake.scan_trades(sid.symbol, a, b, **where).select(pl.len()).collect().item() == 0

    return test


@dataclass(frozen=True, slots=True)
class CheckPlan:
    """What a check covers: the series, each with its kind, in the order they are checked.

    Attributes:
        kinds: The datasets asked for (``klines``, ``trades``, ``funding`` ...).
        items: ``(kind, series)``: candle series (kind ``klines``) first, then the perpetual
            datasets' series.
    """

    kinds: tuple[str, ...]
    items: tuple[tuple[str, SeriesId], ...]


def plan_check(
    lake: Lake,
    symbols: str | Sequence[str] | None = None,
    timeframes: str | Sequence[str] | None = None,
    *,
    exchange: str | None = None,
    category: str | None = None,
    data: str | Sequence[str] | None = None,
) -> CheckPlan:
    """The series :func:`check_lake` checks for these filters (see there), in its order."""
    kinds = parse_data(data, timeframes)
    perp = [
        (kind, sid) for kind in PERP_KINDS if kind in kinds
        for sid in perp_series(lake, kind, exchange, category, symbols, timeframes)
    ]
    # Everything stored is checked unless filtered: every exchange and category by default.
    sids = [] if "klines" not in kinds else find_series(
        lake.snapshot(CANDLES),
        exchange=exchange,
        category=category,
        symbols=None if symbols is None else parse_symbols(symbols),
        timeframes=None if timeframes is None else parse_timeframes(timeframes),  # type: ignore[arg-type]
    )
    if lake.has_ledger and "klines" in kinds:
        sids = _with_ledger_series(lake, sids, exchange, category, symbols, timeframes)
    return CheckPlan(tuple(kinds), (*(("klines", sid) for sid in sids), *perp))


def check_one(
    lake: Lake,
    kind: str,
    sid: SeriesId,
    *,
    consistency: bool = True,
    base_cache: dict[tuple[str, str, str], pl.DataFrame | None] | None = None,
) -> SeriesCheck | PerpSeriesCheck:
    """Check one series of a :class:`CheckPlan` (any process can: it reads the lake only).

    ``base_cache`` keeps the last symbol's stored 1m series for the comparison of higher
    timeframes with it (series come in symbol order); without one it is read per series.
    """
    if kind == "funding":
        return check_funding(lake, sid)
    if kind == "oi":
        return check_open_interest(lake, sid)
    if kind != "klines":
        return check_price_candles(lake, sid)
    tf = sid.timeframe
    assert tf is not None
    damaged = None
    try:
        frame = read_series(lake, sid)
    except CorruptLakeError as exc:
        # A file the log references is missing or unreadable: report it (repair drops the
        # reference and re-fetches its range) and check what the ledger claims against nothing.
        damaged, frame = str(exc), _EMPTY.clone()
    result = check_candles(frame.drop("filled"), tf)
    unexplained, explained = _classify(lake, sid, result)
    sc = SeriesCheck(sid, result, unexplained, explained, int(frame.get_column("filled").sum()), damaged=damaged)
    if lake.has_ledger and tf.is_bybit:
        sc.unstored = unstored_ranges(lake, sid, frame.get_column("ts").dt.epoch("ms").to_numpy())
    if consistency and tf.name in CONSISTENCY_TIMEFRAMES:
        base = _base_series(lake, sid, parse_timeframe("1"), {} if base_cache is None else base_cache)
        if base is not None and base.height:
            sc.consistency = check_consistency(base.drop("filled"), frame.drop("filled"), tf)
    return sc


def finish_check(
    lake: Lake,
    out: LakeCheck,
    plan: CheckPlan,
    *,
    symbols: str | Sequence[str] | None = None,
    exchange: str | None = None,
    category: str | None = None,
) -> LakeCheck:
    """Add what is not a series scan to ``out``: the trades lost while streaming (the ledger)."""
    if "trades" in plan.kinds and lake.has_ledger:
        out.trade_gaps = lost_trades(
            lake, exchange or lake.settings.exchange, category or lake.settings.category,
            None if symbols is None else parse_symbols(symbols),
        )
    return out


def check_lake(
    lake: Lake,
    symbols: str | Sequence[str] | None = None,
    timeframes: str | Sequence[str] | None = None,
    *,
    exchange: str | None = None,
    category: str | None = None,
    consistency: bool = True,
    progress: Callable[[int, int], None] | None = None,
    data: str | Sequence[str] | None = None,
) -> LakeCheck:
    """Check every stored series matching the filters (all when None).

    ``data`` picks datasets (:data:`marketlake.quality.perp.DATA_KINDS`: ``klines``, ``trades``,
    ``funding``, ``mark``, ``index``, ``premium``, ``oi``, or ``all``); by default everything
    stored, except that a ``timeframes`` filter alone leaves out the datasets without a timeframe
    (trades, funding). The perpetual datasets are checked by :mod:`marketlake.quality.perp`.

    ``progress(done, total)`` is called with ``(0, total)`` once the series are known and after
    each series is checked (``total``: the series to check).

    The same check split into tasks (:func:`plan_check`, :func:`check_one` per series,
    :meth:`LakeCheck.add` in plan order, :func:`finish_check`) runs on a Dask cluster:
    :func:`marketlake.cluster.check_on_cluster`.
    """
    t0 = time.perf_counter()
    plan = plan_check(lake, symbols, timeframes, exchange=exchange, category=category, data=data)
    out = LakeCheck()
    base_cache: dict[tuple[str, str, str], pl.DataFrame | None] = {}
    total = len(plan.items)
    if progress is not None:
        progress(0, total)
    for done, (kind, sid) in enumerate(plan.items, 1):
        out.add(kind, check_one(lake, kind, sid, consistency=consistency, base_cache=base_cache))
        if progress is not None:
            progress(done, total)
    finish_check(lake, out, plan, symbols=symbols, exchange=exchange, category=category)
    out.seconds = time.perf_counter() - t0
    return out


def _with_ledger_series(
    lake: Lake, sids: list[SeriesId], exchange: str | None, category: str | None,
    symbols: str | Sequence[str] | None, timeframes: str | Sequence[str] | None,
    dataset: str = CANDLES,
) -> list[SeriesId]:
    """``sids`` plus series of ``dataset`` the ledger claims something of but the lake holds
    nothing of (a series whose every file was lost is still checked, and repaired)."""
    table = lake.ledger.table().filter(
        (pl.col("dataset") == dataset) & (pl.col("status") == Status.PRESENT.value)
    )
    if exchange is not None:
        table = table.filter(pl.col("exchange") == exchange)
    if category is not None:
        table = table.filter(pl.col("category") == category)
    if symbols is not None:
        table = table.filter(pl.col("symbol").is_in(parse_symbols(symbols)))
    if timeframes is not None:
        table = table.filter(pl.col("timeframe").is_in([t.name for t in parse_timeframes(timeframes)]))  # type: ignore[arg-type]
    have = set(sids)
    out = list(sids)
    for ex, cat, sym, tf in table.select("exchange", "category", "symbol", "timeframe").unique().sort(pl.all()).iter_rows():
        try:
            sid = SeriesId.of(dataset, exchange=ex, category=cat, symbol=sym, timeframe=tf or None)
        except ValueError:
            continue
        if sid not in have:
            have.add(sid)
            out.append(sid)
    return out


def unstored_ranges(lake: Lake, sid: SeriesId, stored_ts: np.ndarray) -> list[tuple[int, int]]:
    """Ranges the ledger records as ``present`` whose candles are not all stored, as
    ``[first missing open, end)`` runs in time order."""
    tf = sid.timeframe
    assert tf is not None
    present = merge(
        (c.start_ms, c.end_ms) for c in lake.ledger.ranges(sid) if c.status is Status.PRESENT
    )
    stored = np.sort(stored_ts.astype(np.int64))
    out: list[tuple[int, int]] = []
    for a, b in present:
        lo, hi = int(np.searchsorted(stored, a, "left")), int(np.searchsorted(stored, b, "left"))
        opens = tf.opens_between(a, b)
        if hi - lo >= opens.size:
            continue  # every expected candle is there (the common case: no array work)
        missing = np.flatnonzero(~np.isin(opens, stored[lo:hi], assume_unique=True))
        if missing.size == 0:
            continue
        cuts = np.flatnonzero(np.diff(missing) != 1) + 1
        for run in np.split(missing, cuts):
            out.append((int(opens[run[0]]), tf.next_open(int(opens[run[-1]]))))
    return out


def lost_trades(
    lake: Lake, exchange: str, category: str, symbols: list[str] | None
) -> dict[str, list[tuple[int, int]]]:
    """Per trades series (label), the ranges the ledger records as failed, in time order."""
    failed = lake.ledger.table().filter(
        (pl.col("dataset") == TRADES) & (pl.col("status") == Status.FAILED.value)
        & (pl.col("exchange") == exchange) & (pl.col("category") == category)
    )
    if symbols is not None:
        failed = failed.filter(pl.col("symbol").is_in(symbols))
    out: dict[str, list[tuple[int, int]]] = {}
    for row in failed.iter_rows(named=True):
        label = SeriesId(TRADES, exchange, category, row["symbol"]).label()
        out.setdefault(label, []).append((row["start_ms"], row["end_ms"]))
    return out


def _base_series(
    lake: Lake, sid: SeriesId, minute: Timeframe, cache: dict[tuple[str, str, str], pl.DataFrame | None]
) -> pl.DataFrame | None:
    key = (sid.exchange, sid.category, sid.symbol)
    if key not in cache:
        base_sid = SeriesId(CANDLES, sid.exchange, sid.category, sid.symbol, minute)
        stored = find_series(lake.snapshot(CANDLES), exchange=sid.exchange, category=sid.category,
                             symbols=[sid.symbol], timeframes=["1"])
        cache.clear()  # one symbol's 1m series at a time: series come in symbol order
        cache[key] = read_series(lake, base_sid) if stored else None
    return cache[key]


def describe_gap(g: Gap) -> str:
    """``2024-01-01 00:05:00 → 2024-01-01 00:09:00 (3 missing)``."""
    return f"{format_ts(g.previous_ts)} → {format_ts(g.current_ts)} ({g.missing_candles} missing)"
