"""Drawing the coverage grid: a PNG (Pillow) and a self-contained HTML page (inline SVG, CSS, JS).

Both come from one :class:`Layout`, so a cell is at the same pixel in the PNG and in a browser's
rendering of the HTML (at zoom 1): tests find a cell's colour from :meth:`Layout.cell_box`.
Each picture has a title, a date axis, one row of cells per series, and a legend with the totals
(cells, candles and trade time per state). Cells show their worst state; the HTML's hover gives
every state's share of the cell.
"""

from __future__ import annotations

import html
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from marketlake.core.timeutil import ms_to_text
from marketlake.errors import DataValidationError
from marketlake.report.coverage import CoverageGrid
from marketlake.report.grid import SEVERITY, Cell, CellState, Row

__all__ = ["COLORS", "Layout", "cell_tip", "render_html", "render_png", "write_picture"]

#: Cell colours (RGB hex): green data, purple made-up data, grey-blue exchange gaps, red failed
#: fetches, amber unexplained holes; a pale grey where no bucket opens.
COLORS: dict[CellState, str] = {
    CellState.PRESENT: "#2f9e44",
    CellState.FILLED: "#9c6ade",
    CellState.EMPTY: "#a5b4c4",
    CellState.FAILED: "#e03131",
    CellState.MISSING: "#f59f00",
    CellState.NONE: "#eceff2",
}
_TEXT = "#212529"
_MUTED = "#6c757d"
_LEGEND_ORDER = (*reversed(SEVERITY), CellState.NONE)
_MEANING = {
    CellState.PRESENT: "present",
    CellState.EMPTY: "verified empty (outage, before listing)",
    CellState.FILLED: "filled (flat candles from repair --fill)",
    CellState.FAILED: "failed fetch",
    CellState.MISSING: "missing (no data, no explanation)",
    CellState.NONE: "no candle opens in the cell",
}


@dataclass(frozen=True, slots=True)
class Layout:
    """Pixel positions of everything in the picture (top-left origin, zoom 1).

    Attributes:
        n_rows: Series.
        n_cols: Cells per series.
        pitch: Horizontal distance between cell starts; cells are ``pitch - gap`` wide.
        gap: Space between cells.
        label_w: Width of the series-label column.
    """

    n_rows: int
    n_cols: int
    pitch: int
    gap: int
    label_w: int
    margin: int = 16
    row_pitch: int = 20
    cell_h: int = 17
    top: int = 84
    legend_line: int = 20

    @classmethod
    def for_grid(cls, grid: CoverageGrid) -> Layout:
        """The layout of ``grid``: cells shrink (20 down to 4 px) so ~1400 px hold a year."""
        n_cols = len(grid.edges) - 1
        pitch = max(4, min(20, 1400 // max(1, n_cols)))
        longest = max((len(r.label) for r in grid.rows), default=10)
        return cls(len(grid.rows), n_cols, pitch, 1 if pitch < 8 else 2, 8 * longest + 24)

    @property
    def grid_x(self) -> int:
        """x of the first cell column."""
        return self.margin + self.label_w

    def cell_box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)`` of a cell, x1/y1 exclusive."""
        x0 = self.grid_x + col * self.pitch
        y0 = self.top + row * self.row_pitch
        return x0, y0, x0 + self.pitch - self.gap, y0 + self.cell_h

    def cell_center(self, row: int, col: int) -> tuple[int, int]:
        """A pixel in the middle of a cell."""
        x0, y0, x1, y1 = self.cell_box(row, col)
        return (x0 + x1) // 2, (y0 + y1) // 2

    @property
    def legend_y(self) -> int:
        """y of the first legend line."""
        return self.top + self.n_rows * self.row_pitch + 24

    @property
    def width(self) -> int:
        """Picture width (room for the last date label, which starts at its cell)."""
        last_label = (self.n_cols - 1) // self.axis_step() * self.axis_step()
        right = max(self.n_cols * self.pitch, last_label * self.pitch + 80)
        return max(self.grid_x + right + self.margin, 900)

    @property
    def height(self) -> int:
        """Picture height."""
        return self.legend_y + (len(_LEGEND_ORDER) + 1) * self.legend_line + self.margin

    def axis_step(self) -> int:
        """Label every n-th column so that date labels (~80 px) do not overlap."""
        return max(1, math.ceil(84 / self.pitch))


def _title(grid: CoverageGrid) -> tuple[str, str]:
    unit = "month" if grid.monthly else "day (UTC)"
    return (
        f"marketlake coverage: {len(grid.rows)} series, one cell per {unit}",
        f"{ms_to_text(grid.start_ms)} .. {ms_to_text(grid.end_ms)} (end exclusive); "
        "a cell shows its worst state",
    )


def _amount(n: int, dataset: str) -> str:
    return f"{n:,} candles" if dataset == "candles" else f"{n / 3_600_000:,.1f} h of trades"


def cell_tip(row: Row, cell: Cell, name: str) -> str:
    """The hover text of a cell: series, period, and each state's count and share."""
    lines = [f"{row.label}  {name}", f"state: {cell.state.value}"]
    for st in _LEGEND_ORDER:
        n = cell.counts.get(st, 0)
        if n:
            lines.append(f"{st.value}: {_amount(n, row.dataset)} ({100 * cell.fraction(st):.1f}%)")
    if cell.state is CellState.NONE:
        lines.append(_MEANING[CellState.NONE])
    return "\n".join(lines)


def _legend_lines(grid: CoverageGrid) -> list[tuple[CellState, str]]:
    tot = grid.totals()
    n_candles = sum(tot.candles.values())
    n_trade = sum(tot.trade_ms.values())
    out = []
    for st in _LEGEND_ORDER:
        cells = tot.cells.get(st, 0)
        parts = [f"{_MEANING[st]}: {cells:,} cell{'' if cells == 1 else 's'}"]
        if st is not CellState.NONE and n_candles:
            c = tot.candles.get(st, 0)
            parts.append(f"{c:,} candles ({100 * c / n_candles:.2f}%)")
        # Trades are never filled: a "0 days of filled trades" would only be noise.
        if st not in (CellState.NONE, CellState.FILLED) and n_trade:
            t = tot.trade_ms.get(st, 0)
            parts.append(f"{t / 86_400_000:,.2f} days of trades ({100 * t / n_trade:.2f}%)")
        out.append((st, ", ".join(parts)))
    return out


def render_png(grid: CoverageGrid) -> bytes:
    """The picture as PNG bytes.

    Raises:
        DataValidationError: Pillow is not installed (``pip install pillow``).
    """
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError:  # pragma: no cover - Pillow is a dependency; this guards broken installs
        raise DataValidationError("a PNG needs Pillow: pip install pillow (or write .html)") from None
    import io

    lay = Layout.for_grid(grid)
    img = Image.new("RGB", (lay.width, lay.height), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=12)
    big = ImageFont.load_default(size=15)
    title, sub = _title(grid)
    draw.text((lay.margin, 12), title, fill=_TEXT, font=big)
    draw.text((lay.margin, 34), sub, fill=_MUTED, font=font)
    names = grid.cell_names
    for col in range(0, lay.n_cols, lay.axis_step()):
        x0, y0, _, _ = lay.cell_box(0, col)
        draw.line([(x0, y0 - 6), (x0, y0 - 2)], fill=_MUTED)
        draw.text((x0, y0 - 22), names[col], fill=_MUTED, font=font)
    for r, row in enumerate(grid.rows):
        _, y0, _, y1 = lay.cell_box(r, 0)
        draw.text((lay.margin, y0 + 2), row.label, fill=_TEXT, font=font)
        for c, cell in enumerate(row.cells):
            x0, y0, x1, y1 = lay.cell_box(r, c)
            draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=COLORS[cell.state])
    y = lay.legend_y
    for st, text in _legend_lines(grid):
        draw.rectangle([lay.margin, y + 2, lay.margin + 13, y + 15], fill=COLORS[st])
        draw.text((lay.margin + 22, y + 2), text, fill=_TEXT, font=font)
        y += lay.legend_line
    draw.text((lay.margin, y + 2), "the .html version of this picture shows each cell's details on hover",
              fill=_MUTED, font=font)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


_CSS = """
body { margin: 0; background: #fff; color: %(text)s; font: 12px/1.2 ui-monospace, monospace; }
svg { display: block; }
svg text { font: 12px ui-monospace, monospace; fill: %(text)s; }
svg text.muted { fill: %(muted)s; }
svg text.title { font-size: 15px; font-weight: bold; }
rect[data-state]:hover { stroke: #000; stroke-width: 1; }
#tip { position: fixed; display: none; pointer-events: none; white-space: pre; background: #212529;
       color: #fff; padding: 6px 8px; border-radius: 4px; font: 12px/1.35 ui-monospace, monospace; }
"""

# Why a script rather than SVG <title>: the native tooltip waits a second and cannot be styled;
# this one follows the pointer at once and reads the same text from data-tip.
_JS = """
const tip = document.getElementById('tip');
document.querySelectorAll('rect[data-tip]').forEach(el => {
  el.addEventListener('mousemove', ev => {
    tip.textContent = el.dataset.tip;
    tip.style.display = 'block';
    const w = tip.offsetWidth, h = tip.offsetHeight;
    tip.style.left = Math.min(ev.clientX + 14, window.innerWidth - w - 4) + 'px';
    tip.style.top = Math.min(ev.clientY + 14, window.innerHeight - h - 4) + 'px';
  });
  el.addEventListener('mouseleave', () => { tip.style.display = 'none'; });
});
"""


def render_html(grid: CoverageGrid) -> str:
    """The picture as one self-contained HTML page (no network, no external file).

    Every cell is an SVG ``rect`` carrying ``data-state``, ``data-series``, ``data-day`` and the
    hover text in ``data-tip``.
    """
    esc = html.escape
    lay = Layout.for_grid(grid)
    title, sub = _title(grid)
    names = grid.cell_names
    out = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title>",
        f"<style>{_CSS % {'text': _TEXT, 'muted': _MUTED}}</style></head><body>",
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{lay.width}" height="{lay.height}" '
        f'shape-rendering="crispEdges">',
        f'<text class="title" x="{lay.margin}" y="26">{esc(title)}</text>',
        f'<text class="muted" x="{lay.margin}" y="46">{esc(sub)}</text>',
    ]
    for col in range(0, lay.n_cols, lay.axis_step()):
        x0, y0, _, _ = lay.cell_box(0, col)
        out.append(f'<line x1="{x0 + 0.5}" y1="{y0 - 6}" x2="{x0 + 0.5}" y2="{y0 - 2}" stroke="{_MUTED}"/>')
        out.append(f'<text class="muted" x="{x0}" y="{y0 - 10}">{names[col]}</text>')
    for r, row in enumerate(grid.rows):
        _, y0, _, _ = lay.cell_box(r, 0)
        out.append(f'<text x="{lay.margin}" y="{y0 + 13}">{esc(row.label)}</text>')
        series = esc(row.label, quote=True)
        for c, cell in enumerate(row.cells):
            x0, y0, x1, y1 = lay.cell_box(r, c)
            st = cell.state
            out.append(
                f'<rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" fill="{COLORS[st]}" '
                f'data-state="{st.value}" data-series="{series}" data-day="{names[c]}" '
                f'data-tip="{esc(cell_tip(row, cell, names[c]), quote=True)}"/>'
            )
    y = lay.legend_y
    for st, text in _legend_lines(grid):
        out.append(f'<rect x="{lay.margin}" y="{y + 2}" width="14" height="14" fill="{COLORS[st]}" '
                   f'data-legend="{st.value}"/>')
        out.append(f'<text x="{lay.margin + 22}" y="{y + 14}">{esc(text)}</text>')
        y += lay.legend_line
    out.append(f'<text class="muted" x="{lay.margin}" y="{y + 14}">hover a cell for its details</text>')
    out += ["</svg>", '<div id="tip"></div>', f"<script>{_JS}</script>", "</body></html>", ""]
    return "\n".join(out)


def write_picture(grid: CoverageGrid, output: Path) -> str:
    """Write ``grid`` to ``output`` as PNG or HTML (by its suffix), atomically: a failed write
    leaves no file. Returns the format written (``png`` or ``html``).

    Raises:
        DataValidationError: an unknown suffix, or a path that cannot be written.
    """
    kind = output.suffix.lower().lstrip(".")
    if kind not in ("png", "html", "htm"):
        raise DataValidationError(f"--output {output}: write a .png or a .html file")
    parent = output.parent if str(output.parent) else Path(".")
    if output.is_dir():
        raise DataValidationError(f"--output {output}: is a directory")
    if not parent.is_dir():
        raise DataValidationError(f"--output {output}: no such directory {parent}")
    data = render_png(grid) if kind == "png" else render_html(grid).encode("utf-8")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise DataValidationError(f"--output {output}: cannot write there ({exc.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o644)  # mkstemp makes 0600; a picture is for sharing
            fh.write(data)
        os.replace(tmp, output)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise DataValidationError(f"--output {output}: cannot write it ({exc.strerror})") from None
    return "html" if kind in ("html", "htm") else "png"
