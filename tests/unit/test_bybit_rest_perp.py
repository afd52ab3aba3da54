"""The perpetual endpoints of the REST client against a small Bybit-like server on 127.0.0.1.

The server answers like Bybit's documentation says (inclusive ``startTime``/``endTime``, newest
first, ``limit`` rows, cursor pages), so the tests pin the paging boundaries: every row of a range
exactly once, whatever the page size and wherever the range bounds fall.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import polars as pl
import pytest
from aiohttp import web

from marketlake.core.schemas_perp import INSTRUMENT_SNAPSHOT_SCHEMA
from marketlake.errors import DataValidationError, ExchangeProtocolError, InvalidSymbolError, InvalidTimeframeError
from marketlake.exchanges.bybit.rest import BybitRestClient
from marketlake.exchanges.bybit.rest_perp import open_interest_windows
from marketlake.net.backoff import Backoff
from marketlake.net.ratelimit import BanLatch

H = 3_600_000
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
NOW = T0 + 400 * H + 90_000  # 1.5 minutes into an hour


def settlements() -> list[int]:
    """8 h settlements for 300 h, then 1 h settlements (an 8 h -> 1 h change) up to NOW."""
    ts = list(range(T0, T0 + 300 * H, 8 * H))
    ts += list(range(ts[-1] + H, NOW, H))
    return ts


@dataclass
class FakeBybit:
    funding: dict[int, float] = field(default_factory=lambda: {t: (t // H % 7 - 3) * 1e-5 for t in settlements()})
    oi_step: int = H
    oi: dict[int, float] = field(default_factory=dict)
    cursor_always: bool = False
    ignore_end_time: bool = False
    repeat_cursor: bool = False
    oi_offset: int = 0
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.oi:
            self.oi = {t: 1000.0 + (t // self.oi_step) % 13 for t in range(T0, NOW - self.oi_step, self.oi_step)}

    def env(self, result: object, code: int = 0, msg: str = "OK") -> web.Response:
        body = msgspec.json.encode({"retCode": code, "retMsg": msg, "result": result, "retExtInfo": {}, "time": NOW})
        return web.Response(body=body, content_type="application/json")

    async def handle(self, request: web.Request) -> web.Response:
        q = dict(request.query)
        self.requests.append((request.path, q))
        path = request.path
        if path == "/v5/market/time":
            return self.env({"timeSecond": str(NOW // 1000), "timeNano": str(NOW * 1_000_000)})
        if path == "/v5/market/funding/history":
            if "startTime" in q and "endTime" not in q:
                return self.env({}, 10001, "params error")
            lo = int(q.get("startTime", 0))
            hi = NOW if self.ignore_end_time else int(q.get("endTime", NOW))
            rows = sorted((t for t in self.funding if lo <= t <= hi), reverse=True)[: int(q.get("limit", 200))]
            items = [{"symbol": q["symbol"], "fundingRate": repr(self.funding[t]), "fundingRateTimestamp": str(t)} for t in rows]
            return self.env({"category": q["category"], "list": items})
        if path == "/v5/market/open-interest":
            lo, hi = int(q.get("startTime", 0)), int(q.get("endTime", NOW))
            limit = int(q.get("limit", 50))
            rows = sorted((t for t in self.oi if lo <= t <= hi), reverse=True)
            off = int(q["cursor"].split("=")[1]) if "cursor" in q else 0
            page = rows[off : off + limit]
            more = off + limit < len(rows)
            nxt = off if self.repeat_cursor else off + limit
            cursor = f"off={nxt}" if (more or self.cursor_always) else ""
            items = [{"openInterest": f"{self.oi[t]:.8f}", "timestamp": str(t + self.oi_offset)} for t in page]
            return self.env({"symbol": q["symbol"], "category": q["category"], "list": items, "nextPageCursor": cursor})
        if path.endswith("price-kline"):
            step = int(q["interval"]) * 60_000
            lo, hi = int(q["start"]), int(q["end"])
            first = -(-lo // step) * step
            opens = [t for t in range(first, hi + 1, step) if t <= NOW][::-1][: int(q.get("limit", 200))]
            sign = -1.0 if "premium" in path else 1.0
            rows = [[str(t), *(f"{sign * (100 + (t // step) % 5) + k:.2f}" for k in (0, 2, -1, 1))] for t in opens]
            return self.env({"symbol": q["symbol"], "category": q["category"], "list": rows})
        if path == "/v5/market/instruments-info":
            status = q.get("status", "Trading")
            items = [i for i in INSTRUMENTS.get(q["category"], []) if i["status"] == status]
            return self.env({"category": q["category"], "list": items, "nextPageCursor": ""})
        return web.Response(status=404)


INSTRUMENTS: dict[str, list[dict[str, Any]]] = {
    "linear": [
        {"symbol": "BTCUSDT", "status": "Trading", "contractType": "LinearPerpetual", "launchTime": "1585526400000",
         "deliveryTime": "0", "priceScale": "2", "priceFilter": {"tickSize": "0.10"},
         "lotSizeFilter": {"qtyStep": "0.001", "minOrderQty": "0.001"}, "fundingInterval": 480,
         "baseCoin": "BTC", "quoteCoin": "USDT"},
        {"symbol": "OLDUSDT", "status": "Closed", "contractType": "LinearPerpetual", "launchTime": "1600000000000",
         "deliveryTime": "1700000000000", "priceScale": "4", "priceFilter": {"tickSize": "0.0001"},
         "lotSizeFilter": {"qtyStep": "1", "minOrderQty": "1"}, "fundingInterval": 240,
         "baseCoin": "OLD", "quoteCoin": "USDT"},
        {"symbol": "NEWUSDT", "status": "PreLaunch", "contractType": "LinearPerpetual", "launchTime": "1800000000000",
         "deliveryTime": "0", "priceScale": "3", "priceFilter": {"tickSize": "0.001"},
         "lotSizeFilter": {"qtyStep": "1", "minOrderQty": "1"}, "fundingInterval": 60,
         "baseCoin": "NEW", "quoteCoin": "USDT"},
    ],
    "spot": [
        {"symbol": "BTCUSDT", "status": "Trading", "priceFilter": {"tickSize": "0.01"},
         "lotSizeFilter": {"basePrecision": "0.000001", "minOrderQty": "0.000048"}, "baseCoin": "BTC", "quoteCoin": "USDT"},
    ],
}


def run(fake: FakeBybit, test: Callable[[BybitRestClient], Awaitable[None]]) -> None:
    async def main() -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", fake.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            backoff = Backoff(base=0.005, cap=0.01, max_attempts=3, rng=random.Random(0))
            async with BybitRestClient(f"http://127.0.0.1:{port}", ban_latch=BanLatch(), backoff=backoff) as c:
                await test(c)
        finally:
            await runner.cleanup()

    asyncio.run(main())


def _ms(frame: pl.DataFrame) -> list[int]:
    return frame.get_column("ts").dt.epoch("ms").to_list()


ALL = settlements()


@pytest.mark.parametrize("limit", [1, 7, 37, 200])
@pytest.mark.parametrize(
    ("a", "b"),
    [
        (ALL[0], ALL[-1]),  # both bounds on settlements: the last one is excluded
        (ALL[0] - 1, ALL[-1] + 1),
        (ALL[3] + 1, ALL[60] - 1),
        (ALL[10], ALL[10]),  # empty range
        (ALL[10], ALL[10] + 1),  # exactly one settlement
        (T0 - 100 * H, T0 + 50 * H),  # starts before the history
    ],
)
def test_funding_history_walks_every_settlement_exactly_once(a: int, b: int, limit: int) -> None:
    fake = FakeBybit()
    want = [t for t in ALL if a <= t < b]

    async def t(c: BybitRestClient) -> None:
        frame = await c.get_funding_history("linear", "BTCUSDT", a, b, limit=limit)
        assert _ms(frame) == want
        assert frame["rate"].to_list() == [fake.funding[x] for x in want]
        pages = [p for p, _ in fake.requests if p == "/v5/market/funding/history"]
        assert len(pages) <= len(want) // limit + 1 or (a == b and not pages)
        for _, q in fake.requests:  # never startTime alone (Bybit refuses it), never past the range
            assert "endTime" in q and int(q["endTime"]) < b and int(q["startTime"]) == a

    run(fake, t)


def test_funding_pages_report_what_they_cover() -> None:
    fake = FakeBybit()

    async def t(c: BybitRestClient) -> None:
        pages = [p async for p in c.iter_funding_pages("linear", "BTCUSDT", ALL[0], NOW, limit=50)]
        assert pages[0].end_ms == NOW and pages[-1].covered_from_ms == ALL[0]
        for newer, older in zip(pages, pages[1:]):
            assert newer.full and older.end_ms == newer.covered_from_ms
        assert all(p.server_time_ms == NOW for p in pages)

    run(fake, t)


def test_a_server_ignoring_end_time_is_a_protocol_error_not_a_loop() -> None:
    async def t(c: BybitRestClient) -> None:
        with pytest.raises(ExchangeProtocolError, match="endTime"):
            await c.get_funding_history("linear", "BTCUSDT", ALL[0], ALL[100], limit=10)

    run(FakeBybit(ignore_end_time=True), t)


def test_funding_arguments_are_checked_before_any_request() -> None:
    fake = FakeBybit()

    async def t(c: BybitRestClient) -> None:
        with pytest.raises(InvalidSymbolError):
            await c.get_funding_history("spot", "BTCUSDT", T0, NOW)
        with pytest.raises(DataValidationError):
            await c.get_funding_history("linear", "BTCUSDT", NOW, T0)
        with pytest.raises(DataValidationError):
            await c.get_funding_history("linear", "BTCUSDT", T0, NOW, limit=201)
        with pytest.raises(DataValidationError):
            await c.get_funding_history("linear", "BTCUSDT", float(T0), NOW)  # type: ignore[arg-type]
        assert not fake.requests

    run(fake, t)


@pytest.mark.parametrize("cursor_always", [False, True])
@pytest.mark.parametrize("limit", [1, 9, 200])
def test_open_interest_cursor_pages_cover_the_range_exactly(limit: int, cursor_always: bool) -> None:
    fake = FakeBybit(cursor_always=cursor_always)
    a, b = T0 + 5 * H, T0 + 77 * H
    want = [t for t in sorted(fake.oi) if a <= t < b]

    async def t(c: BybitRestClient) -> None:
        frame = await c.get_open_interest("linear", "BTCUSDT", "1h", a, b, limit=limit)
        assert _ms(frame) == want
        assert frame["open_interest"].to_list() == [fake.oi[x] for x in want]

    run(fake, t)


def test_open_interest_windows_need_no_cursor() -> None:
    fake = FakeBybit(oi_step=300_000)
    a, b = T0 + 1, T0 + 100 * H - 7
    windows = open_interest_windows("5min", a, b, limit=200)
    assert windows[0][0] == a and windows[-1][1] == b
    assert all(x[1] == y[0] for x, y in zip(windows, windows[1:]))

    async def t(c: BybitRestClient) -> None:
        chunks = [await c.fetch_open_interest_page("linear", "BTCUSDT", "5min", lo, hi) for lo, hi in windows]
        got = [ts for ch in chunks for ts in _ms(ch.frame)]
        assert got == [x for x in sorted(fake.oi) if a <= x < b]
        assert all(ch.frame.height <= 200 for ch in chunks)
        assert len(fake.requests) == len(windows)

    run(fake, t)


def test_open_interest_faults_are_protocol_errors() -> None:
    async def repeated(c: BybitRestClient) -> None:
        with pytest.raises(ExchangeProtocolError):
            await c.get_open_interest("linear", "BTCUSDT", "1h", T0, NOW, limit=5)

    run(FakeBybit(repeat_cursor=True), repeated)

    async def off_grid(c: BybitRestClient) -> None:
        with pytest.raises(ExchangeProtocolError, match="grid"):
            await c.get_open_interest("linear", "BTCUSDT", "1h", T0, NOW)

    run(FakeBybit(oi_offset=1000), off_grid)

    async def bad_args(c: BybitRestClient) -> None:
        with pytest.raises(InvalidTimeframeError):
            await c.get_open_interest("linear", "BTCUSDT", "2h", T0, NOW)
        with pytest.raises(InvalidSymbolError):
            await c.get_open_interest("spot", "BTCUSDT", "1h", T0, NOW)

    run(FakeBybit(), bad_args)


@pytest.mark.parametrize(("kind", "category"), [("mark", "linear"), ("index", "inverse"), ("premium", "linear")])
def test_price_klines_page_like_klines_and_drop_the_forming_candle(kind: str, category: str) -> None:
    fake = FakeBybit()
    a, b = T0 + 7 * 60_000, NOW  # more than 1000 one-minute candles: several windows

    async def t(c: BybitRestClient) -> None:
        getter = {"mark": c.get_mark_price_klines, "index": c.get_index_price_klines,
                  "premium": c.get_premium_index_price_klines}[kind]
        frame = await getter(category, "BTCUSD" if category == "inverse" else "BTCUSDT", "1", a, b)
        ts = _ms(frame)
        last_closed = (NOW - 2_000) // 60_000 * 60_000 - 60_000  # settle_ms = 2 s
        assert ts == list(range(a, last_closed + 1, 60_000))
        assert frame.columns == ["ts", "open", "high", "low", "close"]
        assert ((frame["close"] < 0) if kind == "premium" else (frame["close"] > 0)).all()
        paths = {p for p, _ in fake.requests}
        assert len(paths) == 1 and kind in next(iter(paths)).replace("-price", "")

    run(fake, t)


def test_premium_klines_exist_for_linear_only() -> None:
    async def t(c: BybitRestClient) -> None:
        with pytest.raises(InvalidSymbolError):
            await c.get_premium_index_price_klines("inverse", "BTCUSD", "1", T0, NOW)

    run(FakeBybit(), t)


def test_an_instrument_snapshot_lists_every_status() -> None:
    fake = FakeBybit()

    async def t(c: BybitRestClient) -> None:
        snap = await c.get_instrument_snapshot(("linear", "spot"))
        assert snap.taken_ms == NOW and snap.categories == ("linear", "spot")
        assert [(i.category, i.symbol, i.status) for i in snap.instruments] == [
            ("linear", "BTCUSDT", "Trading"), ("linear", "NEWUSDT", "PreLaunch"),
            ("linear", "OLDUSDT", "Closed"), ("spot", "BTCUSDT", "Trading"),
        ]
        assert snap.frame.schema == INSTRUMENT_SNAPSHOT_SCHEMA
        old = snap.frame.filter(pl.col("symbol") == "OLDUSDT").row(0, named=True)
        assert old["funding_interval_minutes"] == 240 and old["min_order_qty"] == 1.0
        spot_statuses = [q.get("status") for p, q in fake.requests if q.get("category") == "spot"]
        assert spot_statuses == ["Trading"]

    run(fake, t)
