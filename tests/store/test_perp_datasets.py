"""The perpetual-futures datasets live in the lake like candles: one Delta table each, merged by
``ts``, SQL views with the series' hive columns, snapshots; plus the point-in-time universe."""

from __future__ import annotations

import threading

import polars as pl
import pytest

from marketlake.errors import DataValidationError, SchemaMismatchError
from marketlake.settings import Settings
from marketlake.store import Lake

T0 = 1_704_067_200_000  # 2024-01-01
H = 3_600_000
DAY = 24 * H


def _lake(tmp_path) -> Lake:
    return Lake(tmp_path / "lake", settings=Settings.load(environ={}))


def _funding(n: int, rate: float = 0.0001, start: int = T0, step: int = 8 * H, interval: int = 480) -> pl.DataFrame:
    return pl.DataFrame({"ts": [start + i * step for i in range(n)], "rate": [rate] * n,
                         "interval_minutes": [interval] * n})


def _snapshot(rows: list[dict]) -> pl.DataFrame:
    base = {"category": "linear", "status": "Trading", "contract_type": "LinearPerpetual", "launch_time": T0 - 100 * DAY,
            "delivery_time": None, "tick_size": 0.1, "qty_step": 0.001, "min_order_qty": 0.001,
            "funding_interval_minutes": 480, "price_scale": 2, "base_coin": "X", "quote_coin": "USDT"}
    return pl.DataFrame([{**base, **r} for r in rows]).with_columns(
        pl.col("launch_time").cast(pl.Datetime("ms", "UTC")), pl.col("delivery_time").cast(pl.Datetime("ms", "UTC")),
        pl.col("funding_interval_minutes").cast(pl.Int32), pl.col("price_scale").cast(pl.Int32),
    )


def test_each_dataset_merges_by_ts_the_later_row_winning_and_reads_back(tmp_path):
    lake = _lake(tmp_path)
    lake.write_funding(_funding(30), symbol="BTCUSDT")
    r = lake.write_funding(_funding(3, rate=0.0005, start=T0 + 8 * H), symbol="BTCUSDT")
    assert (r.rows_new, r.rows_replaced) == (0, 3)
    assert lake.write_funding(_funding(30).slice(10, 5), symbol="BTCUSDT").changed is False
    got = lake.read_funding("BTCUSDT")
    assert got.height == 30 and got["rate"].to_list()[:5] == [0.0001, 0.0005, 0.0005, 0.0005, 0.0001]
    for kind in ("mark", "index", "premium"):
        px = pl.DataFrame({"ts": [T0 + i * 60_000 for i in range(100)], "open": -1.0, "high": 1.0, "low": -2.0, "close": 0.0})
        lake.write_price_candles(kind, px, symbol="BTCUSDT", timeframe="1")
        assert lake.read_price_candles(kind, "BTCUSDT", "1").height == 100
    oi = pl.DataFrame({"ts": [T0 + i * 300_000 for i in range(50)], "open_interest": [1e6 + i for i in range(50)]})
    lake.write_open_interest(oi, symbol="BTCUSDT", interval="5min")
    assert lake.read_open_interest("BTCUSDT", "5min")["open_interest"].to_list() == oi["open_interest"].to_list()
    assert lake.read_candles().is_empty()  # never mixed with trade candles


def test_price_candles_with_volume_and_unknown_kinds_are_refused(tmp_path):
    lake = _lake(tmp_path)
    px = pl.DataFrame({"ts": [T0], "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0, "volume": 5.0})
    with pytest.raises(SchemaMismatchError):
        lake.write_price_candles("mark", px, symbol="BTCUSDT", timeframe="1")
    with pytest.raises(DataValidationError):
        lake.write_price_candles("last", px.drop("volume"), symbol="BTCUSDT", timeframe="1")
    with pytest.raises(DataValidationError):
        lake.write_open_interest(pl.DataFrame({"ts": [T0], "open_interest": [1.0]}), symbol="BTCUSDT", interval="7min")
    assert set(lake.versions().values()) == {-1}


def test_sql_views_carry_each_datasets_hive_columns_and_ts(tmp_path):
    lake = _lake(tmp_path)
    lake.write_funding(_funding(3), symbol="BTCUSDT")
    for view, cols in {
        "funding": {"exchange", "category", "symbol", "date", "ts", "rate", "interval_minutes"},
        "mark_candles": {"exchange", "category", "symbol", "timeframe", "date", "ts", "open", "high", "low", "close"},
        "index_candles": {"timeframe", "ts", "open", "close"},
        "premium_candles": {"timeframe", "ts", "open", "close"},
        "open_interest": {"timeframe", "ts", "open_interest"},
        "instruments": {"symbol", "category", "valid_from", "valid_to", "tick_size", "funding_interval_minutes"},
    }.items():
        got = set(lake.sql(f"select * from {view} limit 0").columns)
        assert cols <= got, (view, cols - got)
    assert lake.sql("select sum(rate) from funding").item() == pytest.approx(0.0003)


def test_a_delisted_symbol_is_in_the_universe_before_its_delivery_time_and_not_after(tmp_path):
    lake = _lake(tmp_path)
    lake.record_instruments(_snapshot([{"symbol": "BTCUSDT"}, {"symbol": "LUNAUSDT"}]), T0, categories=["linear"])
    delivered = T0 + 10 * DAY
    lake.record_instruments(
        _snapshot([{"symbol": "BTCUSDT", "funding_interval_minutes": 240},
                   {"symbol": "LUNAUSDT", "status": "Delivering", "delivery_time": delivered}]),
        T0 + 5 * DAY, categories=["linear"],
    )
    lake.record_instruments(_snapshot([{"symbol": "BTCUSDT", "funding_interval_minutes": 240}]), T0 + 20 * DAY,
                            categories=["linear"])
    early = lake.universe(T0 + DAY, "linear")
    assert early["symbol"].to_list() == ["BTCUSDT", "LUNAUSDT"]
    assert early.filter(pl.col("symbol") == "BTCUSDT")["funding_interval_minutes"].item() == 480
    assert lake.universe(T0 + 6 * DAY, "linear", statuses=None)["symbol"].to_list() == ["BTCUSDT", "LUNAUSDT"]
    late = lake.universe(T0 + 11 * DAY, "linear", statuses=None)
    assert late["symbol"].to_list() == ["BTCUSDT"] and late["funding_interval_minutes"].item() == 240
    assert "LUNAUSDT" in lake.instrument_history()["symbol"].to_list()  # delisted symbols stay in the history
    n = lake.sql("select count(*) from instruments where symbol = 'LUNAUSDT'").item()
    assert n >= 1


def test_concurrent_instrument_snapshots_lose_no_observation(tmp_path):
    lake = _lake(tmp_path)
    lake.record_instruments(_snapshot([{"symbol": "BTCUSDT"}]), T0, categories=())
    errors: list[BaseException] = []

    def fold(sym: str) -> None:
        try:
            Lake(lake.root, settings=lake.settings).record_instruments(_snapshot([{"symbol": sym}]), T0 + DAY, categories=())
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=fold, args=(s,)) for s in ("ETHUSDT", "SOLUSDT", "XRPUSDT")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(lake.instrument_history()["symbol"].unique().to_list()) == ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]


def test_a_snapshot_pins_funding_too(tmp_path):
    lake = _lake(tmp_path)
    lake.write_funding(_funding(10), symbol="BTCUSDT")
    lake.create_snapshot("bt")
    lake.write_funding(_funding(10, rate=0.01), symbol="BTCUSDT")
    assert Lake(lake.root, settings=lake.settings, as_of="bt").read_funding()["rate"].unique().to_list() == [0.0001]
    assert lake.read_funding()["rate"].unique().to_list() == [0.01]


def test_a_named_snapshot_keeps_the_universe_as_it_was(tmp_path):
    lake = _lake(tmp_path)
    lake.write_funding(_funding(3), symbol="BTCUSDT")
    lake.record_instruments(_snapshot([{"symbol": "BTCUSDT"}]), T0, categories=["linear"])
    lake.create_snapshot("bt")
    lake.record_instruments(_snapshot([{"symbol": "BTCUSDT", "tick_size": 0.5}]), T0 + DAY, categories=["linear"])
    old = Lake(lake.root, settings=lake.settings, as_of="bt")
    assert old.universe(T0 + 2 * DAY, "linear")["tick_size"].to_list() == [0.1]
    assert lake.universe(T0 + 2 * DAY, "linear")["tick_size"].to_list() == [0.5]


def test_as_of_a_time_reads_the_universe_as_recorded_then(tmp_path):
    import datetime as dt
    import time

    lake = _lake(tmp_path)
    lake.record_instruments(_snapshot([{"symbol": "BTCUSDT"}]), T0, categories=["linear"])
    lake.write_funding(_funding(3), symbol="BTCUSDT")
    time.sleep(0.05)
    between = dt.datetime.now(dt.UTC).isoformat()
    time.sleep(0.05)
    lake.record_instruments(_snapshot([{"symbol": "BTCUSDT", "tick_size": 0.5}]), T0 + DAY, categories=["linear"])
    old = Lake(lake.root, settings=lake.settings, as_of=between)
    assert old.universe(T0 + 2 * DAY, "linear")["tick_size"].to_list() == [0.1]


def test_the_cli_knows_every_dataset_directory():
    # lake_has_no_data (the CLI's fast path) looks for every name of LAKE_ENTRIES.
    from marketlake.store.datasets import DATASETS
    from marketlake.store.perp import INSTRUMENTS
    from marketlake.store.storage import LAKE_ENTRIES

    assert all(name in LAKE_ENTRIES for name in (*DATASETS, INSTRUMENTS))
