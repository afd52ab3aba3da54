"""Seed-004 interfaces: MarketDataManager, StateManager, DatabaseManager and module functions."""

from __future__ import annotations

import asyncio
from pathlib import Path

import polars as pl
import pytest

from marketlake.compat import (
    DatabaseManager,
    MarketDataManager,
    StateManager,
    configure,
    delete_state,
    get_candles,
    get_latest_price,
    get_state,
    process_market_data,
    set_state,
)
from marketlake.core.candles import candles_from_trades
from marketlake.errors import DataValidationError, InvalidSymbolError, SinkError
from marketlake.settings import Settings
from marketlake.state import StateEvent, open_state_store
from marketlake.store import Lake
from tests.helpers import T0, candles
from tests.servers import free_port

MIN = 60_000


def new_lake(tmp_path: Path) -> Lake:
    return Lake(tmp_path / "lake", settings=Settings.load(environ={}))


def trades(n: int, start: int = T0) -> list[dict]:
    return [{"symbol": "BTCUSDT", "price": 100.0 + i % 5, "size": 0.5 + i % 3, "timestamp": start + i * 7_000,
             "side": "Buy" if i % 2 else "sell", "trade_id": f"x{i}"} for i in range(n)]


def test_market_data_manager(tmp_path: Path) -> None:
    lake = new_lake(tmp_path)

    async def main() -> None:
        store = open_state_store(tmp_path / "state.sqlite", lake=lake)
        events: list[StateEvent] = []
        await store.subscribe(events.append)
        manager = MarketDataManager(lake, store)
        rows = trades(20)  # 20 trades every 7 s: minutes 0, 1 and 2
        for t in rows:
            await manager.process_trade(t)
        await manager.process_trade(rows[3])  # a re-sent trade is ignored
        assert await manager.get_latest_price("BTCUSDT") == rows[-1]["price"]
        candle = await manager.generate_candle("BTCUSDT", T0 + 30_000)
        ref = candles_from_trades(pl.DataFrame({
            "ts": [t["timestamp"] for t in rows], "price": [t["price"] for t in rows],
            "size": [t["size"] for t in rows], "side": [t["side"] for t in rows]}), "1")
        first = ref.row(0, named=True)
        assert candle is not None and candle["timestamp"] == T0 and candle["confirm"] is True
        assert (candle["open"], candle["high"], candle["low"], candle["close"], candle["volume"], candle["trades"]) == (
            first["open"], first["high"], first["low"], first["close"], first["volume"], first["trades"])
        # The closed candle and every buffered trade are in the lake; the cache has the candle.
        assert lake.read_candles("BTCUSDT", "1")["close"].to_list() == [first["close"]]
        assert lake.read_trades("BTCUSDT").height == 20
        assert (await store.latest_candle("BTCUSDT", "1"))["close"] == first["close"]  # type: ignore[index]
        # Later minutes come from the stored trades (the buffer was flushed).
        second = await manager.generate_candle("BTCUSDT", T0 + MIN + 1)
        assert second is not None and second["close"] == ref.row(1, named=True)["close"]
        assert await manager.generate_candle("BTCUSDT", T0 + 10 * MIN) is None
        names = [e.name for e in events]
        assert names.count("trade_processed") == 20 and names.count("candle_generated") == 2
        assert names.count("price_updated") == 20
        hist = await manager.get_historical_data("BTCUSDT", T0, T0 + MIN)  # inclusive end
        assert [c["timestamp"] for c in hist] == [T0, T0 + MIN]
        for bad in ({"symbol": "BTCUSDT", "price": -1, "size": 1, "timestamp": T0, "side": "Buy"},
                    {"symbol": "BTCUSDT", "price": 1, "size": 1, "timestamp": T0, "side": "hold"},
                    {"symbol": "BTCUSDT", "price": "x", "size": 1, "timestamp": T0, "side": "Buy"},
                    {"price": 1, "size": 1, "timestamp": T0, "side": "Buy"}, ["not", "a", "dict"]):
            with pytest.raises(DataValidationError):
                await manager.process_trade(bad)  # type: ignore[arg-type]
        await store.close()

    asyncio.run(main())


def test_get_candles_and_module_functions_on_redis(tmp_path: Path, redis_url: str) -> None:
    lake = new_lake(tmp_path)
    lake.write_candles(candles(500), symbol="ETHUSDT", timeframe="5")
    lake.write_candles(candles(30), symbol="ETHUSDT", timeframe="1")
    configure(lake=lake, state_url=redis_url)

    async def main() -> None:
        got = await get_candles("ETHUSDT", "5m", limit=100)
        assert len(got) == 100 and got[-1]["timestamp"] == T0 + 499 * MIN
        assert [c["timestamp"] for c in got] == [T0 + i * MIN for i in range(400, 500)]
        assert len(await get_candles("ETHUSDT", "5", limit=5000)) == 500  # capped at 1000, series has 500
        assert await get_candles("SOLUSDT", "5") == []
        with pytest.raises(DataValidationError):
            await get_candles("ETHUSDT", "5", limit=0)
        # No cached price yet: the close of the candle that closed last across timeframes (the
        # 5m series here runs to T0 + 504 min, the 1m one to T0 + 30 min).
        assert await get_latest_price("ETHUSDT") == candles(500)["close"][-1]
        assert await get_latest_price("XRPUSDT") is None
        # A Bybit publicTrade push and a kline push, as the socket delivers them.
        await process_market_data({"topic": "publicTrade.ETHUSDT", "data": [
            {"T": T0 + 31 * MIN, "s": "ETHUSDT", "S": "Buy", "v": "0.01", "p": "3000.5", "i": "a1"}]})
        assert await get_latest_price("ETHUSDT") == 3000.5
        await process_market_data({"topic": "kline.1.ETHUSDT", "data": [
            {"start": T0 + 30 * MIN, "open": "1", "high": "2", "low": "0.5", "close": "1.5", "volume": "9",
             "turnover": "10", "confirm": True}]})
        assert lake.read_candles("ETHUSDT", "1").height == 31
        with pytest.raises(DataValidationError, match="topic"):
            await process_market_data({"topic": "orderbook.50.ETHUSDT", "data": []})
        await set_state("strategy:alpha:state", {"z": 1.5})
        assert await get_state("strategy:alpha:state") == {"z": 1.5}
        await delete_state("strategy:alpha:state")
        assert await get_state("strategy:alpha:state") == {}
        # Visible to any other process on the same Redis under the old key name.
        import redis.asyncio as aioredis

        r = aioredis.Redis.from_url(redis_url)
        assert await r.exists("market:ETHUSDT:latest", "market:ETHUSDT:candle:1") == 2
        assert 0 < await r.ttl("market:ETHUSDT:latest") <= 60
        await r.aclose()

    try:
        asyncio.run(main())
    finally:
        configure()


def test_state_manager(tmp_path: Path) -> None:
    async def main() -> None:
        manager = StateManager(open_state_store(tmp_path / "s.sqlite"))
        assert await manager.get_strategy_state("s1") == {}
        await manager.update_strategy_state("s1", {"signal": "long", "size": 2})
        assert await manager.get_strategy_state("s1") == {"signal": "long", "size": 2}
        await manager.update_position_state("p1", {"qty": 1})
        assert await manager.get_position_state("p1") == {"qty": 1}
        await manager.update_settings("risk", {"max": 3})
        assert await manager.get_settings("risk") == {"max": 3}
        assert await manager.redis.keys() == ["position:p1:state", "settings:risk:config", "strategy:s1:state"]
        with pytest.raises(DataValidationError):
            await manager.update_strategy_state("bad id", {})
        await manager.redis.close()

    asyncio.run(main())


def test_database_manager_binds_parameters(pg_dsn: str) -> None:
    async def main() -> None:
        db = DatabaseManager(pg_dsn)
        with pytest.raises(SinkError, match="initialize"):
            await db.execute_query("SELECT 1", ())
        await db.initialize()
        hostile = "BTC'); DROP TABLE candles; --"
        n = await db.batch_insert("trades", [
            {"symbol": "BTCUSDT", "trade_id": "1", "price": 1.5, "size": 2, "timestamp": "2024-01-01T00:00:00Z",
             "side": "Buy"},
            {"symbol": hostile, "trade_id": "2", "price": 1.5, "size": 2, "timestamp": "2024-01-01T00:00:01Z",
             "side": "Sell"},
        ])
        assert n == 2
        rows = await db.execute_query("SELECT symbol, side FROM trades WHERE trade_id = %s", ("2",))
        assert rows == [{"symbol": hostile, "side": "Sell"}]
        rows = await db.execute_query("SELECT count(*) AS n FROM trades WHERE side = $1 OR symbol = $2", ("Buy", hostile))
        assert rows == [{"n": 2}]  # the Buy row, and the hostile text matched as a plain value
        assert await db.execute_query("UPDATE trades SET side = %s WHERE trade_id = %s", ("Sell", "1")) == 1
        assert await db.execute_query("SELECT count(*) AS n FROM candles;") == [{"n": 0}]  # the table survived
        for query, params in (("SELECT 1; DROP TABLE candles", ()), ("SELECT %s", "abc"), ("", ())):
            with pytest.raises(DataValidationError):
                await db.execute_query(query, params)  # type: ignore[arg-type]
        with pytest.raises(SinkError, match="duplicate key"):
            await db.batch_insert("trades", [{"symbol": "BTCUSDT", "trade_id": "1", "timestamp": "2024-01-01Z"}])
        for table, recs in (("trades; DROP TABLE x", [{"a": 1}]), ("a.b.c", [{"a": 1}]),
                            ("trades", [{"bad col": 1}]), ("trades", [{"symbol": "A"}, {"price": 1}])):
            with pytest.raises(DataValidationError):
                await db.batch_insert(table, recs)
        assert await db.batch_insert("trades", []) == 0
        with pytest.raises(SinkError, match="syntax"):
            await db.execute_query("SELEC 1", ())
        await db.close()
        dead = DatabaseManager(f"postgresql://u:pw123@127.0.0.1:{free_port()}/x", open_timeout_s=1.0)
        with pytest.raises(SinkError) as err:
            await dead.initialize()
        assert "pw123" not in str(err.value)

    asyncio.run(main())


def test_bad_symbols_never_reach_the_lake(tmp_path: Path) -> None:
    lake = new_lake(tmp_path)

    async def main() -> None:
        manager = MarketDataManager(lake, open_state_store(tmp_path / "s.sqlite"))
        for sym in ("../x", "btcusdt", "", None):
            with pytest.raises(InvalidSymbolError):
                await manager.process_trade({"symbol": sym, "price": 1, "size": 1, "timestamp": T0, "side": "Buy"})
            with pytest.raises((InvalidSymbolError, DataValidationError)):
                await manager.get_historical_data(sym, T0, T0 + MIN)  # type: ignore[arg-type]
        await manager.cache.close()

    asyncio.run(main())
    assert not (tmp_path / "lake" / "trades").exists()
