"""Names that end up in paths are allowlisted; nothing is ever created outside the lake root."""

import os
from pathlib import Path

import pytest

from marketlake.core.symbols import parse_symbols, validate_category, validate_exchange, validate_symbol
from marketlake.errors import InvalidSymbolError, InvalidTimeframeError
from marketlake.store.layout import SeriesId
from tests.helpers import candles

HOSTILE_SYMBOLS = [
    "../x",
    "..",
    "BTC/USDT",
    "BTC\\USDT",
    "BTC\x00USDT",
    "A" * 300,
    "btcusdt",
    "BTCUSDT\n",
    " BTCUSDT",
    "ВТСUSDT",  # Cyrillic look-alikes
    "ＢＴＣUSDT",  # full-width
    "BTC USDT",
    "-BTC",
    "BTC-",
    "BTC--USDT",
    "",
    "symbol=BTC",
    "%2e%2e",
    "C:",
]


@pytest.mark.parametrize("bad", HOSTILE_SYMBOLS)
def test_hostile_symbols_are_rejected(bad):
    with pytest.raises(InvalidSymbolError):
        validate_symbol(bad)


@pytest.mark.parametrize("good", ["BTCUSDT", "1000PEPEUSDT", "BTC-27DEC24", "BTC-27DEC24-100000-C", "X"])
def test_real_symbol_shapes_are_accepted(good):
    assert validate_symbol(good) == good


@pytest.mark.parametrize("bad", ["Bybit", "../b", "by bit", "", "b" * 40])
def test_exchange_names_are_allowlisted(bad):
    with pytest.raises(InvalidSymbolError):
        validate_exchange(bad)


@pytest.mark.parametrize("bad", ["futures", "../linear", "LINEAR", ""])
def test_categories_are_allowlisted(bad):
    with pytest.raises(InvalidSymbolError):
        validate_category(bad)


def test_parse_symbols_validates_every_item():
    assert parse_symbols("BTCUSDT, ETHUSDT,,BTCUSDT") == ["BTCUSDT", "ETHUSDT"]
    with pytest.raises(InvalidSymbolError):
        parse_symbols("BTCUSDT,../etc")


def _all_paths(base: Path) -> set[str]:
    return {os.path.join(d, f) for d, ds, fs in os.walk(base) for f in fs + ds}


@pytest.mark.parametrize("bad", HOSTILE_SYMBOLS)
def test_writing_under_a_hostile_symbol_creates_nothing_anywhere(tmp_path, lake, bad):
    before = _all_paths(tmp_path)
    with pytest.raises(InvalidSymbolError):
        lake.write_candles(candles(3), symbol=bad, timeframe="1")
    if bad.strip() and bad.strip() != "BTCUSDT":  # comma lists are stripped: " BTCUSDT" is fine to read
        with pytest.raises(InvalidSymbolError):
            lake.read_candles(bad)
    assert _all_paths(tmp_path) == before


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"exchange": "../../etc"}, InvalidSymbolError),
        ({"category": "../x"}, InvalidSymbolError),
        ({"timeframe": "../1"}, InvalidTimeframeError),
    ],
)
def test_hostile_exchange_category_or_timeframe_creates_nothing(tmp_path, lake, kwargs, error):
    before = _all_paths(tmp_path)
    args = {"symbol": "BTCUSDT", "timeframe": "1", **kwargs}
    with pytest.raises(error):
        lake.write_candles(candles(3), **args)
    assert _all_paths(tmp_path) == before


def test_series_paths_stay_inside_the_root(tmp_path):
    sid = SeriesId.of("candles", exchange="bybit", category="linear", symbol="BTCUSDT", timeframe="1")
    path = sid.partition_dir(tmp_path, "2024-01")
    assert path.resolve().is_relative_to(tmp_path.resolve())
    with pytest.raises(ValueError):
        sid.partition_dir(tmp_path, "../../etc")


def test_stored_directories_with_odd_names_are_skipped_not_followed(tmp_path, lake):
    lake.write_candles(candles(3), symbol="BTCUSDT", timeframe="1")
    odd = lake.root / "candles" / "exchange=bybit" / "category=linear" / "symbol=..%2Fx"
    odd.mkdir(parents=True)
    assert lake.read_candles().get_column("symbol").unique().to_list() == ["BTCUSDT"]
