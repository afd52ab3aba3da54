"""Output for the CLI: rich tables on a terminal, JSON for scripts. No logic lives here."""

from __future__ import annotations

import datetime as dt
import json
import math
import sys
from typing import TYPE_CHECKING, Any

from rich.console import Console

if TYPE_CHECKING:  # pragma: no cover  (polars costs ~0.2 s to import; only tables need it)
    import polars as pl

__all__ = ["console", "err_console", "human_bytes", "print_frame", "print_json", "notice_kernel_compile", "print_series", "to_jsonable"]

# Off a terminal (pipes, CI logs) rich would wrap at 80 columns; tables read better wider.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160)


def to_jsonable(value: Any) -> Any:
    """Make ``value`` JSON-serialisable (datetimes as ISO strings, NaN/inf as null)."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def print_json(value: Any) -> None:
    """Print ``value`` as JSON on stdout (plain, never wrapped)."""
    sys.stdout.write(json.dumps(to_jsonable(value), indent=2) + "\n")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:.10g}"
    return str(value)


def print_frame(frame: pl.DataFrame, title: str | None = None, max_rows: int = 200) -> None:
    """Render a frame as a rich table (at most ``max_rows`` rows, then a count of the rest)."""
    from rich.table import Table

    table = Table(title=title, show_lines=False, header_style="bold")
    for name, dtype in frame.schema.items():
        table.add_column(name, justify="right" if dtype.is_numeric() else "left")
    for row in frame.head(max_rows).iter_rows():
        table.add_row(*(_cell(v) for v in row))
    console.print(table)
    if frame.height > max_rows:
        console.print(f"... {frame.height - max_rows} more rows (use --format csv or --output)")


def human_bytes(n: int) -> str:
    """``1536`` → ``1.5 KiB``."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def print_series(table: pl.DataFrame) -> None:
    """The series table of ``info`` (and of ``demo``, so both always look the same).

    Args:
        table: :meth:`marketlake.store.Lake.series` output.
    """
    import polars as pl

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


def notice_kernel_compile(modules: tuple[str, ...]) -> None:
    """Before a command that runs numba kernels: one line on stderr if they still need compiling.

    Only the first run after an install (or after the cache was cleared) prints it, because that
    run fills numba's cache; without the line it would sit silent for about ten seconds.

    Args:
        modules: The kernel modules (``marketlake.core.kernels.<name>``) the command will call.
    """
    from marketlake.core.kernels.cache_state import kernels_cold

    if kernels_cold(modules):
        err_console.print("compiling numba kernels (first run only, ~10 s)…", markup=False, highlight=False)
