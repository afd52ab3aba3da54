"""The Bybit emulator over real HTTP on 127.0.0.1: wire format, window semantics, faults, knobs."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import aiohttp
import msgspec
import pytest

from marketlake.core.timeframes import DAY_MS, MINUTE_MS, parse_timeframe
from marketlake_emulator import BybitEmulator
from marketlake_emulator.control import FaultConfig, RequestLog, RequestRecord
from marketlake_emulator.market import SyntheticMarket

MAR_1 = 1_709_251_200_000  # 2024-03-01 00:00 UTC
NOW = MAR_1 + 90 * MINUTE_MS + 30_000  # 01:30:30, frozen (speed 0) unless a test says otherwise
KLINE, TIME, INSTR, TRADES = (
    "/v5/market/kline",
    "/v5/market/time",
    "/v5/market/instruments-info",
    "/v5/market/recent-trade",
)


def run(test: Callable[[BybitEmulator, aiohttp.ClientSession], Awaitable[None]], **emu_kw: Any) -> None:
    async def main() -> None:
        emu_kw.setdefault("symbols", 4)
        emu_kw.setdefault("seed", 5)
        emu_kw.setdefault("start_ms", NOW)
        emu_kw.setdefault("speed", 0)
        async with BybitEmulator(**emu_kw) as emu, aiohttp.ClientSession() as session:
            await test(emu, session)

    asyncio.run(main())


async def get(
    session: aiohttp.ClientSession, emu: BybitEmulator, path: str, **params: Any
) -> tuple[int, Any, dict[str, str]]:
    async with session.get(emu.url + path, params={k: str(v) for k, v in params.items()}) as r:
        body = await r.read()
        try:
            data = msgspec.json.decode(body)
        except msgspec.DecodeError:
            data = body
        return r.status, data, dict(r.headers)


def test_kline_rows_are_newest_first_seven_strings_with_start_and_end_both_inclusive() -> None:
    async def t(emu: BybitEmulator, s: aiohttp.ClientSession) -> None:
        a = MAR_1 - 5 * 3_600_000
        status, body, _ = await get(
            s, emu, KLINE, category="linear", symbol="BTCUSDT", interval="60", start=a, end=a + 2 * 3_600_000
        )
        assert status == 200 and body["retCode"] == 0
        rows = body["result"]["list"]
        assert [int(r[0]) for r in rows] == [a + 2 * 3_600_000, a + 3_600_000, a]
        assert all(len(r) == 7 and all(isinstance(x, str) for x in r) for r in rows)
        truth = emu.market.candles("BTCUSDT", "60", a, a + 2 * 3_600_000)
        assert [float(r[4]) for r in reversed(rows)] == truth["close"].to_list()
        assert [float(r[6]) for r in reversed(rows)] == truth["turnover"].to_list()
        assert body["result"]["symbol"] == "BTCUSDT" and body["result"]["category"] == "linear"

    run(t)


def test_kline_limit_defaults_to_200_and_keeps_the_newest_rows_of_a_larger_range() -> None:
    async def t(emu: BybitEmulator, s: aiohttp.ClientSession) -> None:
        _, body, _ = await get(s, emu, KLINE, symbol="ETHUSDT", interval="1")  # category defaults to linear
        rows = body["result"]["list"]
        assert len(rows) == 200 and int(rows[0][0]) == NOW - NOW % MINUTE_MS
        a = MAR_1 - DAY_MS
        _, body, _ = await get(
            s,
            emu,
            KLINE,
            category="linear",
            symbol="ETHUSDT",
            interval="5",
            start=a,
            end=a + 99 * 5 * MINUTE_MS,
            limit=10,
        )
        ts = [int(r[0]) for r in body["result"]["list"]]
        assert ts == [a + k * 5 * MINUTE_MS for k in range(99, 89, -1)]

    run(t)


def test_kline_with_only_start_returns_the_oldest_rows_from_the_next_aligned_open() -> None:
    async def t(emu: BybitEmulator, s: aiohttp.ClientSession) -> None:
        start = MAR_1 - 10 * 3_600_000 + 23 * MINUTE_MS + 11_000  # unaligned, like ccxt's recording
        _, body, _ = await get(
            s, emu, KLINE, category="linear", symbol="BTCUSDT", interval="60", start=start, limit=3
        )
        ts = [int(r[0]) for r in body["result"]["list"]]
        first = start - start % 3_600_000 + 3_600_000
        assert ts == [first + 2 * 3_600_000, first + 3_600_000, first]

    run(t)


def test_the_newest_kline_row_is_the_forming_candle_at_server_time() -> None:
    async def t(emu: BybitEmulator, s: aiohttp.ClientSession) -> None:
        for interval in ("1", "60", "D", "M"):
            tf = parse_timeframe(interval)
            _, body, _ = await get(
                s, emu, KLINE, category="linear", symbol="BTCUSDT", interval=interval, limit=2
            )
            newest = body["result"]["list"][0]
            assert int(newest[0]) == tf.floor(NOW), interval
            final = emu.market.candles("BTCUSDT", interval, tf.floor(NOW), tf.floor(NOW))
            assert float(newest[5]) < final["volume"][0], f"{interval}: forming volume is partial"
        emu.control.set_clock(time_ms=NOW - NOW % MINUTE_MS)  # exactly on a boundary: nothing traded yet
        _, body, _ = await get(s, emu, KLINE, category="linear", symbol="BTCUSDT", interval="1", limit=1)
        assert int(body["result"]["list"][0][0]) == NOW - NOW % MINUTE_MS - MINUTE_MS

    run(t)


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"symbol": "BTCUSDT", "interval": "2"}, "interval"),
        ({"symbol": "BTCUSDT"}, "interval"),
        ({"interval": "1"}, "symbol"),
        ({"symbol": "BTCUSDT", "interval": "1", "limit": "0"}, "limit"),
        ({"symbol": "BTCUSDT", "interval": "1", "limit": "1001"}, "limit"),
        ({"symbol": "BTCUSDT", "interval": "1", "limit": "ten"}, "limit"),
        ({"symbol": "BTCUSDT", "interval": "1", "limit": "\u0661\u0662"}, "limit"),  # Arabic-Indic 12
        ({"symbol": "BTCUSDT", "interval": "1", "start": "-5"}, "start"),
        ({"symbol": "BTCUSDT", "interval": "1", "end": "1e12"}, "end"),
        ({"symbol": "BTCUSDT", "interval": "1", "category": "option"}, "category"),
        ({"symbol": "NOPEUSDT", "interval": "1"}, "symbols"),
        ({"symbol": "btcusdt", "interval": "1"}, "symbols"),
    ],
)
def test_bad_kline_params_get_retcode_10001_naming_the_param(params: dict[str, str], needle: str) -> None:
    async def t(emu: BybitEmulator, s: aiohttp.ClientSession) -> None:
        status, body, _ = await get(s, emu, KLINE, **params)
        assert status == 200 and body["retCode"] == 10001
        assert needle in body["retMsg"].lower() and body["result"] == {}

    run(t)


def test_every_served_timeframe_is_the_exact_decimal_sum_of_the_served_one_minute_rows() -> None:
    async def t(emu: BybitEmulator, s: aiohttp.ClientSession) -> None:
        day = MAR_1 - 3 * DAY_MS
        minutes = []
        for a in (day, day + 1000 * MINUTE_MS):
            _, body, _ = await get(
                s,
                emu,
                KLINE,
                category="linear",
                symbol="SYM001USDT",
                interval="1",
                start=a,
                end=min(a + 999 * MINUTE_MS, day + DAY_MS - MINUTE_MS),
                limit=1000,
            )
            minutes += body["result"]["list"][::-1]
        assert len(minutes) == 1440
        for interval in ("15", "60", "240", "720", "D"):
            tf = parse_timeframe(interval)
            _, body, _ = await get(
                s,
                emu,
                KLINE,
                category="linear",
                symbol="SYM001USDT",
                interval=interval,
                start=day,
                end=day + DAY_MS - 1,
                limit=1000,
            )
            for row in body["result"]["list"]:
                part = [m for m in minutes if tf.floor(int(m[0])) == int(row[0])]
                assert row[1] == part[0][1] and row[4] == part[-1][4], interval
                assert Decimal(row[2]) == max(Decimal(m[2]) for m in part)
                assert Decimal(row[3]) == min(Decimal(m[3]) for m in part)
                assert Decimal(row[5]) == sum(Decimal(m[5]) for m in part)
                assert Decimal(row[6]) == sum(Decimal(m[6]) for m in part)

    run(t)


def test_the_envelope_has_numeric_retcode_and_time_and_rate_limit_headers() -> None:
    async def t(emu: BybitEmulator, s: aiohttp.ClientSession) -> None:
        statuses = []
        for _ in range(3):
            status, body, headers = await get(s, emu, TIME)
            assert status == 200
            assert set(body) == {"retCode", "retMsg", "result", "retExtInfo", "time"}
            assert type(body["retCode"]) is int and type(body["time"]) is int and body["retExtInfo"] == {}
            assert int(body["result"]["timeNano"]) // 1_000_000 == body["time"] == NOW
            assert int(body["result"]["timeSecond"]) == NOW // 1000
            assert headers["X-Bapi-Limit"] == "600"
            assert int(headers["X-Bapi-Limit-Reset-Timestamp"]) == body["time"]  # not exceeded
            statuses.append(int(headers["X-Bapi-Limit-Status"]))
            assert headers["Content-Type"].startswith("application/json")
        assert statuses == sorted(statuses, reverse=True) and statuses[0] > statuses[-1]

    run(t)


def test_market_time_runs_at_the_configured_speed_and_can_be_set() -> None:
    async def t(emu: BybitEmulator, s: aiohttp.ClientSession) -> None:
        _, first, _ = await get(s, emu, TIME)
        await asyncio.sleep(0.1)
        _, second, _ = await get(s, emu, TIME)
        assert second["time"] - first["time"] >= 0.1 * 3600 * 1000  # an hour of market per real second
        emu.control.set_clock(time_ms=MAR_1, speed=0)
        _, third, _ = await get(s, emu, TIME)
        assert third["time"] == MAR_1

    run(t, speed=3600)


def test_instruments_paginate_with_a_cursor_until_every_trading_symbol_is_listed() -> None:
    async def t(emu: BybitEmulator, s: aiohttp.ClientSession) -> None:
        expected = [x.symbol for x in emu.market.instruments("linear") if x.status(NOW) == "Trading"]
        got, cursor, pages = [], "", 0
        while True:
            params = {"category": "linear", "limit": 10} | ({"cursor": cursor} if cursor else {})
            _, body, _ = await get(s, emu, INSTR, **params)
            result = body["result"]
            pages += 1
            assert len(result["list"]) <= 10 and result["category"] == "linear"
            for item in result["list"]:
                assert item["status"] == "Trading" and int(item["launchTime"]) <= NOW
                assert item["priceFilter"]["tickSize"] and item["lotSizeFilter"]["qtyStep"]
            got += [item["symbol"] for item in result["list"]]
            cursor = result["nextPageCursor"]
            if not cursor:
                break
        assert got == expected and pages == -(-len(expected) // 10)
        _, body, _ = await get(s, emu, INSTR, category="linear", cursor="garbage")
        assert body["retCode"] == 10001 and "cursor" in body["retMsg"]

    run(t, symbols=25)


def test_spot_instruments_have_no_cursor_and_no_launch_time() -> None:
    async def t(emu: BybitEmulator, s: aiohttp.ClientSession) -> None:
        _, body, _ = await get(s, emu, INSTR, category="spot", limit=1)
        result = body["result"]
        assert "nextPageCursor" not in result and len(result["list"]) == 2  # limit ignored for spot
        assert all("launchTime" not in item for item in result["list"])

    run(t)


def test_the_status_filter_lists_prelaunch_and_closed_symbols() -> None:
    async def t(emu: BybitEmulator, s: aiohttp.ClientSession) -> None:
        spec = emu.market.instrument("SYM040USDT")
        assert spec.delist_ms is not None
        emu.control.set_clock(time_ms=spec.delist_ms + 1)
        _, body, _ = await get(s, emu, INSTR, category="linear", status="Closed")
        assert "SYM040USDT" in [i["symbol"] for i in body["result"]["list"]]
        _, body, _ = await get(s, emu, INSTR, category="linear")
        assert "SYM040USDT" not in [i["symbol"] for i in body["result"]["list"]]
        late = max(emu.market.instruments("linear"), key=lambda x: x.launch_ms)
        emu.control.set_clock(time_ms=late.launch_ms - 1)
        _, body, _ = await get(s, emu, INSTR, category="linear", status="PreLaunch")
        assert late.symbol in [i["symbol"] for i in body["result"]["list"]]
        _, body, _ = await get(s, emu, INSTR, category="linear", status="Listed")
        assert body["retCode"] == 10001 and "status" in body["retMsg"]

    run(t, symbols=42)


def test_recent_trades_are_newest_first_on_the_grids_and_never_after_server_time() -> None:
    async def t(emu: BybitEmulator, s: aiohttp.ClientSession) -> None:
        spec = emu.market.instrument("BTCUSDT")
        _, body, _ = await get(s, emu, TRADES, category="linear", symbol="BTCUSDT", limit=50)
        trades = body["result"]["list"]
        assert len(trades) == 50
        times = [int(x["time"]) for x in trades]
        assert times == sorted(times, reverse=True) and times[0] <= NOW
        for x in trades:
            assert (Decimal(x["price"]) / Decimal(spec.tick_size)) % 1 == 0
            assert (Decimal(x["size"]) / Decimal(spec.qty_step)) % 1 == 0
            assert x["side"] in ("Buy", "Sell") and len(x["execId"]) == 36
        _, body, _ = await get(s, emu, TRADES, category="spot", symbol="BTCUSDT", limit=61)
        assert body["retCode"] == 10001 and "limit" in body["retMsg"]

    run(t)


def test_an_exchange_outage_is_served_as_missing_rows_not_as_an_error() -> None:
    outage = (MAR_1 - DAY_MS + 600 * MINUTE_MS, MAR_1 - DAY_MS + 660 * MINUTE_MS)
    market = SyntheticMarket.generate(seed=2, symbols=2, outages=[outage])

    async def t(emu: BybitEmulator, s: aiohttp.ClientSession) -> None:
        a = outage[0] - 30 * MINUTE_MS
        _, body, _ = await get(
            s,
            emu,
            KLINE,
            category="linear",
            symbol="BTCUSDT",
            interval="1",
            start=a,
            end=a + 119 * MINUTE_MS,
            limit=1000,
        )
        ts = {int(r[0]) for r in body["result"]["list"]}
        assert body["retCode"] == 0 and len(ts) == 60
        assert not any(outage[0] <= x < outage[1] for x in ts)

    run(t, market=market)


def test_the_ip_limit_bans_with_http_403_until_the_ban_lifts() -> None:
    async def t(emu: BybitEmulator, s: aiohttp.ClientSession) -> None:
        statuses = [(await get(s, emu, TIME))[0] for _ in range(7)]
        assert statuses == [200] * 5 + [403, 403]
        assert emu.control.is_banned()
        await asyncio.sleep(1.25)  # the ban (1.2 s) is over, and so is the window of those requests
        assert not emu.control.is_banned()
        assert (await get(s, emu, TIME))[0] == 200
        assert emu.control.ban_count == 1
        assert [r.fault for r in emu.control.log.records[5:7]] == ["limit-403", "banned"]

    run(t, faults=FaultConfig(window_seconds=1.0, ip_limit=5, ip_ban_seconds=1.2))


def test_the_api_limit_answers_10006_with_a_reset_time_after_the_envelope_time() -> None:
    async def t(emu: BybitEmulator, s: aiohttp.ClientSession) -> None:
        answers = [await get(s, emu, TIME) for _ in range(4)]
        assert [a[1]["retCode"] for a in answers] == [0, 0, 0, 10006]
        status, body, headers = answers[-1]
        assert status == 200 and body["retMsg"] == "Too many visits!"
        assert headers["X-Bapi-Limit"] == "3" and headers["X-Bapi-Limit-Status"] == "0"
        wait = int(headers["X-Bapi-Limit-Reset-Timestamp"]) - body["time"]
        assert 0 < wait <= 1001
        await asyncio.sleep(wait / 1000 + 0.02)
        assert (await get(s, emu, TIME))[1]["retCode"] == 0

    run(t, faults=FaultConfig(window_seconds=1.0, api_limit=3))


def test_scheduled_faults_are_served_in_order_then_normal_answers_resume() -> None:
    async def t(emu: BybitEmulator, s: aiohttp.ClientSession) -> None:
        emu.control.schedule("429", "5xx", "10016", "10006", "truncated", "slow", "ok")
        got = [await get(s, emu, TIME) for _ in range(8)]
        assert [g[0] for g in got] == [429, 503, 200, 200, 200, 200, 200, 200]
        assert got[2][1]["retCode"] == 10016 and got[3][1]["retCode"] == 10006
        assert int(got[3][2]["X-Bapi-Limit-Reset-Timestamp"]) > got[3][1]["time"]
        assert isinstance(got[4][1], bytes) and got[4][1].startswith(b'{"retCode":0')  # cut JSON
        assert all(g[1]["retCode"] == 0 for g in got[5:])
        faults = [r.fault for r in emu.control.log.records]
        assert faults == ["429", "5xx", "10016", "10006", "truncated", "slow", None, None]
        slow = emu.control.log.records[5]
        assert slow.status == 200 and emu.control.scheduled == []

    run(t, faults=FaultConfig(slow_seconds=0.05))


def test_random_faults_are_reproducible_for_a_seed_and_can_be_limited_to_paths() -> None:
    sequences = []

    async def t(emu: BybitEmulator, s: aiohttp.ClientSession) -> None:
        codes = [(await get(s, emu, KLINE, symbol="BTCUSDT", interval="D", limit=1))[0] for _ in range(60)]
        assert [(await get(s, emu, TIME))[0] for _ in range(10)] == [200] * 10  # not a fault path
        sequences.append(codes)

    for _ in range(2):
        run(t, seed=9, faults=FaultConfig(p_429=0.5, paths=frozenset({KLINE})))
    assert sequences[0] == sequences[1]
    assert 10 <= sequences[0].count(429) <= 50


def test_a_dropped_connection_gives_the_client_a_transport_error() -> None:
    async def t(emu: BybitEmulator, s: aiohttp.ClientSession) -> None:
        # aiohttp re-sends an idempotent GET once when the connection drops before an answer.
        emu.control.schedule("disconnect", "disconnect")
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh:
            with pytest.raises(aiohttp.ClientError):
                async with fresh.get(emu.url + TIME) as r:
                    await r.read()
        assert [r.fault for r in emu.control.log.records] == ["disconnect", "disconnect"]
        assert (await get(s, emu, TIME))[0] == 200

    run(t)


def test_fault_knobs_are_validated() -> None:
    with pytest.raises(ValueError):
        FaultConfig(p_429=1.5)
    with pytest.raises(ValueError):
        FaultConfig(ip_limit=0)
    emu = BybitEmulator(symbols=2)
    with pytest.raises(ValueError):
        emu.control.configure(p_5xx=-0.1)
    with pytest.raises(ValueError):
        emu.control.configure(bogus=1)
    with pytest.raises(ValueError):
        emu.control.schedule("teapot")
    assert emu.faults.p_5xx == 0.0


def test_the_request_log_reports_the_most_requests_in_any_window() -> None:
    def record(mono: float) -> RequestRecord:
        return RequestRecord(mono * 1000, mono, 0, TIME, {}, 200, 0, None)

    log = RequestLog([record(t) for t in (0.0, 0.1, 0.2, 0.3, 0.4, 5.0, 5.1, 9.99)])
    assert log.max_in_window(0.5) == 5
    assert log.max_in_window(0.3) == 3  # (t - 0.3, t]: 0.1, 0.2, 0.3 or 0.2, 0.3, 0.4
    assert log.max_in_window(5.0) == 5  # 5.0 - 0.0 is not inside a 5 s window
    assert log.max_in_window(10.0) == 8
    assert RequestLog().max_in_window(5.0) == 0

    async def t(emu: BybitEmulator, s: aiohttp.ClientSession) -> None:
        for _ in range(4):
            await get(s, emu, TIME)
        await get(s, emu, "/v5/market/kline", symbol="BTCUSDT", interval="D")
        assert emu.control.log.max_in_window(60.0) == 5
        assert len(emu.control.log.select(path=TIME, status=200)) == 4

    run(t)


def test_admin_routes_change_faults_and_clock_and_refuse_bad_input() -> None:
    async def t(emu: BybitEmulator, s: aiohttp.ClientSession) -> None:
        async def post(route: str, payload: Any) -> int:
            async with s.post(emu.url + "/_emulator/" + route, data=msgspec.json.encode(payload)) as r:
                return r.status

        assert await post("faults", {"p_429": 2}) == 400
        assert await post("faults", {"nope": 1}) == 400
        assert await post("faults", [1, 2]) == 400
        assert await post("schedule", {"faults": ["teapot"]}) == 400
        assert await post("clock", {"time_ms": "soon"}) == 400
        assert await post("faults", {"api_limit": 50}) == 200 and emu.faults.api_limit == 50
        assert await post("clock", {"time_ms": MAR_1}) == 200
        assert (await get(s, emu, TIME))[1]["time"] == MAR_1
        assert await post("schedule", {"faults": ["5xx"]}) == 200
        assert (await get(s, emu, TIME))[0] == 503
        assert await post("ban", {"seconds": 30}) == 200 and (await get(s, emu, TIME))[0] == 403
        assert await post("ban", {"seconds": 0}) == 200 and (await get(s, emu, TIME))[0] == 200
        async with s.get(emu.url + "/_emulator/requests") as r:
            rows = msgspec.json.decode(await r.read())
        assert [row["status"] for row in rows] == [200, 503, 403, 200]

    run(t)


def test_run_emulator_serves_until_sigterm(tmp_path: Any) -> None:
    code = (
        "from marketlake_emulator import serve\n"
        "serve('127.0.0.1', 0, symbols=3, seed=1, speed=1.0,"
        " on_ready=lambda url: print(url, flush=True))\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as proc:
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:")

            async def ask() -> dict[str, Any]:
                async with aiohttp.ClientSession() as s, s.get(url + TIME) as r:
                    return msgspec.json.decode(await r.read())

            body = asyncio.run(ask())
            assert body["retCode"] == 0 and abs(body["time"] - time.time() * 1000) < 60_000
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0
