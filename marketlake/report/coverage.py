"""The coverage picture's data: which series, which range, and each cell's state, from the lake.

:func:`coverage_grid` reads what the picture needs through the public :class:`~marketlake.Lake`
API (the stored series, the open times and ``filled`` flags of the candles, the ledger's ranges)
and hands it to the pure :func:`~marketlake.report.grid.cell_row`. :func:`text_strips` renders the
grid as one line of block characters per series (``marketlake info``); the PNG and HTML pictures
are in :mod:`marketlake.report.picture`.

Candles built from trades (``1s``/``5s``/``15s``) follow ``check``'s rule: a bucket without a
candle is verified empty when the trades there are complete (ledger ``present``/``empty``) and
none of them falls in it (no trade, no candle); it is failed where the trades' ledger says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from marketlake.core.intervals import subtract
from marketlake.core.symbols import parse_symbols, validate_category, validate_exchange
from marketlake.core.timeframes import Timeframe, parse_timeframe
from marketlake.core.timeutil import TimeLike, ms_to_text, to_ms
from marketlake.errors import DataValidationError
from marketlake.report.grid import (
    SEVERITY,
    CellState,
    LedgerRange,
    Row,
    cell_edges,
    cell_name,
    cell_row,
    is_monthly,
)

if TYPE_CHECKING:
    from marketlake.store import Lake

__all__ = ["CoverageGrid", "SeriesKey", "Totals", "coverage_grid", "text_strips", "STRIP_CHARS"]

CANDLES, TRADES = "candles", "trades"

#: One character per cell state for terminal strips.
STRIP_CHARS: dict[CellState, str] = {
    CellState.PRESENT: "█",
    CellState.FILLED: "▒",
    CellState.EMPTY: "·",
    CellState.FAILED: "✗",
    CellState.MISSING: " ",
    CellState.NONE: "-",
}


@dataclass(frozen=True, slots=True)
class SeriesKey:
    """A series as the picture names it (``timeframe`` is ``""`` for trades)."""

    dataset: str
    exchange: str
    category: str
    symbol: str
    timeframe: str

    @property
    def label(self) -> str:
        """``bybit/linear/BTCUSDT/1`` for candles, ``bybit/linear/BTCUSDT/trades`` for trades."""
        last = self.timeframe if self.dataset == CANDLES else TRADES
        return f"{self.exchange}/{self.category}/{self.symbol}/{last}"


@dataclass(slots=True)
class Totals:
    """Per state: cells (of every series), candles (candle series) and trade time (ms)."""

    cells: dict[CellState, int] = field(default_factory=dict)
    candles: dict[CellState, int] = field(default_factory=dict)
    trade_ms: dict[CellState, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CoverageGrid:
    """Every selected series over one range, cut into the same cells.

    Attributes:
        start_ms: Inclusive start of the range.
        end_ms: Exclusive end.
        edges: Cell boundaries (see :func:`~marketlake.report.grid.cell_edges`).
        rows: One per series, by exchange, category and symbol; a symbol's candles from the
            shortest timeframe, then its trades.
    """

    start_ms: int
    end_ms: int
    edges: list[int]
    rows: list[Row]

    @property
    def monthly(self) -> bool:
        """True when a cell is a calendar month rather than a UTC day."""
        return is_monthly(self.edges)

    @property
    def cell_names(self) -> list[str]:
        """``YYYY-MM-DD`` (or ``YYYY-MM``) per cell: the ``data-day`` of the HTML cells."""
        return [cell_name(e, self.monthly) for e in self.edges[:-1]]

    def totals(self) -> Totals:
        """Cells per (worst) state, and candles and trade time per state, over every row."""
        out = Totals()
        for row in self.rows:
            bucket = out.candles if row.dataset == CANDLES else out.trade_ms
            for cell in row.cells:
                st = cell.state
                out.cells[st] = out.cells.get(st, 0) + 1
                for s, n in cell.counts.items():
                    bucket[s] = bucket.get(s, 0) + n
        return out


def _timeframe_names(timeframes: str | Sequence[str] | None) -> tuple[set[str] | None, bool]:
    """Canonical candle timeframe names asked for (None: all) and whether trades are asked for."""
    if timeframes is None:
        return None, True
    items = timeframes.split(",") if isinstance(timeframes, str) else list(timeframes)
    names: set[str] = set()
    trades = False
    for item in (i.strip() for i in items):
        if not item:
            continue
        if item.lower() == TRADES:
            trades = True
        else:
            names.add(parse_timeframe(item).name)
    if not names and not trades:
        raise DataValidationError("--timeframes names no timeframe")
    return names, trades


def _select(
    stored: pl.DataFrame, ledger: pl.DataFrame, symbols: str | Sequence[str] | None,
    timeframes: str | Sequence[str] | None, exchange: str | None, category: str | None,
) -> list[SeriesKey]:
    columns = ("dataset", "exchange", "category", "symbol", "timeframe")
    # The picture draws trade candles and trades; the perpetual datasets (funding, mark/index/
    # premium candles, open interest) are reported by `check`, not drawn.
    keys = {
        SeriesKey(d, e, c, s, t or "")
        for frame in (stored, ledger)
        for d, e, c, s, t in frame.select(columns).unique().iter_rows()
        if d in (CANDLES, TRADES)
    }
    syms = set(parse_symbols(symbols)) if symbols is not None else None
    if syms is not None and not syms:
        raise DataValidationError("--symbols names no symbol")
    tf_names, with_trades = _timeframe_names(timeframes)
    out = []
    # A symbol's series together, candles from the shortest timeframe, then its trades.
    def position(k: SeriesKey) -> tuple[str, str, str, bool, int]:
        length = parse_timeframe(k.timeframe).duration_ms if k.dataset == CANDLES else 0
        return (k.exchange, k.category, k.symbol, k.dataset == TRADES, length)

    for k in sorted(keys, key=position):
        if (exchange and k.exchange != exchange) or (category and k.category != category):
            continue
        if syms is not None and k.symbol not in syms:
            continue
        if k.dataset == TRADES and not with_trades:
            continue
        if k.dataset == CANDLES and tf_names is not None and k.timeframe not in tf_names:
            continue
        out.append(k)
    return out


def _bounds(keys: list[SeriesKey], stored: pl.DataFrame, ledger: pl.DataFrame) -> tuple[int, int] | None:
    """The earliest and latest (exclusive) time anything of ``keys`` is stored or recorded."""
    lows: list[int] = []
    highs: list[int] = []
    wanted = {(k.dataset, k.exchange, k.category, k.symbol, k.timeframe) for k in keys}
    for row in stored.iter_rows(named=True):
        key = (row["dataset"], row["exchange"], row["category"], row["symbol"], row["timeframe"] or "")
        if key not in wanted or row["first_ts"] is None:
            continue
        lows.append(to_ms(row["first_ts"]))
        last = to_ms(row["last_ts"])
        # A candle covers its bucket: the range ends at the close of the last one.
        highs.append(parse_timeframe(key[4]).next_open(last) if key[0] == CANDLES else last + 1)
    for row in ledger.iter_rows(named=True):
        key = (row["dataset"], row["exchange"], row["category"], row["symbol"], row["timeframe"] or "")
        if key in wanted:
            lows.append(row["start_ms"])
            highs.append(row["end_ms"])
    return (min(lows), max(highs)) if lows else None


def _ledger_ranges(ledger: pl.DataFrame, key: SeriesKey, lo: int, hi: int) -> list[LedgerRange]:
    part = ledger.filter(
        (pl.col("dataset") == key.dataset) & (pl.col("exchange") == key.exchange)
        & (pl.col("category") == key.category) & (pl.col("symbol") == key.symbol)
        & (pl.col("timeframe") == key.timeframe) & (pl.col("end_ms") > lo) & (pl.col("start_ms") < hi)
    )
    return [LedgerRange(s, e, st) for s, e, st in part.select("start_ms", "end_ms", "status").iter_rows()]


def _from_trades(lake: Lake, ledger: pl.DataFrame, key: SeriesKey, tf: Timeframe, lo: int, hi: int,
                 own: list[LedgerRange]) -> list[LedgerRange]:
    """Explanations for holes of a candle series built from trades (see the module doc), outside
    the series' own ledger ranges (which win). One range per quiet stretch of the trades."""
    tkey = SeriesKey(TRADES, key.exchange, key.category, key.symbol, "")
    trades = _ledger_ranges(ledger, tkey, lo, hi)
    if not trades:
        return []
    d = tf.duration_ms
    busy = (
        lake.scan_trades(key.symbol, lo, hi, exchange=key.exchange, category=key.category)
        .select(((pl.col("ts").dt.epoch("ms") // d) * d).alias("b")).unique().sort("b")
        .collect().get_column("b").to_numpy()
    )
    derived: list[LedgerRange] = []
    for r in trades:
        s, e = max(lo, r.start_ms), min(hi, r.end_ms)
        if r.status == "failed":
            derived.append(LedgerRange(s, e, "failed"))
            continue
        inside = busy[(busy + d > s) & (busy < e)]
        gap_starts = np.concatenate(([s], inside + d))
        gap_ends = np.concatenate((inside, [e]))
        keep = gap_starts < gap_ends
        derived.extend(LedgerRange(int(a), int(b), "empty") for a, b in zip(gap_starts[keep], gap_ends[keep]))
    if not own:
        return derived
    taken = [(r.start_ms, r.end_ms) for r in own]
    return [
        LedgerRange(a, b, r.status) for r in derived for a, b in subtract([(r.start_ms, r.end_ms)], taken)
    ]


def coverage_grid(
    lake: Lake,
    symbols: str | Sequence[str] | None = None,
    timeframes: str | Sequence[str] | None = None,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    *,
    exchange: str | None = None,
    category: str | None = None,
) -> CoverageGrid:
    """The coverage grid of the lake's series (every exchange and category unless filtered).

    Args:
        lake: The lake; nothing is written to it, and a lake without a ledger is read from its
            data alone.
        symbols: Symbols to show (comma-separated or a list); all when None.
        timeframes: Candle timeframes to show; the word ``trades`` selects trades series. All
            series (candles and trades) when None.
        start: Inclusive start; default the earliest stored or recorded time of the selection.
        end: Exclusive end; default the latest.
        exchange: Only this exchange; all when None.
        category: Only this category; all when None.

    Raises:
        DataValidationError: a bad name or time, an empty range, or nothing matches.
    """
    if isinstance(lake.root, Path) and not lake.root.is_dir():
        raise DataValidationError(f"no lake at {lake.root}")
    # Valid names or one clear error (a typo would otherwise just match nothing).
    exchange = None if exchange is None else validate_exchange(exchange)
    category = None if category is None else validate_category(category)
    lo = None if start is None else to_ms(start, what="--start")
    hi = None if end is None else to_ms(end, what="--end")
    if lo is not None and hi is not None and hi <= lo:
        raise DataValidationError(f"--end ({ms_to_text(hi)}) must be after --start ({ms_to_text(lo)})")
    stored = lake.series()
    # ``lake.ledger`` would create one; a read-only report must not, so ask first.
    ledger = lake.ledger.table() if lake.has_ledger else pl.DataFrame(
        schema={"dataset": pl.String, "exchange": pl.String, "category": pl.String, "symbol": pl.String,
                "timeframe": pl.String, "start_ms": pl.Int64, "end_ms": pl.Int64, "status": pl.String}
    )
    keys = _select(stored, ledger, symbols, timeframes, exchange, category)
    if not keys:
        raise DataValidationError("no stored series matches the filters (see `marketlake info`)")
    if lo is None or hi is None:
        known = _bounds(keys, stored, ledger)
        if known is None:
            raise DataValidationError("the selected series hold nothing yet")
        lo = known[0] if lo is None else lo
        hi = known[1] if hi is None else hi
        if hi <= lo:
            raise DataValidationError(
                f"nothing is stored or recorded between {ms_to_text(lo)} and {ms_to_text(hi)}"
            )
    edges = cell_edges(lo, hi)
    rows = []
    for key in keys:
        own = _ledger_ranges(ledger, key, lo, hi)
        if key.dataset == TRADES:
            cells = cell_row(edges, None, np.zeros(0, np.int64), np.zeros(0, bool), own)
        else:
            tf = parse_timeframe(key.timeframe)
            frame = (
                lake.scan_candles(key.symbol, tf, lo, hi, exchange=key.exchange, category=key.category)
                .select(pl.col("ts").dt.epoch("ms"), pl.col("filled").fill_null(False))
                .collect()
            )
            explain = own + (_from_trades(lake, ledger, key, tf, lo, hi, own) if not tf.is_bybit else [])
            cells = cell_row(
                edges, tf, frame.get_column("ts").to_numpy(), frame.get_column("filled").to_numpy(), explain
            )
        rows.append(Row(key.label, key.dataset, cells))
    return CoverageGrid(lo, hi, edges, rows)


def text_strips(grid: CoverageGrid, width: int = 100) -> list[str]:
    """The grid as text: a header, one line per series (one character per cell, the newest
    ``width`` cells when there are more), and a legend.

    Example line: ``bybit/linear/BTCUSDT/1  |████·· ✗▒█|``.
    """
    label_w = max(len(r.label) for r in grid.rows) if grid.rows else 0
    names = grid.cell_names
    shown = min(width, len(names))
    cut = len(names) - shown
    unit = "month" if grid.monthly else "day"
    more = f" (last {shown} of {len(names)})" if cut else ""
    lines = [f"coverage, one character per {unit}{more}: {names[cut]} .. {names[-1]}"]
    for row in grid.rows:
        strip = "".join(STRIP_CHARS[c.state] for c in row.cells[cut:])
        lines.append(f"{row.label:<{label_w}}  {'…' if cut else '|'}{strip}|")
    legend = "  ".join(
        f"{STRIP_CHARS[s]!r} {s.value}" if s is CellState.MISSING else f"{STRIP_CHARS[s]} {s.value}"
        for s in reversed(SEVERITY)
    )
    lines.append(f"{'':<{label_w}}  {legend}  {STRIP_CHARS[CellState.NONE]} no candle opens")
    return lines
