"""The coverage pictures: PNG pixels, the HTML's cells, and the HTML as headless Chromium draws it."""

from __future__ import annotations

import html.parser
import io
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from PIL import Image

from marketlake.cli.app import main
from marketlake.report.coverage import coverage_grid
from marketlake.report.grid import CellState
from marketlake.report.picture import COLORS, Layout, render_html, render_png
from tests.report.conftest import DAYS, EXPECTED

RGB = {st.value: tuple(int(COLORS[st][i:i + 2], 16) for i in (1, 3, 5)) for st in CellState}


def assert_cells_coloured(img: Image.Image, layout: Layout, tolerance: int = 0) -> None:
    """Every cell of :data:`EXPECTED` has its state's colour at its centre (and at a corner)."""
    img = img.convert("RGB")
    for r, (label, row) in enumerate(EXPECTED.items()):
        for c, state in enumerate(row):
            x0, y0, x1, y1 = layout.cell_box(r, c)
            for x, y in (layout.cell_center(r, c), (x0 + 1, y0 + 1), (x1 - 2, y1 - 2)):
                got = img.getpixel((x, y))
                assert max(abs(a - b) for a, b in zip(got, RGB[state])) <= tolerance, (
                    f"{label} {DAYS[c]} at {(x, y)}: {got}, expected {state} {RGB[state]}"
                )
            # The gap right of a cell is background, so cells do not run into each other.
            assert img.getpixel((x1, (y0 + y1) // 2)) == (255, 255, 255)


def test_the_png_has_each_cell_in_its_state_colour(gappy_lake):
    grid = coverage_grid(gappy_lake)
    img = Image.open(io.BytesIO(render_png(grid)))
    layout = Layout.for_grid(grid)
    assert img.size == (layout.width, layout.height)
    assert_cells_coloured(img, layout)
    # The legend's swatches are drawn too, in legend order.
    for i, st in enumerate(("present", "empty", "filled", "failed", "missing", "none")):
        y = layout.legend_y + i * layout.legend_line + 8
        assert img.convert("RGB").getpixel((layout.margin + 6, y)) == RGB[st]


class _Cells(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.cells: list[dict[str, str | None]] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        if tag == "rect" and dict(attrs).get("data-state"):
            self.cells.append(dict(attrs))


def test_the_html_is_self_contained_and_each_cell_carries_its_details(gappy_lake):
    page = render_html(coverage_grid(gappy_lake))
    parser = _Cells()
    parser.feed(page)
    # One file: no external script, style sheet, image or font; nothing fetched.
    assert not parser.tags & {"link", "img", "iframe", "object"}
    assert "src=" not in page and "url(" not in page and "https://" not in page
    assert page.count("http://") == 1  # the SVG namespace, which is a name, not a request
    got = {}
    for cell in parser.cells:
        got.setdefault(cell["data-series"], []).append((cell["data-day"], cell["data-state"]))
    assert got == {label: list(zip(DAYS, row)) for label, row in EXPECTED.items()}
    tip = next(c["data-tip"] for c in parser.cells
               if c["data-series"] == "bybit/linear/BTCUSDT/60" and c["data-day"] == "2024-01-02")
    assert tip.splitlines() == [
        "bybit/linear/BTCUSDT/60  2024-01-02", "state: empty",
        "present: 12 candles (50.0%)", "empty: 12 candles (50.0%)",
    ]


def _chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


@pytest.mark.timeout(120)
def test_chromium_draws_the_html_cells_in_their_colours(gappy_lake, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("headless Chromium not installed (apt-get install chromium; .ci/run does)")
    grid = coverage_grid(gappy_lake)
    layout = Layout.for_grid(grid)
    page = render_html(grid)
    img = _screenshot(browser, page, tmp_path / "plain")
    assert img.size == (1200, 800)
    assert_cells_coloured(img, layout, tolerance=2)

    # Hovering a cell (a synthetic mouse move at its centre) opens the tooltip beside the
    # pointer: its dark background appears where the page was white.
    x, y = layout.cell_center(1, 2)
    probe = (x + 30, y + 30)
    assert img.getpixel(probe) == (255, 255, 255)
    move = (
        "<script>const el = document.querySelector('rect[data-series=\"bybit/linear/BTCUSDT/60\"]"
        f"[data-day=\"2024-01-03\"]'); el.dispatchEvent(new MouseEvent('mousemove', "
        f"{{clientX: {x}, clientY: {y}, bubbles: true}}));</script></body>"
    )
    hovered = _screenshot(browser, page.replace("</body>", move), tmp_path / "hover")
    assert hovered.getpixel(probe) == (0x21, 0x25, 0x29)


def _screenshot(browser: str, page: str, where: Path) -> Image.Image:
    where.mkdir()
    (where / "coverage.html").write_text(page, encoding="utf-8")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", "--force-device-scale-factor=1", f"--user-data-dir={profile}",
             f"--screenshot={where / 'shot.png'}", "--window-size=1200,800",
             (where / "coverage.html").as_uri()],
            check=True, capture_output=True, timeout=90,
        )
    return Image.open(where / "shot.png").convert("RGB")


def run(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_command_writes_png_and_html_and_info_prints_the_strips(gappy_lake, tmp_path, capsys):
    lake = str(gappy_lake.root)
    code, out, err = run(capsys, "coverage", "--lake", lake, "--output", str(tmp_path / "c.png"))
    assert code == 0, err
    assert "4 series x 6 cells" in out and "1 filled" in out
    assert Image.open(tmp_path / "c.png").format == "PNG"
    html_out = str(tmp_path / "c.html")
    code, out, _ = run(capsys, "coverage", "--lake", lake, "--symbols", "ETHUSDT", "-o", html_out)
    assert code == 0 and (tmp_path / "c.html").read_text().count('data-state="') == 6
    code, out, _ = run(capsys, "coverage", "--lake", lake, "--timeframes", "60")
    assert code == 0 and "bybit/linear/BTCUSDT/60  |█·✗ ▒ |" in out
    code, out, _ = run(capsys, "info", "--lake", lake)
    assert code == 0 and "bybit/linear/ETHUSDT/60      |··████|" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--output", "{tmp}/c.txt"], "write a .png or a .html"),
        (["--output", "{tmp}/nodir/c.png"], "no such directory"),
        (["--output", "{tmp}"], "write a .png"),
        (["--output", "{tmp}/dir.png"], "is a directory"),
        (["--start", "soon", "--output", "{tmp}/c.png"], "cannot read"),
        (["--start", "2024-01-05", "--end", "2024-01-01", "--output", "{tmp}/c.png"], "must be after"),
        (["--symbols", "NOPE", "--output", "{tmp}/c.png"], "no stored series matches"),
        (["--timeframes", "7", "--output", "{tmp}/c.png"], "unknown timeframe"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(gappy_lake, tmp_path, capsys, args, message):
    (tmp_path / "dir.png").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code, out, err = run(capsys, "coverage", "--lake", str(gappy_lake.root), *args)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_mistyped_lake_is_reported_and_not_created(tmp_path, capsys):
    code, _, err = run(capsys, "coverage", "--lake", str(tmp_path / "typo"), "-o", str(tmp_path / "c.png"))
    assert code == 2 and "no lake at" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []
