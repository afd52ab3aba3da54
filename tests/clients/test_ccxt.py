"""ccxt against the emulator: its REST client (``urls.api`` pointed at the emulator) and ccxt.pro's
WebSocket ``watch_*`` (``urls.api.ws.public`` pointed at it; ccxt.pro sends integer ``req_id``s)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from marketlake_emulator import BybitEmulator
from tests.clients.conftest import NOW

ccxt = pytest.importorskip("ccxt", reason="ccxt is not installed (pip install -e '.[test]')")

HOUR = 3_600_000
#: No options market in the emulator: ccxt's default list would ask instruments-info for them.
_OPTIONS = {"fetchMarkets": {"types": ["spot", "linear", "inverse"]}}


def _urls(emu: BybitEmulator) -> dict[str, Any]:
    ws = emu.url.replace("http://", "ws://")
    rest = {k: emu.url for k in ("spot", "futures", "v2", "public", "private")}
    return {"api": {**rest, "ws": {"public": {c: f"{ws}/v5/public/{c}" for c in ("spot", "linear", "inverse", "option")}}}}


@pytest.fixture(scope="module")
def exchange(frozen: BybitEmulator) -> Any:
    ex = ccxt.bybit({"urls": _urls(frozen), "options": _OPTIONS, "enableRateLimit": False})
    ex.load_markets()
    return ex


def test_load_markets_lists_every_instrument_with_its_precision(exchange: Any, frozen: BybitEmulator) -> None:
    swaps = {m["id"] for m in exchange.markets.values() if m["swap"] and m["linear"]}
    assert swaps == {s.symbol for s in frozen.market.instruments("linear") if s.status(NOW) == "Trading"}
    btc = exchange.market("BTC/USDT:USDT")
    spec = frozen.market.instrument("BTCUSDT")
    assert btc["precision"]["price"] == float(spec.tick_size) and btc["precision"]["amount"] == float(spec.qty_step)
    assert btc["limits"]["amount"]["max"] == 1190.0
    assert exchange.market("BTC/USD:BTC")["inverse"] is True
    assert exchange.market("ETH/USDT")["spot"] is True


def test_fetch_ohlcv_pages_equal_the_markets_candles(exchange: Any, frozen: BybitEmulator) -> None:
    since = NOW - NOW % HOUR - 48 * HOUR
    rows = exchange.fetch_ohlcv("BTC/USDT:USDT", "1h", since, 24)
    truth = frozen.market.candles("BTCUSDT", "60", since, since + 23 * HOUR)
    assert [r[0] for r in rows] == truth["ts"].dt.epoch("ms").to_list()
    assert [tuple(r[1:]) for r in rows] == truth.select("open", "high", "low", "close", "volume").rows()
    spot = exchange.fetch_ohlcv("ETH/USDT", "1m", None, 5)
    assert len(spot) == 5 and spot[-1][0] == NOW - NOW % 60_000  # the forming minute is the newest


def test_fetch_trades_ticker_tickers_and_time(exchange: Any, frozen: BybitEmulator) -> None:
    trades = exchange.fetch_trades("BTC/USDT:USDT", None, 20)
    spec = frozen.market.instrument("BTCUSDT")
    truth = frozen.market.recent_trades(spec, NOW, 20)
    assert [t["id"] for t in trades] == [t["execId"] for t in reversed(truth)]  # ccxt sorts ascending
    assert all(t["info"]["price"].count(".") == 1 and len(t["info"]["price"].split(".")[1]) == 2 for t in trades)
    ticker = exchange.fetch_ticker("BTC/USDT:USDT")
    assert ticker["last"] == trades[-1]["price"]
    assert ticker["bid"] < ticker["ask"] and ticker["low"] <= ticker["last"] <= ticker["high"]
    assert ticker["markPrice"] > 0 and ticker["indexPrice"] > 0
    tickers = exchange.fetch_tickers(["BTC/USDT:USDT", "ETH/USDT:USDT"])
    assert set(tickers) == {"BTC/USDT:USDT", "ETH/USDT:USDT"}
    assert exchange.fetch_ticker("BTC/USDT")["symbol"] == "BTC/USDT"  # the spot shape parses too
    assert exchange.fetch_time() // 1000 == NOW // 1000


def test_a_bad_symbol_is_a_ccxt_error_with_bybits_message(exchange: Any) -> None:
    with pytest.raises(ccxt.BadRequest, match="10001"):
        exchange.publicGetV5MarketKline({"category": "linear", "symbol": "NOPEUSDT", "interval": "1"})


def test_ccxt_pro_watches_candles_and_trades_with_integer_request_ids(running: BybitEmulator) -> None:
    pro = pytest.importorskip("ccxt.pro", reason="ccxt.pro is not available in this ccxt")

    async def main() -> tuple[list[list[float]], list[dict[str, Any]]]:
        ex = pro.bybit({"urls": _urls(running), "options": _OPTIONS})
        try:
            candles = await asyncio.wait_for(ex.watch_ohlcv("BTC/USDT:USDT", "1m"), 20)
            trades: list[dict[str, Any]] = []
            while len(trades) < 5:
                trades += await asyncio.wait_for(ex.watch_trades("BTC/USDT:USDT"), 20)
            return candles, trades
        finally:
            await ex.close()

    candles, trades = asyncio.run(main())
    assert candles and all(len(c) == 6 for c in candles)
    subscribes = [r for r in running.ws.requests if r.op == "subscribe" and r.args[0].startswith(("kline", "publicTrade"))]
    assert subscribes and all(r.success and r.req_id is not None and r.req_id.isdigit() for r in subscribes)
    spec = running.market.instrument("BTCUSDT")
    truth = running.market.trades_between(spec, trades[0]["timestamp"], trades[-1]["timestamp"] + 1)
    assert [t["id"] for t in trades] == [t["execId"] for t in truth][: len(trades)]


def test_funding_open_interest_and_price_ohlcv(exchange: Any, frozen: BybitEmulator) -> None:
    spec = frozen.market.instrument("BTCUSDT")
    model = frozen.derivatives
    since = NOW - 3 * 86_400_000
    history = exchange.fetch_funding_rate_history("BTC/USDT:USDT", since, 5)
    truth = model.settlements(spec, since, NOW)[:5]
    assert [h["timestamp"] for h in history] == truth
    assert [round(h["fundingRate"] * 1e6) for h in history] == [model.funding_rate(spec, t) for t in truth]
    oi = exchange.fetch_open_interest_history("BTC/USDT:USDT", "1h", NOW - 86_400_000, 5)
    points = [o["timestamp"] for o in oi]
    assert points == sorted(points) and all(p % HOUR == 0 for p in points)
    values = model.open_interest(spec, points)
    assert [o["openInterestAmount"] for o in oi] == [v / 1000 for v in values.tolist()]
    mark = exchange.fetch_mark_ohlcv("BTC/USDT:USDT", "1h", None, 3)
    index = exchange.fetch_index_ohlcv("BTC/USDT:USDT", "1h", None, 3)
    premium = exchange.fetch_premium_index_ohlcv("BTC/USDT:USDT", "1h", None, 3)
    assert [r[0] for r in mark] == [r[0] for r in index] == [r[0] for r in premium]
    assert all(r[2] >= max(r[1], r[4]) and r[3] <= min(r[1], r[4]) for r in mark + index + premium)
    assert exchange.fetch_funding_rate("BTC/USDT:USDT")["fundingRate"] is not None
