"""Pure core of the perpetual datasets: schemas, funding intervals and gaps, funding paid, the
instrument history and universe_at, on hand-made cases."""

from __future__ import annotations

import polars as pl
import pyarrow as pa
import pytest

from marketlake.core.funding import (
    funding_gaps,
    funding_interval_history,
    funding_paid,
    funding_payments,
    grid_gaps,
    infer_funding_intervals,
)
from marketlake.core.instruments import (
    apply_snapshot,
    build_instrument_history,
    empty_instrument_history,
    funding_observations,
    universe_at,
)
from marketlake.core.schemas_perp import (
    FUNDING_ARROW_SCHEMA,
    FUNDING_SCHEMA,
    INSTRUMENT_ARROW_SCHEMA,
    INSTRUMENT_SCHEMA,
    OPEN_INTEREST_ARROW_SCHEMA,
    PRICE_CANDLE_ARROW_SCHEMA,
    normalize_funding,
    normalize_instrument_history,
    normalize_open_interest,
    normalize_price_candles,
)
from marketlake.errors import DataValidationError, SchemaMismatchError

H = 3_600_000
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC


# ---------------------------------------------------------------- schemas


def test_arrow_and_polars_schemas_agree() -> None:
    for arrow, frame in [
        (FUNDING_ARROW_SCHEMA, normalize_funding(pl.DataFrame({"ts": [T0], "rate": [1e-4], "interval_minutes": [480]}))),
        (PRICE_CANDLE_ARROW_SCHEMA, normalize_price_candles(pl.DataFrame({"ts": [T0], "open": [1.0], "high": [2.0], "low": [0.5], "close": [1.5]}))),
        (OPEN_INTEREST_ARROW_SCHEMA, normalize_open_interest(pl.DataFrame({"timestamp": [T0], "open_interest": [5.0]}))),
        (INSTRUMENT_ARROW_SCHEMA, empty_instrument_history()),
    ]:
        table = frame.to_arrow()
        assert table.schema.names == arrow.names
        # polars exports large_string where the stored schema says string: same values, castable.
        assert [f.type for f in table.cast(arrow).schema] == [f.type for f in arrow]
    assert list(INSTRUMENT_SCHEMA)[:6] == ["symbol", "category", "valid_from", "valid_to", "observed_from", "last_seen"]
    assert isinstance(INSTRUMENT_ARROW_SCHEMA, pa.Schema)


def test_normalisers_convert_and_refuse() -> None:
    got = normalize_funding(pl.DataFrame({"ts": [T0], "rate": ["0.0001"], "interval_minutes": [60], "symbol": ["X"]}))
    assert got.schema == FUNDING_SCHEMA and got["rate"].to_list() == [0.0001]
    with pytest.raises(SchemaMismatchError, match="interval_minutes"):
        normalize_funding(pl.DataFrame({"ts": [T0], "rate": [0.1]}))
    with pytest.raises(SchemaMismatchError, match="volume"):  # trade candles are not price candles
        normalize_price_candles(pl.DataFrame({"ts": [T0], "open": [1.0], "high": [1.0], "low": [1.0], "close": [1.0], "volume": [1.0]}))
    with pytest.raises(SchemaMismatchError, match="1990"):
        normalize_open_interest(pl.DataFrame({"ts": [T0 // 1000], "open_interest": [1.0]}))
    row = {c: None for c in INSTRUMENT_SCHEMA}
    row.update(symbol="X", category="linear", status="Trading", valid_from=T0, valid_to=T0, observed_from=T0, last_seen=T0)
    bad = pl.DataFrame([row], schema={c: (pl.Int64 if isinstance(t, pl.Datetime) else t) for c, t in INSTRUMENT_SCHEMA.items()})
    with pytest.raises(SchemaMismatchError, match="valid_to"):
        normalize_instrument_history(bad)


# ---------------------------------------------------------------- funding intervals and gaps


def grid(start: int, stop: int, step_h: int) -> list[int]:
    return list(range(start, stop, step_h * H))


def test_an_8h_to_1h_change_is_not_a_gap_and_gives_the_interval_history() -> None:
    ts = grid(T0, T0 + 49 * H, 8) + grid(T0 + 49 * H, T0 + 60 * H, 1)  # ..., 40h, 48h, 49h, 50h ...
    iv = infer_funding_intervals(ts)
    assert iv.tolist() == [480] * 7 + [60] * 11
    assert funding_gaps(ts, iv).height == 0
    hist = funding_interval_history(ts, iv).with_columns(pl.col("valid_from", "valid_to").dt.epoch("ms"))
    assert hist.rows() == [(T0 - 8 * H, T0 + 48 * H, 480), (T0 + 48 * H, None, 60)]


def test_a_1h_to_8h_change_with_a_short_step_is_not_a_gap() -> None:
    ts = grid(T0, T0 + 10 * H, 1) + grid(T0 + 16 * H, T0 + 64 * H, 8)  # 09:00 -> 16:00 is 7 h
    iv = infer_funding_intervals(ts)
    assert iv.tolist() == [60] * 10 + [480] * 6
    assert funding_gaps(ts, iv).height == 0


def test_a_missing_settlement_is_a_gap_at_the_interval_in_force() -> None:
    ts = grid(T0, T0 + 80 * H, 8)
    del ts[4]
    iv = infer_funding_intervals(ts)
    assert set(iv.tolist()) == {480}
    gaps = funding_gaps(ts, iv).with_columns(pl.col("before", "after").dt.epoch("ms"))
    assert gaps.rows() == [(T0 + 24 * H, T0 + 40 * H, 1)]
    # The same hole in a 1 h regime is a gap of one too, and 3 missing in a row are counted.
    ts = grid(T0, T0 + 20 * H, 1)
    del ts[5:8]
    gaps = funding_gaps(ts, infer_funding_intervals(ts))
    assert gaps["missing"].to_list() == [3]


def test_a_settlement_missing_exactly_at_the_change_is_a_gap() -> None:
    ts = grid(T0, T0 + 41 * H, 8) + grid(T0 + 41 * H, T0 + 50 * H, 1)  # ..., 32h, 40h, 41h, ...
    assert funding_gaps(ts, infer_funding_intervals(ts)).height == 0
    ts.remove(T0 + 40 * H)  # the last 8 h settlement before the change
    gaps = funding_gaps(ts, infer_funding_intervals(ts))
    assert gaps.height == 1 and gaps["missing"].to_list() == [1]


def test_observations_fix_what_spacing_alone_cannot() -> None:
    ts = grid(T0, T0 + 10 * H, 1)
    ts = [t for i, t in enumerate(ts) if i not in (3, 5)]  # 0,1,2,4,6,7,8,9: "2,2" looks like a 2 h run
    blind = infer_funding_intervals(ts)
    assert funding_gaps(ts, blind).height == 0  # fooled, as documented
    seen = infer_funding_intervals(ts, [(T0 + 3 * H + 1, 60), (T0 + 5 * H + 1, 60)])
    assert funding_gaps(ts, seen)["missing"].to_list() == [1, 1]


def test_interval_inference_edge_cases() -> None:
    assert infer_funding_intervals([]).tolist() == []
    assert infer_funding_intervals([T0]).tolist() == [480]
    assert infer_funding_intervals([T0], [(T0 - 5, 60)]).tolist() == [60]
    assert infer_funding_intervals([T0, T0 + 4 * H]).tolist() == [240, 240]
    assert infer_funding_intervals([T0, T0 + 5 * H]).tolist() == [480, 480]  # 5 h is no interval: fallback
    with pytest.raises(DataValidationError, match="ascending"):
        infer_funding_intervals([T0, T0])
    with pytest.raises(DataValidationError):
        funding_gaps([T0, T0 + H], [60])


def test_grid_gaps_for_open_interest() -> None:
    ts = grid(T0, T0 + 10 * H, 1)
    del ts[2:4]
    gaps = grid_gaps(pl.Series(ts).cast(pl.Datetime("ms", "UTC")), H).with_columns(pl.col("before", "after").dt.epoch("ms"))
    assert gaps.rows() == [(T0 + H, T0 + 4 * H, 2)]
    assert grid_gaps([], H).height == 0


# ---------------------------------------------------------------- funding paid


def test_funding_paid_equals_a_hand_computed_sum() -> None:
    funding = pl.DataFrame({"ts": [T0, T0 + 8 * H, T0 + 16 * H, T0 + 24 * H], "rate": [0.0001, -0.0002, 0.0003, 0.0004]})
    # Long 2 BTC from before T0; flip to short 1 BTC exactly at T0+16h (after that settlement).
    position = pl.DataFrame({"ts": [T0 - H, T0 + 16 * H], "size": [2.0, -1.0]})
    prices = pl.DataFrame({"ts": [T0 - 60_000, T0 + 8 * H, T0 + 16 * H - 1, T0 + 24 * H], "price": [40_000.0, 41_000.0, 42_000.0, 43_000.0]})
    # Settlements in (T0, T0+24h]: T0+8h, T0+16h, T0+24h (T0 itself is excluded).
    #   T0+8h : +2 BTC x 41000 x -0.0002 = -16.4  (received)
    #   T0+16h: +2 BTC x 42000 x  0.0003 = +25.2  (the flip at that instant counts after it)
    #   T0+24h: -1 BTC x 43000 x  0.0004 = -17.2  (a short receives a positive rate)
    assert funding_paid(funding, position, T0, T0 + 24 * H, prices=prices) == pytest.approx(-16.4 + 25.2 - 17.2)
    pays = funding_payments(funding, position, T0, T0 + 24 * H, prices=prices)
    assert pays["payment"].to_list() == pytest.approx([-16.4, 25.2, -17.2])
    # Notional given directly, and an inverse contract (1000 USD of contracts pays in BTC).
    notional = pl.DataFrame({"ts": [T0 - 1], "notional": [10_000.0]})
    assert funding_paid(funding, notional, T0 - 1, T0) == pytest.approx(1.0)
    inv = funding_paid(funding, pl.DataFrame({"ts": [T0 - H], "size": [1000.0]}), T0 - 1, T0, prices=prices, inverse=True)
    assert inv == pytest.approx(1000.0 / 40_000.0 * 0.0001)


def test_funding_paid_never_prices_at_zero() -> None:
    funding = pl.DataFrame({"ts": [T0], "rate": [0.0001]})
    with pytest.raises(DataValidationError, match="no price"):
        funding_paid(funding, pl.DataFrame({"ts": [T0 - H], "size": [1.0]}), T0 - 1, T0, prices=pl.DataFrame({"ts": [T0 + 1], "price": [1.0]}))
    with pytest.raises(DataValidationError, match="prices"):
        funding_paid(funding, pl.DataFrame({"ts": [T0 - H], "size": [1.0]}), T0 - 1, T0)
    assert funding_paid(funding, pl.DataFrame({"ts": [T0], "notional": [5.0]}), T0 - 1, T0) == 0.0  # opened at the instant


# ---------------------------------------------------------------- instruments


def inst(symbol: str, **kw: object) -> dict[str, object]:
    row: dict[str, object] = {"symbol": symbol, "category": "linear", "status": "Trading", "launch_time": T0 - 100 * H,
                              "delivery_time": None, "tick_size": 0.1, "qty_step": 0.001, "min_order_qty": 0.001,
                              "funding_interval_minutes": 480, "price_scale": 2, "base_coin": symbol[:-4], "quote_coin": "USDT"}
    row.update(kw)
    return row


def snap(*rows: dict[str, object]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema_overrides={"delivery_time": pl.Int64, "launch_time": pl.Int64})


def test_history_rows_change_only_with_attributes_and_delisted_symbols_stay() -> None:
    history = build_instrument_history(
        [
            (T0, snap(inst("BTCUSDT"), inst("OLDUSDT", delivery_time=T0 + 30 * H))),
            (T0 + 10 * H, snap(inst("BTCUSDT", tick_size=0.10), inst("OLDUSDT", delivery_time=T0 + 30 * H))),
            (T0 + 20 * H, snap(inst("BTCUSDT", funding_interval_minutes=60), inst("OLDUSDT", status="Delivering", delivery_time=T0 + 30 * H))),
            (T0 + 40 * H, snap(inst("BTCUSDT", funding_interval_minutes=60))),
        ]
    )
    rows = history.with_columns(pl.col("valid_from", "valid_to", "last_seen").dt.epoch("ms")).select(
        "symbol", "valid_from", "valid_to", "last_seen", "status", "funding_interval_minutes"
    ).rows()
    assert rows == [
        ("BTCUSDT", T0 - 100 * H, T0 + 20 * H, T0 + 10 * H, "Trading", 480),  # "0.10" == "0.1": no new row
        ("BTCUSDT", T0 + 20 * H, None, T0 + 40 * H, "Trading", 60),
        ("OLDUSDT", T0 - 100 * H, T0 + 20 * H, T0 + 10 * H, "Trading", 480),
        ("OLDUSDT", T0 + 20 * H, T0 + 30 * H, T0 + 20 * H, "Delivering", 480),  # closed at its delivery time
    ]
    assert universe_at(history, T0 + 15 * H, "linear")["symbol"].to_list() == ["BTCUSDT", "OLDUSDT"]
    assert universe_at(history, T0 + 25 * H, "linear", statuses=None)["symbol"].to_list() == ["BTCUSDT", "OLDUSDT"]
    assert universe_at(history, T0 + 30 * H, "linear", statuses=None)["symbol"].to_list() == ["BTCUSDT"]
    assert universe_at(history, T0 + 15 * H, "spot").height == 0
    assert funding_observations(history, "BTCUSDT", "linear") == [(T0, 480), (T0 + 10 * H, 480), (T0 + 20 * H, 60), (T0 + 40 * H, 60)]


def test_vanished_without_delivery_time_closes_at_the_snapshot_and_can_come_back() -> None:
    h = apply_snapshot(empty_instrument_history(), T0, snap(inst("AUSDT"), inst("BUSDT")))
    h = apply_snapshot(h, T0 + H, snap(inst("AUSDT")))
    h = apply_snapshot(h, T0 + 2 * H, snap(inst("AUSDT"), inst("BUSDT")))
    b = h.filter(pl.col("symbol") == "BUSDT").with_columns(pl.col("valid_from", "valid_to").dt.epoch("ms"))
    assert b.select("valid_from", "valid_to").rows() == [(T0 - 100 * H, T0 + H), (T0 + 2 * H, None)]
    # A partial snapshot (categories=()) closes nothing; an older snapshot is refused.
    same = apply_snapshot(h, T0 + 3 * H, snap(inst("AUSDT")), categories=())
    assert same.filter(pl.col("valid_to").is_null()).height == 2
    with pytest.raises(DataValidationError, match="older"):
        apply_snapshot(h, T0, snap(inst("AUSDT")))
    with pytest.raises(DataValidationError, match="twice"):
        apply_snapshot(h, T0 + 5 * H, snap(inst("AUSDT"), inst("AUSDT")))


def test_a_prelaunch_symbol_is_not_back_dated_and_joins_at_launch() -> None:
    h = apply_snapshot(empty_instrument_history(), T0, snap(inst("NEWUSDT", status="PreLaunch", launch_time=T0 + 5 * H)))
    h = apply_snapshot(h, T0 + 6 * H, snap(inst("NEWUSDT", launch_time=T0 + 5 * H)))
    assert universe_at(h, T0 + H).height == 0
    assert universe_at(h, T0 + H, statuses=("PreLaunch",))["symbol"].to_list() == ["NEWUSDT"]
    assert universe_at(h, T0 + 6 * H)["symbol"].to_list() == ["NEWUSDT"]
