"""``marketlake coverage``: flags in, the coverage grid from the library, a picture (or text) out.

Also :func:`print_coverage_strips`, the compact text version that ``marketlake info`` prints.
polars, numpy and Pillow are imported inside the functions (start-up time of the CLI).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from marketlake.cli.app import (
    ConfigOpt,
    EndOpt,
    LakeOpt,
    StartOpt,
    SymbolsOpt,
    app,
    load_settings,
)
from marketlake.cli.render import console
from marketlake.errors import DataValidationError

if TYPE_CHECKING:  # pragma: no cover
    from marketlake.report.coverage import CoverageGrid
    from marketlake.store import Lake

__all__ = ["coverage", "print_coverage_strips"]


@app.command()
def coverage(
    output: Annotated[
        Optional[Path],
        typer.Option("--output", "-o", help="coverage.png or coverage.html (self-contained, hover details).",
                     show_default=False),
    ] = None,
    symbols: SymbolsOpt = None,
    timeframes: Annotated[
        Optional[str],
        typer.Option("--timeframes",
                     help="Comma-separated timeframes; 'trades' for trades (default: every series)."),
    ] = None,
    start: StartOpt = None,
    end: EndOpt = None,
    exchange: Annotated[
        Optional[str], typer.Option("--exchange", help="Only this exchange (default: all).")
    ] = None,
    category: Annotated[
        Optional[str], typer.Option("--category", help="Only this category (default: all).")
    ] = None,
    lake: LakeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Draw what is stored: series x day (x month past 400 days), present/empty/failed/missing/filled."""
    from marketlake.report.coverage import coverage_grid, text_strips
    from marketlake.report.picture import write_picture
    from marketlake.store import Lake

    if output is not None and output.suffix.lower() not in (".png", ".html", ".htm"):
        raise DataValidationError(f"--output {output}: write a .png or a .html file")
    settings = load_settings(lake, config)
    from marketlake.cli.app import lake_has_no_data

    if lake_has_no_data(settings):
        raise DataValidationError(f"no lake at {settings.lake_root}")
    grid = coverage_grid(
        Lake(settings=settings), symbols, timeframes, start, end, exchange=exchange, category=category
    )
    if output is None:
        for line in text_strips(grid, width=_strip_width(grid)):
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        return
    kind = write_picture(grid, output)
    tot = grid.totals()
    cells = ", ".join(f"{n:,} {st.value}" for st, n in sorted(tot.cells.items(), key=lambda kv: -kv[1]))
    console.print(f"wrote {output} ({kind}): {len(grid.rows)} series x {len(grid.edges) - 1} cells ({cells})",
                  markup=False, highlight=False, soft_wrap=True)


def _strip_width(grid: CoverageGrid) -> int:
    """Cells that fit a terminal line beside the longest label."""
    label = max((len(r.label) for r in grid.rows), default=0)
    return max(10, shutil.get_terminal_size((160, 24)).columns - label - 4)


def print_coverage_strips(lake: Lake) -> None:
    """Print the compact coverage strips of every stored series (``marketlake info``).

    One line per series, one character per day (per month past 400 days): █ present, · verified
    empty, ✗ failed, ' ' missing, ▒ filled. Prints nothing when the lake holds no series.
    """
    from marketlake.report.coverage import coverage_grid, text_strips

    try:
        grid = coverage_grid(lake)
    except DataValidationError:
        return  # nothing stored or recorded yet: info already says so
    console.print("")
    for line in text_strips(grid, width=_strip_width(grid)):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
