"""``marketlake check``, ``repair`` and ``demo``: flags in, library calls, rendered results out."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from marketlake.cli.app import (
    CategoryOpt,
    ConfigOpt,
    ExchangeOpt,
    JsonOpt,
    LakeOpt,
    SymbolsOpt,
    TimeframesOpt,
    app,
    load_settings,
    open_lake,
    write_output,
)
from marketlake.cli.cluster_opts import ClusterOpt, SchedulerOpt, cluster_spec
from marketlake.cli.feedback import ProgressOpt, RetryLine, progress_bar, show_progress
from marketlake.cli.ingest_cmd import BaseUrlOpt, announce_pause, run_async
from marketlake.cli.params import BoundedFloat, check_output_file
from marketlake.cli.render import (
    console,
    err_console,
    human_bytes,
    notice_kernel_compile,
    print_frame,
    print_json,
    print_series,
    to_jsonable,
)
from marketlake.core.timeutil import ms_to_datetime

DataOpt = Annotated[
    Optional[str],
    typer.Option(
        "--data",
        help="Comma-separated datasets: klines, trades, funding, mark, index, premium, oi, or all "
        "(default: everything stored; with --timeframes alone, the datasets that have timeframes).",
    ),
]

# check and repair pull in polars, pyarrow, duckdb and numba: imported inside the commands.
if TYPE_CHECKING:  # pragma: no cover
    from marketlake.quality.check import LakeCheck
    from marketlake.quality.repair import RepairReport


def _render_check(result: LakeCheck) -> None:
    import polars as pl

    from marketlake.quality.check import describe_gap

    rows = []
    for s in result.series:
        r = s.result
        rows.append({
            "series": s.sid.label(),
            "rows": r.total_candles,
            "gaps": len(s.unexplained),
            "missing": sum(g.missing_candles for g in s.unexplained),
            "outages": len(s.explained),
            "unstored": sum(s.sid.timeframe.count_between(a, b) for a, b in s.unstored) if s.sid.timeframe else 0,
            "dups": r.duplicate_count,
            "invalid": r.invalid_count,
            "misaligned": int(r.misaligned_rows.size),
            "unordered": int(r.out_of_order_rows.size),
            "vs_1m": "" if s.consistency is None else len(s.consistency.mismatches),
            "filled": s.filled,
            "ok": "yes" if not s.has_issues else "NO",
        })
    if rows:
        print_frame(pl.DataFrame(rows).with_columns(pl.col("vs_1m").cast(pl.String)))
    for s in result.series:
        for g in s.unexplained[:5]:
            console.print(f"  gap in {s.sid.label()}: {describe_gap(g)}")
        if len(s.unexplained) > 5:
            console.print(f"  ... {len(s.unexplained) - 5} more gaps in {s.sid.label()}")
        for a, b in s.unstored[:5]:
            console.print(
                f"  {s.sid.label()}: {ms_to_datetime(a):%Y-%m-%d %H:%M} → {ms_to_datetime(b):%Y-%m-%d %H:%M} "
                "fetched before but not stored (lost or removed); `marketlake repair` re-fetches it"
            )
    for label, ranges in result.trade_gaps.items():
        lost = sum(b - a for a, b in ranges) / 60_000
        symbol, category = label.rsplit("/", 1)[-1], label.split("/")[1]
        first = ms_to_datetime(ranges[0][0]).date()
        last = ms_to_datetime(ranges[-1][1] - 1).date() + dt.timedelta(days=1)
        console.print(
            f"  trades {label}: {len(ranges)} range(s), {lost:,.1f} min, lost while streaming; recover with "
            f"`marketlake archive --symbols {symbol} --category {category} --start {first} --end {last}`"
        )
    bad = sum(1 for s in result.series if s.has_issues) + len(result.trade_gaps)
    _render_perp_check(result)
    if result.series or result.trade_gaps or not result.perp_series:
        console.print(
            f"{len(result.series)} series, {result.rows:,} candles checked in {result.seconds:.2f} s "
            f"({result.rows / max(result.seconds, 1e-9) / 1e6:.1f} M/s); {bad} with issues"
        )
    if result.perp_series:
        perp_bad = sum(1 for s in result.perp_series if s.has_issues)
        console.print(
            f"perpetual data: {len(result.funding)} funding, {len(result.price_series)} mark/index/premium, "
            f"{len(result.open_interest)} open-interest series, {result.perp_rows:,} rows checked; "
            f"{perp_bad} with issues"
        )


def _render_perp_check(result: LakeCheck) -> None:
    """Tables and gap lines of the perpetual datasets (printed only when there are any)."""
    import polars as pl

    from marketlake.quality.check import describe_gap
    from marketlake.quality.perp import series_name

    prices = []
    for s in result.price_series:
        r = s.result
        tf = s.sid.timeframe
        prices.append({
            "series": series_name(s.sid), "rows": r.total_candles, "gaps": len(s.unexplained),
            "missing": sum(g.missing_candles for g in s.unexplained), "outages": len(s.explained),
            "unstored": sum(tf.count_between(a, b) for a, b in s.unstored) if tf else 0,
            "dups": r.duplicate_count, "invalid": r.invalid_count, "misaligned": int(r.misaligned_rows.size),
            "unordered": int(r.out_of_order_rows.size), "ok": "yes" if not s.has_issues else "NO",
        })
    if prices:
        print_frame(pl.DataFrame(prices))
    others = [
        {
            "series": s.name, "rows": s.rows, "gaps": len(s.unexplained),
            "missing": sum(g.missing for g in s.unexplained), "outages": len(s.explained),
            "unstored": len(s.unstored), "dups": s.duplicates, "invalid": len(s.invalid),
            "misaligned": len(s.misaligned), "unordered": s.out_of_order,
            "intervals": ", ".join(str(i["interval_minutes"]) for i in s.intervals),
            "ok": "yes" if not s.has_issues else "NO",
        }
        for s in (*result.funding, *result.open_interest)
    ]
    if others:
        print_frame(pl.DataFrame(others))
    for p in result.price_series:
        name = series_name(p.sid)
        for g in p.unexplained[:5]:
            console.print(f"  gap in {name}: {describe_gap(g)}")
        if len(p.unexplained) > 5:
            console.print(f"  ... {len(p.unexplained) - 5} more gaps in {name}")
    for f in (*result.funding, *result.open_interest):
        what = "settlement(s)" if f.kind == "funding" else "point(s)"
        for h in f.unexplained[:5]:
            console.print(f"  gap in {f.name}: {h.describe().replace(' missing)', f' {what} missing)')}")
        if len(f.unexplained) > 5:
            console.print(f"  ... {len(f.unexplained) - 5} more gaps in {f.name}")
        if f.damaged:
            console.print(f"  {f.name}: damaged: {f.damaged}", markup=False)
    for s in result.perp_series:
        name = s.name if hasattr(s, "name") else series_name(s.sid)
        for a, b in s.unstored[:5]:
            console.print(
                f"  {name}: {ms_to_datetime(a):%Y-%m-%d %H:%M} → {ms_to_datetime(b):%Y-%m-%d %H:%M} "
                "fetched before but not stored (lost or removed); `marketlake repair` re-fetches it"
            )


@app.command()
def check(
    symbols: SymbolsOpt = None,
    timeframes: TimeframesOpt = None,
    exchange: ExchangeOpt = None,
    category: CategoryOpt = None,
    report: Annotated[Optional[Path], typer.Option("--report", help="Write the old integrity report (JSON) here.")] = None,
    consistency: Annotated[bool, typer.Option("--consistency/--no-consistency", help="Compare higher timeframes with the resampled 1m series.")] = True,
    progress: ProgressOpt = None,
    data: DataOpt = None,
    cluster: ClusterOpt = None,
    scheduler: SchedulerOpt = None,
    lake: LakeOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Check stored candles for gaps, duplicates, invalid rows and timeframe mismatches.

    Gaps the exchange itself has (outages, before listing) are not counted; invalid and misaligned
    rows are; higher timeframes are compared with the resampled 1m series. Funding (a settlement
    missing at the interval in force), mark/index/premium candles and open interest are checked
    too (--data picks). With --cluster or --scheduler each series is a task on a Dask cluster
    (the same report). Exit status 1 when anything needs attention.
    """
    from marketlake.quality.check import check_lake
    from marketlake.quality.perp import parse_data

    spec = cluster_spec(cluster, scheduler)
    parse_data(data, timeframes)  # a bad --data is the only line, before anything runs
    if report is not None:
        check_output_file(report, "--report")  # before a long check, not after it
    _announce_compile_unless_bad(lake, config, timeframes, exchange, category)
    with progress_bar("check", "series", show_progress(progress, json_)) as on_progress:
        if spec is None:
            result = check_lake(
                open_lake(lake, config), symbols, timeframes, exchange=exchange, category=category,
                consistency=consistency, progress=on_progress, data=data,
            )
        else:
            from marketlake.cluster import check_on_cluster, open_client

            the_lake = open_lake(lake, config)
            with open_client(spec) as client:
                result = check_on_cluster(
                    client, str(the_lake.root), the_lake.settings, symbols, timeframes, exchange=exchange, category=category,
                    consistency=consistency, progress=on_progress, data=data,
                )
    if report is not None:
        text = json.dumps(to_jsonable(result.report()), indent=2)
        write_output(report, "--report", lambda: report.write_text(text))
    if json_:
        print_json(result.to_dict())
    else:
        _render_check(result)
        if report is not None:
            console.print(f"report written to {report}")
    if result.has_issues:
        raise typer.Exit(1)


def _announce_compile_unless_bad(
    lake: Path | None, config: Path | None, timeframes: str | None, exchange: str | None, category: str | None
) -> None:
    """The first-run compile notice, but only when the kernels will run: not before a bad name is
    rejected (the error must be the only line) and not for a lake without data."""
    from marketlake.cli.app import lake_has_no_data
    from marketlake.core.symbols import validate_category, validate_exchange
    from marketlake.core.timeframes import parse_timeframes

    if category is not None:
        validate_category(category)
    if exchange is not None:
        validate_exchange(exchange)
    if timeframes is not None:
        parse_timeframes(timeframes)
    if not lake_has_no_data(load_settings(lake, config)):
        notice_kernel_compile(("check",))


def _render_repair(rep: RepairReport) -> None:
    import polars as pl

    changed = [s for s in rep.series if s.changed or s.gaps_left]
    if changed:
        print_frame(pl.DataFrame([{k: getattr(s, k) for k in s.__slots__} for s in changed]))  # type: ignore[attr-defined]
    for note in rep.refetch_failures[:20]:
        err_console.print(f"refetch failed: {note}", markup=False)
    console.print(
        f"{len(rep.series)} series looked at, {len(changed)} changed; {rep.gaps_left} unexplained gap(s) left"
    )
    for p in rep.perp:
        console.print(
            f"{p.series}: {len(p.ranges)} missing range(s) forgotten by the ledger; fetch them with `{p.command}`",
            markup=False, soft_wrap=True,
        )
    if rep.trade_days_fetched or rep.trade_gaps_left:
        console.print(
            f"trades: {rep.trade_days_fetched} archive day(s) fetched; {rep.trade_gaps_left} lost range(s) left"
            + (" (days Bybit has not published yet are fetched by a later run)" if rep.trade_gaps_left else "")
        )


@app.command()
def repair(
    symbols: SymbolsOpt = None,
    timeframes: TimeframesOpt = None,
    exchange: ExchangeOpt = None,
    category: CategoryOpt = None,
    refetch: Annotated[bool, typer.Option("--refetch/--no-refetch", help="Re-fetch unexplained gaps from Bybit.")] = True,
    fill: Annotated[bool, typer.Option("--fill", help="Fill gaps still open with flat candles marked filled.")] = False,
    unfill: Annotated[bool, typer.Option("--unfill", help="Remove every flat fill candle first.")] = False,
    data: DataOpt = None,
    base_url: BaseUrlOpt = None,
    archive_url: Annotated[
        Optional[str], typer.Option("--archive-url", help="Trade archive host (default: https://public.bybit.com).")
    ] = None,
    lake: LakeOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Remove duplicates, quarantine invalid rows, re-fetch gaps (and fill them only when asked).

    Funding, mark/index/premium candles and open interest (--data picks): the ledger forgets what
    they miss, and the `marketlake ingest --data ...` command that fetches it again is printed.
    """
    from marketlake.exchanges.bybit.archive import BybitArchiveClient
    from marketlake.exchanges.bybit.rest import BybitRestClient
    from marketlake.net.ratelimit import RateBudget
    from marketlake.quality.repair import RepairReport, repair_lake
    from marketlake.store import Lake

    from marketlake.quality.perp import parse_data

    parse_data(data, timeframes)
    settings = load_settings(lake, config, base_url=base_url, archive_url=archive_url)
    the_lake = Lake(settings=settings)
    _announce_compile_unless_bad(lake, config, timeframes, exchange, category)
    retries = RetryLine()

    async def main() -> RepairReport:
        if not refetch:
            return await repair_lake(the_lake, symbols, timeframes, exchange=exchange, category=category,
                                     fill=fill, unfill=unfill, data=data)
        budget = RateBudget(settings.rate_limit_per_5s, state_dir=the_lake.storage.state_dir)
        announce_pause(budget)
        async with BybitRestClient(settings.base_url, budget=budget, on_retry=retries) as client, \
                BybitArchiveClient(settings.archive_url, on_retry=retries) as archive:
            return await repair_lake(the_lake, symbols, timeframes, exchange=exchange, category=category,
                                     client=client, fill=fill, unfill=unfill, archive=archive, data=data)

    try:
        rep = run_async(main())
    finally:
        retries.clear()
    if json_:
        print_json(rep.to_dict())
    else:
        _render_repair(rep)
    if rep.gaps_left or rep.refetch_failures or rep.trade_gaps_left or rep.perp_gaps_left:
        raise typer.Exit(1)


@app.command()
def demo(
    lake: Annotated[Path, typer.Option("--lake", help="Where the demo lake goes (kept apart from ./lake).")] = Path("demo-lake"),
    days: Annotated[
        float, typer.Option(help="Days of history to ingest (0 < N <= 365).", parser=BoundedFloat(0, 365, open_low=True))
    ] = 7.0,
) -> None:
    """Offline demo: start the Bybit emulator on 127.0.0.1, ingest from it, check, list, query."""
    from marketlake_emulator import Emulator as BybitEmulator
    from marketlake.exchanges.bybit.rest import BybitRestClient
    from marketlake.ingest.archive import candle_timeframes, run_archive_ingest
    from marketlake.ingest.service import IngestRequest, run_ingest
    from marketlake.net.ratelimit import RateBudget
    from marketlake.quality.check import check_lake
    from marketlake.settings import Settings
    from marketlake.store import Lake

    # Synthetic data never goes into the real lake by default: the demo has its own.
    the_lake = Lake(lake, settings=Settings.load(overrides={"lake_root": str(lake)}))
    request = IngestRequest.of(symbols="BTCUSDT,ETHUSDT,SYM001USDT", timeframes="1,5,60", days=days)

    async def main() -> None:
        async with BybitEmulator(symbols=20, seed=1) as emu:
            console.print(f"1. emulator (a synthetic Bybit) listening on {emu.url}")
            budget = RateBudget(500, state_dir=the_lake.storage.state_dir)
            async with BybitRestClient(emu.url, budget=budget) as client:
                out = await run_ingest(the_lake, client, request)
            st = out.stats
            assert st is not None
            console.print(
                f"2. ingest: {st.series} series, {st.pages} requests, {st.rows_new:,} new candles in {st.elapsed:.1f} s"
                f" ({st.empty_candles:,} candles verified empty: the emulator's outages)"
            )
            # Yesterday's trade archive, with 5s candles built from it (Bybit serves none below 1m).
            today = dt.datetime.fromtimestamp(emu.clock.now_ms() / 1000, dt.UTC).date()
            _, arch = await run_archive_ingest(
                the_lake, ["BTCUSDT"], category="linear", start=today - dt.timedelta(days=1), end=today,
                today=today, base_url=emu.url, candles=candle_timeframes("5s"),
            )
            assert arch is not None
            console.print(
                f"   archive: {arch.days_fetched} day of BTCUSDT trades ({arch.trades_new:,} trades, "
                f"{human_bytes(arch.bytes_downloaded)} gzip'd), {arch.candles_written:,} 5s candles built from them"
            )

    notice_kernel_compile(("check", "trades"))
    run_async(main())
    result = check_lake(the_lake)
    console.print(f"3. check: {len(result.series)} series, {result.rows:,} candles, "
                  f"{'no issues' if not result.has_issues else 'ISSUES FOUND'}")
    console.print("4. info:")
    print_series(the_lake.series())  # the very table `marketlake info` prints
    query = (
        "select symbol, count(*) as candles, round(avg(close), 2) as avg_close, "
        "round(sum(turnover)) as turnover from candles where timeframe = '60' group by symbol order by symbol"
    )
    console.print(f"5. sql: {query}")
    print_frame(the_lake.sql(query))
    console.print(f"\nthe demo lake is in {the_lake.root}; try: marketlake sql \"select * from candles limit 5\" --lake {lake}")
