"""The ``marketlake`` command: parses flags, calls the library, renders the result.

Every failure prints one line on stderr and exits with a documented status (2 bad input or config,
3 lake, 4 exchange, 5 sink, 130 Ctrl-C); no traceback: typed errors carry their ``exit_code``, the
rest is classified by :mod:`marketlake.cli.failures`.

Start-up matters (``marketlake --help`` is run far more often than anything else): this module and
the command modules import numba, pyarrow, polars, duckdb and aiohttp only inside the commands.
"""

from __future__ import annotations

import sys
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from typer.core import TyperGroup

from marketlake.cli.failures import classify, one_line
from marketlake.cli.feedback import ProgressOpt
from marketlake.cli.params import check_input_path, check_output_dir, check_output_file
from marketlake.cli.render import console, err_console, print_json
from marketlake.core.symbols import CATEGORIES
from marketlake.errors import DataValidationError, LakeError
from marketlake.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    from typer._click.formatting import HelpFormatter

    from marketlake.store import Lake

__all__ = ["app", "main"]

# typer vendors click (typer._click); its usage errors derive from typer.TyperException. Older
# typers used click itself, whose errors derive from click.ClickException.
_CLICK_ERRORS: tuple[type[Exception], ...]
if hasattr(typer, "TyperException"):
    _CLICK_ERRORS = (typer.TyperException,)
else:  # pragma: no cover  (typer < 0.2x)
    import click

    _CLICK_ERRORS = (click.ClickException,)


class _SortedGroup(TyperGroup):
    """Commands listed alphabetically, each with its whole first sentence (click cuts at 45 chars)."""

    def list_commands(self, ctx: typer.Context) -> list[str]:
        """Command names, sorted."""
        return sorted(super().list_commands(ctx))

    def format_commands(self, ctx: typer.Context, formatter: HelpFormatter) -> None:
        """The command list, one full sentence per command."""
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is None or cmd.hidden:
                continue
            rows.append((name, cmd.get_short_help_str(limit=1_000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


app = typer.Typer(
    name="marketlake",
    cls=_SortedGroup,
    help="A columnar time-series lake for crypto market data.",
    no_args_is_help=True,
    # Up to 120 columns when the terminal has them: command summaries then fit on one line.
    context_settings={"max_content_width": 120},
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _print_version(value: bool) -> None:
    if value:
        from marketlake import __version__

        console.print(f"marketlake {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit.", callback=_print_version, is_eager=True),
    ] = False,
) -> None:
    """A columnar time-series lake for crypto market data."""

LakeOpt = Annotated[
    Optional[str],
    typer.Option("--lake", help="Lake directory or s3://bucket/prefix (default: settings, ./lake).", show_default=False),
]
ConfigOpt = Annotated[
    Optional[Path], typer.Option("--config", help="TOML settings file.", show_default=False)
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
SymbolsOpt = Annotated[
    Optional[str], typer.Option("--symbols", help="Comma-separated symbols (default: every stored one).")
]
TimeframesOpt = Annotated[
    Optional[str], typer.Option("--timeframes", help="Comma-separated timeframes, e.g. 1,5,60 (default: all).")
]
StartOpt = Annotated[Optional[str], typer.Option("--start", help="Inclusive start: YYYY-MM-DD[ HH:MM:SS] or epoch ms.")]
EndOpt = Annotated[Optional[str], typer.Option("--end", help="Exclusive end.")]
ExchangeOpt = Annotated[Optional[str], typer.Option("--exchange", help="Exchange (default: bybit).")]
# The help lists exactly what validate_category accepts, from the same tuple.
CategoryOpt = Annotated[
    Optional[str],
    typer.Option("--category", help=f"One of {', '.join(CATEGORIES)} (default: settings, linear)."),
]


def load_settings(lake: str | Path | None, config: Path | None, **overrides: object) -> Settings:
    """Settings from file < environment < flags (``None`` flags are not set)."""
    return Settings.load(config, overrides={"lake_root": str(lake) if lake else None, **overrides})


def open_lake(lake: str | Path | None, config: Path | None, *, as_of: str | None = None) -> Lake:
    """The lake the flags point at (read as of a snapshot, version or time when ``as_of``)."""
    from marketlake.store import Lake

    settings = load_settings(lake, config)
    pinned: object = None
    if as_of is not None:
        pinned = int(as_of) if as_of.strip().isdigit() else as_of
    return Lake(settings=settings, as_of=pinned)  # type: ignore[arg-type]


def lake_has_no_data(settings: Settings) -> bool:
    """True when the lake holds no dataset table: a new or empty lake, or a mistyped ``--lake``.

    Read-only commands check this first: there is nothing to read, so they answer at once without
    loading the store (fast), and without opening it (which would create its metadata there).

    Raises:
        LakeError: a local root that is a file; an object store that cannot be reached, a
            missing bucket, refused credentials, or a prefix holding something else than a lake.
    """
    # (storage.py imports no polars or pyarrow: this stays fast)
    from marketlake.store.storage import LAKE_ENTRIES, check_is_lake, open_storage

    storage = open_storage(settings.lake_root, settings)  # (refuses a file as root, an unknown scheme)
    check_is_lake(storage)
    return not any(storage.has_prefix(name) for name in LAKE_ENTRIES if not name.startswith("_"))


@app.command()
def info(lake: LakeOpt = None, config: ConfigOpt = None, json_: JsonOpt = False) -> None:
    """List every stored series: first and last candle, rows, partitions, size on disk."""
    from marketlake.cli.render import print_series

    settings = load_settings(lake, config)
    root = settings.lake_root if "://" in settings.lake_root else settings.lake_path
    if lake_has_no_data(settings):
        # Nothing to list, and opening the store would create its metadata under a mistyped path.
        if json_:
            print_json({"lake": str(root), "series": []})
        else:
            console.print(f"lake: {root}")
            console.print("no series stored yet (try `marketlake import-csv` or `marketlake demo`)")
        return
    from marketlake.store import Lake

    the_lake = Lake(settings=settings)
    table = the_lake.series()
    if json_:
        from marketlake.store.snapshots import describe

        print_json({
            "lake": str(the_lake.root), "versions": the_lake.versions(),
            "snapshots": [describe(s) for s in the_lake.snapshots()], "series": table.to_dicts(),
        })
        return
    console.print(f"lake: {the_lake.root}")
    print_series(table)
    from marketlake.cli.lake_cmd import print_versions

    print_versions(the_lake)
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
    for path in paths:
        check_input_path(path)
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
            err_console.print(f"error: rejected {one_line(rej)}", markup=False, soft_wrap=True)
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
    data: Annotated[Optional[str], typer.Option(
        "--data", help="Comma-separated: klines (default), funding, mark, index, premium, oi, or all.")] = None,
    lake: LakeOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Export candles to the old CSV format, one chronological file per symbol/timeframe.

    --data adds the perpetual datasets: {SYMBOL}_funding.csv, {SYMBOL}_{TF}_mark.csv (index,
    premium), {SYMBOL}_oi_{interval}.csv.
    """
    from marketlake.interop.csv import export_csv
    from marketlake.quality.perp import parse_data

    parse_data(data, allowed=("klines", "funding", "mark", "index", "premium", "oi"), default=("klines",))
    check_output_dir(directory, "export directory")
    files = export_csv(
        open_lake(lake, config), directory, symbols=symbols, timeframes=timeframes,
        start=start, end=end, exchange=exchange, category=category, data=data,
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
    as_of: Annotated[Optional[str], typer.Option(
        "--as-of", help="Query the lake as it was: a snapshot name, a candles table version or an ISO time.")] = None,
    full_engine: Annotated[bool, typer.Option(
        "--full-engine", help="Unrestricted DuckDB (file access outside the lake, ATTACH, COPY TO, extensions).")] = False,
    lake: LakeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Run a SQL query (DuckDB) against the lake; read-only outside the lake unless --full-engine."""
    if format_ not in ("table", "csv", "json", "parquet"):
        raise DataValidationError(f"--format must be table, csv, json or parquet, not {format_!r}")
    if format_ == "parquet" and output is None:
        raise DataValidationError("--format parquet needs --output FILE")
    if format_ == "table" and output is not None:
        raise DataValidationError("--format table prints to the terminal; use csv, json or parquet with --output")
    if output is not None:
        check_output_file(output, "--output")
    frame = open_lake(lake, config, as_of=as_of).sql(query, full_engine=full_engine)
    if format_ == "table":
        from marketlake.cli.render import print_frame

        print_frame(frame)
    elif format_ == "csv":
        _emit(frame.write_csv(), output)
    elif format_ == "json":
        _emit(frame.write_json(), output)
    else:
        assert output is not None
        write_output(output, "--output", lambda: frame.write_parquet(output))


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    else:
        write_output(output, "--output", lambda: output.write_text(text))


def write_output(path: Path, what: str, write: Callable[[], object]) -> None:
    """Run ``write`` (which writes ``path``); a failure names the flag and the path.

    The path is the user's, not the lake's: whatever goes wrong there (a read-only or full file
    system, /proc) is bad input, exit status 2.

    Raises:
        DataValidationError: ``write`` raised an ``OSError``.
    """
    try:
        write()
    except OSError as exc:
        raise DataValidationError(f"{what} {path}: cannot write: {exc.strerror or exc}") from None


@app.command()
def fsck(
    fix: Annotated[bool, typer.Option(
        "--fix", help="Drop references to missing or unreadable files (quarantined, ranges forgotten for repair); "
        "delete orphans older than the retention.")] = False,
    progress: ProgressOpt = None,
    lake: LakeOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Check every file the lake's log references, and the files it does not; exit 1 when something needs attention."""
    from marketlake.cli.feedback import progress_bar, show_progress

    the_lake = open_lake(lake, config)
    with progress_bar("fsck", "files", show_progress(progress, json_)) as on_progress:
        report = the_lake.fsck(fix=fix, progress=on_progress)
    if json_:
        print_json(report.to_dict())
    else:
        for issue in report.issues:
            state = "fixed" if issue.fixed else "found"
            console.print(f"{state} {issue.kind}: {issue.path}: {issue.detail}")
        console.print(
            f"{report.files_checked:,} files, {report.rows_checked:,} rows checked; "
            f"{len(report.issues)} issue(s)" + (f"; {report.vacuumed} unreferenced file(s) vacuumed" if fix else "")
        )
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def compact(lake: LakeOpt = None, config: ConfigOpt = None) -> None:
    """Fold each partition's files into one, checkpoint the tables, vacuum what no version needs."""
    result = open_lake(lake, config).compact()
    console.print(f"{len(result.partitions)} partition(s) compacted"
                  + (f" (version {result.version})" if result.version is not None else ""))


# Commands defined in sibling modules register themselves on ``app`` when imported.
from marketlake.cli import archive_cmd, ingest_cmd, quality_cmd  # noqa: E402,F401
from marketlake.cli import stream_cmd  # noqa: E402,F401
from marketlake.cli import compat_cmd  # noqa: E402,F401
from marketlake.cli import instruments_cmd  # noqa: E402,F401
from marketlake.cli import coverage_cmd  # noqa: E402,F401
from marketlake.cli import lake_cmd  # noqa: E402,F401
from marketlake.cli import runs_cmd  # noqa: E402,F401
from marketlake.cli import candles_cmd  # noqa: E402,F401

def _fail(message: str) -> None:
    err_console.print(f"error: {message}", markup=False, soft_wrap=True, highlight=False)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``marketlake`` console script.

    Runs click in non-standalone mode so that usage errors, too, become one line here (click's own
    rendering is three: usage, a hint and the error).

    Args:
        argv: Arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0, 1 (``check``/``fsck`` found issues), 2 bad input or settings, 3 lake,
        4 exchange, 5 sink, 130 interrupted.
    """
    try:
        result: Any = app(args=argv, prog_name="marketlake", standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except _CLICK_ERRORS as exc:
        message: str = exc.format_message()  # type: ignore[attr-defined]
        if type(exc).__name__ == "NoArgsIsHelpError":
            # `marketlake` or `marketlake sql` alone: the help is the answer (stdout, status 0).
            console.print(message, markup=False, highlight=False, soft_wrap=True)
            return 0
        ctx = getattr(exc, "ctx", None)
        where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        _fail(one_line(message) + where)
        return int(getattr(exc, "exit_code", 2) or 2)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("interrupted", highlight=False)
        return 130
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    except Exception as exc:  # noqa: BLE001  (the promise: one line and a code, never a traceback)
        code, message = classify(exc)
        _fail(message)
        return code
    # In non-standalone mode click returns the exit code of typer.Exit / ctx.exit, else the
    # command's return value (None for every command here).
    return result if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
