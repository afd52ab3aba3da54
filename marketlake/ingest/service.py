"""``ingest`` as one call: resolve symbols and listing times, plan, fetch, verify.

The CLI's ``marketlake ingest`` and the compat layer both call :func:`run_ingest`; it owns no I/O
of its own beyond what the lake, the ledger and the REST client do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import polars as pl

from marketlake.core.intervals import Interval, subtract
from marketlake.core.symbols import parse_symbols, validate_category
from marketlake.core.timeframes import Timeframe, parse_timeframes
from marketlake.errors import DataValidationError
from marketlake.exchanges.bybit.rest import BybitRestClient
from marketlake.ingest.historical import HistoricalIngest, IngestStats
from marketlake.ingest.planner import Plan, make_plan
from marketlake.store import Lake
from marketlake.store.layout import CANDLES, SeriesId
from marketlake.store.ledger import Status

__all__ = ["IngestOutcome", "IngestRequest", "run_ingest", "unexplained_gaps"]

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
    """

    timeframes: tuple[Timeframe, ...]
    symbols: tuple[str, ...] = ()
    all_symbols: bool = False
    category: str = "linear"
    days: float | None = None
    start_ms: int | None = None
    end_ms: int | None = None
    mode: Mode = "full"

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
        return cls(tfs, syms, all_symbols, validate_category(category), days, start_ms, end_ms, mode)  # type: ignore[arg-type]


@dataclass(slots=True)
class IngestOutcome:
    """What :func:`run_ingest` did."""

    plan: Plan
    stats: IngestStats | None = None
    unknown_symbols: list[str] = field(default_factory=list)
    unexplained_gaps: dict[str, list[Interval]] = field(default_factory=dict)
    server_time_ms: int = 0

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
    """Plan and (unless ``dry_run``) run an ingest; verify the result against the ledger."""
    now = await client.get_server_time()
    instruments = await client.get_instruments(
        request.category, status="Trading" if request.all_symbols else None
    )
    listed = {i.symbol: i.launch_time_ms for i in instruments}
    if request.all_symbols:
        symbols = sorted(listed)
        unknown: list[str] = []
    else:
        symbols = [s for s in request.symbols if s in listed]
        unknown = [s for s in request.symbols if s not in listed]
    plan = Plan()
    for tf in request.timeframes:
        sids = [
            SeriesId.of(CANDLES, exchange="bybit", category=request.category, symbol=s, timeframe=tf)
            for s in symbols
        ]
        end = request.end_ms if request.end_ms is not None else now
        part = make_plan(lake.ledger, sids, _start_for(request, tf, now), end, now_ms=now, listings=listed)
        plan.series.extend(part.series)
    plan.series.sort(key=lambda s: (s.sid.symbol, s.sid.timeframe.duration_ms if s.sid.timeframe else 0))
    outcome = IngestOutcome(plan=plan, unknown_symbols=unknown, server_time_ms=now)
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
            "unknown": unknown,
        },
    )
    outcome.stats = await runner.run(plan)
    for sp in plan.series:
        gaps = unexplained_gaps(lake, sp.sid, sp.start_ms, sp.end_ms)
        if gaps:
            outcome.unexplained_gaps[sp.sid.label()] = gaps
    return outcome


def unexplained_gaps(lake: Lake, sid: SeriesId, start_ms: int, end_ms: int) -> list[Interval]:
    """Ranges of ``[start_ms, end_ms)`` with no stored candle that the ledger does not explain
    as verified empty: data that was never fetched, failed, or went missing since."""
    tf = sid.timeframe
    assert tf is not None
    if end_ms <= start_ms:
        return []
    stored = (
        lake.scan_candles(sid.symbol, tf, start_ms, end_ms, exchange=sid.exchange, category=sid.category)
        .select(pl.col("ts").dt.epoch("ms"))
        .collect()
        .get_column("ts")
        .to_numpy()
    )
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
