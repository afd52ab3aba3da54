"""The coverage grid read from a lake with known gaps: states, counts, filters, range, text strips."""

from __future__ import annotations

import pytest

from marketlake.errors import DataValidationError
from marketlake.report.coverage import coverage_grid, text_strips
from marketlake.report.grid import CellState
from marketlake.settings import Settings
from marketlake.store import Lake
from tests.report.conftest import D0, DAY, DAYS, EXPECTED, candles, hours


def states(grid):
    return {row.label: [c.state.value for c in row.cells] for row in grid.rows}


def test_every_cell_of_the_gappy_lake_has_its_known_state(gappy_lake):
    grid = coverage_grid(gappy_lake)
    assert (grid.start_ms, grid.end_ms) == (D0, D0 + 6 * DAY)  # from the data and the ledger
    assert grid.cell_names == DAYS and not grid.monthly
    assert list(states(grid)) == list(EXPECTED)  # a symbol's candles by timeframe, then trades
    assert states(grid) == EXPECTED


def test_partial_cells_count_every_state(gappy_lake):
    rows = {r.label: r.cells for r in coverage_grid(gappy_lake).rows}
    btc = rows["bybit/linear/BTCUSDT/60"]
    assert btc[1].counts == {CellState.PRESENT: 12, CellState.EMPTY: 12}
    assert btc[1].fraction(CellState.EMPTY) == 0.5
    assert btc[5].counts == {CellState.PRESENT: 23, CellState.MISSING: 1}  # ledger says present
    assert btc[4].counts == {CellState.FILLED: 24}
    sec = rows["bybit/linear/BTCUSDT/1s"]
    # Day 0: two candles, and the other seconds had no trade while the trades are complete.
    assert sec[0].counts == {CellState.PRESENT: 2, CellState.EMPTY: 86_398}
    # Day 1: the one second with a trade but no candle is the only unexplained hole.
    assert sec[1].counts == {CellState.EMPTY: 86_399, CellState.MISSING: 1}
    assert rows["bybit/linear/BTCUSDT/trades"][3].counts == {CellState.FAILED: DAY}


def test_totals_count_cells_candles_and_trade_time(gappy_lake):
    tot = coverage_grid(gappy_lake).totals()
    assert sum(tot.cells.values()) == 4 * 6
    assert tot.cells[CellState.FILLED] == 1 and tot.cells[CellState.FAILED] == 3
    assert tot.candles[CellState.FILLED] == 24
    assert tot.candles[CellState.PRESENT] == 24 + 12 + 23 + 4 * 24 + 2
    assert sum(tot.candles.values()) == 2 * 6 * 24 + 6 * 86_400
    assert tot.trade_ms == {CellState.PRESENT: 2 * DAY, CellState.EMPTY: DAY, CellState.FAILED: DAY,
                            CellState.MISSING: 2 * DAY}


def test_filters_pick_series_and_the_range_cuts_cells(gappy_lake):
    assert list(states(coverage_grid(gappy_lake, symbols="ETHUSDT"))) == ["bybit/linear/ETHUSDT/60"]
    assert list(states(coverage_grid(gappy_lake, timeframes="trades"))) == ["bybit/linear/BTCUSDT/trades"]
    assert list(states(coverage_grid(gappy_lake, timeframes="1h"))) == [
        "bybit/linear/BTCUSDT/60", "bybit/linear/ETHUSDT/60"
    ]
    grid = coverage_grid(gappy_lake, "BTCUSDT", "60", start="2024-01-02 12:00", end="2024-01-04")
    assert grid.cell_names == ["2024-01-02", "2024-01-03"]
    assert grid.rows[0].cells[0].counts == {CellState.EMPTY: 12}  # only the afternoon is asked for
    assert states(coverage_grid(gappy_lake, exchange="bybit", category="linear")) == EXPECTED


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"exchange": "okx"}, "no stored series matches"),
        ({"category": "futures"}, "invalid category"),
        ({"symbols": "DOGEUSDT"}, "no stored series matches"),
        ({"timeframes": "7"}, "unknown timeframe"),
        ({"start": "2024-01-05", "end": "2024-01-02"}, "must be after"),
        ({"start": "yesterday-ish"}, "cannot read"),
        ({"start": "2030-01-01"}, "nothing is stored or recorded"),
    ],
)
def test_bad_requests_are_one_typed_error(gappy_lake, kwargs, message):
    with pytest.raises(DataValidationError, match=message):
        coverage_grid(gappy_lake, **kwargs)


def test_a_long_range_is_drawn_in_months(gappy_lake):
    grid = coverage_grid(gappy_lake, "ETHUSDT", start="2023-01-01", end="2024-03-01")
    assert grid.monthly and grid.cell_names[0] == "2023-01" and grid.cell_names[-1] == "2024-02"
    dec, jan, feb = grid.rows[0].cells[-3:]
    assert dec.state is CellState.MISSING  # nothing recorded before the first ledger range
    assert jan.counts == {CellState.EMPTY: 48, CellState.PRESENT: 96, CellState.MISSING: 25 * 24}
    assert feb.counts == {CellState.MISSING: 29 * 24}


def test_a_lake_without_a_ledger_is_read_from_its_data_and_left_untouched(tmp_path):
    lake = Lake(tmp_path / "lake", settings=Settings.load(environ={}))
    lake.write_candles(candles(hours(0) + hours(2, 0, 6)), symbol="BTCUSDT", timeframe="60")
    grid = coverage_grid(lake)
    assert [c.counts for c in grid.rows[0].cells] == [
        {CellState.PRESENT: 24}, {CellState.MISSING: 24}, {CellState.PRESENT: 6}
    ]
    assert not lake.has_ledger


def test_a_missing_lake_is_an_error_and_is_not_created(tmp_path):
    with pytest.raises(DataValidationError, match="no lake at"):
        coverage_grid(Lake(tmp_path / "typo", settings=Settings.load(environ={})))
    assert not (tmp_path / "typo").exists()


def test_text_strips_show_one_character_per_day(gappy_lake):
    lines = text_strips(coverage_grid(gappy_lake), width=100)
    assert lines[0] == "coverage, one character per day: 2024-01-01 .. 2024-01-06"
    assert lines[1:5] == [
        "bybit/linear/BTCUSDT/1s      |· ·✗  |",
        "bybit/linear/BTCUSDT/60      |█·✗ ▒ |",
        "bybit/linear/BTCUSDT/trades  |██·✗  |",
        "bybit/linear/ETHUSDT/60      |··████|",
    ]
    assert "█ present" in lines[5] and "' ' missing" in lines[5]
    narrow = text_strips(coverage_grid(gappy_lake), width=4)
    assert "(last 4 of 6)" in narrow[0] and narrow[2].endswith("…✗ ▒ |")
