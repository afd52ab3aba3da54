"""Candles built from stored trades (``marketlake build-candles``): per symbol and UTC day.

The unit of work is one (symbol, day): read the day's stored trades, run the numba
trades → candles kernel (:func:`~marketlake.core.candles.candles_from_trades`) for each
timeframe asked for, write the candles, then record them in the ledger (``present``, or verified
``empty`` for a day without a trade). It is the code path the archive ingest uses for days whose
trades it already holds (:func:`~marketlake.ingest.archive.candles_from_stored`), so a candle
built here equals one built while archiving.

Only days whose trades the ledger covers completely (``present`` or verified ``empty``: an
archive day, a stream that lost nothing) are built: candles of a day with trades missing would
be wrong, and the ledger would call them complete. Such days are skipped and named in the stats
(``marketlake archive`` fetches them). Sub-minute timeframes only (1s, 5s, 15s): the others are
Bybit's klines, and one series must not mix two sources.

Every day is independent and its writes are idempotent (a re-build of unchanged candles commits
nothing), so the days can run in any order, in any process: :func:`build_candles` runs them here,
one after another; :func:`marketlake.cluster.build_candles_on_cluster` runs each as a task on a
Dask cluster (:func:`build_day` in the worker) and adds the results up the same way.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from marketlake.core.timeframes import Timeframe, parse_timeframes
from marketlake.errors import DataValidationError, LakeError
from marketlake.ingest.archive import (
    _done_ranges,
    _covers,
    candles_from_stored,
    day_bounds,
    record_built_candles,
)
from marketlake.store import Lake
from marketlake.store.layout import TRADES, SeriesId
from marketlake.store.ledger import RUN_HEARTBEAT_S

__all__ = [
    "BuildPlan",
    "BuildStats",
    "DayBuild",
    "build_candles",
    "build_day",
    "build_timeframes",
    "new_stats",
    "plan_build",
    "plan_notices",
    "run_args",
    "timeframes_of",
]


@dataclass(frozen=True, slots=True)
class BuildPlan:
    """What one symbol needs.

    Attributes:
        sid: The trades series the candles are built from.
        days: Days whose trades are complete in the ledger: built.
        incomplete: Days whose trades are not (missing, or lost while streaming): skipped.
    """

    sid: SeriesId
    days: tuple[dt.date, ...]
    incomplete: tuple[dt.date, ...] = ()


@dataclass(frozen=True, slots=True)
class DayBuild:
    """The outcome of one (symbol, day).

    Attributes:
        symbol: The symbol.
        day: The UTC day.
        trades: Stored trades read.
        candles: Candles written (of every timeframe; unchanged ones commit nothing).
        failure: Why the day failed (nothing of it recorded in the ledger), or None.
    """

    symbol: str
    day: dt.date
    trades: int = 0
    candles: int = 0
    failure: str | None = None


@dataclass(slots=True)
class BuildStats:
    """Figures of one build-candles run (also the progress snapshot)."""

    symbols: int = 0
    days_planned: int = 0
    days_built: int = 0
    days_without_trades: int = 0
    days_incomplete: int = 0
    days_failed: int = 0
    trades_read: int = 0
    candles_written: int = 0
    elapsed: float = 0.0
    failures: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    interrupted: bool = False

    @property
    def days_done(self) -> int:
        """Days settled so far (built, without trades, or failed)."""
        return self.days_built + self.days_without_trades + self.days_failed

    def add(self, day: DayBuild) -> None:
        """Count one settled day in."""
        if day.failure is not None:
            self.days_failed += 1
            self.failures.append(day.failure)
        elif day.trades:
            self.days_built += 1
        else:
            self.days_without_trades += 1
        self.trades_read += day.trades
        self.candles_written += day.candles

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for ``--json`` and the ledger's run record)."""
        return {name: getattr(self, name) for name in self.__slots__}  # type: ignore[attr-defined]


def build_timeframes(names: str | Sequence[str] | None) -> tuple[Timeframe, ...]:
    """The timeframes to build: sub-minute ones, at least one.

    Raises:
        DataValidationError: none named, or one Bybit serves as klines.
    """
    tfs = tuple(parse_timeframes(names if isinstance(names, str) else list(names or ())))
    served = [t.name for t in tfs if t.is_bybit]
    if served:
        raise DataValidationError(
            f"candles of {', '.join(served)} come from Bybit's klines (marketlake ingest); "
            "trades build sub-minute candles only: 1s, 5s, 15s"
        )
    if not tfs:
        raise DataValidationError("no timeframe to build; name sub-minute ones: 1s, 5s, 15s")
    return tfs


def plan_build(
    lake: Lake,
    symbols: Sequence[str],
    *,
    category: str,
    start: dt.date,
    end: dt.date,
    exchange: str = "bybit",
    today: dt.date | None = None,
) -> list[BuildPlan]:
    """Per symbol, the days of ``[start, end)`` (before ``today``, when given: a day still
    running has no complete trades) whose trades the ledger covers completely (to build) and
    those it does not (skipped).

    Raises:
        DataValidationError: an empty range.
        InvalidSymbolError: a malformed symbol, exchange or category.
    """
    if end <= start:
        raise DataValidationError(f"build range is empty: start {start} is not before end {end}")
    plans = []
    last = end if today is None else min(end, today)
    lo, hi = day_bounds(start)[0], day_bounds(last)[0]
    for symbol in symbols:
        sid = SeriesId.of(TRADES, exchange=exchange, category=category, symbol=symbol)
        # One ledger read for the whole range, then a bisection per day.
        done = _done_ranges(lake, sid, lo, hi) if lake.has_ledger else []
        days: list[dt.date] = []
        incomplete: list[dt.date] = []
        day = start
        while day < last:
            (days if _covers(done, *day_bounds(day)) else incomplete).append(day)
            day += dt.timedelta(days=1)
        plans.append(BuildPlan(sid, tuple(days), tuple(incomplete)))
    return plans


def build_day(
    lake: Lake, sid: SeriesId, day: dt.date, timeframes: Sequence[Timeframe], *, run_id: str | None = None
) -> DayBuild:
    """Build, write and record the candles of one day from its stored trades.

    A lake error (an unreadable trades file, a failed write) fails the day, not the caller: it is
    returned in :attr:`DayBuild.failure` and nothing of the day is recorded in the ledger.
    """
    a, b = day_bounds(day)
    try:
        trades, written = candles_from_stored(lake, sid, a, b, timeframes)
        record_built_candles(lake, sid, a, b, timeframes, trades=trades, run_id=run_id)
    except (LakeError, DataValidationError) as exc:
        return DayBuild(sid.symbol, day, failure=f"{sid.symbol} {day}: {str(exc)[:300]}")
    return DayBuild(sid.symbol, day, trades, written)


def plan_notices(plans: Sequence[BuildPlan], category: str) -> list[str]:
    """One line per symbol with skipped days: how many, and the command that fetches them."""
    out = []
    for p in plans:
        if p.incomplete:
            first, last = p.incomplete[0], p.incomplete[-1] + dt.timedelta(days=1)
            out.append(
                f"{p.sid.symbol}: {len(p.incomplete)} day(s) skipped, their trades are not complete "
                "in the lake; "
                f"fetch them with `marketlake archive --symbols {p.sid.symbol} --category {category} "
                f"--start {first} --end {last}`"
            )
    return out


def new_stats(plans: Sequence[BuildPlan], category: str) -> BuildStats:
    """The stats of a run of ``plans`` before any day is built."""
    return BuildStats(
        symbols=len(plans),
        days_planned=sum(len(p.days) for p in plans),
        days_incomplete=sum(len(p.incomplete) for p in plans),
        notices=plan_notices(plans, category),
    )


def run_args(
    symbols: Sequence[str], timeframes: Sequence[Timeframe], category: str, start: dt.date, end: dt.date
) -> dict[str, Any]:
    """What the ledger's run record keeps of a build-candles run."""
    return {
        "symbols": list(symbols), "timeframes": [t.name for t in timeframes], "category": category,
        "start": start.isoformat(), "end": end.isoformat(),
    }


def build_candles(
    lake: Lake,
    symbols: Sequence[str],
    timeframes: str | Sequence[str] | Sequence[Timeframe],
    *,
    start: dt.date,
    end: dt.date,
    category: str | None = None,
    exchange: str | None = None,
    today: dt.date | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[BuildPlan], BuildStats]:
    """Build the candles of ``timeframes`` from the stored trades of ``symbols`` over
    ``[start, end)``, one day after another in this process; return the plan and the stats.

    ``progress(done, total)`` is called with ``(0, total)`` and after every day (``total``: the
    days to build). Days from ``today`` on are not planned (see :func:`plan_build`). Every
    planned day is built, also one built before (unchanged candles commit nothing). The run is
    recorded in the ledger (kind ``build-candles``).
    """
    tfs = timeframes_of(timeframes)
    category = category or lake.settings.category
    exchange = exchange or lake.settings.exchange
    plans = plan_build(lake, symbols, category=category, start=start, end=end, exchange=exchange, today=today)
    st = new_stats(plans, category)
    t0 = time.monotonic()
    run_id = lake.ledger.start_run("build-candles", run_args(symbols, tfs, category, start, end))
    status = "failed"
    beat = time.monotonic()
    try:
        if progress is not None:
            progress(0, st.days_planned)
        for plan in plans:
            for day in plan.days:
                st.add(build_day(lake, plan.sid, day, tfs, run_id=run_id))
                if progress is not None:
                    progress(st.days_done, st.days_planned)
                if time.monotonic() - beat >= RUN_HEARTBEAT_S:
                    lake.ledger.heartbeat(run_id)
                    beat = time.monotonic()
        status = "partial" if st.days_failed else "ok"
    except KeyboardInterrupt:
        st.interrupted, status = True, "interrupted"
        raise
    finally:
        st.elapsed = time.monotonic() - t0
        lake.ledger.finish_run(run_id, status, st.to_dict())
    return plans, st


def timeframes_of(timeframes: str | Sequence[str] | Sequence[Timeframe]) -> tuple[Timeframe, ...]:
    """:func:`build_timeframes` of names, or the :class:`Timeframe` objects given (checked alike)."""
    if isinstance(timeframes, str):
        return build_timeframes(timeframes)
    return build_timeframes([t.name if isinstance(t, Timeframe) else str(t) for t in timeframes])
