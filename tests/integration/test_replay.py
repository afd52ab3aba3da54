"""serve --lake: the emulator replays a lake; ingesting from it reproduces the lake."""

from __future__ import annotations

import asyncio

import polars as pl

from marketlake_emulator import BybitEmulator
from marketlake_emulator.replay import LakeMarket
from marketlake.ingest.service import IngestRequest, run_ingest
from marketlake.interop.csv import import_csv
from marketlake.settings import Settings
from marketlake.store import Lake
from tests.integration.emulated import client_for


def test_a_lake_replayed_through_the_emulator_ingests_back_into_an_identical_lake(tmp_path, shared_dir):
    source = Lake(tmp_path / "source", settings=Settings.load(environ={}))
    real = shared_dir / "fixtures" / "real" / "btc-perp-20211231-20220201_1m.csv"
    assert import_csv(source, [real], symbol="BTCPERP", timeframe="1").ok
    market = LakeMarket(source)
    spec = market.instrument("BTCPERP")
    assert spec.launch_ms == 1_640_991_660_000 and spec.price_scale <= 3
    copy = Lake(tmp_path / "copy", settings=Settings.load(environ={}))

    async def main() -> None:
        async with BybitEmulator(market, start_ms=market.last_ms + 86_400_000, speed=0.0) as emu:
            req = IngestRequest.of(symbols="BTCPERP", timeframes="1,60", start_ms=1_640_995_200_000, end_ms=1_643_673_600_000)
            async with client_for(emu.url, copy) as client:
                out = await run_ingest(copy, client, req)
            assert out.ok, (out.stats.failures, out.unexplained_gaps)

    asyncio.run(main())
    january = dict(start="2022-01-01", end="2022-02-01")
    want = source.read_candles("BTCPERP", "1", **january).drop("symbol")
    got = copy.read_candles("BTCPERP", "1", **january).drop("symbol")
    assert got.height == 31 * 1440
    exact = ["timeframe", "ts", "open", "high", "low", "close", "trades", "buy_volume", "filled"]
    assert got.select(exact).equals(want.select(exact))
    # The FTX file's volumes carry float noise (17 significant digits, e.g. 203889.11713750003):
    # on the wire they travel as decimals of at most 2**53 units, within 1e-15 relative.
    rel = ((got["volume"] - want["volume"]).abs() / want["volume"].abs().clip(1e-12)).max()
    assert rel < 1e-14
    assert (got["turnover"] == 0).all()  # no turnover stored: the wire has no null, 0 is served
    # 60m was never stored: the replay resamples the minutes, exactly.
    hours = copy.read_candles("BTCPERP", "60", **january)
    assert hours.height == 31 * 24
    first = want.head(60)
    assert hours.row(0, named=True)["high"] == first["high"].max()
    assert hours.row(0, named=True)["volume"] == first["volume"].sum()
    assert hours["close"][-1] == want["close"][-1]
    assert pl.Series(hours["ts"]).is_sorted()


def test_serve_lake_command_replays_over_http(tmp_path, shared_dir):
    import json
    import subprocess
    import sys
    import urllib.request
    from pathlib import Path

    lake_dir = tmp_path / "lake"
    source = Lake(lake_dir, settings=Settings.load(environ={}))
    import_csv(source, [shared_dir / "fixtures" / "real" / "btc-perp-20211231-20220201_1m.csv"], symbol="BTCPERP", timeframe="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "marketlake", "serve", "--lake", str(lake_dir), "--port", "0", "--speed", "0"],
        cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline()
        assert "listening on" in line, proc.stderr.read()
        url = line.split("listening on ")[1].split()[0]
        q = "/v5/market/kline?category=linear&symbol=BTCPERP&interval=60&start=1641081600000&end=1641088800000"
        with urllib.request.urlopen(url + q, timeout=30) as resp:
            body = json.loads(resp.read())
        rows = body["result"]["list"]
        assert body["retCode"] == 0 and [r[0] for r in rows] == ["1641088800000", "1641085200000", "1641081600000"]
        hour = source.read_candles("BTCPERP", "1", 1641081600000, 1641085200000)
        assert float(rows[-1][2]) == hour["high"].max() and float(rows[-1][4]) == hour["close"][-1]
    finally:
        proc.terminate()
        proc.wait(30)


def test_a_replayed_lake_serves_its_stored_trades_as_daily_archive_files(tmp_path, shared_dir):
    import datetime as dt

    from marketlake.ingest.archive import run_archive_ingest

    source = Lake(tmp_path / "source", settings=Settings.load(environ={}))
    real = shared_dir / "fixtures" / "real" / "btc-perp-20211231-20220201_1m.csv"
    assert import_csv(source, [real], symbol="BTCPERP", timeframe="1").ok
    # Trades for two days, times on whole ms (the wire and the archive carry ms from a replay).
    ts = [1_641_081_600_000 + i * 7_001 for i in range(20_000)]  # 2022-01-02 00:00 + ~39 h
    trades = pl.DataFrame(
        {"ts": ts, "price": [47000.0 + (i % 50) / 2 for i in range(len(ts))], "size": [0.001 * (1 + i % 7) for i in range(len(ts))],
         "side": ["Buy" if i % 3 else "Sell" for i in range(len(ts))], "trade_id": [f"t{i}" for i in range(len(ts))]}
    )
    source.write_trades(trades, symbol="BTCPERP")
    market = LakeMarket(source)
    copy = Lake(tmp_path / "copy", settings=Settings.load(environ={}))

    async def main() -> None:
        async with BybitEmulator(market, start_ms=market.last_ms + 86_400_000, speed=0.0) as emu:
            _, st = await run_archive_ingest(
                copy, ["BTCPERP"], category="linear", start=dt.date(2022, 1, 1), end=dt.date(2022, 1, 5), base_url=emu.url
            )
            assert st is not None and not st.failures and st.days_fetched == 2 and st.days_empty == 2

    asyncio.run(main())
    keys = ["ts", "price", "size", "side", "trade_id"]
    assert copy.read_trades("BTCPERP").select(keys).equals(source.read_trades("BTCPERP").select(keys))
