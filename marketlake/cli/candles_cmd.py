"""``marketlake build-candles``: flags in, candles built from stored trades, rendered results out."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from marketlake.cli.app import ConfigOpt, JsonOpt, LakeOpt, app, load_settings
from marketlake.cli.archive_cmd import DaysOpt, EndDayOpt, StartDayOpt, SymbolsOpt, _range
from marketlake.cli.cluster_opts import ClusterOpt, SchedulerOpt, cluster_spec
from marketlake.cli.feedback import ProgressOpt, exit_interrupted, progress_bar, show_progress
from marketlake.cli.render import console, err_console, notice_kernel_compile, print_json
from marketlake.core.symbols import CATEGORIES, parse_symbols
from marketlake.errors import DataValidationError

# The build pulls in polars and numba: imported inside the command.
if TYPE_CHECKING:  # pragma: no cover
    from marketlake.ingest.build import BuildStats


def _render(st: BuildStats, as_json: bool, where: str) -> None:
    if as_json:
        print_json(st.to_dict())
        return
    for note in st.notices[:20]:
        err_console.print(f"note: {note}", markup=False, soft_wrap=True)
    for note in st.failures[:20]:
        err_console.print(f"failed: {note}", markup=False, soft_wrap=True)
    console.print(
        f"build-candles {'interrupted' if st.interrupted else 'done'} in {st.elapsed:.1f} s{where}: "
        f"{st.days_built} day(s) built, {st.days_without_trades} without trades, "
        f"{st.days_incomplete} skipped (trades not complete), {st.days_failed} failed; "
        f"{st.trades_read:,} trades read, {st.candles_written:,} candles written"
    )


@app.command("build-candles")
def build_candles_cmd(
    symbols: SymbolsOpt,
    timeframes: Annotated[str, typer.Option("--timeframes", help="Sub-minute timeframes to build, e.g. 1s,5s,15s (required).")],
    start: StartDayOpt = None,
    end: EndDayOpt = None,
    days: DaysOpt = None,
    category: Annotated[
        Optional[str], typer.Option("--category", help=f"One of {', '.join(CATEGORIES)} (default: settings, linear).")
    ] = None,
    cluster: ClusterOpt = None,
    scheduler: SchedulerOpt = None,
    progress: ProgressOpt = None,
    lake: LakeOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Build sub-minute candles from the stored trades, day by day (on a Dask cluster with --cluster).

    Days whose trades the ledger does not hold completely are skipped and named, with the
    `marketlake archive` command that fetches them; every other day of the range is built again
    (unchanged candles commit nothing). Exit status 1 when a day failed or was skipped.
    """
    from marketlake.clock import get_clock
    from marketlake.ingest.build import build_candles, build_timeframes
    from marketlake.store import Lake

    spec = cluster_spec(cluster, scheduler)
    settings = load_settings(lake, config, category=category)
    today = dt.datetime.fromtimestamp(get_clock().now_ms() / 1000, dt.UTC).date()
    first, stop = _range(start, end, days, today)
    names = parse_symbols(symbols)
    if not names:
        raise DataValidationError("--symbols names no symbol")
    tfs = build_timeframes(timeframes)
    the_lake = Lake(settings=settings)
    if spec is None:  # on a cluster the workers compile them (once: numba's cache is on disk)
        notice_kernel_compile(("trades",))
    where = {"category": settings.category, "exchange": settings.exchange}
    try:
        with progress_bar("build-candles", "days", show_progress(progress, json_)) as on_progress:
            if spec is None:
                _, stats = build_candles(
                    the_lake, names, tfs, start=first, end=stop, today=today, progress=on_progress, **where
                )
            else:
                from marketlake.cluster import build_candles_on_cluster, open_client

                with open_client(spec) as client:
                    _, stats = build_candles_on_cluster(
                        client, str(the_lake.root), settings, names, tfs, start=first, end=stop, today=today,
                        progress=on_progress, **where,
                    )
    except KeyboardInterrupt:
        exit_interrupted(
            "the candles of every day built so far are committed and recorded; "
            "a re-run builds the range again (unchanged candles commit nothing)"
        )
    _render(stats, json_, "" if spec is None else f" on {spec.describe()}")
    if stats.days_failed or stats.days_incomplete:
        raise typer.Exit(1)
