"""The ``marketlake`` command: parses flags, calls the library, renders the result.

User errors (every :class:`~marketlake.errors.MarketlakeError`) print one line on stderr and exit
with the error's ``exit_code`` (2 bad input or config, 3 lake, 4 exchange, 5 sink); no traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import polars as pl
import typer

from marketlake.cli.render import console, err_console, human_bytes, print_frame, print_json
from marketlake.errors import DataValidationError, MarketlakeError
from marketlake.settings import Settings
from marketlake.store import Lake

__all__ = ["app", "main"]

app = typer.Typer(
    name="marketlake",
    help="A columnar time-series lake for crypto market data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

LakeOpt = Annotated[
    Optional[Path], typer.Option("--lake", help="Lake directory (default: settings, ./lake).", show_default=False)
]
ConfigOpt = Annotated[
    Optional[Path], typer.Option("--config", help="TOML settings file.", show_default=False)
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
SymbolsOpt = Annotated[Optional[str], typer.Option("--symbols", help="Comma-separated symbols (default: all).")]
TimeframesOpt = Annotated[
    Optional[str], typer.Option("--timeframes", help="Comma-separated timeframes, e.g. 1,5,60 (default: all).")
]
StartOpt = Annotated[Optional[str], typer.Option("--start", help="Inclusive start: YYYY-MM-DD[ HH:MM:SS] or epoch ms.")]
EndOpt = Annotated[Optional[str], typer.Option("--end", help="Exclusive end.")]
ExchangeOpt = Annotated[Optional[str], typer.Option("--exchange", help="Exchange (default: bybit).")]
CategoryOpt = Annotated[Optional[str], typer.Option("--category", help="linear, spot or inverse (default: linear).")]


def load_settings(lake: Path | None, config: Path | None, **overrides: object) -> Settings:
    """Settings from file < environment < flags (``None`` flags are not set)."""
    return Settings.load(config, overrides={"lake_root": str(lake) if lake else None, **overrides})


def open_lake(lake: Path | None, config: Path | None) -> Lake:
    """The lake the flags point at."""
    settings = load_settings(lake, config)
    return Lake(settings=settings)


@app.command()
def info(lake: LakeOpt = None, config: ConfigOpt = None, json_: JsonOpt = False) -> None:
    """List every stored series: first and last candle, rows, partitions, size on disk."""
    the_lake = open_lake(lake, config)
    table = the_lake.series()
    if json_:
        print_json({"lake": str(the_lake.root), "series": table.to_dicts()})
        return
    console.print(f"lake: {the_lake.root}")
    if table.is_empty():
        console.print("no series stored yet (try `marketlake import-csv` or `marketlake demo`)")
        return
    shown = table.select(
        pl.concat_str(["exchange", "category", "symbol"], separator="/").alias("series"),
        pl.when(pl.col("dataset") == "trades").then(pl.lit("trades")).otherwise(pl.col("timeframe")).alias("tf"),
        pl.col("first_ts").dt.strftime("%Y-%m-%d %H:%M").alias("first"),
        pl.col("last_ts").dt.strftime("%Y-%m-%d %H:%M").alias("last"),
        "rows",
        pl.col("partitions").alias("parts"),
        pl.col("bytes").map_elements(human_bytes, return_dtype=pl.String).alias("size"),
    )
    total = human_bytes(int(table["bytes"].sum()))
    print_frame(shown, title=f"{table.height} series, {table['rows'].sum():,} rows, {total}")
    from marketlake.cli.coverage_cmd import print_coverage_strips

    print_coverage_strips(the_lake)


@app.command("import-csv")
def import_csv_cmd(
    paths: Annotated[list[Path], typer.Argument(help="CSV files or directories of {SYMBOL}_{TF}.csv files.")],
    symbol: Annotated[Optional[str], typer.Option(help="Symbol for files not named {SYMBOL}_{TF}.csv.")] = None,
    timeframe: Annotated[Optional[str], typer.Option(help="Timeframe for such files.")] = None,
    exchange: ExchangeOpt = None,
    category: CategoryOpt = None,
    lake: LakeOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Import old-format CSV files; a malformed file is rejected whole, the others still import."""
    from marketlake.interop.csv import import_csv

    if (symbol is None) != (timeframe is None):
        raise DataValidationError("--symbol and --timeframe go together")
    report = import_csv(
        open_lake(lake, config), paths, symbol=symbol, timeframe=timeframe, exchange=exchange, category=category
    )
    if json_:
        print_json(report.to_dict())
    else:
        for item in report.imported:
            r = item.result
            console.print(
                f"{item.path}: {item.symbol} {item.timeframe}: {item.rows:,} rows "
                f"({r.rows_new:,} new, {r.rows_replaced:,} replaced, {r.rows_unchanged:,} unchanged"
                + (f", {item.duplicates:,} repeated timestamps in file" if item.duplicates else "")
                + ")"
            )
        for rej in report.rejected:
            err_console.print(f"rejected {rej}")
    if report.rejected:
        raise typer.Exit(2)


@app.command("export-csv")
def export_csv_cmd(
    directory: Annotated[Path, typer.Argument(help="Where to write {SYMBOL}_{TF}.csv files.")],
    symbols: SymbolsOpt = None,
    timeframes: TimeframesOpt = None,
    start: StartOpt = None,
    end: EndOpt = None,
    exchange: ExchangeOpt = None,
    category: CategoryOpt = None,
    lake: LakeOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Export candles to the old CSV format, one chronological file per symbol/timeframe."""
    from marketlake.interop.csv import export_csv

    files = export_csv(
        open_lake(lake, config), directory, symbols=symbols, timeframes=timeframes,
        start=start, end=end, exchange=exchange, category=category,
    )
    if json_:
        print_json({"files": [str(f) for f in files]})
        return
    for f in files:
        console.print(str(f))
    console.print(f"{len(files)} file(s) written")


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="SQL over the views `candles` and `trades`.")],
    format_: Annotated[str, typer.Option("--format", help="table, csv, json or parquet.")] = "table",
    output: Annotated[Optional[Path], typer.Option("--output", help="Write to this file.")] = None,
    lake: LakeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Run a SQL query (DuckDB) against the lake."""
    if format_ not in ("table", "csv", "json", "parquet"):
        raise DataValidationError(f"--format must be table, csv, json or parquet, not {format_!r}")
    if format_ == "parquet" and output is None:
        raise DataValidationError("--format parquet needs --output FILE")
    frame = open_lake(lake, config).sql(query)
    if format_ == "table":
        if output is not None:
            raise DataValidationError("--format table prints to the terminal; use csv, json or parquet with --output")
        print_frame(frame)
    elif format_ == "csv":
        text = frame.write_csv()
        _emit(text, output)
    elif format_ == "json":
        _emit(frame.write_json(), output)
    else:
        assert output is not None
        frame.write_parquet(output)


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    else:
        output.write_text(text)


@app.command()
def fsck(
    fix: Annotated[bool, typer.Option("--fix", help="Remove leftovers, quarantine unreadable files.")] = False,
    lake: LakeOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Check every file of the lake; exit 1 when something needs attention."""
    report = open_lake(lake, config).fsck(fix=fix)
    if json_:
        print_json(report.to_dict())
    else:
        for issue in report.issues:
            state = "fixed" if issue.fixed else "found"
            console.print(f"{state} {issue.kind}: {issue.path}: {issue.detail}")
        console.print(
            f"{report.files_checked:,} files, {report.rows_checked:,} rows checked; "
            f"{len(report.issues)} issue(s)" + (f"; {report.trash_purged} trashed file(s) purged" if fix else "")
        )
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def compact(lake: LakeOpt = None, config: ConfigOpt = None) -> None:
    """Fold live-flush delta files into their partition's main file; purge old trash."""
    result = open_lake(lake, config).compact()
    console.print(f"{result.files_written} partition(s) compacted")


# Commands defined in sibling modules register themselves on ``app`` when imported.
from marketlake.cli import archive_cmd, ingest_cmd, quality_cmd  # noqa: E402,F401
from marketlake.cli import stream_cmd  # noqa: E402,F401
from marketlake.cli import compat_cmd  # noqa: E402,F401
from marketlake.cli import coverage_cmd  # noqa: E402,F401

def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``marketlake`` console script."""
    try:
        app(args=argv, prog_name="marketlake", standalone_mode=True)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    except MarketlakeError as exc:
        err_console.print(f"error: {exc}", markup=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
