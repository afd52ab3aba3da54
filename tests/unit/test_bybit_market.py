"""The synthetic market behind the emulator: deterministic, exact across timeframes, on its grids."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from marketlake.core.timeframes import BYBIT_TIMEFRAMES, DAY_MS, MINUTE_MS, parse_timeframe
from marketlake.errors import InvalidSymbolError
from marketlake_emulator.market import (
    RawCandles,
    SyntheticMarket,
    format_decimal,
    format_decimal_column,
)

FEB_1 = 1_706_745_600_000  # 2024-02-01 00:00 UTC (a Thursday)
APR_1 = 1_711_929_600_000  # 2024-04-01 00:00 UTC
OUTAGE = (FEB_1 + 10 * DAY_MS + 600 * MINUTE_MS, FEB_1 + 10 * DAY_MS + 690 * MINUTE_MS)


@pytest.fixture(scope="module")
def market() -> SyntheticMarket:
    return SyntheticMarket.generate(seed=7, symbols=4, outages=[OUTAGE])


def _raw(m: SyntheticMarket, symbol: str, tf: str, a: int, b: int) -> RawCandles:
    return m.raw_candles(m.instrument(symbol), parse_timeframe(tf), a, b)


def test_decimals_are_written_like_bybit_without_trailing_zeros_or_exponents() -> None:
    assert format_decimal(434880, 1) == "43488"
    assert format_decimal(433761, 1) == "43376.1"
    assert format_decimal(5, 6) == "0.000005"
    assert format_decimal(1234500, 4) == "123.45"
    assert format_decimal(7, 0) == "7"
    units = np.array([0, 5, 10, 434880, 433761, 10**15 + 3], dtype=np.int64)
    for scale in range(9):
        assert format_decimal_column(units, scale) == [format_decimal(int(u), scale) for u in units]
    with pytest.raises(ValueError):
        format_decimal_column(np.array([-1], dtype=np.int64), 2)


def test_wire_rows_are_seven_bybit_strings_newest_first(market: SyntheticMarket) -> None:
    raw = _raw(market, "SYM002USDT", "15", APR_1, APR_1 + 3_600_000)
    s = raw.spec
    rows = raw.wire_rows()
    assert [int(r[0]) for r in rows] == raw.ts.tolist()[::-1]
    first = rows[-1]
    assert first == [
        str(raw.ts[0]),
        format_decimal(int(raw.open[0]), s.price_scale),
        format_decimal(int(raw.high[0]), s.price_scale),
        format_decimal(int(raw.low[0]), s.price_scale),
        format_decimal(int(raw.close[0]), s.price_scale),
        format_decimal(int(raw.volume[0]), s.qty_scale),
        format_decimal(int(raw.turnover[0]), s.turnover_scale),
    ]
    assert [float(x) for x in first[1:]] == list(raw.take(slice(0, 1)).to_frame().row(0)[1:])


def test_the_same_seed_gives_the_same_market_and_another_seed_another() -> None:
    a = SyntheticMarket.generate(seed=3, symbols=3).candles("SYM001USDT", "5", APR_1, APR_1 + DAY_MS)
    b = SyntheticMarket.generate(seed=3, symbols=3).candles("SYM001USDT", "5", APR_1, APR_1 + DAY_MS)
    c = SyntheticMarket.generate(seed=4, symbols=3).candles("SYM001USDT", "5", APR_1, APR_1 + DAY_MS)
    assert a.height == 289 and a.equals(b)
    assert not a.equals(c)


def test_any_window_is_computed_alone_and_equals_the_same_rows_of_a_wider_window() -> None:
    late = APR_1 + 40 * DAY_MS
    alone = SyntheticMarket.generate(seed=9, symbols=2).candles("BTCUSDT", "1", late, late + 3 * 3_600_000)
    wide_market = SyntheticMarket.generate(seed=9, symbols=2)
    wide_market.candles("BTCUSDT", "D", FEB_1, APR_1)  # touch other history first
    wide = wide_market.candles("BTCUSDT", "1", late - DAY_MS, late + DAY_MS)
    ts = pl.col("ts").dt.epoch("ms")
    assert alone.equals(wide.filter((ts >= late) & (ts <= late + 3 * 3_600_000)))


def test_every_bybit_timeframe_is_the_exact_aggregation_of_its_one_minute_candles(
    market: SyntheticMarket,
) -> None:
    for name in BYBIT_TIMEFRAMES[1:]:
        tf = parse_timeframe(name)
        lo = tf.floor(FEB_1) if tf.is_aligned(FEB_1) else tf.next_open(tf.floor(FEB_1))
        hi = tf.floor(APR_1)  # whole buckets only: [lo, hi)
        one = _raw(market, "ETHUSDT", "1", lo, hi - 1)
        got = _raw(market, "ETHUSDT", name, lo, hi - 1)
        keys, first = np.unique(tf.floor_array(one.ts), return_index=True)
        last = np.r_[first[1:], one.ts.size] - 1
        assert np.array_equal(got.ts, keys), name
        assert np.array_equal(got.open, one.open[first]), name
        assert np.array_equal(got.close, one.close[last]), name
        assert np.array_equal(got.high, np.maximum.reduceat(one.high, first)), name
        assert np.array_equal(got.low, np.minimum.reduceat(one.low, first)), name
        assert np.array_equal(got.volume, np.add.reduceat(one.volume, first)), name
        assert np.array_equal(got.turnover, np.add.reduceat(one.turnover, first)), name


def test_week_candles_open_on_monday_and_month_candles_on_the_first(market: SyntheticMarket) -> None:
    weeks = market.candles("BTCUSDT", "W", FEB_1, APR_1)
    assert weeks.height >= 8 and (weeks["ts"].dt.weekday() == 1).all()
    months = market.candles("BTCUSDT", "M", FEB_1, APR_1)
    assert months["ts"].dt.day().to_list() == [1, 1, 1]


def test_prices_sit_on_the_tick_grid_volumes_on_the_lot_step_and_minutes_chain(
    market: SyntheticMarket,
) -> None:
    for symbol in market.symbols("linear"):
        spec = market.instrument(symbol)
        raw = market.raw_candles(spec, parse_timeframe("1"), APR_1, APR_1 + 2 * DAY_MS)
        for col in (raw.open, raw.high, raw.low, raw.close):
            assert (col % spec.tick_units == 0).all() and (col > 0).all()
        assert (raw.volume % spec.lot_units == 0).all() and (raw.volume > 0).all()
        assert (raw.high >= np.maximum(raw.open, raw.close)).all()
        assert (raw.low <= np.minimum(raw.open, raw.close)).all()
        # Consecutive minutes chain (also across midnight): a close is the next open.
        assert np.array_equal(raw.close[:-1], raw.open[1:])


def test_an_outage_removes_exactly_its_minutes_and_shrinks_the_buckets_around_it(
    market: SyntheticMarket,
) -> None:
    a, b = OUTAGE
    one = market.candles("BTCUSDT", "1", a - 3_600_000, b + 3_600_000)
    ts = one["ts"].dt.epoch("ms")
    assert ((ts >= a) & (ts < b)).sum() == 0
    assert one.height == (b - a + 2 * 3_600_000) // MINUTE_MS + 1 - (b - a) // MINUTE_MS
    # The outage covers 10:00-11:30: the 10:00 hour has no candle, the 11:00 hour half of one.
    assert market.candles("BTCUSDT", "60", a, a).height == 0
    h11 = b - b % 3_600_000
    hour = market.candles("BTCUSDT", "60", h11, h11)
    minutes = market.candles("BTCUSDT", "1", h11, h11 + 3_599_999)
    assert hour.height == 1 and minutes.height == 30
    assert hour["open"][0] == minutes["open"][0] and hour["close"][0] == minutes["close"][-1]


def test_no_candle_exists_before_listing_and_the_first_is_the_listing_minute() -> None:
    m = SyntheticMarket.generate(seed=11, symbols=3, outages=())
    spec = m.instrument("SYM001USDT")
    first_minute = spec.launch_ms - spec.launch_ms % MINUTE_MS
    got = m.candles("SYM001USDT", "1", first_minute - DAY_MS, first_minute + 10 * MINUTE_MS)
    assert got["ts"][0].timestamp() * 1000 == first_minute and got.height == 11
    day = m.candles("SYM001USDT", "D", first_minute - 5 * DAY_MS, first_minute + DAY_MS)
    assert day["ts"].dt.epoch("ms")[0] == first_minute - first_minute % DAY_MS


def test_a_delisted_symbol_has_no_candles_after_delisting() -> None:
    m = SyntheticMarket.generate(seed=1, symbols=42, outages=())
    spec = m.instrument("SYM040USDT")
    assert spec.delist_ms is not None
    after = m.candles("SYM040USDT", "1", spec.delist_ms, spec.delist_ms + DAY_MS)
    assert after.height == 0 and spec.status(spec.delist_ms) == "Closed"


def test_the_forming_candle_is_a_partial_version_of_the_final_one(market: SyntheticMarket) -> None:
    spec = market.instrument("BTCUSDT")
    tf = parse_timeframe("60")
    now = APR_1 + 5 * 3_600_000 + 37 * MINUTE_MS + 30_000
    forming = market.forming_candle(spec, tf, now)
    final = market.raw_candles(spec, tf, tf.floor(now), tf.floor(now))
    assert len(forming) == 1 and forming.ts[0] == final.ts[0]
    assert forming.open[0] == final.open[0]
    assert forming.volume[0] < final.volume[0]
    assert final.low[0] <= forming.low[0] <= forming.high[0] <= final.high[0]
    assert len(market.forming_candle(spec, tf, tf.floor(now))) == 0  # nothing traded yet


def test_unknown_symbols_are_refused_with_a_typed_error(market: SyntheticMarket) -> None:
    with pytest.raises(InvalidSymbolError):
        market.candles("NOPEUSDT", "1", APR_1, APR_1)
    with pytest.raises(InvalidSymbolError):
        SyntheticMarket.generate(seed=1, symbols=["../etc"])


def test_generated_symbols_include_btc_eth_and_numbered_names() -> None:
    m = SyntheticMarket.generate(seed=1, symbols=300)
    names = m.symbols("linear")
    assert len(names) == 300 and {"BTCUSDT", "ETHUSDT", "SYM001USDT", "SYM298USDT"} <= set(names)
    assert m.symbols("spot") == ["BTCUSDT", "ETHUSDT"] and m.symbols("inverse") == ["BTCUSD", "ETHUSD"]
