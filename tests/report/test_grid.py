"""The pure cell-grid function against a slow, bucket-by-bucket reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marketlake.core.timeframes import parse_timeframe
from marketlake.report.grid import (
    DAY_MS,
    Cell,
    CellState,
    LedgerRange,
    cell_edges,
    cell_row,
)


def reference_row(edges, timeframe, stored_ts, stored_filled, ledger) -> list[Cell]:
    """Every expected bucket (every ms for trades) decided on its own, in plain Python."""
    real = {int(t) for t, f in zip(stored_ts, stored_filled) if not f}
    fills = {int(t) for t, f in zip(stored_ts, stored_filled) if f}
    cells = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        counts: dict[CellState, int] = {}
        if timeframe is None:
            buckets = range(lo, hi)
        else:
            buckets = [int(t) for t in timeframe.opens_between(lo, hi)]
        for t in buckets:
            recorded = [r.status for r in ledger if r.start_ms <= t < r.end_ms]
            assert len(recorded) <= 1
            status = recorded[0] if recorded else None
            if timeframe is not None and t in real:
                state = CellState.PRESENT
            elif timeframe is not None and t in fills:
                state = CellState.FILLED
            elif status == "empty":
                state = CellState.EMPTY
            elif status == "failed":
                state = CellState.FAILED
            elif status == "present" and timeframe is None:
                state = CellState.PRESENT
            else:
                state = CellState.MISSING
            counts[state] = counts.get(state, 0) + 1
        cells.append(Cell(lo, hi, counts))
    return cells


def _ledger(draw, lo: int, hi: int) -> list[LedgerRange]:
    cuts = sorted(set(draw(st.lists(st.integers(lo - 50, hi + 50), max_size=8))))
    out = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        status = draw(st.sampled_from(["present", "empty", "failed", None]))
        if status:
            out.append(LedgerRange(a, b, status))
    return out


@st.composite
def candle_cases(draw):
    tf = parse_timeframe(draw(st.sampled_from(["1s", "5s", "15s"])))  # small numbers, real rules
    d = tf.duration_ms
    lo = draw(st.integers(0, 40)) * 1000 + draw(st.integers(0, 999))
    hi = lo + draw(st.integers(1, 200_000))
    edges = sorted({lo, hi, *draw(st.lists(st.integers(lo, hi), max_size=6))})
    n = draw(st.integers(0, 60))
    ts = [draw(st.integers(lo // d - 2, hi // d + 2)) * d for _ in range(n)]
    ts += draw(st.lists(st.integers(lo, hi), max_size=3))  # off the grid: not buckets
    filled = draw(st.lists(st.booleans(), min_size=len(ts), max_size=len(ts)))
    return edges, tf, ts, filled, _ledger(draw, lo, hi)


@settings(max_examples=300, deadline=None)
@given(candle_cases())
def test_candle_cells_match_the_bucket_by_bucket_reference(case):
    edges, tf, ts, filled, ledger = case
    got = cell_row(edges, tf, np.array(ts, dtype=np.int64), np.array(filled, dtype=bool), ledger)
    assert got == reference_row(edges, tf, ts, filled, ledger)


@st.composite
def trade_cases(draw):
    lo = draw(st.integers(0, 1000))
    hi = lo + draw(st.integers(1, 400))
    edges = sorted({lo, hi, *draw(st.lists(st.integers(lo, hi), max_size=5))})
    return edges, _ledger(draw, lo, hi)


@settings(max_examples=200, deadline=None)
@given(trade_cases())
def test_trade_cells_match_the_reference(case):
    edges, ledger = case
    got = cell_row(edges, None, np.zeros(0, np.int64), np.zeros(0, bool), ledger)
    assert got == reference_row(edges, None, [], [], ledger)


def test_a_month_timeframe_counts_calendar_months():
    tf = parse_timeframe("M")
    jan, feb, mar = 1_704_067_200_000, 1_706_745_600_000, 1_709_251_200_000  # 2024-01/02/03-01
    edges = [jan, feb, mar + 1]
    got = cell_row(edges, tf, np.array([jan], np.int64), np.array([True]), [])
    assert got == reference_row(edges, tf, [jan], [True], [])
    assert [c.state for c in got] == [CellState.FILLED, CellState.MISSING]


def test_the_worst_state_colours_a_cell_and_fractions_add_up():
    cell = Cell(0, 10, {CellState.PRESENT: 7, CellState.EMPTY: 2, CellState.FILLED: 1})
    assert cell.state is CellState.FILLED
    assert cell.fraction(CellState.PRESENT) == pytest.approx(0.7)
    assert Cell(0, 10, {}).state is CellState.NONE
    assert Cell(0, 10, {CellState.FAILED: 1, CellState.MISSING: 1}).state is CellState.MISSING


def test_cells_are_days_up_to_400_days_then_months():
    start = 1_704_067_200_000  # 2024-01-01
    days = cell_edges(start + 3_600_000, start + 3 * DAY_MS)
    assert days == [start + 3_600_000, start + DAY_MS, start + 2 * DAY_MS, start + 3 * DAY_MS]
    assert len(cell_edges(start, start + 400 * DAY_MS)) == 401
    months = cell_edges(start, start + 401 * DAY_MS)  # to 2025-02-05
    assert len(months) == 15 and months[1] == 1_706_745_600_000
    with pytest.raises(ValueError):
        cell_edges(start, start)
