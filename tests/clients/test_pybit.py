"""Bybit's official SDK, pybit, against the emulator: HTTP (``unified_trading.HTTP`` with its
``endpoint`` pointed at the emulator) and WebSocket (``unified_trading.WebSocket`` with its URL
template rewritten to the emulator's ``ws://`` address)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from marketlake_emulator import BybitEmulator
from tests.clients.conftest import NOW

unified = pytest.importorskip("pybit.unified_trading", reason="pybit is not installed (pip install -e '.[test]')")
exceptions = pytest.importorskip("pybit.exceptions")

HOUR = 3_600_000


def http(emu: BybitEmulator) -> Any:
    session = unified.HTTP(testnet=False, max_retries=1)
    session.endpoint = emu.url  # pybit builds every URL as endpoint + path
    return session


def test_get_kline_returns_the_markets_candles_newest_first(frozen: BybitEmulator) -> None:
    s = http(frozen)
    start, end = NOW - 30 * HOUR, NOW - 10 * HOUR
    r = s.get_kline(category="linear", symbol="BTCUSDT", interval=60, start=start, end=end, limit=1000)
    rows = r["result"]["list"]
    # From the hour containing the (unaligned) start, as Bybit answers.
    truth = frozen.market.candles("BTCUSDT", "60", start - start % HOUR, end)
    assert [int(x[0]) for x in reversed(rows)] == truth["ts"].dt.epoch("ms").to_list()
    assert [float(x[4]) for x in reversed(rows)] == truth["close"].to_list()
    assert [float(x[5]) for x in reversed(rows)] == truth["volume"].to_list()
    # The recorded mainnet case: an unaligned start includes the candle that contains it.
    m = NOW - NOW % 60_000 - 20 * 60_000
    r = s.get_kline(category="spot", symbol="BTCUSDT", interval="1", start=m + 8_000, end=m + 76_000)
    assert [int(x[0]) for x in r["result"]["list"]] == [m + 60_000, m]


def test_get_instruments_info_pages_with_its_cursor(frozen: BybitEmulator) -> None:
    s = http(frozen)
    seen: list[str] = []
    cursor = ""
    while True:
        page = s.get_instruments_info(category="linear", limit=3, cursor=cursor)["result"]
        seen += [x["symbol"] for x in page["list"]]
        cursor = page["nextPageCursor"]
        if not cursor:
            break
    trading = [sp.symbol for sp in frozen.market.instruments("linear") if sp.status(NOW) == "Trading"]
    assert seen == trading
    spot = s.get_instruments_info(category="spot")["result"]["list"]
    assert {x["symbol"] for x in spot} == {"BTCUSDT", "ETHUSDT"}
    assert all("maxMarketOrderQty" in x["lotSizeFilter"] for x in spot)


def test_get_public_trade_history_and_tickers_agree(frozen: BybitEmulator) -> None:
    s = http(frozen)
    trades = s.get_public_trade_history(category="linear", symbol="ETHUSDT", limit=50)["result"]["list"]
    assert len(trades) == 50 and all(int(t["time"]) <= NOW for t in trades)
    times = [int(t["time"]) for t in trades]
    assert times == sorted(times, reverse=True)
    ticker = s.get_tickers(category="linear", symbol="ETHUSDT")["result"]["list"][0]
    assert ticker["lastPrice"] == trades[0]["price"]
    every = s.get_tickers(category="spot")["result"]["list"]
    assert [t["symbol"] for t in every] == ["BTCUSDT", "ETHUSDT"]
    assert int(s.get_server_time()["result"]["timeSecond"]) == NOW // 1000


def test_a_bad_request_is_pybits_invalid_request_error_with_bybits_code(frozen: BybitEmulator) -> None:
    s = http(frozen)
    with pytest.raises(exceptions.InvalidRequestError) as err:
        s.get_kline(category="linear", symbol="NOPEUSDT", interval="1")
    assert err.value.status_code == 10001
    # start after end is an empty answer, not an error.
    r = s.get_kline(category="linear", symbol="BTCUSDT", interval="1", start=NOW - 60_000, end=NOW - 120_000)
    assert r["retCode"] == 0 and r["result"]["list"] == []


class _LocalWebSocket(unified.WebSocket):  # type: ignore[misc,name-defined]
    """pybit's WebSocket with its ``wss://{SUBDOMAIN}.{DOMAIN}.com`` host replaced by the emulator."""

    def __init__(self, base: str, *args: Any, **kwargs: Any) -> None:
        self._base = base
        super().__init__(*args, **kwargs)

    def _connect(self, url: str) -> None:
        super()._connect(url.replace("wss://{SUBDOMAIN}.{DOMAIN}.com", self._base))


def test_websocket_kline_and_trade_streams_deliver_the_markets_data(running: BybitEmulator) -> None:
    got: list[dict[str, Any]] = []
    lock = threading.Lock()

    def keep(message: dict[str, Any]) -> None:
        with lock:
            got.append(message)

    ws = _LocalWebSocket(running.url.replace("http://", "ws://"), "linear", testnet=False, retries=3)
    try:
        ws.trade_stream(symbol="BTCUSDT", callback=keep)
        ws.kline_stream(interval=1, symbol="BTCUSDT", callback=keep)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with lock:
                closed = [m for m in got if m["topic"].startswith("kline") and m["data"][0]["confirm"]]
                trades = [t for m in got if m["topic"].startswith("publicTrade") for t in m["data"]]
            if closed and len(trades) >= 5:
                break
            time.sleep(0.1)
    finally:
        ws.exit()
    assert closed and len(trades) >= 5, (len(got), [m["topic"] for m in got][:5])
    spec = running.market.instrument("BTCUSDT")
    first, last = trades[0]["T"], trades[-1]["T"]
    truth = running.market.trades_between(spec, first, last + 1)
    assert [t["i"] for t in trades] == [t["execId"] for t in truth]  # every trade, once, in order
    assert [t["p"] for t in trades] == [t["price"] for t in truth]
    k = closed[0]["data"][0]
    row = running.market.candles("BTCUSDT", "1", k["start"], k["start"]).row(0, named=True)
    assert (float(k["open"]), float(k["close"]), float(k["volume"])) == (row["open"], row["close"], row["volume"])


def test_perpetual_endpoints_funding_open_interest_and_price_klines(frozen: BybitEmulator) -> None:
    s = http(frozen)
    spec = frozen.market.instrument("BTCUSDT")
    model = frozen.derivatives
    funding = s.get_funding_rate_history(category="linear", symbol="BTCUSDT", limit=5)["result"]["list"]
    truth = model.settlements(spec, 0, NOW)[::-1][:5]
    assert [int(r["fundingRateTimestamp"]) for r in funding] == truth
    assert [round(float(r["fundingRate"]) * 1e6) for r in funding] == [model.funding_rate(spec, t) for t in truth]
    oi = s.get_open_interest(category="linear", symbol="BTCUSDT", intervalTime="1h", limit=3)["result"]
    points = model.oi_points(spec, HOUR, NOW - 3 * HOUR, NOW)[::-1]
    assert [int(r["timestamp"]) for r in oi["list"]] == points.tolist() and oi["nextPageCursor"]
    for method in ("get_mark_price_kline", "get_index_price_kline", "get_premium_index_price_kline"):
        rows = getattr(s, method)(category="linear", symbol="BTCUSDT", interval=60, limit=3)["result"]["list"]
        assert [int(r[0]) for r in rows] == [NOW - NOW % HOUR - k * HOUR for k in range(3)] and {len(r) for r in rows} == {5}
