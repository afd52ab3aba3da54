"""The live runner mirrored into PostgreSQL and the state store (emulator + real servers)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from marketlake_emulator import BybitEmulator
from marketlake.ingest.live_types import LiveCandle
from marketlake.interop.postgres import export_postgres
from marketlake.interop.postgres_live import PostgresMirror
from marketlake.settings import Settings
from marketlake.state import StateEvent, open_state_store
from marketlake.state.live import StateSink
from marketlake.store import Lake
from tests.helpers import T0
from tests.integration.emulated import run_with_emulator
from tests.integration.live_support import SPEED, live_config, rest_for, runner_for

psycopg = pytest.importorskip("psycopg", reason="POSTGRESQL TESTS SKIPPED: the psycopg package is missing")


def candle(i: int, symbol: str = "BTCUSDT") -> LiveCandle:
    return LiveCandle(symbol=symbol, timeframe="1", ts_ms=T0 + i * 60_000, open=1.5, high=2.25, low=1.0,
                      close=2.0 + i / 10, volume=3.125, turnover=0.1 + 0.2)


def count(dsn: str) -> int:
    with psycopg.connect(dsn) as con:
        return con.execute("SELECT count(*) FROM candles").fetchone()[0]


def test_mirror_keeps_candles_pending_while_postgres_is_down(pg_dsn: str) -> None:
    async def main() -> None:
        mirror = PostgresMirror(pg_dsn, max_pending=3)
        await mirror(candle(0))
        await mirror(candle(0))  # the same candle again: nothing doubled
        await mirror(LiveCandle(symbol="BTCUSDT", timeframe="1", ts_ms=T0, open=1, high=1, low=1, close=1,
                                volume=1, confirm=False))  # a forming candle is never mirrored
        assert (mirror.inserted, count(pg_dsn)) == (1, 1)
        with psycopg.connect(pg_dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE application_name = 'marketlake-mirror'")
        good_dsn, mirror.dsn = mirror.dsn, pg_dsn.rsplit("/", 1)[0] + "/no_such_db"
        for i in range(1, 6):
            await mirror(candle(i))
        assert (mirror.failures, mirror.dropped, len(mirror.pending)) == (5, 2, 3)
        mirror.dsn = good_dsn
        await mirror(candle(6))  # reconnects and sends everything pending
        assert (mirror.failures, mirror.dropped, len(mirror.pending), mirror.inserted) == (5, 3, 0, 4)
        await mirror.close()
        with psycopg.connect(pg_dsn) as con:
            rows = con.execute("SELECT extract(epoch FROM timestamp)::bigint * 1000, close, turnover "
                               "FROM candles ORDER BY timestamp").fetchall()
        assert [r[0] for r in rows] == [T0 + i * 60_000 for i in (0, 4, 5, 6)]
        assert str(rows[0][2]) == "0.30000000000000004"  # the float's exact shortest text

    asyncio.run(main())


def test_live_runner_mirrors_into_postgres_and_state(tmp_path: Path, pg_dsn: str) -> None:
    """Stream from the emulator with both sinks attached: PostgreSQL ends with exactly the lake's
    closed candles; the state store holds each series' latest closed candle and a price."""
    lake = Lake(tmp_path / "lake", settings=Settings.load(environ={}))
    cfg = live_config(symbols="BTCUSDT,ETHUSDT", timeframes="1,3", trades=True)
    store = open_state_store(tmp_path / "state.sqlite")
    generated: list[StateEvent] = []

    async def t(emu: BybitEmulator) -> None:
        async with rest_for(emu, lake) as rest:  # type: ignore[attr-defined]
            runner = runner_for(emu, lake, rest, cfg)
            mirror = PostgresMirror(pg_dsn).attach(runner)
            sink = StateSink(store).attach(runner)
            await store.subscribe(generated.append, ["candle_generated"])
            task = asyncio.create_task(runner.run())
            deadline = time.monotonic() + 60
            while runner.stats.candles_confirmed < 12 and not task.done() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            runner.stop()
            await task
            await mirror.close()
            assert mirror.failures == 0 and sink.errors == 0 and sink.candles >= 12
        stored = lake.read_candles(None, ["1", "3"])
        assert stored.height >= 12
        assert count(pg_dsn) == stored.height
        # Whatever the mirror inserted, a later export finds nothing missing.
        assert export_postgres(lake, pg_dsn).rows_inserted == 0
        for (sym, tf), part in stored.group_by(["symbol", "timeframe"]):
            latest = await store.latest_candle(sym, tf)
            assert latest is not None and latest["timestamp"] == int(part["ts"].max().timestamp() * 1000)
            assert (await store.latest_price(sym)) is not None
        assert len(generated) == sink.candles

    try:
        run_with_emulator(t, symbols=["BTCUSDT", "ETHUSDT"], speed=SPEED)
    finally:
        asyncio.run(store.close())
