"""One behaviour suite for the state store, run against both backends (SQLite and a real Redis)."""

from __future__ import annotations

import asyncio
import math
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from marketlake.clock import ManualClock, use_clock
from marketlake.errors import ConfigError, DataValidationError, InvalidSymbolError
from marketlake.state import EVENTS, StateEvent, StateStore, StateTTL, open_state_store
from marketlake.store import Lake
from tests.helpers import T0, candles

BACKENDS = ["sqlite", "redis"]


def make_store(kind: str, tmp_path: Path, request: pytest.FixtureRequest, **kw: Any) -> StateStore:
    if kind == "redis":
        url = request.getfixturevalue("redis_url")
        return open_state_store(url, **kw)
    return open_state_store(f"sqlite:{tmp_path / 'state.sqlite'}", **kw)


def run(coro_fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(coro_fn())


async def ttl_ms(store: StateStore, key: str) -> int | None:
    """The remaining life of ``key`` as the backend itself records it (None: no expiry)."""
    if store.backend.kind == "redis":
        left = await store.backend.client.pttl(key)  # type: ignore[attr-defined]
        return None if left == -1 else int(left)
    con = sqlite3.connect(store.backend.location)  # type: ignore[attr-defined]
    try:
        exp, upd = con.execute("SELECT expires_ms, updated_ms FROM state WHERE key = ?", (key,)).fetchone()
    finally:
        con.close()
    return None if exp is None else exp - upd


@pytest.fixture(params=BACKENDS)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


def test_state_round_trip_and_delete(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    async def main() -> None:
        async with make_store(kind, tmp_path, request) as store:
            assert await store.get_state("strategy:a:state") is None
            value = {"equity": 1000.5, "open": [1, 2], "nested": {"x": None, "ok": True}, "name": "ä"}
            await store.set_state("strategy:a:state", value)
            assert await store.get_state("strategy:a:state") == value
            await store.set_state("strategy:a:state", {"equity": 2.0})  # overwrite, not merge
            assert await store.get_state("strategy:a:state") == {"equity": 2.0}
            assert await store.delete_state("strategy:a:state") is True
            assert await store.delete_state("strategy:a:state") is False
            assert await store.get_state("strategy:a:state") is None

    run(main)


def test_old_key_names(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    async def main() -> None:
        async with make_store(kind, tmp_path, request) as store:
            await store.set_strategy_state("mean-rev", {"z": 1})
            await store.set_position_state("p42", {"qty": 0.5})
            await store.set_settings("risk", {"max_dd": 0.2})
            await store.set_latest_price("BTCUSDT", 64000.5, volume=3.0, timestamp=T0)
            await store.set_latest_candle("BTCUSDT", "1m", {"timestamp": T0, "open": 1, "high": 2, "low": 0.5,
                                                            "close": 1.5, "volume": 10.0})
            assert await store.keys("*") == [
                "market:BTCUSDT:candle:1", "market:BTCUSDT:latest", "position:p42:state",
                "settings:risk:config", "strategy:mean-rev:state",
            ]
            assert await store.get_state("strategy:mean-rev:state") == {"z": 1}
            assert await store.get_strategy_state("mean-rev") == {"z": 1}
            assert await store.get_position_state("p42") == {"qty": 0.5}
            assert await store.get_settings("risk") == {"max_dd": 0.2}
            assert await store.latest_price("BTCUSDT") == {
                "symbol": "BTCUSDT", "price": 64000.5, "volume": 3.0, "timestamp": T0,
            }
            candle = await store.latest_candle("BTCUSDT", "1")
            assert candle is not None
            assert (candle["interval"], candle["datetime"], candle["close"]) == ("1", "2024-01-01 00:00:00", 1.5)
            assert await store.get_position_state("nope") is None

    run(main)


def test_default_and_configured_ttls(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    async def main() -> None:
        async with make_store(kind, tmp_path, request) as store:
            await store.set_latest_price("ETHUSDT", 3000.0)
            await store.set_latest_candle("ETHUSDT", "5", {"timestamp": T0, "open": 1, "high": 1, "low": 1, "close": 1})
            await store.set_strategy_state("s", {})
            await store.set_state("plain", {"a": 1})
            await store.set_state("forever", {"a": 1}, ttl_s=None)
            got = {k: await ttl_ms(store, k) for k in
                   ("market:ETHUSDT:latest", "market:ETHUSDT:candle:5", "strategy:s:state", "plain", "forever")}
        # Redis counts down from the SET; a few ms may have passed.
        assert 59_000 < got["market:ETHUSDT:latest"] <= 60_000
        assert 299_000 < got["market:ETHUSDT:candle:5"] <= 300_000
        assert 3_599_000 < got["strategy:s:state"] <= 3_600_000
        assert 3_599_000 < got["plain"] <= 3_600_000
        assert got["forever"] is None
        async with make_store(kind, tmp_path, request, ttl=StateTTL.from_config(
                {"price_ttl": 5, "candle_ttl": None, "state_ttl": 7})) as store:
            await store.set_latest_price("ETHUSDT", 3000.0)
            await store.set_latest_candle("ETHUSDT", "5", {"timestamp": T0, "open": 1, "high": 1, "low": 1, "close": 1})
            await store.set_position_state("p", {})
            assert 4_000 < await ttl_ms(store, "market:ETHUSDT:latest") <= 5_000  # type: ignore[operator]
            assert await ttl_ms(store, "market:ETHUSDT:candle:5") is None
            assert 6_000 < await ttl_ms(store, "position:p:state") <= 7_000  # type: ignore[operator]

    run(main)


def test_entries_expire(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    async def main() -> None:
        if kind == "sqlite":
            clock = ManualClock()
            with use_clock(clock):
                async with make_store(kind, tmp_path, request) as store:
                    await store.set_latest_price("BTCUSDT", 1.0)
                    await store.set_strategy_state("s", {"a": 1})
                    clock.advance(59.9)
                    assert await store.latest_price("BTCUSDT") is not None
                    clock.advance(0.2)
                    assert await store.latest_price("BTCUSDT") is None
                    assert await store.keys("*") == ["strategy:s:state"]
                    assert await store.delete_state("market:BTCUSDT:latest") is False  # expired = absent
                    clock.advance(3600)
                    assert await store.get_strategy_state("s") is None
                    # The expired price row went with the delete above; the strategy row is left.
                    assert store.backend.purge_expired() == 1  # type: ignore[attr-defined]
        else:
            # Redis expires by its own clock: a 1 ms TTL must be gone once Redis has looked.
            async with make_store(kind, tmp_path, request, ttl=StateTTL(price=0.001)) as store:
                await store.set_latest_price("BTCUSDT", 1.0)
                for _ in range(500):
                    if await store.latest_price("BTCUSDT") is None:
                        break
                    await asyncio.sleep(0.01)
                assert await store.latest_price("BTCUSDT") is None

    run(main)


def test_events_in_process(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    async def main() -> None:
        async with make_store(kind, tmp_path, request) as store:
            seen: list[StateEvent] = []
            prices: list[StateEvent] = []

            async def async_handler(ev: StateEvent) -> None:
                prices.append(ev)

            def broken(ev: StateEvent) -> None:
                raise RuntimeError("subscriber bug")

            sub_all = await store.subscribe(seen.append)
            bad = await store.subscribe(broken)
            await store.subscribe(async_handler, ["price_updated"])
            await store.set_state("k", {"v": 1})
            await store.set_latest_price("BTCUSDT", 10.0, timestamp=T0)
            await store.delete_state("k")
            await store.delete_state("k")  # absent: no event
            await store.clear("market:*")
            await store.emit("trade_processed", "market:BTCUSDT:latest", {"price": 1.0})
            await store.emit("candle_generated", "market:BTCUSDT:candle:1", {"close": 1.0})
            assert [e.name for e in seen] == [
                "state_updated", "price_updated", "state_deleted", "cache_cleared", "trade_processed",
                "candle_generated",
            ]
            assert {e.name for e in seen} == set(EVENTS)
            assert seen[0].key == "k" and seen[0].data == {"v": 1}
            assert seen[2].data is None
            assert seen[3].key == "market:*" and seen[3].data == {"removed": 1}
            assert all(e.origin == store.events.origin for e in seen)
            assert [e.name for e in prices] == ["price_updated"] and prices[0].data["price"] == 10.0
            assert bad.errors == 6 and bad.delivered == 6
            sub_all.cancel()
            await store.set_state("k", {"v": 2})
            assert len(seen) == 6
            with pytest.raises(DataValidationError, match="unknown event"):
                await store.subscribe(seen.append, ["price_changed"])

    run(main)


def test_clear_removes_only_matching_keys(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    async def main() -> None:
        async with make_store(kind, tmp_path, request) as store:
            for sym in ("BTCUSDT", "ETHUSDT"):
                await store.set_latest_price(sym, 1.0)
                await store.set_latest_candle(sym, "1", {"timestamp": T0, "open": 1, "high": 1, "low": 1, "close": 1})
            await store.set_strategy_state("s", {"keep": True})
            assert await store.clear("market:ETHUSDT:*") == 2
            assert await store.clear() == 2
            assert await store.clear() == 0
            assert await store.keys() == ["strategy:s:state"]

    run(main)


BAD_KEYS = ["", "has space", "tab\tkey", "x" * 513, "nul\x00", "ключ", 42, None]


@pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
def test_bad_keys_rejected(kind: str, key: Any, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    async def main() -> None:
        async with make_store(kind, tmp_path, request) as store:
            with pytest.raises(DataValidationError, match="invalid state key"):
                await store.set_state(key, {"a": 1})
            with pytest.raises(DataValidationError):
                await store.get_state(key)
            assert await store.keys() == []

    run(main)


def test_bad_values_and_names_rejected(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    async def main() -> None:
        async with make_store(kind, tmp_path, request) as store:
            for value in ([1, 2], "text", 3.0, None):
                with pytest.raises(DataValidationError, match="dicts"):
                    await store.set_state("k", value)  # type: ignore[arg-type]
            with pytest.raises(DataValidationError, match="JSON"):
                await store.set_state("k", {"when": object()})
            with pytest.raises(DataValidationError, match="exceeds"):
                await store.set_state("k", {"blob": "x" * (9 << 20)})
            for price in (math.nan, math.inf, -1.0, 0.0, True, "1"):
                with pytest.raises(DataValidationError, match="price"):
                    await store.set_latest_price("BTCUSDT", price)  # type: ignore[arg-type]
            for sym in ("btcusdt", "../etc", "BTC USDT", ""):
                with pytest.raises(InvalidSymbolError):
                    await store.set_latest_price(sym, 1.0)
            with pytest.raises(DataValidationError, match="strategy id"):
                await store.set_strategy_state("a:b", {})
            with pytest.raises(DataValidationError, match="candle needs"):
                await store.set_latest_candle("BTCUSDT", "1", {"timestamp": T0, "close": 1.0})
            with pytest.raises(DataValidationError):
                await store.set_latest_candle("BTCUSDT", "7m", {"timestamp": T0, "open": 1, "high": 1, "low": 1, "close": 1})
            assert await store.keys() == []

    run(main)


def test_market_data_falls_back_to_the_lake(kind: str, tmp_path: Path, request: pytest.FixtureRequest, lake: Lake) -> None:
    lake.write_candles(candles(10), symbol="BTCUSDT", timeframe="1")
    # The last 5m candle closes with the last 1m one (T0 + 10 min): on the tie the 1m close wins.
    lake.write_candles(candles(2, step=300_000, seed=1), symbol="BTCUSDT", timeframe="5")
    last_1m = candles(10).row(-1, named=True)

    async def main() -> None:
        async with make_store(kind, tmp_path, request, lake=lake) as store:
            fallback = await store.latest_price("BTCUSDT")
            assert fallback == {"symbol": "BTCUSDT", "price": last_1m["close"], "volume": last_1m["volume"],
                                "timestamp": last_1m["ts"], "source": "lake"}
            c5 = await store.latest_candle("BTCUSDT", "5m")
            assert c5 is not None and c5["timestamp"] == T0 + 300_000 and c5["source"] == "lake"
            assert await store.latest_price("ETHUSDT") is None
            await store.set_latest_price("BTCUSDT", 99.0, timestamp=T0 + 1)
            assert (await store.latest_price("BTCUSDT"))["price"] == 99.0  # type: ignore[index]

    run(main)


def test_the_lake_fallback_price_is_the_close_of_the_candle_that_closed_last(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest, lake: Lake
) -> None:
    day = 86_400_000
    # Yesterday's 1s candles (built from the trade archive), today's 1m and 1h candles: the newest
    # close is the last 1m candle's (it closes at T0 + 1 d + 90 min), neither the finest series'
    # (yesterday) nor the 1h candle's (it closes at T0 + 1 d + 60 min).
    lake.write_candles(candles(50, step=1_000, seed=2), symbol="BTCUSDT", timeframe="1s")
    lake.write_candles(candles(90, start=T0 + day, seed=3), symbol="BTCUSDT", timeframe="1")
    lake.write_candles(candles(1, start=T0 + day, step=3_600_000, seed=4), symbol="BTCUSDT", timeframe="60")
    last_1m = candles(90, start=T0 + day, seed=3).row(-1, named=True)

    async def main() -> None:
        async with make_store(kind, tmp_path, request, lake=lake) as store:
            got = await store.latest_price("BTCUSDT")
            assert got is not None and got["price"] == last_1m["close"] and got["timestamp"] == last_1m["ts"]
            # An hour candle that closes after the last minute wins: it is the newest close.
            lake.write_candles(candles(2, start=T0 + day, step=3_600_000, seed=4), symbol="BTCUSDT", timeframe="60")
            last_1h = candles(2, start=T0 + day, step=3_600_000, seed=4).row(-1, named=True)
            got = await store.latest_price("BTCUSDT")
            assert got is not None and got["price"] == last_1h["close"] and got["timestamp"] == last_1h["ts"]

    run(main)


def test_open_state_store_urls(tmp_path: Path, lake: Lake) -> None:
    async def main() -> None:
        for url in (f"sqlite:///{tmp_path}/a.sqlite", f"sqlite:{tmp_path}/b.sqlite", tmp_path / "c.sqlite"):
            async with open_state_store(url) as store:
                await store.set_state("k", {"a": 1})
                assert store.backend.kind == "sqlite"
        async with open_state_store(lake=lake) as store:
            assert store.backend.location == str(lake.root / "_meta" / "state.sqlite")
        for bad in ("mysql://x", "sqlite:"):
            with pytest.raises(ConfigError):
                open_state_store(bad)
        with pytest.raises(ConfigError, match="needs a URL or a lake"):
            open_state_store()
        with pytest.raises(ConfigError, match="positive number"):
            StateTTL(price=-1)
        with pytest.raises(ConfigError, match="unknown cache"):
            StateTTL.from_config({"price_tll": 5})

    run(main)

