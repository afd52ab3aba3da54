"""``marketlake export-postgres``: lake series into the old system's PostgreSQL tables."""

from __future__ import annotations

from typing import Annotated

import typer

from marketlake.cli.app import (
    CategoryOpt,
    ConfigOpt,
    EndOpt,
    ExchangeOpt,
    JsonOpt,
    LakeOpt,
    StartOpt,
    SymbolsOpt,
    TimeframesOpt,
    app,
    open_lake,
)
from marketlake.cli.params import BoundedInt
from marketlake.cli.render import console, print_json
from marketlake.errors import DataValidationError

__all__ = ["export_postgres_cmd"]


@app.command("export-postgres")
def export_postgres_cmd(
    dsn: Annotated[
        str,
        typer.Option(
            "--dsn",
            help="libpq connection string or URL (postgresql://user@host:5432/db); keep the password "
            "in PGPASSWORD or ~/.pgpass.",
        ),
    ],
    symbols: SymbolsOpt = None,
    timeframes: TimeframesOpt = None,
    start: StartOpt = None,
    end: EndOpt = None,
    exchange: ExchangeOpt = None,
    category: CategoryOpt = None,
    trades: Annotated[bool, typer.Option("--trades/--no-trades", help="Export trades too.")] = False,
    candles: Annotated[bool, typer.Option("--candles/--no-candles", help="Export candles.")] = True,
    batch_rows: Annotated[
        int,
        typer.Option(
            "--batch-rows", help="Rows per COPY batch, one transaction each (1..10000000).",
            parser=BoundedInt(1, 10_000_000),
        ),
    ] = 100_000,
    retries: Annotated[
        int,
        typer.Option("--retries", help="Attempts per batch after a broken connection (0..100).", parser=BoundedInt(0, 100)),
    ] = 5,
    lake: LakeOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Copy candles (and trades) into the PostgreSQL tables candles and trades.

    A re-run adds what is missing and corrects what the lake changed (COPY into a staging table,
    then an upsert).
    """
    from marketlake.interop.postgres import export_postgres

    if not dsn.strip():
        raise DataValidationError("--dsn is empty: give a connection string, e.g. postgresql://user@host/db")
    if not (candles or trades):
        raise DataValidationError("nothing to export: --no-candles without --trades")
    if batch_rows < 1 or retries < 0:
        raise DataValidationError("--batch-rows must be >= 1 and --retries >= 0")
    report = export_postgres(
        open_lake(lake, config), dsn, symbols=symbols, timeframes=timeframes, start=start, end=end,
        exchange=exchange, category=category, candles=candles, trades=trades, batch_rows=batch_rows,
        retries=retries,
    )
    if json_:
        print_json(report.to_dict())
        return
    for s in report.series:
        console.print(
            f"{s.dataset} {s.series}: {s.rows_read:,} rows, {s.rows_inserted:,} inserted, "
            f"{s.rows_updated:,} updated, {s.rows_present:,} already there",
            markup=False,
        )
    rate = report.rows_read / report.seconds if report.seconds > 0 else 0.0
    console.print(
        f"{report.target}: {report.rows_read:,} rows read, {report.rows_inserted:,} inserted, "
        f"{report.rows_updated:,} updated "
        f"in {report.seconds:,.1f} s ({rate:,.0f} rows/s); {report.retries} retried batch(es)",
        markup=False,
    )
