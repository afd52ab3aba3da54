"""The emulator's perpetual-futures data (issue 13 section 5): funding history from its premium
index, an 8 h -> 1 h interval change, mark / index / premium-index klines, open interest as a
walk, delisted symbols; each equal to the truth computed from the seed, with the usual faults."""

from __future__ import annotations

import re
import urllib.parse
from typing import Any

import aiohttp
import numpy as np

from marketlake.core.timeframes import MINUTE_MS, parse_timeframe
from marketlake_emulator import BybitEmulator
from marketlake_emulator.derivatives import DerivativesModel
from tests.unit.test_bybit_emulator import INSTR, NOW, get, run

FUNDING = "/v5/market/funding/history"
OI = "/v5/market/open-interest"
PRICE = {"mark": "/v5/market/mark-price-kline", "index": "/v5/market/index-price-kline", "premium": "/v5/market/premium-index-price-kline"}
HOUR = 3_600_000


def _changing(emu: BybitEmulator) -> Any:
    """A linear symbol whose funding interval changes before NOW (the seed has several)."""
    model = emu.derivatives
    return next(
        s for s in emu.market.instruments("linear")
        if (c := model.interval_change(s)) is not None and c < NOW - 20 * 86_400_000 and s.delist_ms is None
    )


def test_funding_history_pages_newest_first_to_the_listing_and_equals_the_truth() -> None:
    async def t(emu: BybitEmulator, s: aiohttp.ClientSession) -> None:
        spec = _changing(emu)
        rows: list[dict[str, str]] = []
        end = NOW
        while True:  # the client's walk: each page ends where the previous one's oldest began
            _, body, _ = await get(s, emu, FUNDING, category="linear", symbol=spec.symbol, startTime=0, endTime=end)
            page = body["result"]["list"]
            assert len(page) <= 200
            rows += page
            if len(page) < 200:
                break
            end = int(page[-1]["fundingRateTimestamp"]) - 1
        times = [int(r["fundingRateTimestamp"]) for r in rows]
        truth = emu.derivatives.settlements(spec, 0, NOW)
        assert times == truth[::-1]
        assert all(re.fullmatch(r"-?\d+(\.\d{1,6})?", r["fundingRate"]) for r in rows)
        # 8 h before the change, 1 h after it: the interval history the client must see.
        change = emu.derivatives.interval_change(spec)
        gaps = {(b - a) // HOUR for a, b in zip(truth, truth[1:]) if b <= change}
        assert gaps == {8}
        assert {(b - a) // HOUR for a, b in zip(truth, truth[1:]) if a >= change} == {1}
        # One rate by hand: F = P + clamp(I - P, +-0.05%), P the mean premium of the interval.
        t0 = truth[-1]
        prem = emu.derivatives.premium_minutes(spec, t0 - HOUR, t0 - 1)
        p = round(float(prem.close.mean()))
        want = max(-5000, min(5000, p + max(-500, min(500, round(100 * 60 / 480) - p))))
        got = next(r["fundingRate"] for r in rows if int(r["fundingRateTimestamp"]) == t0)
        assert round(float(got) * 1e6) == want

    run(t, symbols=30)


def test_funding_history_documented_rules_and_instrument_interval() -> None:
    async def t(emu: BybitEmulator, s: aiohttp.ClientSession) -> None:
        _, body, _ = await get(s, emu, FUNDING, category="linear", symbol="BTCUSDT", startTime=NOW - 86_400_000)
        assert body["retCode"] == 10001  # startTime alone is an error
        _, body, _ = await get(s, emu, FUNDING, category="linear", symbol="BTCUSDT")
        latest = body["result"]["list"]
        assert len(latest) == 200 and int(latest[0]["fundingRateTimestamp"]) == NOW - NOW % (8 * HOUR)
        _, body, _ = await get(s, emu, FUNDING, category="linear", symbol="BTCUSDT", endTime=NOW - 30 * 86_400_000, limit=5)
        assert [int(r["fundingRateTimestamp"]) for r in body["result"]["list"]][0] <= NOW - 30 * 86_400_000
        for bad in ({"category": "spot", "symbol": "BTCUSDT"}, {"category": "linear"}, {"category": "linear", "symbol": "BTCUSDT", "limit": 201}):
            _, body, _ = await get(s, emu, FUNDING, **bad)
            assert body["retCode"] == 10001, bad
        spec = _changing(emu)
        _, body, _ = await get(s, emu, INSTR, category="linear", symbol=spec.symbol)
        assert body["result"]["list"][0]["fundingInterval"] == 60
        emu.control.set_clock(time_ms=emu.derivatives.interval_change(spec) - 1)
        _, body, _ = await get(s, emu, INSTR, category="linear", symbol=spec.symbol)
        assert body["result"]["list"][0]["fundingInterval"] == 480

    run(t, symbols=30)


def test_price_klines_are_five_strings_derived_from_trades_and_premium() -> None:
    async def t(emu: BybitEmulator, s: aiohttp.ClientSession) -> None:
        spec = emu.market.instrument("BTCUSDT")
        model = emu.derivatives
        start, end = NOW - NOW % HOUR - 10 * HOUR, NOW - NOW % HOUR - HOUR
        got: dict[str, list[list[str]]] = {}
        for kind, path in PRICE.items():
            _, body, _ = await get(s, emu, path, category="linear", symbol="BTCUSDT", interval="60", start=start, end=end)
            rows = body["result"]["list"]
            assert [int(r[0]) for r in rows] == list(range(end, start - 1, -HOUR)) and all(len(r) == 5 for r in rows)
            got[kind] = rows[::-1]
        trades = emu.market.raw_candles(spec, parse_timeframe("60"), start, end)
        for i, row in enumerate(got["index"]):
            p = model.premium_minutes(spec, int(trades.ts[i]) + HOUR - MINUTE_MS, int(trades.ts[i]) + HOUR - 1).close[0]
            for k, col in enumerate((trades.open, trades.high, trades.low, trades.close)):
                index = (int(col[i]) * (2_000_000 - 2 * int(p)) + 1_000_000) // 2_000_000
                mark = (int(col[i]) * (2_000_000 - int(p)) + 1_000_000) // 2_000_000
                assert round(float(row[k + 1]) * 100) == index
                assert round(float(got["mark"][i][k + 1]) * 100) == mark
        # The premium hour is the aggregate of its minutes.
        minutes = model.premium_minutes(spec, start, start + HOUR - 1)
        first = got["premium"][0]
        assert [round(float(x) * 1e6) for x in first[1:]] == [
            int(minutes.open[0]), int(minutes.high.max()), int(minutes.low.min()), int(minutes.close[-1])
        ]
        assert all(re.fullmatch(r"-?\d\.\d{6}", x) for r in got["premium"] for x in r[1:])
        # No bounds: the newest candle is the forming one; the inverse market has no premium index.
        _, body, _ = await get(s, emu, PRICE["mark"], category="inverse", symbol="BTCUSD", interval="1", limit=3)
        assert int(body["result"]["list"][0][0]) == NOW - NOW % MINUTE_MS
        _, body, _ = await get(s, emu, PRICE["premium"], category="inverse", symbol="BTCUSD", interval="1")
        assert body["retCode"] == 10001

    run(t)


def test_open_interest_pages_by_cursor_and_is_one_walk_at_every_interval() -> None:
    async def t(emu: BybitEmulator, s: aiohttp.ClientSession) -> None:
        spec = emu.market.instrument("ETHUSDT")
        start = NOW - 2 * 86_400_000
        rows: list[dict[str, str]] = []
        cursor = ""
        pages = 0
        while True:
            q: dict[str, Any] = {"category": "linear", "symbol": "ETHUSDT", "intervalTime": "5min", "startTime": start, "endTime": NOW, "limit": 200}
            if cursor:
                q["cursor"] = cursor
            _, body, _ = await get(s, emu, OI, **q)
            rows += body["result"]["list"]
            cursor, pages = body["result"]["nextPageCursor"], pages + 1
            if not cursor:
                break
            assert re.fullmatch(r"lastid%3D\d+%26lasttime%3D\d{10}", cursor)
            assert int(urllib.parse.parse_qs(urllib.parse.unquote(cursor))["lasttime"][0]) * 1000 == int(rows[-1]["timestamp"])
        times = [int(r["timestamp"]) for r in rows]
        want = emu.derivatives.oi_points(spec, 300_000, start, NOW)[::-1]
        assert pages == 3 and times == want.tolist()
        truth = emu.derivatives.open_interest(spec, want)
        assert [round(float(r["openInterest"]) * 100) for r in rows] == truth.tolist()
        assert all(re.fullmatch(r"\d+\.\d{8}", r["openInterest"]) for r in rows)
        by_time = {int(r["timestamp"]): r["openInterest"] for r in rows}
        _, body, _ = await get(s, emu, OI, category="linear", symbol="ETHUSDT", intervalTime="1h", startTime=start, endTime=NOW)
        hourly = body["result"]["list"]
        assert len(hourly) == 48 and all(by_time[int(r["timestamp"])] == r["openInterest"] for r in hourly)
        _, body, _ = await get(s, emu, OI, category="linear", symbol="ETHUSDT", intervalTime="2h")
        assert body["retCode"] == 10001 and "intervalTime" in body["retMsg"]
        # A walk, not noise: neighbours are close, the level wanders.
        values = truth.astype(float)
        assert np.abs(np.diff(np.log(values))).max() < 0.05 and values.max() / values.min() > 1.01

    run(t)


def test_a_delisted_symbol_is_closed_with_its_delivery_time_and_has_no_data_after_it() -> None:
    async def t(emu: BybitEmulator, s: aiohttp.ClientSession) -> None:
        spec = emu.market.instrument("SYM040USDT")
        assert spec.delist_ms is not None and spec.delist_ms < NOW
        _, body, _ = await get(s, emu, INSTR, category="linear", status="Closed", limit=1000)
        item = next(x for x in body["result"]["list"] if x["symbol"] == "SYM040USDT")
        assert item["status"] == "Closed" and int(item["deliveryTime"]) == spec.delist_ms
        _, body, _ = await get(s, emu, FUNDING, category="linear", symbol="SYM040USDT")
        assert int(body["result"]["list"][0]["fundingRateTimestamp"]) <= spec.delist_ms
        _, body, _ = await get(s, emu, OI, category="linear", symbol="SYM040USDT", intervalTime="1d")
        assert int(body["result"]["list"][0]["timestamp"]) < spec.delist_ms

    run(t, symbols=50)


def test_faults_apply_to_the_new_endpoints_and_answers_are_reproducible() -> None:
    async def t(emu: BybitEmulator, s: aiohttp.ClientSession) -> None:
        emu.control.schedule("429", "10006", "truncated")
        statuses = []
        for _ in range(3):
            status, body, _ = await get(s, emu, FUNDING, category="linear", symbol="BTCUSDT", limit=3)
            statuses.append(status if status != 200 else (body["retCode"] if isinstance(body, dict) else "cut"))
        assert statuses == [429, 10006, "cut"]
        _, body, _ = await get(s, emu, FUNDING, category="linear", symbol="BTCUSDT", limit=3)
        twin = DerivativesModel(type(emu.market).generate(5, 4))
        spec = emu.market.instrument("BTCUSDT")
        assert [r["fundingRate"] for r in body["result"]["list"]] == [
            f"{twin.funding_rate(spec, t) / 1e6:.6f}".rstrip("0").rstrip(".") for t in twin.settlements(spec, 0, NOW)[::-1][:3]
        ]

    run(t)


def test_answers_have_the_documented_shapes() -> None:
    from tests.unit.test_emulator_wire import DOCS, SHARED, _shape

    def doc(name: str) -> Any:
        import json

        return json.loads((DOCS / name).read_text())["result"]

    async def t(emu: BybitEmulator, s: aiohttp.ClientSession) -> None:
        _, body, _ = await get(s, emu, FUNDING, category="linear", symbol="BTCUSDT", limit=1)
        assert _shape(body["result"]) == _shape(doc("funding_history_linear.json"))
        _, body, _ = await get(s, emu, PRICE["mark"], category="linear", symbol="BTCUSDT", interval="15", limit=1)
        assert _shape(body["result"]) == _shape(doc("mark_price_kline_linear.json"))
        _, body, _ = await get(s, emu, OI, category="inverse", symbol="BTCUSD", intervalTime="5min", limit=2)
        assert _shape(body["result"]) == _shape(doc("open_interest_inverse.json"))
        if SHARED.is_dir():  # the recorded mainnet page (with a cursor), key for key
            import json

            rec = json.loads((SHARED / "ccxt_mainnet_rest_open_interest_linear_BTCUSDT_with_cursor.json").read_text())
            _, body, _ = await get(s, emu, OI, category="linear", symbol="BTCUSDT", intervalTime="1h", limit=1)
            assert _shape(body) == _shape(rec)
            assert list(body["result"]) == list(rec["result"]) and body["result"]["nextPageCursor"]

    run(t)
