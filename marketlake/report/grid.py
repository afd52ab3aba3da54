"""The coverage grid: a pure function from expected buckets, stored candles and ledger ranges to cells.

A *row* is one series; a *cell* is one period of it (a UTC day, or a calendar month for long
ranges). Every expected bucket of a cell gets exactly one state:

* ``present`` — a stored candle (``filled = false``) opens at the bucket;
* ``filled`` — the stored candle there is a flat fill (``filled = true``, written by ``repair --fill``);
* ``empty`` — no candle, and the ledger records the bucket verified empty (outage, before listing);
* ``failed`` — no candle, and the ledger records a failed fetch there;
* ``missing`` — no candle and no explanation (nothing recorded, or ``present`` recorded but the
  candle is gone).

Stored data wins over the ledger: a candle is present whatever the ledger says. Trades series
have no buckets: their unit is the millisecond, and their state comes from the ledger alone
(``present`` there means the trades are stored). A cell's colour is its *worst* state
(:data:`SEVERITY`); its counts give the fractions.

Nothing here reads the lake: :func:`cell_row` takes arrays and ranges, so it can be checked
against a bucket-by-bucket reference (``tests/report/test_grid.py``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from marketlake.core.timeframes import Timeframe

__all__ = [
    "DAY_MS",
    "MONTH_CELLS_AFTER_DAYS",
    "SEVERITY",
    "Cell",
    "CellState",
    "LedgerRange",
    "Row",
    "cell_edges",
    "cell_row",
]

DAY_MS = 86_400_000

#: Ranges longer than this many days are drawn one cell per calendar month: a day grid of more
#: than ~400 columns no longer fits a screen (nor a terminal line), and a month still shows
#: where the holes are.
MONTH_CELLS_AFTER_DAYS = 400


class CellState(StrEnum):
    """The state of a bucket, and of a cell (its worst bucket)."""

    PRESENT = "present"
    EMPTY = "empty"
    FILLED = "filled"
    FAILED = "failed"
    MISSING = "missing"
    #: No bucket opens in the cell (a weekly series on a Tuesday, a range that ends before it).
    NONE = "none"


#: Worst first: a cell takes the colour of its first state here with a non-zero count. Unexplained
#: holes are the worst (nobody knows why), then failed fetches (known, still missing), then
#: fills (data made up), then verified-empty buckets (the exchange's own gap: nothing to do).
SEVERITY: tuple[CellState, ...] = (
    CellState.MISSING,
    CellState.FAILED,
    CellState.FILLED,
    CellState.EMPTY,
    CellState.PRESENT,
)


@dataclass(frozen=True, slots=True)
class LedgerRange:
    """One ledger range ``[start_ms, end_ms)`` of open times, with status present/empty/failed."""

    start_ms: int
    end_ms: int
    status: str


@dataclass(frozen=True, slots=True)
class Cell:
    """One period of one series.

    Attributes:
        start_ms: Inclusive start of the period (clipped to the requested range).
        end_ms: Exclusive end.
        counts: Buckets per state (milliseconds for trades); states with none are left out.
    """

    start_ms: int
    end_ms: int
    counts: dict[CellState, int] = field(default_factory=dict)

    @property
    def expected(self) -> int:
        """Every bucket of the cell (ms for trades)."""
        return sum(self.counts.values())

    @property
    def state(self) -> CellState:
        """The worst state present in the cell, ``NONE`` when no bucket opens in it."""
        for st in SEVERITY:
            if self.counts.get(st, 0) > 0:
                return st
        return CellState.NONE

    def fraction(self, state: CellState) -> float:
        """Share of the cell's buckets in ``state`` (0 when the cell has none)."""
        n = self.expected
        return self.counts.get(state, 0) / n if n else 0.0


@dataclass(frozen=True, slots=True)
class Row:
    """One series of the grid.

    Attributes:
        label: e.g. ``candles bybit/linear/BTCUSDT/1`` or ``trades bybit/linear/BTCUSDT``.
        dataset: ``candles`` or ``trades``.
        cells: One per period, in time order (same periods for every row of a grid).
    """

    label: str
    dataset: str
    cells: list[Cell]


def cell_edges(start_ms: int, end_ms: int) -> list[int]:
    """Cell boundaries for ``[start_ms, end_ms)``: UTC days, or calendar months when the range is
    longer than :data:`MONTH_CELLS_AFTER_DAYS` days. The first and last edges are the range
    itself (a range starting at noon has a half first cell).

    Raises:
        ValueError: ``end_ms <= start_ms``.
    """
    if end_ms <= start_ms:
        raise ValueError("the range is empty: end must be after start")
    inner: list[int] = []
    if (end_ms - start_ms) <= MONTH_CELLS_AFTER_DAYS * DAY_MS:
        t = (start_ms // DAY_MS + 1) * DAY_MS
        inner = list(range(t, end_ms, DAY_MS))
    else:
        month = np.datetime64(start_ms, "ms").astype("datetime64[M]") + 1
        while (t := int(month.astype("datetime64[ms]").astype(np.int64))) < end_ms:
            inner.append(t)
            month += 1
    return [start_ms, *inner, end_ms]


def is_monthly(edges: Sequence[int]) -> bool:
    """True when ``edges`` (from :func:`cell_edges`) are months rather than days."""
    return edges[-1] - edges[0] > MONTH_CELLS_AFTER_DAYS * DAY_MS


def cell_name(start_ms: int, monthly: bool) -> str:
    """``2024-01-31`` for a day cell, ``2024-01`` for a month cell (UTC)."""
    d = dt.datetime.fromtimestamp(start_ms / 1000, tz=dt.timezone.utc)
    return d.strftime("%Y-%m") if monthly else d.strftime("%Y-%m-%d")


def _opens_in(tf: Timeframe, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per segment ``[a[i], b[i])``: how many buckets of ``tf`` open in it."""
    if tf.kind == "month":
        return np.array([tf.count_between(int(x), int(y)) for x, y in zip(a, b)], dtype=np.int64)
    d, off = tf.duration_ms, tf.offset_ms
    first = -((-(a - off)) // d) * d + off  # ceil to the bucket grid
    return np.maximum(0, (b - 1 - first) // d + 1)


def cell_row(
    edges: Sequence[int],
    timeframe: Timeframe | None,
    stored_ts: np.ndarray,
    stored_filled: np.ndarray,
    ledger: Sequence[LedgerRange],
) -> list[Cell]:
    """The cells of one series.

    The range ``[edges[0], edges[-1])`` is cut at every cell edge and every ledger boundary into
    segments with one ledger status each; in a segment, buckets with a stored candle are present
    or filled, and the rest take the ledger's explanation. Vectorised over segments, so a year of
    1s candles costs arrays, not a Python loop per bucket.

    Args:
        edges: Increasing cell boundaries (epoch ms); ``len(edges) - 1`` cells.
        timeframe: The candle timeframe, or ``None`` for a trades series (unit: ms, state from the
            ledger alone; ``stored_ts`` is ignored).
        stored_ts: Open times of the stored candles (epoch ms, any order, may repeat; candles not
            on the timeframe's grid are not buckets and are ignored).
        stored_filled: Per stored candle, True when it is a fill.
        ledger: Non-overlapping ranges of the series (any order).

    Returns:
        One :class:`Cell` per pair of consecutive edges.
    """
    lo, hi = int(edges[0]), int(edges[-1])
    ranges = sorted((r for r in ledger if r.end_ms > lo and r.start_ms < hi), key=lambda r: r.start_ms)
    cuts = {int(e) for e in edges}
    for r in ranges:
        cuts.update((max(lo, r.start_ms), min(hi, r.end_ms)))
    bounds = np.array(sorted(cuts), dtype=np.int64)
    a, b = bounds[:-1], bounds[1:]

    # The ledger status of each segment (ranges do not overlap, and segments never straddle a
    # range boundary, so the range starting at or before a segment's start decides it).
    starts = np.array([max(lo, r.start_ms) for r in ranges], dtype=np.int64)
    ends = np.array([min(hi, r.end_ms) for r in ranges], dtype=np.int64)
    idx = np.searchsorted(starts, a, side="right") - 1
    inside = (idx >= 0) & (ends[np.maximum(idx, 0)] > a) if ranges else np.zeros(a.size, dtype=bool)
    status = np.array([r.status for r in ranges] + [""], dtype=object)[np.where(inside, idx, -1)]

    if timeframe is None:
        expected = b - a
        n_present = n_filled = np.zeros(a.size, dtype=np.int64)
    else:
        expected = _opens_in(timeframe, a, b)
        ts = np.asarray(stored_ts, dtype=np.int64)
        filled = np.asarray(stored_filled, dtype=bool)
        on_grid = timeframe.floor_array(ts) == ts if ts.size else np.zeros(0, dtype=bool)
        ts, filled = ts[on_grid], filled[on_grid]
        # One state per bucket: a repeated open counts once, a real candle beating a fill.
        order = np.lexsort((filled, ts))
        ts, filled = ts[order], filled[order]
        first_of_ts = np.ones(ts.size, dtype=bool)
        first_of_ts[1:] = ts[1:] != ts[:-1]
        ts, filled = ts[first_of_ts], filled[first_of_ts]
        pos = np.searchsorted(ts, bounds)
        n_stored = np.diff(pos)
        cum_filled = np.concatenate(([0], np.cumsum(filled, dtype=np.int64)))
        n_filled = np.diff(cum_filled[pos])
        n_present = n_stored - n_filled
    lacking = expected - n_present - n_filled

    cell_of = np.searchsorted(np.asarray(edges, dtype=np.int64), a, side="right") - 1
    n_cells = len(edges) - 1
    per_state: dict[CellState, np.ndarray] = {}

    def add(state: CellState, values: np.ndarray) -> None:
        per_state[state] = per_state.get(state, np.zeros(n_cells, dtype=np.int64)) + np.bincount(
            cell_of, weights=values, minlength=n_cells
        ).astype(np.int64)

    add(CellState.PRESENT, n_present)
    add(CellState.FILLED, n_filled)
    add(CellState.EMPTY, np.where(status == "empty", lacking, 0))
    add(CellState.FAILED, np.where(status == "failed", lacking, 0))
    # Without a candle, ``present`` in the ledger explains nothing for candles (the candle was
    # lost after the fetch); for trades it is the only evidence that they are stored.
    present_means = CellState.PRESENT if timeframe is None else CellState.MISSING
    add(present_means, np.where(status == "present", lacking, 0))
    add(CellState.MISSING, np.where(status == "", lacking, 0))
    return [
        Cell(
            int(edges[i]), int(edges[i + 1]),
            {st: int(v[i]) for st, v in per_state.items() if v[i] > 0},
        )
        for i in range(n_cells)
    ]
