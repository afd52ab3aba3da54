"""The emulator answers like Bybit where real clients found it did not (issue 14): kline ranges,
number formats, instrument fields, tickers, integer WebSocket ``req_id``s, kline push rate."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from marketlake.core.timeframes import DAY_MS, MINUTE_MS, parse_timeframe
from marketlake_emulator import BybitEmulator, SyntheticMarket
from tests.unit.test_bybit_emulator import INSTR, KLINE, NOW, TRADES, get, run

TICKERS = "/v5/market/tickers"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "bybit"
DOCS = Path(__file__).resolve().parents[1] / "golden" / "docs_examples"


def _shape(value: Any) -> Any:
    """A JSON value's shape: dict keys (recursively) and scalar types, values dropped."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return type(value).__name__


def _doc_item(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())["result"]["list"][0]


# ------------------------------------------------------------------------------ kline ranges


def test_an_unaligned_start_with_an_end_includes_the_candle_containing_start() -> None:
    async def t(emu: BybitEmulator, s: aiohttp.ClientSession) -> None:
        # The recorded mainnet case, moved to the emulator's clock: start 8 s and end 76 s
        # after a minute's open returned that minute and the next.
        minute = NOW - NOW % MINUTE_MS - 10 * MINUTE_MS
        _, body, _ = await get(
            s, emu, KLINE, category="spot", symbol="BTCUSDT", interval="1", start=minute + 8_000, end=minute + 76_000
        )
        assert [int(r[0]) for r in body["result"]["list"]] == [minute + MINUTE_MS, minute]
        # Hours too: the candle containing start comes first in time.
        hour = NOW - NOW % 3_600_000 - 5 * 3_600_000
        _, body, _ = await get(
            s, emu, KLINE, category="linear", symbol="BTCUSDT", interval="60", start=hour + 1, end=hour + 3_600_000
        )
        assert [int(r[0]) for r in body["result"]["list"]] == [hour + 3_600_000, hour]

    run(t)


def test_start_after_end_is_an_empty_list_not_an_error() -> None:
    async def t(emu: BybitEmulator, s: aiohttp.ClientSession) -> None:
        for start, end in ((NOW - 60_000, NOW - 120_000), (NOW - 59_000, NOW - 60_000)):
            status, body, _ = await get(
                s, emu, KLINE, category="linear", symbol="BTCUSDT", interval="1", start=start, end=end
            )
            assert (status, body["retCode"], body["retMsg"]) == (200, 0, "OK")
            assert body["result"] == {"symbol": "BTCUSDT", "category": "linear", "list": []}

    run(t)


# ------------------------------------------------------------------------------ number formats


def test_trade_prices_keep_the_price_scale() -> None:
    async def t(emu: BybitEmulator, s: aiohttp.ClientSession) -> None:
        for category, symbol, scale, most in (
            ("linear", "BTCUSDT", 2, 1000),
            ("spot", "ETHUSDT", 2, 60),
            ("inverse", "BTCUSD", 1, 1000),
        ):
            _, body, _ = await get(s, emu, TRADES, category=category, symbol=symbol, limit=most)
            prices = [x["price"] for x in body["result"]["list"]]
            assert len(prices) == most
            assert all(re.fullmatch(rf"\d+\.\d{{{scale}}}", p) for p in prices), prices[:5]
            assert any(p.endswith("0") for p in prices)  # "51444.40", not trimmed to "51444.4"

    run(t)


def test_instruments_carry_symbol_ids_size_limits_and_the_documented_fields() -> None:
    async def t(emu: BybitEmulator, s: aiohttp.ClientSession) -> None:
        _, lin, _ = await get(s, emu, INSTR, category="linear", limit=1000)
        items = lin["result"]["list"]
        btc = next(x for x in items if x["symbol"] == "BTCUSDT")
        assert btc["lotSizeFilter"]["maxOrderQty"] == "1190.000"  # the documented BTCUSDT value
        assert btc["lotSizeFilter"]["postOnlyMaxOrderQty"] == "1190.000"
        assert btc["lotSizeFilter"]["maxMktOrderQty"] == "500.000"
        ids = [x["symbolId"] for x in items]
        assert all(isinstance(i, int) and i > 0 for i in ids) and len(set(ids)) == len(ids)
        _, spot, _ = await get(s, emu, INSTR, category="spot")
        lot = spot["result"]["list"][0]["lotSizeFilter"]
        assert {"maxLimitOrderQty", "maxMarketOrderQty", "postOnlyMaxLimitOrderSize"} <= set(lot)
        if SHARED.is_dir():  # the documented examples' exact key sets and value types
            for name, got in (("linear", btc), ("spot", spot["result"]["list"][0])):
                doc = _doc_item(SHARED / f"docs_rest_instruments_{name}_BTCUSDT.json")
                assert _shape(got) == _shape(doc), name
        # Bybit pads sizes to the quantity step: every derivative limit has qty_scale decimals.
        for x in items:
            decimals = len(x["lotSizeFilter"]["qtyStep"].partition(".")[2])
            assert len(x["lotSizeFilter"]["maxOrderQty"].partition(".")[2]) == decimals

    run(t, symbols=30)


# ------------------------------------------------------------------------------ tickers


def test_tickers_have_the_documented_shapes_and_agree_with_klines_and_trades() -> None:
    async def t(emu: BybitEmulator, s: aiohttp.ClientSession) -> None:
        for category, symbol, doc in (
            ("linear", "BTCUSDT", "tickers_inverse_BTCUSD.json"),
            ("inverse", "BTCUSD", "tickers_inverse_BTCUSD.json"),
            ("spot", "BTCUSDT", "tickers_spot_BTCUSDT.json"),
        ):
            status, body, _ = await get(s, emu, TICKERS, category=category, symbol=symbol)
            assert status == 200 and body["retCode"] == 0 and body["result"]["category"] == category
            (item,) = body["result"]["list"]
            assert _shape(item) == _shape(_doc_item(DOCS / doc)), category
            _, trades, _ = await get(s, emu, TRADES, category=category, symbol=symbol, limit=1)
            assert item["lastPrice"] == trades["result"]["list"][0]["price"]
            _, k, _ = await get(
                s, emu, KLINE, category=category, symbol=symbol, interval="1", start=NOW - DAY_MS + 1, end=NOW, limit=1000
            )
            _, k2, _ = await get(
                s, emu, KLINE, category=category, symbol=symbol, interval="1", start=NOW - DAY_MS + 1,
                end=NOW - 1000 * MINUTE_MS, limit=1000,
            )
            rows = {r[0]: r for r in k["result"]["list"] + k2["result"]["list"]}
            day = [rows[key] for key in sorted(rows) if int(key) > NOW - DAY_MS]
            assert item["highPrice24h"].rstrip("0").rstrip(".") == max(day, key=lambda r: float(r[2]))[2]
            assert float(item["volume24h"]) == pytest.approx(sum(float(r[5]) for r in day))
            assert float(item["bid1Price"]) < float(item["ask1Price"])
            if category != "spot":
                assert int(item["nextFundingTime"]) > NOW and int(item["nextFundingTime"]) % 3_600_000 == 0
                assert float(item["openInterest"]) > 0 and abs(float(item["fundingRate"])) <= 0.005
        _, every, _ = await get(s, emu, TICKERS, category="linear")
        assert [x["symbol"] for x in every["result"]["list"]] == [
            sp.symbol for sp in emu.market.instruments("linear") if sp.status(NOW) == "Trading"
        ]
        for bad, needle in (({}, "category"), ({"category": "option"}, "category"), ({"category": "linear", "symbol": "NOPE"}, "symbols")):
            _, body, _ = await get(s, emu, TICKERS, **bad)
            assert body["retCode"] == 10001 and needle in body["retMsg"].lower()

    run(t, symbols=6)


# ------------------------------------------------------------------------------ WebSocket


def test_an_integer_req_id_is_accepted_and_echoed_as_a_string() -> None:
    async def t(emu: BybitEmulator, s: aiohttp.ClientSession) -> None:
        for category in ("linear", "spot"):
            async with s.ws_connect(emu.ws_url(category)) as ws:
                await ws.send_str(json.dumps({"op": "subscribe", "req_id": 7, "args": ["publicTrade.BTCUSDT"]}))
                ack = json.loads((await ws.receive(timeout=5)).data)
                assert ack["success"] is True and ack["req_id"] == "7" and ack["op"] == "subscribe"
                await ws.send_str(json.dumps({"op": "ping", "req_id": 8}))
                while (msg := json.loads((await ws.receive(timeout=5)).data)).get("op") != "ping":
                    pass
                assert msg["req_id"] == "8"
        assert [r.req_id for r in emu.ws.requests] == ["7", "8", "7", "8"]

    run(t)


def test_the_forming_candle_changes_only_with_trades() -> None:
    market = SyntheticMarket.generate(3, 2)
    spec = market.instrument("BTCUSDT")
    tf = parse_timeframe("5")
    minute = NOW - NOW % MINUTE_MS
    times = sorted(int(x["time"]) for x in market.minute_trades(spec, minute))
    assert len(times) >= 2
    between = [(times[i], times[i + 1]) for i in range(len(times) - 1) if times[i + 1] - times[i] > 2]
    a, b = between[0]
    quiet = [market.forming_candle(spec, tf, t).wire_rows() for t in (a, a + 1, b - 1)]
    assert quiet[0] == quiet[1] == quiet[2]  # no trade: no change
    assert market.forming_candle(spec, tf, b).wire_rows() != quiet[0]  # a trade: a change
    # At the last trade the forming minute has every trade of the minute: volume is the candle's.
    last = market.forming_candle(spec, parse_timeframe("1"), minute + MINUTE_MS - 1)
    closed = market.raw_candles(spec, parse_timeframe("1"), minute, minute)
    assert int(last.volume[0]) == int(closed.volume[0]) and int(last.open[0]) == int(closed.open[0])


def test_kline_pushes_of_the_forming_candle_come_on_change_at_most_once_a_market_second() -> None:
    async def main() -> None:
        # 20x: 3.2 s of real time is about a minute of market, a dozen trades of BTCUSDT.
        async with BybitEmulator(symbols=2, seed=2, start_ms=NOW, speed=20.0) as emu, aiohttp.ClientSession() as s:
            emu.ws.configure(push_interval_s=0.02)
            async with s.ws_connect(emu.ws_url()) as ws:
                await ws.send_str(json.dumps({"op": "subscribe", "args": ["kline.1.BTCUSDT"]}))
                pushes: list[dict[str, Any]] = []
                loop = asyncio.get_running_loop()
                end = loop.time() + 3.2
                while (left := end - loop.time()) > 0:
                    try:
                        msg = await ws.receive(timeout=left)
                    except TimeoutError:
                        break
                    frame = json.loads(msg.data)
                    if frame.get("topic"):
                        pushes.append(frame)
            forming = [p for p in pushes if not p["data"][0]["confirm"]]
            spec = emu.market.instrument("BTCUSDT")
            trades = emu.market.trades_between(spec, NOW - MINUTE_MS, emu.clock.now_ms())
            # ~160 ticks of 20 ms: an update only where a trade changed the candle.
            assert 1 <= len(forming) <= len(trades) + 1, (len(forming), len(trades))
            stamps = [p["ts"] for p in forming]
            assert all(b - a >= 1000 for a, b in zip(stamps, stamps[1:]))
            rows = [{k: v for k, v in p["data"][0].items() if k != "timestamp"} for p in forming]
            assert all(x != y for x, y in zip(rows, rows[1:]))  # never the same candle twice

    asyncio.run(main())
