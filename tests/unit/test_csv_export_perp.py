"""export-csv of the perpetual datasets: one chronological file per series with a header; the
values read back exactly."""

from __future__ import annotations

import numpy as np
import polars as pl

from marketlake.cli.app import main
from marketlake.interop.csv import export_csv
from tests.feeder_support import new_lake

T0 = 1_704_067_200_000
M = 60_000
H = 60 * M


def test_every_dataset_round_trips_its_values(tmp_path):
    lake = new_lake(tmp_path / "lake")
    rng = np.random.default_rng(5)
    funding = pl.DataFrame({"ts": [T0 + i * 8 * H for i in range(30)], "rate": rng.normal(0, 3e-4, 30),
                            "interval_minutes": [480] * 20 + [60] * 10})
    lake.write_funding(funding.sample(fraction=1.0, shuffle=True, seed=1), symbol="BTCUSDT")
    px = pl.DataFrame({"ts": [T0 + i * M for i in range(500)], "open": rng.normal(0, 1e-3, 500),
                       "high": 1.0, "low": -1.0, "close": rng.normal(0, 1e-3, 500) / 3})
    for kind in ("mark", "index", "premium"):
        lake.write_price_candles(kind, px, symbol="BTCUSDT", timeframe="1")
    lake.write_price_candles("mark", px.head(3), symbol="ETHUSDT", timeframe="60")
    oi = pl.DataFrame({"ts": [T0 + i * 5 * M for i in range(200)], "open_interest": rng.random(200) * 1e7})
    lake.write_open_interest(oi, symbol="BTCUSDT", interval="5min")
    lake.write_open_interest(oi.head(10).with_columns(pl.col("ts") - T0 % (24 * H)), symbol="BTCUSDT", interval="1d")
    files = export_csv(lake, tmp_path / "out", data="all")
    assert sorted(f.name for f in files) == sorted([
        "BTCUSDT_funding.csv", "BTCUSDT_1_mark.csv", "ETHUSDT_60_mark.csv", "BTCUSDT_1_index.csv",
        "BTCUSDT_1_premium.csv", "BTCUSDT_oi_5min.csv", "BTCUSDT_oi_1d.csv"])
    back = pl.read_csv(tmp_path / "out" / "BTCUSDT_funding.csv")
    assert back.columns == ["timestamp", "datetime", "rate", "interval_minutes"]
    assert back["timestamp"].to_list() == funding["ts"].to_list()  # chronological
    assert back["rate"].to_list() == funding["rate"].to_list()  # exactly (shortest round trip)
    assert back["interval_minutes"].to_list() == funding["interval_minutes"].to_list()
    assert back["datetime"][0] == "2024-01-01 00:00:00"
    for kind in ("mark", "index", "premium"):
        got = pl.read_csv(tmp_path / "out" / f"BTCUSDT_1_{kind}.csv")
        assert got.columns == ["timestamp", "datetime", "open", "high", "low", "close"]
        assert got.drop("datetime").rename({"timestamp": "ts"}).equals(px)
    got = pl.read_csv(tmp_path / "out" / "BTCUSDT_oi_5min.csv")
    assert got["open_interest"].to_list() == oi["open_interest"].to_list()
    # The default stays klines only; --data picks.
    assert export_csv(lake, tmp_path / "none") == []
    assert main(["export-csv", str(tmp_path / "cli"), "--lake", str(lake.root), "--data", "funding",
                 "--start", "2024-01-02", "--end", "2024-01-03"]) == 0
    day = pl.read_csv(tmp_path / "cli" / "BTCUSDT_funding.csv")
    assert day["timestamp"].to_list() == [T0 + 24 * H, T0 + 32 * H, T0 + 40 * H]
    assert main(["export-csv", str(tmp_path / "cli"), "--lake", str(lake.root), "--data", "bogus"]) == 2
