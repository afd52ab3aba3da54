"""Hostile or broken payloads give clear typed errors: from the pure decoders, and from the REST
client talking to a real (misbehaving) HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import msgspec
import pytest
from aiohttp import web

from marketlake.errors import (
    ExchangeProtocolError,
    ExchangeRequestError,
    TransientExchangeError,
)
from marketlake.exchanges.bybit.parse import (
    MalformedJSONError,
    decode_envelope,
    decode_instruments_result,
    decode_kline_result,
    decode_recent_trades_result,
    decode_server_time_result,
    parse_rate_limit_headers,
)
from marketlake.exchanges.bybit.parse_archive import parse_spot_trade_dump
from marketlake.exchanges.bybit.parse_ws import decode_ws_message
from marketlake.exchanges.bybit.rest import BybitRestClient
from marketlake.net.backoff import Backoff
from marketlake.net.ratelimit import BanLatch, RateBudget

ROW = ["1709251200000", "1", "2", "0.5", "1.5", "10", "15"]


def _kline(rows: object) -> bytes:
    return msgspec.json.encode({"list": rows})


@pytest.mark.parametrize(
    "body",
    [
        _kline([ROW[:6]]),  # 6 fields
        _kline([ROW + ["9"]]),  # 8 fields
        _kline([["abc", *ROW[1:]]]),  # time not a number
        _kline([[ROW[0], "1", "2", "0.5", "1.5", "-10", "15"]]),  # negative volume
        _kline([[ROW[0], "nan", "2", "0.5", "1.5", "10", "15"]]),  # NaN
        _kline([[ROW[0], "1", "2", "0.5", "1.5", "1e400", "15"]]),  # overflow to inf
        _kline([[ROW[0], "1", "0.4", "0.5", "1.5", "10", "15"]]),  # high < low
        _kline([[ROW[0], "1", "2", "0.5", "1.5", "10", "0x1F"]]),  # not decimal
        _kline({"a": 1}),  # list is an object
        msgspec.json.encode({"rows": []}),  # no list
        _kline([[int(ROW[0]), {"x": [[[[1]]]]}, "2", "0.5", "1.5", "10", "15"]]),  # nested junk
    ],
)
def test_malformed_kline_results_are_protocol_errors(body: bytes) -> None:
    with pytest.raises(ExchangeProtocolError) as err:
        decode_kline_result(body)
    assert not isinstance(err.value, MalformedJSONError)
    assert "kline" in str(err.value)


def test_cut_or_non_json_bodies_are_malformed_json_errors() -> None:
    full = msgspec.json.encode({"retCode": 0, "retMsg": "OK", "result": {"list": [ROW]}, "time": 1})
    for body in (full[: len(full) // 2], b"<html>502 Bad Gateway</html>", b"", b"\xff\xfe\x00"):
        with pytest.raises(MalformedJSONError):
            decode_envelope(body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"retMsg":"OK"}',  # no retCode
        b'{"retCode":true}',
        b'{"retCode":1e400}',
        b'{"retCode":"zero"}',
        b'{"retCode":0,"time":"soon"}',
        b"[1, 2, 3]",
    ],
)
def test_envelopes_without_an_integer_retcode_are_protocol_errors(body: bytes) -> None:
    with pytest.raises(ExchangeProtocolError):
        decode_envelope(body)


def test_other_results_reject_wrong_shapes_with_typed_errors() -> None:
    with pytest.raises(ExchangeProtocolError):
        decode_instruments_result(b'{"list":[{"symbol":"X","launchTime":"yesterday"}]}')
    with pytest.raises(ExchangeProtocolError):
        decode_instruments_result(b'{"list":[{"status":"Trading"}]}')  # no symbol
    with pytest.raises(ExchangeProtocolError):
        decode_recent_trades_result(
            b'{"list":[{"execId":"1","symbol":"X","price":"1","size":"1","side":"Up","time":"1"}]}'
        )
    with pytest.raises(ExchangeProtocolError):
        decode_recent_trades_result(
            b'{"list":[{"execId":"1","symbol":"X","price":"-1","size":"1","side":"Buy","time":"1"}]}'
        )
    with pytest.raises(ExchangeProtocolError):
        decode_server_time_result(b'{"timeSecond":"1","timeNano":"5000000000"}')  # disagree
    with pytest.raises(ExchangeProtocolError):
        decode_ws_message(b'{"topic":"kline.5","ts":1,"type":"snapshot","data":[]}')
    with pytest.raises(ExchangeProtocolError):
        decode_ws_message(b'{"topic":"orderbook.1.BTCUSDT","ts":1,"type":"snapshot","data":[]}')
    with pytest.raises(MalformedJSONError):
        decode_ws_message(b'{"topic":')
    with pytest.raises(ExchangeProtocolError):
        parse_spot_trade_dump(b"timestamp,symbol,side\n1,X,Buy\n")
    with pytest.raises(ExchangeProtocolError):
        parse_spot_trade_dump(b"id,timestamp,price,volume,side,rpi\n1,2,3,4,hold,0\n")


def test_garbage_rate_limit_headers_count_as_absent() -> None:
    info = parse_rate_limit_headers(
        {"X-Bapi-Limit": "-5", "x-bapi-limit-status": " 7 ", "X-Bapi-Limit-Reset-Timestamp": "9" * 40}
    )
    assert (info.limit, info.remaining, info.reset_ms) == (None, 7, None)


Reply = tuple[int, bytes, dict[str, str]]


def run_against(
    replies: list[Reply], test: Callable[[BybitRestClient, list[int]], Awaitable[None]], **client_kw: object
) -> None:
    """Serve ``replies`` in order (the last one repeats) from a real server and run ``test``."""

    async def main() -> None:
        hits: list[int] = []

        async def handler(request: web.Request) -> web.Response:
            status, body, headers = replies[min(len(hits), len(replies) - 1)]
            hits.append(status)
            return web.Response(status=status, body=body, headers=headers, content_type="application/json")

        app = web.Application()
        app.router.add_get("/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            backoff = Backoff(base=0.005, cap=0.01, max_attempts=3, rng=random.Random(0))
            async with BybitRestClient(
                f"http://127.0.0.1:{port}", ban_latch=BanLatch(), backoff=backoff, **client_kw
            ) as c:  # type: ignore[arg-type]
                await test(c, hits)
        finally:
            await runner.cleanup()

    asyncio.run(main())


def _env(result: object, ret_code: int = 0, msg: str = "OK") -> bytes:
    return msgspec.json.encode(
        {"retCode": ret_code, "retMsg": msg, "result": result, "retExtInfo": {}, "time": 1_709_251_200_000}
    )


def test_a_wrongly_shaped_answer_is_a_protocol_error_and_is_not_retried() -> None:
    async def t(c: BybitRestClient, hits: list[int]) -> None:
        with pytest.raises(ExchangeProtocolError):
            await c.fetch_kline_page("linear", "BTCUSDT", "1", 1_709_250_000_000, 1_709_250_600_000)
        assert len(hits) == 1

    run_against([(200, _env({"list": [["1709250000000", "1", "2"]]}), {})], t)


def test_a_row_off_the_interval_grid_is_a_protocol_error() -> None:
    row = ["1709250030000", "1", "2", "0.5", "1.5", "10", "15"]  # 30 s past a minute

    async def t(c: BybitRestClient, hits: list[int]) -> None:
        with pytest.raises(ExchangeProtocolError, match="grid"):
            await c.fetch_kline_page("linear", "BTCUSDT", "1", 1_709_250_000_000, 1_709_250_600_000)

    run_against([(200, _env({"list": [row]}), {})], t)


def test_rows_outside_the_requested_window_are_dropped() -> None:
    rows = [
        [str(t), "1", "2", "0.5", "1.5", "10", "15"]
        for t in (1_709_250_660_000, 1_709_250_600_000, 1_709_249_940_000)
    ]

    async def t(c: BybitRestClient, hits: list[int]) -> None:
        page = await c.fetch_kline_page("linear", "BTCUSDT", "1", 1_709_250_000_000, 1_709_250_600_000)
        assert page.frame["ts"].dt.epoch("ms").to_list() == [1_709_250_600_000]

    run_against([(200, _env({"list": rows}), {})], t)


def test_an_html_error_page_with_status_200_is_retried_then_given_up() -> None:
    async def t(c: BybitRestClient, hits: list[int]) -> None:
        with pytest.raises(TransientExchangeError, match="gave up after 3 attempts"):
            await c.get_server_time()
        assert len(hits) == 3

    run_against([(200, b"<html><body>Bad gateway</body></html>", {})], t)


def test_unknown_retcodes_and_http_errors_are_request_errors_with_a_bounded_message() -> None:
    async def t(c: BybitRestClient, hits: list[int]) -> None:
        with pytest.raises(ExchangeRequestError) as err:
            await c.get_server_time()
        assert "12345" in str(err.value) and len(str(err.value)) < 400
        with pytest.raises(ExchangeRequestError, match="404"):
            await c.get_server_time()
        with pytest.raises(ExchangeRequestError, match="400"):
            await c.get_server_time()
        assert len(hits) == 3

    run_against([(200, _env({}, 12345, "x" * 10_000), {}), (404, b"not found", {}), (400, b"bad", {})], t)


def test_a_garbage_reset_header_cannot_block_the_budget_for_more_than_15_minutes() -> None:
    headers = {"X-Bapi-Limit-Status": "0", "X-Bapi-Limit-Reset-Timestamp": str(10**15)}

    async def t(c: BybitRestClient, hits: list[int]) -> None:
        await c.get_server_time()
        blocked = c.budget.blocked_until_ms - c.budget.clock.now_ms()
        assert 14 * 60_000 < blocked <= 15 * 60_000

    ok = _env({"timeSecond": "1709251200", "timeNano": "1709251200000000000"})
    run_against([(200, ok, headers)], t, budget=RateBudget(10, 1.0))


def test_a_cursor_that_repeats_is_a_protocol_error_not_an_endless_loop() -> None:
    page = _env(
        {"category": "linear", "list": [{"symbol": "BTCUSDT", "status": "Trading"}], "nextPageCursor": "same"}
    )

    async def t(c: BybitRestClient, hits: list[int]) -> None:
        with pytest.raises(ExchangeProtocolError, match="repeats"):
            await c.get_instruments("linear")
        assert len(hits) == 2

    run_against([(200, page, {})], t)


def test_instruments_with_odd_symbols_are_skipped_not_fatal() -> None:
    page = _env(
        {
            "category": "linear",
            "nextPageCursor": "",
            "list": [
                {"symbol": "../../etc", "status": "Trading"},
                {"symbol": "BTCUSDT", "status": "Trading"},
            ],
        }
    )

    async def t(c: BybitRestClient, hits: list[int]) -> None:
        assert [i.symbol for i in await c.get_instruments("linear")] == ["BTCUSDT"]

    run_against([(200, page, {})], t)
