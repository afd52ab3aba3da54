"""``repair``: fix what ``check`` finds, atomically through the store, never silently.

Per series, in this order:

1. ``unfill`` (when asked): remove the flat candles an earlier ``--fill`` wrote;
2. duplicates: keep the last written row of each ``ts``;
3. invalid and misaligned rows: moved into the quarantine with their reason (``lake.quarantined()``);
4. unexplained gaps: re-fetched from the exchange (the ledger forgets the range, the historical
   runner fetches it; what the exchange does not have becomes verified empty), then, only when
   asked (``fill``), what is still missing is filled with flat candles marked ``filled = true``
   (close carried, volume 0), which ``unfill`` removes again.

Then trades lost while streaming (the ledger's failed ranges of ``trades`` series) are re-fetched
from Bybit's daily archives, whole days (see :mod:`marketlake.ingest.archive`), when an archive
client is given and no timeframe filter narrows the repair to candles.

The perpetual datasets (funding, mark/index/premium candles, open interest; ``data`` picks, as
for ``check``): the ledger forgets every unexplained gap's range and every range it claims
``present`` that is not stored, and the report names, per series, the ``marketlake ingest --data
...`` command that fetches them again (:class:`PerpRepair`). Their rows are not rewritten (the
store merges them by ``ts``, so duplicates cannot be stored; invalid rows stay reported by
``check``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from marketlake.clock import get_clock
from marketlake.core.integrity import CheckResult, reasons_of
from marketlake.core.intervals import Interval, merge
from marketlake.core.symbols import parse_symbols
from marketlake.core.timeutil import ms_to_datetime
from marketlake.exchanges.bybit.archive import BybitArchiveClient
from marketlake.exchanges.bybit.rest import BybitRestClient, kline_windows
from marketlake.ingest.archive import ArchiveIngest, plan_archive
from marketlake.ingest.historical import HistoricalIngest
from marketlake.ingest.planner import Plan, SeriesPlan
from marketlake.quality.check import SeriesCheck, check_lake, lost_trades
from marketlake.quality.perp import PERP_KINDS, kind_of, parse_data, series_name
from marketlake.store import Lake
from marketlake.store.layout import SeriesId

__all__ = ["RepairReport", "SeriesRepair", "repair_lake"]


@dataclass(slots=True)
class SeriesRepair:
    """What repair did to one series."""

    series: str
    fills_removed: int = 0
    duplicates_removed: int = 0
    quarantined: int = 0
    gaps_refetched: int = 0
    candles_refetched: int = 0
    candles_filled: int = 0
    gaps_left: int = 0

    @property
    def changed(self) -> bool:
        """True when anything was done."""
        return bool(self.fills_removed or self.duplicates_removed or self.quarantined
                    or self.candles_refetched or self.candles_filled)


@dataclass(slots=True)
class PerpRepair:
    """What repair did to one series of a perpetual dataset: ranges the ledger forgot, and the
    command that fetches them again."""

    series: str
    data: str
    ranges: list[tuple[int, int]] = field(default_factory=list)
    command: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"series": self.series, "data": self.data, "ranges": [[a, b] for a, b in self.ranges],
                "command": self.command}


def ingest_command(sid: SeriesId, ranges: Sequence[tuple[int, int]]) -> str:
    """The ``marketlake ingest`` command that fetches ``ranges`` of a perpetual series again
    (whole UTC days around them: the ingest plans only what the ledger lacks)."""
    from marketlake.store.perp import OI_INTERVALS

    kind = kind_of(sid.dataset)
    first = ms_to_datetime(ranges[0][0]).date()
    last = ms_to_datetime(ranges[-1][1] - 1).date() + dt.timedelta(days=1)
    parts = ["marketlake ingest", f"--data {kind}", f"--symbols {sid.symbol}"]
    if kind == "oi" and sid.timeframe is not None:
        interval = {v: k for k, v in OI_INTERVALS.items()}[sid.timeframe.name]
        parts.append(f"--oi-intervals {interval}")
    elif sid.timeframe is not None:
        parts.append(f"--timeframes {sid.timeframe.name}")
    parts += [f"--category {sid.category}", f"--start {first}", f"--end {last}"]
    return " ".join(parts)


@dataclass(slots=True)
class RepairReport:
    """What repair did, per series."""

    series: list[SeriesRepair] = field(default_factory=list)
    refetch_failures: list[str] = field(default_factory=list)
    #: Archive days fetched to recover trades lost while streaming.
    trade_days_fetched: int = 0
    #: Lost trade ranges still open (e.g. a day Bybit has not published yet).
    trade_gaps_left: int = 0
    #: References to missing or unreadable files dropped (their ranges are then re-fetched).
    files_dropped: int = 0
    #: Series of the perpetual datasets whose missing ranges the ledger forgot, each with the
    #: ingest command that fetches them again.
    perp: list[PerpRepair] = field(default_factory=list)

    @property
    def perp_gaps_left(self) -> int:
        """Ranges of the perpetual datasets still missing (fetched by the commands given)."""
        return sum(len(p.ranges) for p in self.perp)

    @property
    def gaps_left(self) -> int:
        """Unexplained gaps still open after the repair."""
        return sum(s.gaps_left for s in self.series)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "gaps_left": self.gaps_left,
            "refetch_failures": self.refetch_failures,
            "trade_days_fetched": self.trade_days_fetched,
            "trade_gaps_left": self.trade_gaps_left,
            "files_dropped": self.files_dropped,
            "series": [{k: getattr(s, k) for k in s.__slots__} for s in self.series],  # type: ignore[attr-defined]
            "perp_gaps_left": self.perp_gaps_left,
            "perp": [p.to_dict() for p in self.perp],
        }


def _holes(sc: SeriesCheck) -> list[Interval]:
    """What is missing: unexplained gaps between stored candles, and ranges the ledger claims
    present that are not stored (at the edges of a series too), merged, in time order."""
    tf = sc.result.timeframe
    gaps = [(tf.next_open(tf.floor(g.previous_ts)), tf.floor(g.current_ts)) for g in sc.unexplained]
    return merge([*gaps, *sc.unstored])


def _quarantine_reasons(result: CheckResult) -> dict[int, str]:
    reasons: dict[int, str] = {}
    for row, flags in zip(result.invalid_rows, result.invalid_flags, strict=True):
        reasons[int(result.ts[row])] = "invalid: " + ", ".join(reasons_of(int(flags)))
    for row in result.misaligned_rows:
        t = int(result.ts[row])
        reasons[t] = (reasons[t] + "; " if t in reasons else "") + f"misaligned to {result.timeframe.name}"
    return reasons


def _fill_frame(lake: Lake, sid: SeriesId, holes: list[Interval]) -> pl.DataFrame:
    """Flat candles over ``holes``: the close before each hole carried, volume 0, marked filled."""
    tf = sid.timeframe
    assert tf is not None
    parts = []
    for a, b in holes:
        before = lake.read_candles(
            sid.symbol, tf, a - 400 * 86_400_000, a, exchange=sid.exchange, category=sid.category
        ).tail(1)
        if before.is_empty():
            continue
        price = float(before.get_column("close")[0])
        opens = tf.opens_between(a, b)
        n = opens.size
        flat = np.full(n, price)
        parts.append(pl.DataFrame({
            "ts": opens, "open": flat, "high": flat, "low": flat, "close": flat,
            "volume": np.zeros(n), "turnover": np.zeros(n), "trades": np.zeros(n, dtype=np.int64),
            "filled": np.ones(n, dtype=bool),
        }))
    return pl.concat(parts) if parts else pl.DataFrame()


async def repair_lake(
    lake: Lake,
    symbols: str | Sequence[str] | None = None,
    timeframes: str | Sequence[str] | None = None,
    *,
    exchange: str | None = None,
    category: str | None = None,
    client: BybitRestClient | None = None,
    fill: bool = False,
    unfill: bool = False,
    archive: BybitArchiveClient | None = None,
    data: str | Sequence[str] | None = None,
) -> RepairReport:
    """Repair every matching series; see the module docstring for what and in which order.

    Args:
        client: Re-fetch unexplained gaps with it (Bybit series only); None skips re-fetching.
        archive: Re-fetch trades lost while streaming from the daily archives with it; None
            skips that.
        fill: Fill gaps still open afterwards with flat candles marked ``filled``.
        unfill: First remove every flat fill candle.
        data: Datasets (as for :func:`check_lake`; default: everything stored).
    """
    report = RepairReport()
    kinds = parse_data(data, timeframes)
    await _repair_perp_holes(lake, symbols, timeframes, exchange, category, kinds, report, client)
    if "klines" not in kinds:
        if "trades" in kinds and lake.has_ledger:
            await _recover_trades(lake, symbols, exchange, category, archive, report)
        return report
    by_label: dict[str, SeriesRepair] = {}
    scope = dict(exchange=exchange, category=category, data="klines")
    first = check_lake(lake, symbols, timeframes, consistency=False, **scope)
    damaged = {sc.sid for sc in first.series if sc.damaged}
    if damaged:
        # Files the log references that are missing or unreadable: drop the references (an
        # unreadable file goes to the quarantine); the ledger still claims their ranges, so the
        # check below reports them as not stored and they are re-fetched.
        from marketlake.store.fsck import run_fsck

        fixed = run_fsck(lake, fix=True, series=damaged)
        report.files_dropped = sum(1 for i in fixed.issues if i.fixed)
        first = check_lake(lake, symbols, timeframes, consistency=False, **scope)
    for sc in first.series:
        sid, tf = sc.sid, sc.sid.timeframe
        assert tf is not None
        rep = by_label.setdefault(sid.label(), SeriesRepair(sid.label()))
        report.series.append(rep)
        where = dict(symbol=sid.symbol, timeframe=tf, exchange=sid.exchange, category=sid.category)
        if unfill and sc.filled:
            rep.fills_removed = lake.rewrite_candles(lambda f: f.filter(~pl.col("filled")), **where).rows_deleted
        if sc.result.duplicate_count:
            rep.duplicates_removed = lake.rewrite_candles(
                lambda f: f.unique("ts", keep="last", maintain_order=True), **where
            ).rows_deleted
        rep.quarantined = lake.quarantine_candles(_quarantine_reasons(sc.result), **where)
    # Gaps are looked at after the rows above moved: a quarantined row leaves a gap to refetch.
    after = check_lake(lake, symbols, timeframes, consistency=False, **scope)
    if client is not None:
        plan = Plan()
        for sc in after.series:
            tf = sc.sid.timeframe
            assert tf is not None
            if sc.sid.exchange != "bybit" or not tf.is_bybit or not (sc.unexplained or sc.unstored):
                continue
            windows: list[tuple[int, int]] = []
            for a, b in _holes(sc):
                lake.ledger.forget(sc.sid, a, b)
                windows.extend(kline_windows(tf, a, b - 1))
            candles = sum(tf.count_between(a, tf.next_open(b)) for a, b in windows)
            plan.series.append(SeriesPlan(sc.sid, windows[0][0], tf.next_open(windows[-1][1]), tuple(windows), candles))
            by_label[sc.sid.label()].gaps_refetched = len(_holes(sc))
        if plan.series:
            stats = await HistoricalIngest(lake, client, run_args={"repair": True}).run(plan)
            report.refetch_failures.extend(stats.failures)
            for sc in after.series:
                if sc.sid.label() in {sp.sid.label() for sp in plan.series}:
                    by_label[sc.sid.label()].candles_refetched = sum(
                        lake.scan_candles(sc.sid.symbol, sc.sid.timeframe, a, b, exchange=sc.sid.exchange,
                                          category=sc.sid.category).select(pl.len()).collect().item()
                        for a, b in _holes(sc)
                    )
        after = check_lake(lake, symbols, timeframes, consistency=False, **scope)
    for sc in after.series:
        rep = by_label[sc.sid.label()]
        if fill and sc.unexplained:
            frame = _fill_frame(lake, sc.sid, _holes(sc))
            if frame.height:
                tf = sc.sid.timeframe
                lake.write_candles(frame, symbol=sc.sid.symbol, timeframe=tf,  # type: ignore[arg-type]
                                   exchange=sc.sid.exchange, category=sc.sid.category)
                rep.candles_filled = frame.height
            continue
        rep.gaps_left = len(_holes(sc))
    if "trades" in kinds and lake.has_ledger:
        await _recover_trades(lake, symbols, exchange, category, archive, report)
    return report


async def _repair_perp_holes(
    lake: Lake, symbols: str | Sequence[str] | None, timeframes: str | Sequence[str] | None,
    exchange: str | None, category: str | None, kinds: tuple[str, ...], report: RepairReport,
    client: BybitRestClient | None,
) -> None:
    """Make the ledger forget what the perpetual datasets miss and, with a client, fetch it again
    (the ingest plans exactly what the ledger no longer covers); what is still missing is reported
    with the command that fetches it."""
    wanted = [k for k in kinds if k in PERP_KINDS]
    if not wanted:
        return
    scope = dict(exchange=exchange, category=category, consistency=False, data=wanted)
    found = check_lake(lake, symbols, timeframes, **scope)  # type: ignore[arg-type]
    todo = []
    for sc in found.perp_series:
        holes = _holes(sc) if isinstance(sc, SeriesCheck) else sc.holes
        if not holes:
            continue
        if lake.has_ledger:
            for a, b in holes:
                lake.ledger.forget(sc.sid, a, b)
        todo.append((sc.sid, holes))
    if client is not None:
        for sid, holes in todo:
            if sid.exchange != "bybit":
                continue
            await _refetch_perp(lake, client, sid, holes[0][0], holes[-1][1], report)
        after = check_lake(lake, symbols, timeframes, **scope)  # type: ignore[arg-type]
        left = {sc.sid: (_holes(sc) if isinstance(sc, SeriesCheck) else sc.holes) for sc in after.perp_series}
        todo = [(sid, left.get(sid, [])) for sid, _ in todo]
    for sid, holes in todo:
        if holes:
            report.perp.append(PerpRepair(series_name(sid), kind_of(sid.dataset), holes, ingest_command(sid, holes)))


async def _refetch_perp(
    lake: Lake, client: BybitRestClient, sid: SeriesId, start_ms: int, end_ms: int, report: RepairReport
) -> None:
    from marketlake.ingest.service import IngestRequest, run_ingest
    from marketlake.store.perp import OI_INTERVALS

    kind = kind_of(sid.dataset)
    extra: dict[str, Any] = {}
    if kind == "oi" and sid.timeframe is not None:
        extra["oi_intervals"] = {v: k for k, v in OI_INTERVALS.items()}[sid.timeframe.name]
    elif sid.timeframe is not None:
        extra["timeframes"] = sid.timeframe.name
    request = IngestRequest.of(symbols=sid.symbol, category=sid.category, start_ms=start_ms,
                               end_ms=end_ms, data=kind, **extra)
    try:
        outcome = await run_ingest(lake, client, request)
    except Exception as exc:  # noqa: BLE001 - one series failing leaves the others to repair
        report.refetch_failures.append(f"{series_name(sid)}: {str(exc).splitlines()[0] if str(exc) else exc}")
        return
    if outcome.stats is not None:
        report.refetch_failures.extend(outcome.stats.failures)


async def _recover_trades(
    lake: Lake,
    symbols: str | Sequence[str] | None,
    exchange: str | None,
    category: str | None,
    archive: BybitArchiveClient | None,
    report: RepairReport,
) -> None:
    exchange = exchange or lake.settings.exchange
    category = category or lake.settings.category
    wanted = None if symbols is None else parse_symbols(symbols)
    gaps = lost_trades(lake, exchange, category, wanted)
    if archive is not None and exchange == "bybit" and gaps:
        today = ms_to_datetime(get_clock().now_ms()).date()
        for label, ranges in gaps.items():
            start = ms_to_datetime(ranges[0][0]).date()
            end = ms_to_datetime(ranges[-1][1] - 1).date() + dt.timedelta(days=1)
            plans = plan_archive(lake, [label.rsplit("/", 1)[-1]], category=category, start=start, end=end, today=today)
            stats = await ArchiveIngest(lake, archive, run_args={"repair": True}).run(plans)
            report.trade_days_fetched += stats.days_fetched
            report.refetch_failures.extend(stats.failures)
        gaps = lost_trades(lake, exchange, category, wanted)
    report.trade_gaps_left = sum(len(r) for r in gaps.values())
