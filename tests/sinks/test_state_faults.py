"""State store across processes and under faults: Redis flushed, Redis gone, SQLite shared."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from marketlake.errors import SinkError
from marketlake.ingest.live_types import LiveCandle, LiveTrade, TradeBatch
from marketlake.state import StateEvent, open_state_store
from marketlake.state.live import StateSink
from marketlake.store import Lake
from tests.helpers import T0, candles
from tests.servers import RedisServer

REPO = Path(__file__).resolve().parents[2]


def lake_files(lake: Lake) -> dict[str, int]:
    return {str(p.relative_to(lake.root)): p.stat().st_size for p in lake.root.rglob("*.parquet")}


def test_redis_events_reach_other_processes(redis_url: str) -> None:
    """A store publishing on Redis reaches another store's subscriber exactly once; a store does
    not get its own events twice."""

    async def main() -> None:
        async with open_state_store(redis_url) as a, open_state_store(redis_url) as b:
            got_b: list[StateEvent] = []
            got_a: list[StateEvent] = []
            arrived = asyncio.Event()

            def on_b(ev: StateEvent) -> None:
                got_b.append(ev)
                if ev.name == "cache_cleared":
                    arrived.set()

            await b.subscribe(on_b)
            await a.subscribe(got_a.append)
            await a.set_strategy_state("s1", {"pnl": 1.5})
            await a.delete_state("strategy:s1:state")
            await a.clear()
            await asyncio.wait_for(arrived.wait(), 10)
            assert [(e.name, e.key, e.data) for e in got_b] == [
                ("state_updated", "strategy:s1:state", {"pnl": 1.5}),
                ("state_deleted", "strategy:s1:state", None),
                ("cache_cleared", "market:*", {"removed": 0}),
            ]
            assert all(e.origin == a.events.origin != b.events.origin for e in got_b)
            # a's own events: delivered once, in process, even though Redis echoes them back.
            await b.set_state("ping", {"x": 1})  # an event from b, after a's echoes
            for _ in range(1000):
                if len(got_a) == 4:
                    break
                await asyncio.sleep(0.005)
            assert [e.name for e in got_a] == ["state_updated", "state_deleted", "cache_cleared", "state_updated"]
            assert got_a[-1].origin == b.events.origin

    asyncio.run(main())


def test_redis_flushed_mid_run(redis_url: str, redis_server: RedisServer, lake: Lake) -> None:
    """FLUSHALL under a running store: state is gone (None), market data comes from the lake,
    later writes work, and the lake is untouched."""
    lake.write_candles(candles(5), symbol="BTCUSDT", timeframe="1")
    before = lake_files(lake)

    async def main() -> None:
        async with open_state_store(redis_url, lake=lake) as store:
            await store.set_strategy_state("s", {"a": 1})
            await store.set_latest_price("BTCUSDT", 123.0)
            await store.backend.client.flushall()  # type: ignore[attr-defined]
            assert await store.get_strategy_state("s") is None
            price = await store.latest_price("BTCUSDT")
            assert price is not None and price["source"] == "lake" and price["price"] == candles(5)["close"][-1]
            await store.set_strategy_state("s", {"a": 2})
            assert await store.get_strategy_state("s") == {"a": 2}

    asyncio.run(main())
    assert lake_files(lake) == before


def test_redis_unreachable_mid_run(redis_url: str, redis_server: RedisServer, lake: Lake) -> None:
    """Redis killed mid-run: state calls raise SinkError naming the server; market-data reads
    fall back to the lake; the live sink counts the failures; after a restart all works again."""
    lake.write_candles(candles(5), symbol="BTCUSDT", timeframe="1")
    before = lake_files(lake)

    async def main() -> None:
        async with open_state_store(redis_url, lake=lake) as store:
            seen: list[StateEvent] = []
            await store.subscribe(seen.append)
            await store.set_position_state("p", {"qty": 1})
            redis_server.stop()
            with pytest.raises(SinkError, match=rf"redis redis://127.0.0.1:{redis_server.port}/0: GET position:p:state"):
                await store.get_position_state("p")
            with pytest.raises(SinkError, match="SET strategy:s:state"):
                await store.set_strategy_state("s", {"a": 1})
            assert [e.name for e in seen] == ["state_updated"]  # nothing reported for the failed write
            price = await store.latest_price("BTCUSDT")
            assert price is not None and price["source"] == "lake"
            candle = await store.latest_candle("BTCUSDT", "1")
            assert candle is not None and candle["source"] == "lake"

            sink = StateSink(store)
            c = LiveCandle(symbol="BTCUSDT", timeframe="1", ts_ms=T0, open=1, high=2, low=0.5, close=1.5, volume=3)
            await sink.on_candle(c)
            await sink.on_trades(TradeBatch("BTCUSDT", (LiveTrade(T0, 1.6, 0.1, "Buy", "t1"),)))
            assert (sink.errors, sink.candles, sink.prices) == (2, 0, 0)

            redis_server.start()  # same port: redis-py reconnects on the next call
            await store.set_strategy_state("s", {"a": 1})
            assert await store.get_strategy_state("s") == {"a": 1}
            assert await store.get_position_state("p") is None  # Redis restarted empty (no persistence)
            await sink.on_candle(c)
            await sink.on_trades(TradeBatch("BTCUSDT", (LiveTrade(T0 + 5, 1.6, 0.1, "Buy", "t1"),)))
            assert (sink.errors, sink.candles, sink.prices) == (2, 1, 2)
            assert (await store.latest_price("BTCUSDT"))["price"] == 1.6  # type: ignore[index]
            latest = await store.latest_candle("BTCUSDT", "1")
            assert latest is not None and latest["close"] == 1.5 and latest["confirm"] is True
            assert "candle_generated" in [e.name for e in seen]

    asyncio.run(main())
    assert lake_files(lake) == before


def test_redis_refused_from_the_start() -> None:
    from tests.servers import free_port

    async def main() -> None:
        async with open_state_store(f"redis://:s3cret@127.0.0.1:{free_port()}/0") as store:
            with pytest.raises(SinkError) as err:
                await store.get_state("k")
            assert "s3cret" not in str(err.value) and ":***@127.0.0.1" in str(err.value)
            assert "s3cret" not in repr(store)

    pytest.importorskip("redis", reason="REDIS TESTS SKIPPED: the redis package is missing")
    asyncio.run(main())


_WRITER = """
import asyncio, sys
from marketlake.state import open_state_store

async def main(path, who, n):
    async with open_state_store(path) as store:
        for i in range(n):
            await store.set_state(f"w{who}:{i}", {"who": who, "i": i})
            await store.set_state("shared", {"last": who})

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"""


def test_sqlite_shared_by_processes(tmp_path: Path) -> None:
    """Three processes writing the same SQLite file at once: every write lands, none fails."""
    path = str(tmp_path / "state.sqlite")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, path, str(w), "100"], env=env, stderr=subprocess.PIPE)
        for w in range(3)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()[-2000:]

    async def main() -> None:
        async with open_state_store(path) as store:
            keys = await store.keys("w*")
            assert len(keys) == 300
            assert await store.get_state("w2:99") == {"who": 2, "i": 99}
            assert (await store.get_state("shared"))["last"] in range(3)  # type: ignore[index]

    asyncio.run(main())
