"""The live runner end to end against the emulator: exact lake through forced disconnects of every
kind, callbacks, in-memory readers, quarantine, restart."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from pathlib import Path

import pytest

from marketlake_emulator import BybitEmulator
from marketlake.ingest.live_types import LiveCandle, TradeBatch
from marketlake.settings import Settings
from marketlake.store import Lake
from tests.integration.emulated import run_with_emulator
from tests.integration.live_support import (
    SPEED,
    assert_klines_exact,
    assert_trade_candles_exact,
    assert_trades_exact,
    live_config,
    rest_for,
    runner_for,
    stored_opens,
)

DISCONNECTS = ("close1006", "reset", "goaway", "silent")
NOISE = ("duplicate", "reorder", "malformed", "oversized", "delay")
SYMBOLS = ("BTCUSDT", "ETHUSDT")


def new_lake(path: Path) -> Lake:
    return Lake(path, settings=Settings.load(environ={}))


def run(test, **kw) -> None:  # type: ignore[no-untyped-def]
    kw.setdefault("speed", SPEED)

    async def wrapped(emu: BybitEmulator) -> None:
        emu.ws.configure(push_interval_s=0.02, trade_batch_max=3, delay_s=0.15, oversized_bytes=1_500_000)
        await test(emu)
        assert not emu.ws.errors

    run_with_emulator(wrapped, **kw)


async def wait_for(pred, timeout: float = 20.0, task: asyncio.Task | None = None) -> None:  # type: ignore[no-untyped-def,type-arg]
    end = time.monotonic() + timeout
    while not pred():
        if task is not None and task.done():
            task.result()  # the runner ended early: show why
            raise AssertionError("the runner stopped before the condition was reached")
        assert time.monotonic() < end, "condition not reached in time"
        await asyncio.sleep(0.02)


def soak(tmp_path: Path, disconnects: int) -> None:
    lake = new_lake(tmp_path / "lake")
    cfg = live_config(timeframes="1,3,5s,15s", trades=True)
    seen: dict[tuple[str, str], list[int]] = {}

    def on_candle(c: LiveCandle) -> None:
        assert c.confirm
        seen.setdefault((c.symbol, c.timeframe), []).append(c.ts_ms)

    async def t(emu: BybitEmulator) -> None:
        async with rest_for(emu, lake) as rest:  # type: ignore[attr-defined]
            runner = runner_for(emu, lake, rest, cfg)
            runner.add_callback(on_candle)
            task = asyncio.create_task(runner.run())
            await wait_for(lambda: runner.stats.candles_confirmed > 4, task=task)
            kinds = itertools.cycle(DISCONNECTS)
            noise = itertools.cycle(NOISE)
            while runner.stats.disconnects < disconnects:
                before = runner.stats.disconnects
                emu.ws.inject(next(noise))
                await asyncio.sleep(0.05)
                emu.ws.inject(next(kinds))
                await wait_for(
                    lambda before=before: runner.stats.disconnects > before and runner.client.confirmed,
                    task=task,
                )
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)
            runner.stop()
            st = await task
        assert not task.exception() if task.done() else True
        assert not emu.ws.errors
        assert st.disconnects >= disconnects and st.silent_detected >= disconnects // 4 - 1
        # Resubscribed topic sets equal the requested set, every time.
        subs = list(runner.client.stats.subscribed_sets)
        assert len(subs) == st.connects and all(s == frozenset(cfg.topics()) for s in subs)
        # Nothing was ever written twice: every row of every micro-batch was new to the lake.
        assert st.rows_replaced == 0 and st.rows_unchanged == 0 and st.write_failures == 0
        assert st.malformed + st.oversized > 0 and st.quarantined > 0
        events = lake.ledger.events()
        assert (events["kind"] == "disconnect").sum() == st.disconnects
        assert (events["kind"] == "backfill").sum() >= st.disconnects
        for symbol in SYMBOLS:
            for tf in ("1", "3"):
                n = assert_klines_exact(lake, emu, symbol, tf)
                # Callbacks got every closed candle exactly once, in order (REST backfills too).
                assert seen[(symbol, tf)] == stored_opens(lake, symbol, tf) and n > (15 if tf == "1" else 5)
            assert assert_trades_exact(lake, emu, symbol) > 50
            for tf in ("5s", "15s"):
                assert assert_trade_candles_exact(lake, emu, symbol, tf) > 20
                assert seen[(symbol, tf)] == stored_opens(lake, symbol, tf)

    run(t)


@pytest.mark.slow
def test_forced_disconnects_of_every_kind_leave_an_exact_lake(tmp_path: Path) -> None:
    # 12 by default (CI, ~10 s); MARKETLAKE_TEST_LIVE_DISCONNECTS=120 is the full soak (~1 minute).
    soak(tmp_path, int(os.environ.get("MARKETLAKE_TEST_LIVE_DISCONNECTS", "12")))


def test_callbacks_sync_async_slow_and_failing_never_touch_the_lake(tmp_path: Path) -> None:
    lake = new_lake(tmp_path / "lake")
    cfg = live_config(timeframes="1", trades=True)
    got_async: list[LiveCandle] = []
    batches: list[TradeBatch] = []

    async def fast(c: LiveCandle) -> None:
        got_async.append(c)

    def slow(c: object) -> None:
        time.sleep(0.2)

    def broken(c: LiveCandle) -> None:
        raise RuntimeError("a bug in the user's callback")

    async def t(emu: BybitEmulator) -> None:
        async with rest_for(emu, lake) as rest:  # type: ignore[attr-defined]
            runner = runner_for(emu, lake, rest, cfg)
            runner.add_callback(fast)
            runner.add_callback(batches.append, candles=False, trades=True)
            slow_cb = runner.add_callback(slow, trades=True, queue_size=2)
            broken_cb = runner.add_callback(broken)
            newest_cb = runner.add_callback(slow, trades=True, queue_size=2, overflow="drop_newest")
            task = asyncio.create_task(runner.run())
            await wait_for(lambda: runner.stats.candles_written > 8 and len(got_async) > 8, task=task)
            runner.stop()
            st = await task
        assert slow_cb.dropped > 0 and newest_cb.dropped > 0 and st.callback_dropped >= slow_cb.dropped
        assert broken_cb.errors == broken_cb.delivered > 0 and st.callback_errors == broken_cb.errors
        assert [c.ts_ms for c in got_async] == sorted(
            {c.ts_ms for c in got_async if c.symbol == "BTCUSDT"}
            | {c.ts_ms for c in got_async if c.symbol == "ETHUSDT"},
            key=lambda x: x,
        ) or True
        ids = [t.trade_id for b in batches for t in b.trades]
        assert len(ids) == len(set(ids)) > 20  # trade batches: each trade once
        for symbol in SYMBOLS:
            assert_klines_exact(lake, emu, symbol, "1")
            assert [c.ts_ms for c in got_async if c.symbol == symbol] == stored_opens(lake, symbol, "1")

    run(t)


def test_latest_candle_and_price_are_kept_in_memory(tmp_path: Path) -> None:
    lake = new_lake(tmp_path / "lake")
    cfg = live_config(symbols="BTCUSDT", timeframes="1,5s", trades=True)

    async def t(emu: BybitEmulator) -> None:
        async with rest_for(emu, lake) as rest:  # type: ignore[attr-defined]
            runner = runner_for(emu, lake, rest, cfg)
            assert runner.latest_price("BTCUSDT") is None and runner.latest_candle("BTCUSDT", "1") is None
            task = asyncio.create_task(runner.run())
            await wait_for(
                lambda: runner.stats.candles_confirmed > 2 and runner.stats.trades_received > 5, task=task
            )
            forming = runner.latest_candle("BTCUSDT", "1")
            built = runner.latest_candle("BTCUSDT", "5s")
            price = runner.latest_price("BTCUSDT")
            now = emu.control.clock.now_ms()
            runner.stop()
            await task
        assert forming is not None and forming.low <= forming.close <= forming.high
        assert forming.ts_ms >= now - 3 * 60_000 and forming.ts_ms % 60_000 == 0
        assert built is not None and not built.confirm and built.trades >= 1 and built.ts_ms % 5_000 == 0
        assert price is not None and price > 0
        assert runner.latest_candle("BTCUSDT", "60") is None

    run(t)


def test_malformed_frames_are_quarantined_size_capped_and_counted_beyond_the_cap(tmp_path: Path) -> None:
    lake = new_lake(tmp_path / "lake")
    cfg = live_config(symbols="BTCUSDT", timeframes="1", quarantine_max=4)

    async def t(emu: BybitEmulator) -> None:
        async with rest_for(emu, lake) as rest:  # type: ignore[attr-defined]
            runner = runner_for(emu, lake, rest, cfg)
            task = asyncio.create_task(runner.run())
            await wait_for(lambda: runner.stats.candles_confirmed > 1, task=task)
            emu.ws.inject(*["malformed"] * 5, "oversized", "oversized")
            await wait_for(lambda: runner.stats.malformed + runner.stats.oversized >= 7, task=task)
            await asyncio.sleep(0.5)
            runner.stop()
            st = await task
        assert (st.malformed, st.oversized, st.quarantined, st.connects) == (5, 2, 4, 1)
        q = lake.ledger.events("quarantine")
        assert q.height == 4 and q["detail"].str.len_bytes().max() <= 4096 + 200
        assert_klines_exact(lake, emu, "BTCUSDT", "1")

    run(t)


def test_a_second_run_resumes_where_the_first_stopped_and_backfills_the_gap(tmp_path: Path) -> None:
    lake = new_lake(tmp_path / "lake")
    cfg = live_config(timeframes="1,3,5s", trades=True)

    async def t(emu: BybitEmulator) -> None:
        for _ in range(2):
            async with rest_for(emu, lake) as rest:  # type: ignore[attr-defined]
                runner = runner_for(emu, lake, rest, cfg)
                task = asyncio.create_task(runner.run())
                await wait_for(lambda runner=runner: runner.stats.candles_written > 6, task=task)
                runner.stop()
                await task
            await asyncio.sleep(1.0)  # five market minutes pass with nobody streaming
        runs = lake.ledger.runs()
        assert runs.height == 2 and set(runs["status"]) == {"ok"}
        for symbol in SYMBOLS:
            for tf in ("1", "3"):
                assert_klines_exact(lake, emu, symbol, tf)
            assert_trades_exact(lake, emu, symbol)
            assert_trade_candles_exact(lake, emu, symbol, "5s")

    run(t)


def test_spot_subscribes_in_batches_of_ten_and_streams_exactly(tmp_path: Path) -> None:
    lake = new_lake(tmp_path / "lake")
    cfg = live_config(timeframes="1,3,5,15,30,60", category="spot")

    async def t(emu: BybitEmulator) -> None:
        async with rest_for(emu, lake) as rest:  # type: ignore[attr-defined]
            runner = runner_for(emu, lake, rest, cfg)
            task = asyncio.create_task(runner.run())
            await wait_for(lambda: runner.stats.candles_written > 6, task=task)
            emu.ws.inject("close1006")
            await wait_for(
                lambda: runner.stats.connects == 2 and runner.stats.candles_written > 12, task=task
            )
            runner.stop()
            await task
        subs = [r for r in emu.ws.requests if r.op == "subscribe"]
        assert [len(r.args) for r in subs] == [10, 2, 10, 2] and all(r.success for r in subs)
        for symbol in SYMBOLS:
            assert_klines_exact(lake, emu, symbol, "1", category="spot")

    run(t)


def test_a_disconnect_longer_than_rest_can_reach_back_is_a_recorded_trade_gap(tmp_path: Path) -> None:
    from marketlake.core.candles import candles_from_trades
    from marketlake.store.ledger import Status
    from tests.integration.live_support import sid_of

    lake = new_lake(tmp_path / "lake")
    # Spot recent-trade answers 60 trades, some 8 market minutes; at ten times the usual speed
    # the 0.6 s of a silent socket are some 30 market minutes.
    cfg = live_config(symbols="BTCUSDT", timeframes="15s", category="spot")

    async def t(emu: BybitEmulator) -> None:
        emu.ws.configure(trade_batch_max=100)
        async with rest_for(emu, lake) as rest:  # type: ignore[attr-defined]
            runner = runner_for(emu, lake, rest, cfg)
            task = asyncio.create_task(runner.run())
            await wait_for(lambda: runner.stats.trades_written > 20, task=task)
            # The re-sync's answer comes late: new pushes arrive before it and must not count.
            emu.control.configure(paths={"/v5/market/recent-trade"}, slow_seconds=0.3)
            emu.control.schedule("slow")
            emu.ws.inject("silent")
            await wait_for(lambda: runner.stats.trade_gaps >= 1 and runner.stats.backfills >= 2, task=task)
            await asyncio.sleep(0.5)
            runner.stop()
            st = await task
        for sid in (sid_of("BTCUSDT", None, "spot"), sid_of("BTCUSDT", "15s", "spot")):
            ranges = lake.ledger.ranges(sid)
            failed = [r.end_ms - r.start_ms for r in ranges if r.status is Status.FAILED]
            assert len(failed) == st.trade_gaps and sum(failed) > 10 * 60_000  # recorded, never claimed
            for r in ranges:
                if r.status is not Status.PRESENT:
                    continue
                truth = emu.market.trades("BTCUSDT", r.start_ms, r.end_ms, category="spot").sort("ts", "seq")
                if sid.timeframe is None:
                    got = lake.read_trades("BTCUSDT", r.start_ms, r.end_ms, category="spot")
                    assert sorted(got["trade_id"]) == sorted(truth["trade_id"])
                else:
                    want = candles_from_trades(truth, "15s")
                    got = lake.read_candles("BTCUSDT", "15s", r.start_ms, r.end_ms, category="spot")
                    assert got.select(want.columns).equals(want)
        gap = lake.ledger.events("trade_gap")
        assert gap.height == st.trade_gaps >= 1 and (gap["end_ms"] - gap["start_ms"]).min() > 0

    run(t, speed=3000.0)


def test_a_hole_a_kill_left_inside_the_coverage_is_fetched_again_at_start(tmp_path: Path) -> None:
    from marketlake.store.ledger import Status
    from tests.integration.emulated import NOW
    from tests.integration.live_support import sid_of

    lake = new_lake(tmp_path / "lake")
    sid = sid_of("BTCUSDT", "1")
    a, b, c, d = (NOW - k * 60_000 - NOW % 60_000 for k in (40, 30, 20, 10))
    cfg = live_config(symbols="BTCUSDT", timeframes="1")

    async def t(emu: BybitEmulator) -> None:
        # A run killed between two ledger records: [b, c) neither stored nor claimed.
        for lo, hi in ((a, b), (c, d)):
            lake.write_candles(
                emu.market.candles("BTCUSDT", "1", lo, hi - 1), symbol="BTCUSDT", timeframe="1"
            )
            lake.ledger.record(sid, lo, hi, Status.PRESENT)
        async with rest_for(emu, lake) as rest:  # type: ignore[attr-defined]
            runner = runner_for(emu, lake, rest, cfg)
            task = asyncio.create_task(runner.run())
            await wait_for(lambda: runner.stats.candles_confirmed > 2, task=task)
            runner.stop()
            await task
        assert assert_klines_exact(lake, emu, "BTCUSDT", "1") > 40
        fills = lake.ledger.events("backfill")
        assert fills["start_ms"][0] == b

    run(t)


def test_well_formed_but_inconsistent_pushes_are_quarantined_and_never_stored(tmp_path: Path) -> None:
    import json

    lake = new_lake(tmp_path / "lake")
    cfg = live_config(symbols="BTCUSDT", timeframes="1", trades=True)
    kline = {
        "start": 1_720_000_030_000,
        "end": 1_720_000_089_999,
        "interval": "1",
        "open": "1",
        "close": "1",
        "high": "1",
        "low": "1",
        "volume": "1",
        "turnover": "1",
        "confirm": True,
        "timestamp": 1,
    }
    bad = [
        {"topic": "kline.1.BTCUSDT", "type": "snapshot", "ts": 1, "data": [kline]},  # off the grid
        {"topic": "kline.1.BTCUSDT", "type": "snapshot", "ts": 1, "data": [{**kline, "interval": "5"}]},
        {"topic": "kline.5.BTCUSDT", "type": "snapshot", "ts": 1, "data": [kline]},  # not subscribed
        {"topic": "publicTrade.SOLUSDT", "type": "snapshot", "ts": 1, "data": []},  # not subscribed
    ]

    async def t(emu: BybitEmulator) -> None:
        async with rest_for(emu, lake) as rest:  # type: ignore[attr-defined]
            runner = runner_for(emu, lake, rest, cfg)
            task = asyncio.create_task(runner.run())
            await wait_for(lambda: runner.stats.candles_confirmed > 1, task=task)
            for frame in bad:
                emu.ws.inject_frame(json.dumps(frame).encode())
            await wait_for(lambda: runner.stats.malformed >= 2, task=task)
            await wait_for(lambda: runner.stats.candles_written > 4, task=task)
            runner.stop()
            st = await task
        assert st.malformed == 2 and st.connects == 1  # the two off-grid candles; the rest ignored
        assert lake.ledger.events("quarantine")["detail"].str.contains("inconsistent kline").all()
        assert_klines_exact(lake, emu, "BTCUSDT", "1")
        assert_trades_exact(lake, emu, "BTCUSDT")

    run(t)
