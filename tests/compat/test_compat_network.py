"""OptimizedDataFetcher, HybridTradingSystem and WebSocketHandler against the Bybit emulator,
driven as the old API reference's examples do."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from marketlake.compat import (
    CSVManager,
    DataCollectionConfig,
    HybridTradingSystem,
    OptimizedDataFetcher,
    WebSocketHandler,
)
from marketlake.errors import ConfigError
from marketlake_emulator import BybitEmulator
from tests.integration.emulated import NOW, run_with_emulator
from tests.integration.live_support import SPEED, WS_FAST

DAY = 86_400_000


def make_config(emu: BybitEmulator, tmp_path: Path) -> DataCollectionConfig:
    config = DataCollectionConfig()
    config.API_BASE_URL = emu.url
    config.DATA_DIR = str(tmp_path / "data")
    config.LAKE_DIR = str(tmp_path / "lake")
    config.SYMBOLS = ["BTCUSDT", "ETHUSDT"]
    config.TIMEFRAMES = ["1", "5"]
    config.BULK_MAX_RETRIES = 3
    return config


def as_truth(emu: BybitEmulator, symbol: str, tf: str, rows: list[dict[str, Any]]) -> None:
    """``rows`` are exactly the emulator's candles over their span."""
    assert rows
    want = emu.market.candles(symbol, tf, rows[0]["timestamp"], rows[-1]["timestamp"])
    assert [r["timestamp"] for r in rows] == want["ts"].dt.epoch("ms").to_list()
    assert [r["close"] for r in rows] == want["close"].to_list()
    assert [r["volume"] for r in rows] == want["volume"].to_list()


def test_optimized_data_fetcher(tmp_path: Path) -> None:
    async def t(emu: BybitEmulator) -> None:
        config = make_config(emu, tmp_path)
        fetcher = OptimizedDataFetcher(config)
        await fetcher.initialize()
        success = await fetcher.fetch_historical_data_fast(
            symbols=["BTCUSDT", "ETHUSDT"], timeframes=["1", "5"], days=2, limit_50=False
        )
        assert success is True
        memory_data = fetcher.get_memory_data()
        assert sorted(memory_data) == ["BTCUSDT_1", "BTCUSDT_5", "ETHUSDT_1", "ETHUSDT_5"]
        btc_1m_data = memory_data.get("BTCUSDT_1", [])
        assert len(btc_1m_data) >= 2 * 1440 - 1
        assert set(btc_1m_data[0]) == {"timestamp", "datetime", "open", "high", "low", "close", "volume", "turnover"}
        assert btc_1m_data[-1]["timestamp"] < NOW and btc_1m_data[0]["timestamp"] >= NOW - 2 * DAY - 60_000
        as_truth(emu, "BTCUSDT", "1", btc_1m_data)
        as_truth(emu, "ETHUSDT", "5", memory_data["ETHUSDT_5"])
        # Again: the lake has it all; nothing is fetched twice, memory is the same.
        assert await fetcher.fetch_historical_data_fast(["BTCUSDT"], ["1"], 2) is True
        assert fetcher.last_outcome.plan.series == [] or all(
            not s.windows for s in fetcher.last_outcome.plan.series)
        assert fetcher.get_memory_data()["BTCUSDT_1"] == btc_1m_data
        # limit_50: the latest 50 closed candles.
        assert await fetcher.fetch_historical_data_fast(["ETHUSDT"], ["15"], 30, limit_50=True) is True
        recent = fetcher.get_memory_data()["ETHUSDT_15"]
        assert len(recent) == 50 and recent[-1]["timestamp"] + 15 * 60_000 <= NOW
        as_truth(emu, "ETHUSDT", "15", recent)
        all_symbols = await fetcher._get_all_symbols()
        print(f"Available symbols: {len(all_symbols)}")
        assert all_symbols == sorted(emu.market.symbols("linear")) == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
        # An unknown symbol: False, as the old fetcher answered; the rest still fetched.
        assert await fetcher.fetch_historical_data_fast(["NOPEUSDT", "BTCUSDT"], ["5"], 1) is False
        with pytest.raises(ValueError):
            await fetcher.fetch_historical_data_fast(["btc"], ["1"], 1)
        with pytest.raises(ValueError):
            await fetcher.fetch_historical_data_fast(["BTCUSDT"], ["7"], 1)
        results = await asyncio.gather(*(fetcher._fetch_symbol_timeframe(s, "60", 1, False)
                                         for s in ("BTCUSDT", "ETHUSDT")), return_exceptions=True)
        # Hours opening in [now - 1 day, now) and closed: 10:00 yesterday .. 08:00 (09:00 is forming).
        assert [len(r) for r in results] == [23, 23]  # type: ignore[arg-type]
        await fetcher.close()

    run_with_emulator(t, symbols=["BTCUSDT", "ETHUSDT", "SOLUSDT"])


def test_hybrid_trading_system_full_recent_csv(tmp_path: Path) -> None:
    async def t(emu: BybitEmulator) -> None:
        config = make_config(emu, tmp_path)
        config.RUN_GAP_FILLING = True
        async with HybridTradingSystem(config) as system:
            await system.fetch_data_hybrid(symbols=["BTCUSDT", "ETHUSDT"], timeframes=["1", "5"], days=1, mode="full")
            assert system.last_check is not None and all(not sc.unexplained for sc in system.last_check.series)
            data = system.get_data("BTCUSDT", "1", source="memory")
            as_truth(emu, "BTCUSDT", "1", data)
            assert system.get_data("BTCUSDT", "1m", source="combined") == data  # no stream: history only
            assert system.get_data("BTCUSDT", "1", source="websocket") == []
            await system.save_to_csv(directory=config.DATA_DIR)
            assert system.get_data("BTCUSDT", "1", source="csv") == data
            assert sorted(p.name for p in Path(config.DATA_DIR).iterdir()) == [
                "BTCUSDT_1.csv", "BTCUSDT_5.csv", "ETHUSDT_1.csv", "ETHUSDT_5.csv"]
            with pytest.raises(ValueError, match="source"):
                system.get_data("BTCUSDT", "1", source="redis")
            with pytest.raises(ValueError, match="mode"):
                await system.fetch_data_hybrid(mode="fast")
        config.LIMIT_TO_50_ENTRIES = True
        config.RUN_INTEGRITY_CHECK = False
        other = tmp_path / "csv50"
        async with HybridTradingSystem(config) as system:
            await system.fetch_data_hybrid(mode="recent")  # config.SYMBOLS x config.TIMEFRAMES
            assert len(system.get_data("ETHUSDT", "5")) == 50 and system.last_check is None
            await system.save_to_csv(directory=str(other))
        cfg2 = make_config(emu, tmp_path)
        cfg2.DATA_DIR = str(other)
        assert [len(CSVManager(cfg2).read_csv_data(s, tf)) for s in ("BTCUSDT", "ETHUSDT") for tf in ("1", "5")] == [50] * 4

    run_with_emulator(t, symbols=["BTCUSDT", "ETHUSDT"])


def wait(cond: Any, what: str, limit_s: float = 60.0) -> Any:
    async def loop() -> None:
        end = time.monotonic() + limit_s
        while not cond():
            assert time.monotonic() < end, f"{what} not reached"
            await asyncio.sleep(0.05)
    return loop()


def test_websocket_handler_and_live_mode(tmp_path: Path) -> None:
    async def t(emu: BybitEmulator) -> None:
        config = make_config(emu, tmp_path)
        config.TIMEFRAMES = ["1"]
        got: list[dict[str, Any]] = []
        got_async: list[dict[str, Any]] = []

        def process_candle(candle_data: dict[str, Any]) -> None:
            got.append(candle_data)

        async def process_async(candle_data: dict[str, Any]) -> None:
            got_async.append(candle_data)

        ws_handler = WebSocketHandler(config, symbols=["BTCUSDT"], ws_options=WS_FAST)
        ws_handler.add_callback(process_candle)
        await ws_handler.connect()
        assert ws_handler.is_connected
        ws_handler.add_callback(process_async)  # added while streaming
        await wait(lambda: len(got) >= 3 and len(got_async) >= 2, "three closed candles")
        real_time_data = ws_handler.get_real_time_data("BTCUSDT", "1")
        await ws_handler.close()
        closed = [c for c in real_time_data if c["confirm"]]
        assert len(closed) >= 3 and all(c["symbol"] == "BTCUSDT" and c["timeframe"] == "1" for c in got)
        assert [c["timestamp"] for c in got][: len(closed)] == [c["timestamp"] for c in closed][: len(got)]
        assert {"timestamp", "datetime", "open", "high", "low", "close", "volume", "turnover", "confirm"} <= set(closed[0])
        as_truth(emu, "BTCUSDT", "1", closed)
        # The stream went into the lake too.
        from marketlake.store import Lake

        stored = Lake(config.LAKE_DIR).read_candles("BTCUSDT", "1")
        assert {c["timestamp"] for c in closed} <= set(stored["ts"].dt.epoch("ms").to_list())

        config.ENABLE_WEBSOCKET = False
        async with HybridTradingSystem(config) as system:
            with pytest.raises(ConfigError):
                await system.fetch_data_hybrid(mode="live")
        config.ENABLE_WEBSOCKET = True
        system = HybridTradingSystem(config)
        system.ws_options = dict(WS_FAST)
        await system.initialize()
        await system.fetch_data_hybrid(symbols=["ETHUSDT"], timeframes=["1"], mode="live")
        assert system.ws_handler is not None
        await wait(lambda: len([c for c in system.get_data("ETHUSDT", "1", "websocket") if c["confirm"]]) >= 2,
                   "two streamed candles")
        await system.fetch_data_hybrid(symbols=["ETHUSDT"], timeframes=["1"], days=1, mode="full")
        combined = system.get_data("ETHUSDT", "1", source="combined")
        stamps = [c["timestamp"] for c in combined]
        assert stamps == sorted(set(stamps)) and len(combined) > 1000
        await system.update_csv_with_realtime_data(directory=config.DATA_DIR)
        csv_rows = system.get_data("ETHUSDT", "1", source="csv")
        assert csv_rows and all(c["timestamp"] in set(stamps) for c in csv_rows)
        await system.close()

    run_with_emulator(t, symbols=["BTCUSDT", "ETHUSDT"], speed=SPEED)
