"""``marketlake instruments``: record an instruments-info snapshot into the lake's instrument
history and print the universe (symbols, status, tick size, funding interval)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from marketlake.cli.app import ConfigOpt, JsonOpt, LakeOpt, app, load_settings
from marketlake.cli.feedback import RetryLine
from marketlake.cli.ingest_cmd import BaseUrlOpt, announce_pause, run_async
from marketlake.cli.render import console, err_console, print_frame, print_json
from marketlake.core.symbols import CATEGORIES, validate_category
from marketlake.core.timeutil import to_ms

__all__ = ["instruments"]

_SHOWN = ("category", "symbol", "status", "tick_size", "qty_step", "min_order_qty", "funding_interval_minutes",
          "launch_time", "delivery_time", "valid_from")


@app.command()
def instruments(
    category: Annotated[
        Optional[str],
        typer.Option("--category", help=f"Comma-separated categories of {', '.join(CATEGORIES)} (default: settings, linear)."),
    ] = None,
    at: Annotated[
        Optional[str],
        typer.Option("--at", help="Print the universe as of this time (YYYY-MM-DD[ HH:MM:SS] or epoch ms; default: now)."),
    ] = None,
    every_status: Annotated[
        bool, typer.Option("--all", help="Every status (PreLaunch, Delivering, Closed too), not only Trading.")
    ] = False,
    base_url: BaseUrlOpt = None,
    lake: LakeOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Record Bybit's instruments (every status) into the instrument history; print the universe.

    The history keeps what was listed when (delisted symbols stay), so `Lake.universe(at)` and the
    SQL view `instruments` answer without survivorship bias.
    """
    from marketlake.exchanges.bybit.rest import BybitRestClient
    from marketlake.ingest.instruments import SnapshotResult, record_snapshot
    from marketlake.net.ratelimit import RateBudget
    from marketlake.store import Lake

    settings = load_settings(lake, config, base_url=base_url)
    names = [c.strip() for c in (category or settings.category).split(",") if c.strip()]
    cats = [validate_category(c) for c in dict.fromkeys(names)]
    if not cats:
        cats = [settings.category]
    at_ms = None if at is None else to_ms(at, what="--at")
    the_lake = Lake(settings=settings)
    retries = RetryLine()

    async def main() -> SnapshotResult:
        budget = RateBudget(settings.rate_limit_per_5s, state_dir=the_lake.storage.state_dir)
        announce_pause(budget)
        async with BybitRestClient(settings.base_url, budget=budget, on_retry=retries) as client:
            return await record_snapshot(the_lake, client, cats, exchange=settings.exchange)

    try:
        result = run_async(main())
    finally:
        retries.clear()
    if result.note:
        err_console.print(f"note: {result.note}", markup=False)
    when = result.snapshot.taken_ms if at_ms is None else at_ms
    import polars as pl

    if every_status:  # every row in force then, whatever its status or delivery time
        at_col = pl.lit(when).cast(pl.Datetime("ms", "UTC"))
        table = the_lake.instrument_history(settings.exchange).filter(
            pl.col("category").is_in(cats)
            & (pl.col("valid_from") <= at_col)
            & (pl.col("valid_to").is_null() | (at_col < pl.col("valid_to")))
        ).sort("category", "symbol")
    else:
        table = pl.concat([the_lake.universe(when, c, exchange=settings.exchange) for c in cats])
    table = table.select([c for c in _SHOWN if c in table.columns]) if table.height else table
    if json_:
        print_json(
            {
                "taken_ms": result.snapshot.taken_ms,
                "recorded": result.recorded,
                "history_rows": result.history_rows,
                "at_ms": when,
                "instruments": table.to_dicts() if table.height else [],
            }
        )
        return
    if table.height:
        print_frame(table, max_rows=100_000)
    seen = len(result.snapshot.instruments)
    console.print(
        f"{seen} instrument(s) of {', '.join(cats)} seen"
        + (f", recorded ({result.history_rows} history rows)" if result.recorded else ", not recorded")
        + f"; {table.height} listed"
        + ("" if at_ms is None else " at --at")
        + (" (every status)" if every_status else " (Trading; --all for every status)")
    )
