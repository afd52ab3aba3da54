"""Bybit's documented example responses of the perpetual endpoints decode to the exact values shown.

The examples are recorded verbatim under ``tests/golden/data/bybit_docs`` (provenance in its
``SOURCES.md``); the recorded mainnet open-interest answer and the documented linear instrument
live in ``../shared/fixtures/bybit``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from marketlake.core.instruments import apply_snapshot, empty_instrument_history, universe_at
from marketlake.core.schemas_perp import (
    INSTRUMENT_SNAPSHOT_SCHEMA,
    normalize_open_interest,
    normalize_price_candles,
)
from marketlake.core.timeframes import parse_timeframe
from marketlake.exchanges.bybit.parse import decode_envelope, decode_instruments_result
from marketlake.exchanges.bybit.parse_perp import (
    decode_funding_result,
    decode_open_interest_result,
    decode_price_kline_result,
    funding_frame,
    instruments_snapshot_frame,
    open_interest_frame,
    price_klines_frame,
)

DOCS = Path(__file__).resolve().parent / "data" / "bybit_docs"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "bybit"


def _result(path: Path) -> bytes:
    env = decode_envelope(path.read_bytes())
    assert env.ret_code == 0 and env.ret_msg == "OK" and env.time_ms is not None
    return env.result


def test_every_recorded_doc_example_is_claimed_by_a_test() -> None:
    names = {p.name for p in DOCS.glob("*.json")}
    assert names == {
        "docs_rest_funding_history_linear_ETHPERP.json",
        "docs_rest_mark_price_kline_linear_BTCUSDT_15.json",
        "docs_rest_index_price_kline_inverse_BTCUSDZ22_1.json",
        "docs_rest_premium_index_price_kline_linear_BTCUSDT_D.json",
        "docs_rest_open_interest_inverse_BTCUSD_1d.json",
    }
    assert (DOCS / "SOURCES.md").read_text().count("bybit-exchange.github.io/docs/v5/market/") >= 5


def test_funding_history_example() -> None:
    batch = decode_funding_result(_result(DOCS / "docs_rest_funding_history_linear_ETHPERP.json"))
    assert (batch.category, batch.symbol) == ("linear", "ETHPERP")
    assert batch.ts.tolist() == [1_672_041_600_000] and batch.rate.tolist() == [0.0001]
    frame = funding_frame(batch)
    assert frame.schema == {"ts": pl.Datetime("ms", "UTC"), "rate": pl.Float64}
    # 2022-12-26 08:00 UTC: a settlement on the 8 h grid.
    assert batch.ts[0] % (8 * 3_600_000) == 0


@pytest.mark.parametrize(
    ("name", "kind", "interval", "rows"),
    [
        (
            "docs_rest_mark_price_kline_linear_BTCUSDT_15.json", "mark", "15",
            [(1_670_608_800_000, 17164.16, 17164.16, 17121.5, 17131.64)],
        ),
        (
            "docs_rest_index_price_kline_inverse_BTCUSDZ22_1.json", "index", "1",
            [
                (1_670_608_740_000, 17166.54, 17167.69, 17165.42, 17167.00),
                (1_670_608_800_000, 17167.00, 17167.00, 17161.90, 17163.07),
            ],
        ),
        (
            "docs_rest_premium_index_price_kline_linear_BTCUSDT_D.json", "premium", "D",
            [
                (1_652_400_000_000, -0.000989, -0.000561, -0.000587, -0.000587),
                (1_652_486_400_000, -0.000587, -0.000344, -0.000480, -0.000344),
            ],
        ),
    ],
)
def test_price_kline_examples(name: str, kind: str, interval: str, rows: list[tuple[float, ...]]) -> None:
    batch = decode_price_kline_result(_result(DOCS / name), kind)
    got = list(zip(batch.ts.tolist(), batch.open, batch.high, batch.low, batch.close))
    assert got == rows  # ascending, exact float parse of the decimal strings
    tf = parse_timeframe(interval)
    assert np.all(tf.floor_array(batch.ts) == batch.ts)
    frame = price_klines_frame(batch)
    assert normalize_price_candles(frame).equals(frame)
    assert frame.columns == ["ts", "open", "high", "low", "close"]


def test_premium_example_values_are_negative_and_still_valid() -> None:
    batch = decode_price_kline_result(
        _result(DOCS / "docs_rest_premium_index_price_kline_linear_BTCUSDT_D.json"), "premium"
    )
    assert (batch.close < 0).all() and (batch.high >= batch.low).all()


def test_open_interest_doc_example() -> None:
    page = decode_open_interest_result(_result(DOCS / "docs_rest_open_interest_inverse_BTCUSD_1d.json"))
    assert (page.symbol, page.category) == ("BTCUSD", "inverse")
    assert page.next_cursor == "lastid%3D19408935%26lasttime%3D1780617600"
    assert np.all(np.diff(page.ts) == 86_400_000) and page.ts[0] == 1_780_617_600_000
    assert page.open_interest.tolist() == [63942311.0, 63942311.0, 63910691.0, 63910691.0, 63910691.0]
    frame = open_interest_frame(page.ts, page.open_interest)
    assert normalize_open_interest(frame).equals(frame)


def test_recorded_mainnet_open_interest() -> None:
    path = SHARED / "ccxt_mainnet_rest_open_interest_linear_BTCUSDT_with_cursor.json"
    if not path.is_file():
        pytest.skip(f"../shared not found at {SHARED}")
    page = decode_open_interest_result(_result(path))
    assert (page.symbol, page.category) == ("BTCUSDT", "linear")
    assert page.ts.tolist() == [1_739_725_200_000] and page.open_interest.tolist() == [62129.455]
    assert page.next_cursor == "lastid%3D10860016%26lasttime%3D1739725200"
    assert page.ts[0] % 3_600_000 == 0  # on the hourly grid


def test_documented_linear_instrument_gives_every_history_attribute() -> None:
    path = SHARED / "docs_rest_instruments_linear_BTCUSDT.json"
    if not path.is_file():
        pytest.skip(f"../shared not found at {SHARED}")
    env = decode_envelope(path.read_bytes())
    page = decode_instruments_result(env.result)
    frame = instruments_snapshot_frame(page.instruments)
    assert frame.schema == INSTRUMENT_SNAPSHOT_SCHEMA
    row = frame.with_columns(pl.col("launch_time").dt.epoch("ms")).row(0, named=True)
    assert row == {
        "symbol": "BTCUSDT", "category": "linear", "status": "Trading", "contract_type": "LinearPerpetual",
        "launch_time": 1_585_526_400_000, "delivery_time": None, "tick_size": 0.1, "qty_step": 0.001,
        "min_order_qty": 0.001, "funding_interval_minutes": 480, "price_scale": 2,
        "base_coin": "BTC", "quote_coin": "USDT",
    }
    assert env.time_ms is not None
    history = apply_snapshot(empty_instrument_history(), env.time_ms, frame)
    # Back-dated to its launch: a backtest of 2021 sees BTCUSDT.
    assert universe_at(history, 1_609_459_200_000, "linear")["symbol"].to_list() == ["BTCUSDT"]
    assert universe_at(history, 1_585_526_399_999, "linear").height == 0
