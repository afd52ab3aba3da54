"""The Bybit REST client against the emulator on 127.0.0.1: exact paging, error mapping, retries,
the ban latch, and the rate budget seen from the server."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import polars as pl
import pytest

from marketlake.core.timeframes import DAY_MS, MINUTE_MS, parse_timeframe
from marketlake.errors import (
    DataValidationError,
    ExchangeBannedError,
    ExchangeRequestError,
    InvalidSymbolError,
    InvalidTimeframeError,
    TransientExchangeError,
)
from marketlake_emulator import BybitEmulator
from marketlake_emulator.control import FaultConfig
from marketlake_emulator.market import SyntheticMarket
from marketlake.exchanges.bybit.rest import BybitRestClient, kline_windows
from marketlake.net.backoff import Backoff
from marketlake.net.ratelimit import BanLatch, RateBudget

MAR_1 = 1_709_251_200_000  # 2024-03-01 00:00 UTC
NOW = MAR_1 + 90 * MINUTE_MS + 30_000
KLINE = "/v5/market/kline"
OUTAGE = (MAR_1 - 2 * DAY_MS + 300 * MINUTE_MS, MAR_1 - 2 * DAY_MS + 345 * MINUTE_MS)


def market() -> SyntheticMarket:
    return SyntheticMarket.generate(seed=3, symbols=4, outages=[OUTAGE])


def client(emu: BybitEmulator, **kw: Any) -> BybitRestClient:
    kw.setdefault("ban_latch", BanLatch())
    kw.setdefault("backoff", Backoff(base=0.01, cap=0.05, max_attempts=6, rng=random.Random(1)))
    return BybitRestClient(emu.url, **kw)


def run(test: Callable[[BybitEmulator], Awaitable[None]], **emu_kw: Any) -> None:
    async def main() -> None:
        emu_kw.setdefault("market", market())
        emu_kw.setdefault("start_ms", NOW)
        emu_kw.setdefault("speed", 0)
        async with BybitEmulator(**emu_kw) as emu:
            await test(emu)

    asyncio.run(main())


def truth(emu: BybitEmulator, symbol: str, interval: str, a: int, b: int) -> pl.DataFrame:
    return emu.market.candles(symbol, interval, a, b)


def test_kline_windows_cover_the_range_exactly_in_pages_of_at_most_1000_candles() -> None:
    start = MAR_1 + 17_123  # unaligned: the first candle is the next minute
    w = kline_windows("1", start, start + 2500 * MINUTE_MS)
    assert w[0][0] == MAR_1 + MINUTE_MS and w[-1][1] == MAR_1 + 2500 * MINUTE_MS
    assert [(b - a) // MINUTE_MS + 1 for a, b in w] == [1000, 1000, 500]
    assert all(w[i][1] + MINUTE_MS == w[i + 1][0] for i in range(len(w) - 1))
    months = kline_windows("M", 0, MAR_1)  # 651 month opens: 1970-01 .. 2024-03
    assert [len(parse_timeframe("M").opens_between(a, b + 1)) for a, b in months] == [651]
    assert kline_windows("D", MAR_1 + 1, MAR_1 + 2) == []
    with pytest.raises(InvalidTimeframeError):
        kline_windows("1s", 0, MAR_1)


def test_a_multi_page_range_equals_the_ground_truth_with_the_outage_missing() -> None:
    async def t(emu: BybitEmulator) -> None:
        a, b = MAR_1 - 3 * DAY_MS, MAR_1 - DAY_MS // 2
        async with client(emu) as c:
            got = await c.get_klines("linear", "BTCUSDT", "1", a, b)
        want = truth(emu, "BTCUSDT", "1", a, b)
        assert got.height == (b - a) // MINUTE_MS + 1 - 45 and got.equals(want)
        assert got["ts"].is_sorted() and got["ts"].n_unique() == got.height
        reqs = emu.control.log.select(path=KLINE)
        assert len(reqs) == 4 and all(int(r.params["limit"]) <= 1000 for r in reqs)
        spans = sorted((int(r.params["start"]), int(r.params["end"])) for r in reqs)
        assert spans[0][0] == a and spans[-1][1] == b
        assert all(spans[i][1] + MINUTE_MS == spans[i + 1][0] for i in range(3))  # no overlap, no hole

    run(t)


@pytest.mark.parametrize(
    ("interval", "days"),
    [("3", 20), ("15", 40), ("60", 60), ("240", 200), ("720", 420), ("D", 420), ("W", 420), ("M", 420)],
)
def test_every_timeframe_is_fetched_exactly(interval: str, days: int) -> None:
    async def t(emu: BybitEmulator) -> None:
        a, b = MAR_1 - days * DAY_MS, MAR_1 - 1
        async with client(emu) as c:
            got = await c.get_klines("linear", "ETHUSDT", interval, a, b)
        last_closed = parse_timeframe(interval).floor(NOW) - 1  # the week of Mar 1 is still forming
        assert got.height > 0 and got.equals(truth(emu, "ETHUSDT", interval, a, min(b, last_closed)))

    run(t)


def test_the_forming_candle_is_dropped_by_the_servers_clock_not_the_local_one() -> None:
    async def t(emu: BybitEmulator) -> None:
        # The emulator lives on 2024-03-01 while the local clock is years later: only the
        # server's time decides what is closed.
        async with client(emu) as c:
            got = await c.get_klines("linear", "BTCUSDT", "1", NOW - 3 * 3_600_000, NOW + 3 * DAY_MS)
            days = await c.get_klines("linear", "BTCUSDT", "D", MAR_1 - 5 * DAY_MS, MAR_1 + DAY_MS)
        last_closed = NOW - NOW % MINUTE_MS - MINUTE_MS
        assert got["ts"].dt.epoch("ms").max() == last_closed
        assert got.equals(truth(emu, "BTCUSDT", "1", NOW - 3 * 3_600_000, last_closed))
        assert days["ts"].dt.epoch("ms").max() == MAR_1 - DAY_MS  # today is still forming
        # The windows after the server's present were never requested.
        assert len(emu.control.log.select(path=KLINE)) == 2

    run(t)


def test_a_candle_that_just_ended_is_kept_only_once_settled() -> None:
    async def t(emu: BybitEmulator) -> None:
        minute = NOW - NOW % MINUTE_MS  # 01:30:00 ended the 01:29 candle
        async with client(emu, settle_ms=2_000) as c:
            emu.control.set_clock(time_ms=minute + 1_500)
            early = await c.fetch_kline_page("linear", "BTCUSDT", "1", minute - MINUTE_MS, minute - MINUTE_MS)
            emu.control.set_clock(time_ms=minute + 2_000)
            late = await c.fetch_kline_page("linear", "BTCUSDT", "1", minute - MINUTE_MS, minute - MINUTE_MS)
        assert early.frame.height == 0 and not early.complete
        assert late.frame.height == 1 and late.complete

    run(t)


def test_pages_report_what_is_closed_and_iteration_stops_at_the_present() -> None:
    async def t(emu: BybitEmulator) -> None:
        async with client(emu) as c:
            pages = [
                p
                async for p in c.iter_kline_pages(
                    "linear", "BTCUSDT", "1", NOW - 1500 * MINUTE_MS, NOW + 5000 * MINUTE_MS
                )
            ]
        assert len(pages) == 2 and pages[0].complete and not pages[1].complete
        assert pages[1].server_time_ms == NOW and pages[1].closed_until_ms == NOW - NOW % MINUTE_MS
        assert pages[0].frame.height == 1000 and pages[0].end_ms < pages[1].start_ms

    run(t)


def test_an_unknown_symbol_is_a_request_error_naming_it_and_is_not_retried() -> None:
    async def t(emu: BybitEmulator) -> None:
        async with client(emu) as c:
            with pytest.raises(ExchangeRequestError) as err:
                await c.get_klines("linear", "NOPEUSDT", "60", MAR_1 - DAY_MS, MAR_1)
        assert "NOPEUSDT" in str(err.value) and "interval 60" in str(err.value)
        assert "10001" in str(err.value) and "Not supported symbols" in str(err.value)
        assert len(emu.control.log) == 1

    run(t)


@pytest.mark.parametrize("fault", ["10006", "429", "5xx", "10016", "truncated", "disconnect"])
def test_transient_faults_are_retried_until_the_result_is_exact(fault: str) -> None:
    async def t(emu: BybitEmulator) -> None:
        if fault == "disconnect":  # aiohttp itself re-sends a GET once after a dropped connection
            emu.control.schedule(fault, fault, "ok", fault, fault)
        else:
            emu.control.schedule(fault, "ok", fault)
        a, b = MAR_1 - 2 * DAY_MS, MAR_1 - DAY_MS
        async with client(emu) as c:
            got = await c.get_klines("linear", "SYM001USDT", "1", a, b, concurrency=1)
            assert c.stats.retries >= 2
        assert got.equals(truth(emu, "SYM001USDT", "1", a, b))
        assert [r.fault for r in emu.control.log.records].count(fault) == (4 if fault == "disconnect" else 2)

    run(t, faults=FaultConfig(window_seconds=0.2))


def test_a_slow_answer_times_out_and_is_retried() -> None:
    async def t(emu: BybitEmulator) -> None:
        emu.control.schedule("slow")
        async with client(emu, timeout_s=0.15) as c:
            assert await c.get_server_time() == NOW
            assert c.stats.transport_errors >= 1 and c.stats.requests >= 2

    run(t, faults=FaultConfig(slow_seconds=0.6))


def test_random_faults_at_high_rates_still_give_an_exact_result() -> None:
    async def t(emu: BybitEmulator) -> None:
        a, b = MAR_1 - 11 * DAY_MS, MAR_1 - DAY_MS
        backoff = Backoff(base=0.005, cap=0.02, max_attempts=12, rng=random.Random(2))
        async with client(emu, backoff=backoff) as c:
            got = await c.get_klines("linear", "ETHUSDT", "1", a, b, concurrency=3)
        assert got.equals(truth(emu, "ETHUSDT", "1", a, b))
        faults = {r.fault for r in emu.control.log.records}
        assert {"429", "5xx", "10016", "truncated"} <= faults

    run(t, seed=1, faults=FaultConfig(p_429=0.1, p_5xx=0.1, p_10016=0.1, p_truncated=0.1))


def test_retries_give_up_after_max_attempts_with_a_transient_error() -> None:
    async def t(emu: BybitEmulator) -> None:
        emu.control.schedule("5xx", "5xx", "5xx")
        async with client(emu, backoff=Backoff(base=0.01, cap=0.02, max_attempts=3)) as c:
            with pytest.raises(TransientExchangeError, match="gave up after 3 attempts"):
                await c.get_server_time()
        assert len(emu.control.log) == 3

    run(t)


def test_the_client_follows_the_limit_headers_and_never_trips_10006() -> None:
    async def t(emu: BybitEmulator) -> None:
        async with client(emu) as c:
            for _ in range(9):
                assert await c.get_server_time() == NOW
        assert [r.ret_code for r in emu.control.log.records] == [0] * 9
        assert emu.control.log.max_in_window(0.3) <= 3

    run(t, faults=FaultConfig(window_seconds=0.3, api_limit=3))


def test_a_10006_is_retried_no_earlier_than_the_reset_time() -> None:
    async def t(emu: BybitEmulator) -> None:
        emu.control.schedule("10006")
        async with client(emu) as c:
            assert await c.get_server_time() == NOW
            assert c.stats.rate_limited == 1
        first, second = emu.control.log.records
        assert first.ret_code == 10006 and second.ret_code == 0
        assert second.mono - first.mono >= 0.25  # the forced reset is one window (0.25 s) away

    run(t, faults=FaultConfig(window_seconds=0.25))


def test_a_403_ban_is_surfaced_once_and_nothing_is_sent_until_it_lifts() -> None:
    async def t(emu: BybitEmulator) -> None:
        latch = BanLatch()
        emu.control.ban(0.3)
        async with client(emu, ban_latch=latch, ban_seconds=0.4) as c:
            with pytest.raises(ExchangeBannedError) as err:
                await c.get_server_time()
            until = err.value.banned_until
            assert until == latch.banned_until_ms
            results = await asyncio.gather(*(c.get_server_time() for _ in range(5)), return_exceptions=True)
            assert results == [NOW] * 5
            assert c.stats.bans == 1
        records = emu.control.log.records
        assert records[0].status == 403
        assert all(r.wall_ms >= until for r in records[1:]) and len(records) == 6

    run(t)


def test_concurrent_requests_meeting_a_ban_raise_it_only_once() -> None:
    async def t(emu: BybitEmulator) -> None:
        emu.control.ban(0.2)
        async with client(emu, ban_seconds=0.3) as c:
            results = await asyncio.gather(*(c.get_server_time() for _ in range(6)), return_exceptions=True)
        banned = [r for r in results if isinstance(r, ExchangeBannedError)]
        assert len(banned) == 1 and results.count(NOW) == 5

    run(t)


def test_the_default_share_of_the_ip_limit_never_gets_the_client_banned() -> None:
    # Bybit scaled down 5x in time and 10x in count: a ban past 60 requests in any 1 s; the
    # client's budget is 50 per 1 s (500 of 600, as by default). Twice the budget is asked for.
    async def t(emu: BybitEmulator) -> None:
        budget = RateBudget(50, 1.0)
        async with client(emu, budget=budget) as c:
            got = await c.get_klines("linear", "BTCUSDT", "1", MAR_1 - 30 * DAY_MS, MAR_1 - 1, concurrency=8)
            times = await asyncio.gather(*(c.get_server_time() for _ in range(56)))
        assert got.height > 0 and set(times) == {NOW}
        assert emu.control.ban_count == 0 and not emu.control.log.select(status=403)
        assert len(emu.control.log) == 100 and emu.control.log.max_in_window(1.0) <= 60

    run(t, faults=FaultConfig(window_seconds=1.0, ip_limit=60, ip_ban_seconds=5.0))


def test_instruments_follow_the_cursor_to_the_last_page() -> None:
    async def t(emu: BybitEmulator) -> None:
        async with client(emu) as c:
            linear = await c.get_instruments("linear", limit=10)
            spot = await c.get_instruments("spot")
            one = await c.get_instruments("linear", symbol="BTCUSDT")
        trading = [s.symbol for s in emu.market.instruments("linear") if s.status(NOW) == "Trading"]
        assert [i.symbol for i in linear] == trading and len(trading) > 20
        assert all(i.launch_time_ms is not None and i.category == "linear" for i in linear)
        btc = next(i for i in linear if i.symbol == "BTCUSDT")
        assert (btc.tick_size, btc.qty_step, btc.contract_type) == ("0.10", "0.001", "LinearPerpetual")
        assert [i.symbol for i in spot] == ["BTCUSDT", "ETHUSDT"] and spot[0].launch_time_ms is None
        assert [i.symbol for i in one] == ["BTCUSDT"]
        pages = emu.control.log.select(path="/v5/market/instruments-info")
        assert len(pages) == -(-len(trading) // 10) + 2

    run(t, market=SyntheticMarket.generate(seed=1, symbols=25))


def test_recent_trades_come_back_ascending_in_the_stored_trade_schema() -> None:
    async def t(emu: BybitEmulator) -> None:
        async with client(emu) as c:
            trades = await c.get_recent_trades("linear", "BTCUSDT", limit=100)
        assert trades.height == 100 and trades["ts"].is_sorted()
        assert trades.columns == [
            "ts",
            "price",
            "size",
            "side",
            "trade_id",
            "tick_direction",
            "is_block_trade",
        ]
        assert trades["ts"].dt.epoch("ms").max() <= NOW

    run(t)


def test_bad_arguments_are_refused_before_anything_is_sent() -> None:
    async def t(emu: BybitEmulator) -> None:
        async with client(emu) as c:
            with pytest.raises(InvalidSymbolError):
                await c.get_klines("option", "BTCUSDT", "1", MAR_1, MAR_1)
            with pytest.raises(InvalidSymbolError):
                await c.get_klines("linear", "../etc", "1", MAR_1, MAR_1)
            with pytest.raises(InvalidTimeframeError):
                await c.get_klines("linear", "BTCUSDT", "7", MAR_1, MAR_1)
            with pytest.raises(DataValidationError):
                await c.get_klines("linear", "BTCUSDT", "1", MAR_1, MAR_1 - 1)
            with pytest.raises(DataValidationError):
                await c.get_klines("linear", "BTCUSDT", "1", "yesterday", MAR_1)  # type: ignore[arg-type]
            with pytest.raises(InvalidSymbolError):
                await c.get_klines(None, "BTCUSDT", "1", MAR_1, MAR_1)  # type: ignore[arg-type]
            with pytest.raises(DataValidationError):
                await c.fetch_kline_page("linear", "BTCUSDT", "1", MAR_1, MAR_1 + 1000 * MINUTE_MS)
            with pytest.raises(DataValidationError):
                await c.get_instruments("linear", status="Listed")
            with pytest.raises(DataValidationError):
                await c.get_recent_trades("spot", "BTCUSDT", limit=61)
        with pytest.raises(DataValidationError):
            BybitRestClient("ftp://example.org")
        assert len(emu.control.log) == 0

    run(t)
