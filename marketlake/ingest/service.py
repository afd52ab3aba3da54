"""``ingest`` as one call: snapshot the instruments, resolve symbols and listing times, plan,
fetch, verify.

The CLI's ``marketlake ingest`` and the compat layer both call :func:`run_ingest`; it owns no I/O
of its own beyond what the lake, the ledger and the REST client do.

What is ingested is a set of *data kinds* (``--data``): ``klines`` (trade candles, the default),
``funding``, ``mark``, ``index``, ``premium`` (price candles, at the request's timeframes) and
``oi`` (open interest, at ``oi_intervals``). Each run first records an instruments-info snapshot of
the category (every status) into the lake's instrument history; the same snapshot gives the
listing and delivery times the planner clips at, so delisted symbols can be ingested too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import polars as pl

from marketlake.core.intervals import Interval, subtract
from marketlake.core.symbols import parse_symbols, validate_category
from marketlake.core.timeframes import Timeframe, parse_timeframe, parse_timeframes
from marketlake.errors import DataValidationError
from marketlake.exchanges.bybit import constants as C
from marketlake.exchanges.bybit.parse import Instrument
from marketlake.exchanges.bybit.rest import BybitRestClient
from marketlake.ingest.historical import HistoricalIngest, IngestStats
from marketlake.ingest.instruments import SnapshotResult, fetch_snapshot, store_snapshot
from marketlake.ingest.planner import Plan, make_plan, series_label
from marketlake.store import Lake
from marketlake.store.datasets import (
    FUNDING,
    INDEX_CANDLES,
    MARK_CANDLES,
    OPEN_INTEREST,
    PREMIUM_CANDLES,
)
from marketlake.store.layout import CANDLES, SeriesId
from marketlake.store.ledger import Status
from marketlake.store.perp import OI_INTERVALS

__all__ = ["DATA_KINDS", "IngestOutcome", "IngestRequest", "parse_data", "run_ingest", "unexplained_gaps"]

#: ``--data`` kinds, in the order they are listed, and the dataset each fills.
DATA_KINDS: dict[str, str] = {
    "klines": CANDLES,
    "funding": FUNDING,
    "mark": MARK_CANDLES,
    "index": INDEX_CANDLES,
    "premium": PREMIUM_CANDLES,
    "oi": OPEN_INTEREST,
}
#: The categories Bybit serves each kind for (klines: every one).
_KIND_CATEGORIES: dict[str, tuple[str, ...]] = {
    "funding": C.FUNDING_CATEGORIES,
    "mark": C.PRICE_KLINE_CATEGORIES["mark"],
    "index": C.PRICE_KLINE_CATEGORIES["index"],
    "premium": C.PRICE_KLINE_CATEGORIES["premium"],
    "oi": C.OI_CATEGORIES,
}
_KIND_NAMES = {
    "funding": "funding history", "mark": "mark-price candles", "index": "index-price candles",
    "premium": "premium-index candles", "oi": "open interest",
}


def parse_data(text: str | Sequence[str]) -> tuple[str, ...]:
    """``klines,funding,...`` or ``all`` → the kinds, in :data:`DATA_KINDS` order, no repeats.

    Raises:
        DataValidationError: an unknown kind or none at all.
    """
    items = [x.strip().lower() for x in (text.split(",") if isinstance(text, str) else text)]
    items = [x for x in items if x]
    if "all" in items:
        return tuple(DATA_KINDS)
    bad = [x for x in items if x not in DATA_KINDS]
    if bad:
        raise DataValidationError(
            f"unknown --data {', '.join(repr(b[:20]) for b in bad)}: use {', '.join(DATA_KINDS)} or all"
        )
    if not items:
        raise DataValidationError(f"--data names nothing: use {', '.join(DATA_KINDS)} or all")
    return tuple(k for k in DATA_KINDS if k in items)


def _parse_oi_intervals(text: str | Sequence[str]) -> tuple[str, ...]:
    items = [x.strip() for x in (text.split(",") if isinstance(text, str) else text)]
    items = [x for x in items if x]
    bad = [x for x in items if x not in OI_INTERVALS]
    if bad or not items:
        raise DataValidationError(
            f"--oi-intervals {', '.join(repr(b[:20]) for b in bad) or 'names nothing'}: use {', '.join(OI_INTERVALS)}"
        )
    return tuple(dict.fromkeys(items))

Mode = Literal["full", "recent", "live"]
RECENT_CANDLES = 50  # the old LIMIT_TO_50_ENTRIES
DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class IngestRequest:
    """What to ingest.

    Attributes:
        symbols: Symbols to fetch; ignored with ``all_symbols``.
        all_symbols: Every instrument of the category with status Trading.
        timeframes: Bybit intervals.
        category: ``linear``, ``spot`` or ``inverse``.
        days: Fetch the last ``days`` days (when ``start_ms`` is None).
        start_ms: Inclusive start (epoch ms).
        end_ms: Exclusive end (default: the server's present).
        mode: ``full`` (the whole range), ``recent`` (the latest 50 candles per series) or
            ``live`` (backfill, then stream: the streaming issue).
        data: Kinds of data (:data:`DATA_KINDS`): ``klines`` by default.
        oi_intervals: Open-interest intervals (``5min`` ... ``1d``) with ``oi`` in ``data``.
    """

    timeframes: tuple[Timeframe, ...]
    symbols: tuple[str, ...] = ()
    all_symbols: bool = False
    category: str = "linear"
    days: float | None = None
    start_ms: int | None = None
    end_ms: int | None = None
    mode: Mode = "full"
    data: tuple[str, ...] = ("klines",)
    oi_intervals: tuple[str, ...] = ("5min",)

    @classmethod
    def of(
        cls,
        *,
        symbols: str | Sequence[str] | None = None,
        all_symbols: bool = False,
        timeframes: str | Sequence[str] = "1",
        category: str = "linear",
        days: float | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        mode: str = "full",
        data: str | Sequence[str] = "klines",
        oi_intervals: str | Sequence[str] = "5min",
    ) -> IngestRequest:
        """Validate user input into a request.

        Raises:
            DataValidationError: no symbols (and not ``all_symbols``), a bad range or mode.
        """
        syms = tuple(parse_symbols(symbols))
        if not syms and not all_symbols:
            raise DataValidationError("name --symbols or ask for --all-symbols")
        if syms and all_symbols:
            raise DataValidationError("--symbols and --all-symbols exclude each other")
        tfs = tuple(parse_timeframes(list(timeframes) if not isinstance(timeframes, str) else timeframes))
        if not tfs:
            raise DataValidationError("name at least one timeframe")
        bad = [t.name for t in tfs if not t.is_bybit]
        if bad:
            raise DataValidationError(f"Bybit serves no {', '.join(bad)} klines (build them from trades)")
        if mode not in ("full", "recent", "live"):
            raise DataValidationError(f"mode must be full, recent or live, not {mode!r}")
        if days is not None and days <= 0:
            raise DataValidationError("--days must be > 0")
        if days is not None and start_ms is not None:
            raise DataValidationError("--days and --start exclude each other")
        if start_ms is None and days is None and mode != "recent":
            raise DataValidationError("name a range: --days N or --start (with optional --end)")
        if start_ms is not None and end_ms is not None and end_ms <= start_ms:
            raise DataValidationError("--end must be after --start")
        kinds = parse_data(data)
        if mode == "live" and kinds != ("klines",):
            raise DataValidationError(
                "--mode live streams klines only; ingest funding, mark, index, premium and oi with --mode full or recent"
            )
        return cls(
            tfs, syms, all_symbols, validate_category(category), days, start_ms, end_ms, mode,  # type: ignore[arg-type]
            kinds, _parse_oi_intervals(oi_intervals),
        )


@dataclass(slots=True)
class IngestOutcome:
    """What :func:`run_ingest` did."""

    plan: Plan
    stats: IngestStats | None = None
    unknown_symbols: list[str] = field(default_factory=list)
    unexplained_gaps: dict[str, list[Interval]] = field(default_factory=dict)
    server_time_ms: int = 0
    notes: list[str] = field(default_factory=list)
    instruments_recorded: bool = False

    @property
    def ok(self) -> bool:
        """True when every series completed and nothing is missing without explanation."""
        failed = self.stats is not None and (self.stats.failures or self.stats.interrupted)
        return not (self.unknown_symbols or failed or self.unexplained_gaps)


def _start_for(req: IngestRequest, tf: Timeframe, now_ms: int) -> int:
    if req.start_ms is not None:
        return req.start_ms
    if req.mode == "recent" and req.days is None:
        last = tf.floor(now_ms)
        if tf.kind == "month":
            return int(
                (np.datetime64(last, "ms").astype("datetime64[M]") - RECENT_CANDLES)
                .astype("datetime64[ms]")
                .astype(np.int64)
            )
        return last - RECENT_CANDLES * tf.duration_ms
    assert req.days is not None
    return now_ms - int(req.days * DAY_MS)


def _recent_start(req: IngestRequest, step_ms: int, now_ms: int) -> int:
    """Start of funding / open-interest series: as :func:`_start_for`, ``recent`` = 50 steps."""
    if req.start_ms is not None or req.days is not None or req.mode != "recent":
        return _start_for(req, parse_timeframe("1"), now_ms)
    return now_ms - RECENT_CANDLES * step_ms


def _sids(kind: str, request: IngestRequest, symbols: Sequence[str]) -> list[tuple[SeriesId, Timeframe | None]]:
    """The series of one data kind: ``(sid, timeframe or None)``."""
    def sid(tf: str | Timeframe | None, sym: str) -> SeriesId:
        return SeriesId.of(DATA_KINDS[kind], exchange="bybit", category=request.category, symbol=sym, timeframe=tf)

    if kind == "funding":
        return [(sid(None, s), None) for s in symbols]
    if kind == "oi":
        out = []
        for iv in request.oi_intervals:
            tf = parse_timeframe(OI_INTERVALS[iv])
            out += [(sid(tf, s), tf) for s in symbols]
        return out
    return [(sid(tf, s), tf) for tf in request.timeframes for s in symbols]


async def run_ingest(
    lake: Lake,
    client: BybitRestClient,
    request: IngestRequest,
    *,
    dry_run: bool = False,
    concurrency: int = 32,
    on_progress: Callable[[IngestStats], None] | None = None,
    on_plan: Callable[[Plan], None] | None = None,
) -> IngestOutcome:
    """Record an instruments snapshot, plan and (unless ``dry_run``) run an ingest; verify the
    result against the ledger. A dry run records nothing."""
    now = await client.get_server_time()
    snap = await fetch_snapshot(client, [request.category])
    # Recorded beside the fetch (a Delta write), awaited before returning.
    stored = None if dry_run else asyncio.ensure_future(store_snapshot(lake, snap))
    try:
        outcome = await _plan_and_run(lake, client, request, snap.instruments, now, dry_run=dry_run,
                                      concurrency=concurrency, on_progress=on_progress, on_plan=on_plan)
    finally:
        if stored is not None:
            result: SnapshotResult | None = None
            with contextlib.suppress(Exception):
                result = await asyncio.shield(stored)
    if stored is not None:
        if result is None:  # the write failed: say so, and raise it
            await stored
        assert result is not None
        outcome.instruments_recorded = result.recorded
        if result.note:
            outcome.notes.insert(0, result.note)
    return outcome


async def _plan_and_run(
    lake: Lake,
    client: BybitRestClient,
    request: IngestRequest,
    instruments: list[Instrument],
    now: int,
    *,
    dry_run: bool,
    concurrency: int,
    on_progress: Callable[[IngestStats], None] | None,
    on_plan: Callable[[Plan], None] | None,
) -> IngestOutcome:
    instruments = [i for i in instruments if i.category == request.category]
    listed = {i.symbol: i.launch_time_ms for i in instruments}
    delivered = {i.symbol: i.delivery_time_ms for i in instruments}
    funding_minutes = {i.symbol: i.funding_interval_minutes for i in instruments}
    if request.all_symbols:
        symbols = sorted(i.symbol for i in instruments if i.status == "Trading")
        unknown: list[str] = []
    else:
        symbols = [s for s in request.symbols if s in listed]
        unknown = [s for s in request.symbols if s not in listed]
    outcome = IngestOutcome(plan=Plan(), unknown_symbols=unknown, server_time_ms=now)
    end = request.end_ms if request.end_ms is not None else now
    order = {k: i for i, k in enumerate(DATA_KINDS.values())}
    plan = outcome.plan
    for kind in request.data:
        allowed = _KIND_CATEGORIES.get(kind)
        if allowed is not None and request.category not in allowed:
            outcome.notes.append(
                f"Bybit has no {_KIND_NAMES[kind]} for {request.category} "
                f"(only {', '.join(allowed)}): --data {kind} skipped"
            )
            continue
        groups: dict[object, list[SeriesId]] = {}
        for sid, tf in _sids(kind, request, symbols):
            groups.setdefault(tf, []).append(sid)
        for tf, sids in groups.items():
            if kind == "funding":
                start = _recent_start(request, 8 * 3_600_000, now)
            elif kind == "oi":
                assert isinstance(tf, Timeframe)
                start = _recent_start(request, tf.duration_ms, now)
            else:
                assert isinstance(tf, Timeframe)
                start = _start_for(request, tf, now)
            part = make_plan(lake.ledger, sids, start, end, now_ms=now, listings=listed, deliveries=delivered,
                             funding_minutes=funding_minutes)
            plan.series.extend(part.series)
    plan.series.sort(key=lambda s: (
        s.sid.symbol, order[s.sid.dataset], s.sid.timeframe.duration_ms if s.sid.timeframe else 0
    ))
    if on_plan is not None:
        on_plan(plan)
    if dry_run:
        return outcome
    runner = HistoricalIngest(
        lake,
        client,
        concurrency=concurrency,
        on_progress=on_progress,
        run_args={
            "symbols": symbols,
            "timeframes": [t.name for t in request.timeframes],
            "category": request.category,
            "mode": request.mode,
            "data": list(request.data),
            "oi_intervals": list(request.oi_intervals),
            "unknown": unknown,
        },
    )
    outcome.stats = await runner.run(plan)
    for sp in plan.series:
        gaps = unexplained_gaps(lake, sp.sid, sp.start_ms, sp.end_ms)
        if gaps:
            outcome.unexplained_gaps[series_label(sp.sid)] = gaps
    return outcome


def unexplained_gaps(lake: Lake, sid: SeriesId, start_ms: int, end_ms: int) -> list[Interval]:
    """Ranges of ``[start_ms, end_ms)`` with no stored row that the ledger does not explain
    as verified empty: data that was never fetched, failed, or went missing since.

    Candles, price candles and open interest are checked point by point on their grid; funding
    (settlements on a grid that changes with the interval) by the ledger alone: the parts of the
    range it does not record as fetched.
    """
    if end_ms <= start_ms:
        return []
    if sid.dataset == FUNDING:
        return lake.ledger.missing(sid, start_ms, end_ms)
    tf = sid.timeframe
    assert tf is not None
    if sid.dataset == CANDLES:
        scan = lake.scan_candles(sid.symbol, tf, start_ms, end_ms, exchange=sid.exchange, category=sid.category)
    else:
        scan = lake.scan(sid.dataset, sid.symbol, [tf], start_ms, end_ms, exchange=sid.exchange, category=sid.category)
    stored = np.sort(scan.select(pl.col("ts").dt.epoch("ms")).collect().get_column("ts").to_numpy())
    opens = tf.opens_between(start_ms, end_ms)
    # Stored ts come sorted: a binary search per open is ~10x cheaper than np.isin here.
    pos = np.minimum(np.searchsorted(stored, opens), max(stored.size - 1, 0))
    have = stored[pos] == opens if stored.size else np.zeros(opens.size, dtype=bool)
    missing = np.flatnonzero(~have)
    if missing.size == 0:
        return []
    # Runs of consecutive missing positions in the grid of opens → [start, end) ranges.
    breaks = np.flatnonzero(np.diff(missing) != 1) + 1
    holes = [(int(opens[run[0]]), tf.next_open(int(opens[run[-1]]))) for run in np.split(missing, breaks)]
    empty = lake.ledger.covered(sid, start_ms, end_ms, Status.EMPTY)
    return subtract(holes, empty)
