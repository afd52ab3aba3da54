"""``marketlake archive``: flags in, the archive ingest, rendered results out."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from typing import TYPE_CHECKING, Annotated, NoReturn, Optional

import typer

from marketlake.cli.app import ConfigOpt, JsonOpt, LakeOpt, app, load_settings
from marketlake.cli.cluster_opts import ClusterOpt, SchedulerOpt, cluster_spec
from marketlake.cli.feedback import RetryLine, exit_interrupted
from marketlake.cli.ingest_cmd import BaseUrlOpt, run_async
from marketlake.cli.params import BoundedInt
from marketlake.cli.render import console, err_console, human_bytes, notice_kernel_compile, print_json
from marketlake.core.symbols import parse_symbols
from marketlake.errors import DataValidationError, ExchangeError
from marketlake.exchanges.bybit.constants import ARCHIVE_CATEGORIES

# The archive ingest pulls in aiohttp, polars and numba: imported inside the command.
if TYPE_CHECKING:  # pragma: no cover
    from marketlake.cluster import ClusterSpec
    from marketlake.core.timeframes import Timeframe
    from marketlake.ingest.archive import ArchiveStats, SymbolPlan
    from marketlake.settings import Settings
    from marketlake.store import Lake


def _date(text: str | None, what: str) -> dt.date | None:
    if text is None:
        return None
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise DataValidationError(f"{what} must be a date YYYY-MM-DD, got {text[:40]!r}") from None


def _range(start: str | None, end: str | None, days: int | None, today: dt.date) -> tuple[dt.date, dt.date]:
    first, stop = _date(start, "--start"), _date(end, "--end")
    if days is not None:
        if days < 1:
            raise DataValidationError(f"--days must be >= 1, got {days}")
        if first is not None:
            raise DataValidationError("give --days or --start, not both")
        stop = stop or today
        first = stop - dt.timedelta(days=days)
    if first is None:
        raise DataValidationError("say which days: --start YYYY-MM-DD [--end YYYY-MM-DD] or --days N")
    return first, stop or today


def _render_plan(plans: list[SymbolPlan], as_json: bool) -> None:
    if as_json:
        print_json({p.sid.symbol: [d.isoformat() for d in p.days] for p in plans})
        return
    for p in plans:
        span = f"{p.days[0]} .. {p.days[-1]}" if p.days else "nothing to fetch"
        stored = f"; candles of {len(p.rebuild)} stored day(s) from their trades" if p.rebuild else ""
        console.print(f"{p.sid.label():<40} {len(p.days):>5} day(s)  {span}{stored}")
    rebuild = sum(len(p.rebuild) for p in plans)
    console.print(
        f"plan: {sum(len(p.days) for p in plans)} day file(s) for {len(plans)} symbol(s)"
        + (f", candles of {rebuild} day(s) built from stored trades (no download)" if rebuild else "")
    )


def _render_stats(st: ArchiveStats, as_json: bool) -> None:
    if st.days_failed and not (st.days_fetched or st.days_empty or st.days_unpublished or st.days_rebuilt):
        # Nothing worked at all (the host is unreachable, or refuses us): one error line, the
        # exchange's exit status, rather than a summary of zeros followed by each failure.
        first = st.failures[0] if st.failures else "no details"
        raise ExchangeError(f"archive: all {st.days_failed} day(s) failed; {first}")
    if as_json:
        print_json(st.to_dict())
        return
    for note in st.notices[:20]:
        err_console.print(f"note: {note}", markup=False)
    for note in st.failures[:20]:
        err_console.print(f"failed: {note}", markup=False)
    built = f"{st.candles_written:,} candles built; " if st.candles_written else ""
    if st.days_rebuilt:
        built += f"candles of {st.days_rebuilt} stored day(s) built from their trades, not downloaded; "
    console.print(
        f"archive {'interrupted' if st.interrupted else 'done'} in {st.elapsed:.1f} s: "
        f"{st.days_fetched} day(s) stored, {st.days_empty} verified empty, {st.days_unpublished} not published yet, "
        f"{st.days_failed} failed; trades {st.trades_new:,} new, {st.trades_replaced:,} replaced, "
        f"{st.trades_unchanged:,} unchanged, {st.trades_deleted:,} dropped; {built}"
        f"{human_bytes(st.bytes_downloaded)} in {st.requests} requests, {st.retries} retries"
    )


def _interrupted(st: ArchiveStats | None) -> NoReturn:
    """Ctrl-C: what is committed (a day counts once its trades and the ledger say so) and 130."""
    if st is None or not (st.days_fetched or st.days_empty):
        exit_interrupted("before any day was stored; nothing new is committed; a re-run starts it")
    built = f", {st.candles_written:,} candles built" if st.candles_written else ""
    exit_interrupted(
        f"{st.days_fetched} day(s) of trades committed ({st.trades_new:,} new trades{built}), "
        f"{st.days_empty} verified empty, of {st.days_planned} planned; "
        "run the same command again to fetch only the remaining days"
    )


def _snapshot_in_thread(settings: Settings, root: str) -> tuple[threading.Thread, list[str]]:
    """The instruments snapshot of an archive run (best effort, a note on failure) in a thread
    of its own, with a lake object of its own, while the cluster does the days."""
    notes: list[str] = []

    def work() -> None:
        from marketlake.ingest.instruments import snapshot_note
        from marketlake.store import Lake

        try:
            note = asyncio.run(snapshot_note(
                Lake(root, settings=settings), settings.base_url, [settings.category],
                rate_limit_per_5s=settings.rate_limit_per_5s, exchange=settings.exchange,
            ))
        except Exception as exc:  # noqa: BLE001  (best effort: the archive's outcome is what counts)
            note = f"instrument snapshot not recorded: {exc}"
        if note:
            notes.append(note)

    thread = threading.Thread(target=work, name="marketlake-instruments", daemon=True)
    thread.start()
    return thread, notes


def _archive_on_cluster(
    spec: ClusterSpec, settings: Settings, the_lake: Lake, names: list[str], first: dt.date, stop: dt.date,
    today: dt.date, tfs: tuple[Timeframe, ...], as_json: bool,
) -> tuple[ArchiveStats, list[str]]:
    """The archive with each day a task on the cluster; the stats and the notes to print."""
    from marketlake.cluster import archive_on_cluster, open_client

    last_line = [time.monotonic()]

    def progress(done: int, total: int) -> None:
        if as_json or time.monotonic() - last_line[0] < 5.0:
            return
        last_line[0] = time.monotonic()
        console.print(f"archive: {done}/{total} day(s) done on the cluster ({spec.describe()})")

    root = str(the_lake.root)
    try:
        with open_client(spec) as client:
            snap, notes = _snapshot_in_thread(settings, root)
            _, stats = archive_on_cluster(
                client, root, settings, names, category=settings.category, start=first, end=stop, today=today,
                candles=tfs, progress=progress,
            )
            snap.join(30)
    except KeyboardInterrupt:
        exit_interrupted(
            "each day a worker stored is committed and recorded; "
            "run the same command again to fetch only the remaining days"
        )
    return stats, notes


# The day-range options of the commands that work day by day (archive, build-candles).
SymbolsOpt = Annotated[str, typer.Option("--symbols", help="Comma-separated symbols, e.g. BTCUSDT,ETHUSDT (required).")]
StartDayOpt = Annotated[Optional[str], typer.Option("--start", help="First day, YYYY-MM-DD (UTC).")]
EndDayOpt = Annotated[Optional[str], typer.Option("--end", help="Day after the last, YYYY-MM-DD (default: today).")]
DaysOpt = Annotated[
    Optional[int], typer.Option("--days", help="The last N completed days (1..36500).", parser=BoundedInt(1, 36_500))
]


@app.command()
def archive(
    symbols: SymbolsOpt,
    start: StartDayOpt = None,
    end: EndDayOpt = None,
    days: DaysOpt = None,
    category: Annotated[
        Optional[str],
        # Bybit publishes no option archives: the help lists what the error accepts, from one tuple.
        typer.Option("--category", help=f"One of {', '.join(ARCHIVE_CATEGORIES)} (default: settings, linear)."),
    ] = None,
    candles: Annotated[
        Optional[str],
        typer.Option("--candles", help="Also build sub-minute candles from the trades, e.g. 1s,5s."),
    ] = None,
    archive_url: Annotated[
        Optional[str], typer.Option("--archive-url", help="Archive host (default: https://public.bybit.com).")
    ] = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", help="Day files downloaded at once (1..16).", parser=BoundedInt(1, 16))
    ] = 3,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the days to fetch and stop.")] = False,
    base_url: BaseUrlOpt = None,
    cluster: ClusterOpt = None,
    scheduler: SchedulerOpt = None,
    lake: LakeOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Fetch whole days of trades from Bybit's public daily archives.

    The complete trade history, and the way trade gaps of the live stream are recovered. Only days
    the ledger does not cover are fetched; a re-run resumes. With --cluster or --scheduler each
    day is a task on a Dask cluster (--concurrency is then one day per worker thread).
    """
    from marketlake.clock import get_clock
    from marketlake.ingest.archive import ArchiveStats, candle_timeframes, run_archive_ingest
    from marketlake.store import Lake

    spec = cluster_spec(cluster, scheduler)
    settings = load_settings(lake, config, category=category, archive_url=archive_url, base_url=base_url)
    today = dt.datetime.fromtimestamp(get_clock().now_ms() / 1000, dt.UTC).date()
    first, stop = _range(start, end, days, today)
    names = parse_symbols(symbols)
    tfs = candle_timeframes(candles)
    if not names:
        raise DataValidationError("--symbols names no symbol")
    the_lake = Lake(settings=settings)
    last_line = [0.0]
    seen: list[ArchiveStats] = []  # the runner's stats object, for the Ctrl-C line
    retries = RetryLine()

    def progress(st: ArchiveStats) -> None:
        if not seen:
            seen.append(st)
        if json_ or time.monotonic() - last_line[0] < 5.0:
            return
        retries.clear()
        last_line[0] = time.monotonic()
        console.print(
            f"archive: {st.days_done}/{st.days_planned} days, {st.trades_new:,} new trades, "
            f"{human_bytes(st.bytes_downloaded)}"
        )

    if tfs and not dry_run:
        notice_kernel_compile(("trades",))
    if spec is not None and not dry_run:
        stats, notes = _archive_on_cluster(spec, settings, the_lake, names, first, stop, today, tfs, json_)
        _render_stats(stats, json_)
        for note in notes:
            err_console.print(f"note: {note}", markup=False)
        if stats.failures or stats.days_failed:
            raise typer.Exit(1)
        return
    notes: list[str] = []

    async def with_snapshot(work):  # noqa: ANN001,ANN202
        """The archive, and meanwhile an instruments snapshot into the history (best effort:
        its failure is a note; the archive's own requests go to the archive host)."""
        from marketlake.ingest.instruments import snapshot_note

        snap = None if dry_run else asyncio.ensure_future(snapshot_note(
            the_lake, settings.base_url, [settings.category],
            rate_limit_per_5s=settings.rate_limit_per_5s, exchange=settings.exchange,
        ))
        try:
            result = await work
        except BaseException:
            if snap is not None:
                snap.cancel()
                await asyncio.gather(snap, return_exceptions=True)
            raise
        if snap is not None and (note := await snap):
            notes.append(note)
        return result

    try:
        plans, stats = run_async(with_snapshot(
            run_archive_ingest(
                the_lake,
                names,
                category=settings.category,
                start=first,
                end=stop,
                base_url=settings.archive_url,
                concurrency=concurrency,
                today=today,
                dry_run=dry_run,
                on_progress=progress,
                candles=tfs,
                on_retry=retries,
            )
        ))
    except KeyboardInterrupt:
        retries.clear()
        _interrupted(seen[0] if seen else None)
    finally:
        retries.clear()
    if stats is None:
        _render_plan(plans, json_)
        return
    _render_stats(stats, json_)
    for note in notes:  # after the summary: a failed archive is one error line, nothing else
        err_console.print(f"note: {note}", markup=False)
    if stats.failures or stats.days_failed:
        raise typer.Exit(1)
