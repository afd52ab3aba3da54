"""DataFeeder for perpetual backtests: funding, mark prices, funding_paid, the universe."""

from __future__ import annotations

import polars as pl
import pytest

from marketlake.errors import DataValidationError, InvalidSymbolError, InvalidTimeframeError
from marketlake.feeder import DataFeeder
from tests.feeder_support import new_lake

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
M = 60_000
H = 60 * M
DAY = 24 * H
RATES = [0.0001, 0.0002, -0.0001, 0.0003, 0.0001, 0.00005]  # settled at 00:00, 08:00, 16:00, ...


def _snapshot(rows: list[dict]) -> pl.DataFrame:
    base = {"category": "linear", "status": "Trading", "contract_type": "LinearPerpetual", "launch_time": T0 - 100 * DAY,
            "delivery_time": None, "tick_size": 0.1, "qty_step": 0.001, "min_order_qty": 0.001,
            "funding_interval_minutes": 480, "price_scale": 2, "base_coin": "X", "quote_coin": "USDT"}
    return pl.DataFrame([{**base, **r} for r in rows]).with_columns(
        pl.col("launch_time").cast(pl.Datetime("ms", "UTC")), pl.col("delivery_time").cast(pl.Datetime("ms", "UTC")),
        pl.col("funding_interval_minutes").cast(pl.Int32), pl.col("price_scale").cast(pl.Int32),
    )


@pytest.fixture
def feeder(tmp_path) -> DataFeeder:
    """Six 8-hour settlements from 2024-01-01 00:00; mark 1m candles whose close is 100 + minute
    index (so the mark at a settlement t, the close of the candle opening at t - 1m, is
    100 + (t - T0) / 1m - 1); hour candles as the base."""
    lake = new_lake(tmp_path / "lake")
    lake.write_funding(pl.DataFrame({"ts": [T0 + i * 8 * H for i in range(6)], "rate": RATES,
                                     "interval_minutes": [480] * 6}), symbol="BTCUSDT")
    n = 48 * 60
    lake.write_price_candles("mark", pl.DataFrame({
        "ts": [T0 + i * M for i in range(n)], "open": 100.0, "high": 5000.0, "low": 99.0,
        "close": [100.0 + i for i in range(n)]}), symbol="BTCUSDT", timeframe="1")
    lake.write_candles(pl.DataFrame({"ts": [T0 + i * H for i in range(48)], "open": 1.0, "high": 1.0, "low": 1.0,
                                     "close": 1.0, "volume": 1.0}), symbol="BTCUSDT", timeframe="60")
    return DataFeeder(lake)


def mark_at(t: int) -> float:
    return 100.0 + (t - T0) // M - 1


def test_a_rate_is_known_at_its_settlement_not_before(feeder):
    assert feeder.funding_rate_at("BTCUSDT", T0 - 1) is None
    assert feeder.funding_rate_at("BTCUSDT", T0) == RATES[0]
    assert feeder.funding_rate_at("BTCUSDT", T0 + 8 * H - 1) == RATES[0]
    assert feeder.funding_rate_at("BTCUSDT", T0 + 8 * H) == RATES[1]
    assert feeder.funding("BTCUSDT", T0 + 8 * H, T0 + 24 * H)["rate"].to_list() == RATES[1:3]


def test_the_mark_price_is_the_close_of_the_last_mark_candle_closed(feeder):
    assert feeder.mark_price_at("BTCUSDT", T0) is None  # the first candle closes at T0 + 1m
    assert feeder.mark_price_at("BTCUSDT", T0 + M) == 100.0
    assert feeder.mark_price_at("BTCUSDT", T0 + 2 * M - 1) == 100.0
    assert feeder.mark_price_at("BTCUSDT", T0 + 8 * H) == mark_at(T0 + 8 * H) == 579.0
    got = feeder.price_candle_at("mark", "BTCUSDT", T0 + 8 * H + 30_000)
    assert got["timestamp"] == T0 + 8 * H - M and got["close_time_ms"] == T0 + 8 * H
    assert feeder.price_candles("mark", "BTCUSDT", "1", T0, T0 + 3 * M)["close"].to_list() == [100.0, 101.0, 102.0]


def test_funding_paid_equals_the_hand_computed_sum(feeder):
    # A long of 2 over (00:00, 24:00]: settlements at 08:00, 16:00, 24:00 (00:00 is excluded).
    hand = 2 * 579.0 * 0.0002 + 2 * 1059.0 * -0.0001 + 2 * 1539.0 * 0.0003
    assert feeder.funding_paid("BTCUSDT", 2.0, T0, T0 + DAY) == pytest.approx(hand, rel=1e-12)
    pays = feeder.funding_payments("BTCUSDT", 2.0, T0, T0 + DAY)
    assert pays["price"].to_list() == [579.0, 1059.0, 1539.0] and pays["rate"].to_list() == RATES[1:4]
    # Changes: long 1 from 04:00, short 3 from exactly 16:00 (takes effect after that settlement),
    # flat from 20:00.
    pos = pl.DataFrame({"ts": [T0 + 4 * H, T0 + 16 * H, T0 + 20 * H], "size": [1.0, -3.0, 0.0]})
    hand = 1 * 579.0 * 0.0002 + 1 * 1059.0 * -0.0001 + 0.0
    assert feeder.funding_paid("BTCUSDT", pos, T0, T0 + DAY) == pytest.approx(hand, rel=1e-12)
    # A short receives what a long pays; a notional needs no price.
    assert feeder.funding_paid("BTCUSDT", -2.0, T0, T0 + DAY) == pytest.approx(-feeder.funding_paid("BTCUSDT", 2.0, T0, T0 + DAY))
    notional = pl.DataFrame({"ts": [T0], "notional": [1000.0]})
    assert feeder.funding_paid("BTCUSDT", notional, T0, T0 + DAY) == pytest.approx(1000 * (0.0002 - 0.0001 + 0.0003))
    # Inverse contracts: notional in coin = contracts / price.
    assert feeder.funding_paid("BTCUSDT", 579.0, T0, T0 + 8 * H, inverse=True) == pytest.approx(0.0002)


def test_missing_settlements_are_refused_not_counted_as_zero(feeder, tmp_path):
    with pytest.raises(DataValidationError, match="stored until 2024-01-02 16:00:00"):
        feeder.funding_paid("BTCUSDT", 1.0, T0, T0 + 3 * DAY)
    with pytest.raises(DataValidationError, match="stored from"):
        feeder.funding_paid("BTCUSDT", 1.0, T0 - DAY, T0 + DAY)
    # complete=False sums what is stored: 2024-01-02 00:00, 08:00 and 16:00.
    assert feeder.funding_paid("BTCUSDT", 1.0, T0 + 16 * H, T0 + 3 * DAY, complete=False) == pytest.approx(
        1539.0 * 0.0003 + 2019.0 * 0.0001 + 2499.0 * 0.00005, rel=1e-12)
    lake = new_lake(tmp_path / "gappy")
    lake.write_funding(pl.DataFrame({"ts": [T0, T0 + 8 * H, T0 + 24 * H], "rate": [1e-4] * 3,
                                     "interval_minutes": [480] * 3}), symbol="BTCUSDT")
    with pytest.raises(DataValidationError, match="1 settlement\\(s\\) missing"):
        DataFeeder(lake).funding_paid("BTCUSDT", pl.DataFrame({"ts": [T0], "notional": [1.0]}), T0, T0 + DAY)


def test_an_interval_change_is_no_hole_for_funding_paid(tmp_path):
    lake = new_lake(tmp_path / "lake")
    ts = [T0 + i * 8 * H for i in range(3)] + [T0 + 16 * H + k * H for k in range(1, 9)]
    lake.write_funding(pl.DataFrame({"ts": ts, "rate": [1e-4] * len(ts), "interval_minutes": [480] * 3 + [60] * 8}),
                       symbol="BTCUSDT")
    paid = DataFeeder(lake).funding_paid("BTCUSDT", pl.DataFrame({"ts": [T0], "notional": [100.0]}), T0, T0 + DAY)
    assert paid == pytest.approx(100.0 * 1e-4 * 10)  # 08:00, 16:00 and eight hourly settlements


def test_aligned_joins_funding_and_mark_without_lookahead(feeder):
    out = feeder.aligned("BTCUSDT", "60", [], T0 + 6 * H, T0 + 9 * H, funding=True, mark="1").collect()
    assert out["ts"].dt.epoch("ms").to_list() == [T0 + 6 * H, T0 + 7 * H, T0 + 8 * H]
    assert out["funding_rate"].to_list() == [RATES[0], RATES[1], RATES[1]]  # 08:00 known at the 07:00 close
    assert out["funding_settled"].to_list() == [False, True, False]
    assert out["close_mark"].to_list() == [mark_at(T0 + 7 * H), mark_at(T0 + 8 * H), mark_at(T0 + 9 * H)]
    assert out["ts_mark"].dt.epoch("ms").to_list() == [T0 + 7 * H - M, T0 + 8 * H - M, T0 + 9 * H - M]
    plain = feeder.aligned("BTCUSDT", "60", [], T0 + 6 * H, T0 + 9 * H).collect()
    assert "funding_rate" not in plain.columns  # off unless asked


def test_missing_perp_series_are_named(feeder):
    with pytest.raises(InvalidSymbolError, match="stored symbols: BTCUSDT"):
        feeder.funding_rate_at("ETHUSDT", T0)
    with pytest.raises(InvalidTimeframeError, match="stored timeframes: 1"):
        feeder.mark_price_at("BTCUSDT", T0, "5")
    with pytest.raises(InvalidSymbolError):
        feeder.aligned("BTCUSDT", "60", [], T0, T0 + H, index="1")
    with pytest.raises(DataValidationError):
        feeder.price_candles("last", "BTCUSDT")


def test_universe_at_each_step_keeps_delisted_symbols_until_delivery(feeder):
    lake = feeder.lake
    lake.record_instruments(_snapshot([{"symbol": "BTCUSDT"}, {"symbol": "LUNAUSDT"}]), T0, categories=["linear"])
    lake.record_instruments(_snapshot([{"symbol": "BTCUSDT"}, {"symbol": "LUNAUSDT", "status": "Closed",
                                                                 "delivery_time": T0 + 5 * DAY}]),
                            T0 + 6 * DAY, categories=["linear"])
    assert feeder.universe(T0 + DAY)["symbol"].to_list() == ["BTCUSDT", "LUNAUSDT"]
    assert feeder.universe(T0 + 7 * DAY)["symbol"].to_list() == ["BTCUSDT"]
