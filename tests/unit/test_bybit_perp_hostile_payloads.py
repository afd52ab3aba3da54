"""Hostile perpetual-endpoint payloads give one-line typed errors from the pure decoders."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import pytest

from marketlake.errors import ExchangeProtocolError
from marketlake.exchanges.bybit.parse import Instrument, MalformedJSONError
from marketlake.exchanges.bybit.parse_perp import (
    decode_funding_result,
    decode_open_interest_result,
    decode_price_kline_result,
    instruments_snapshot_frame,
)

T = 1_672_041_600_000
H8 = 8 * 3_600_000


def _body(rows: object, **extra: object) -> bytes:
    return msgspec.json.encode({"category": "linear", "list": rows, **extra})


def _f(ts: object = str(T), rate: object = "0.0001", symbol: object = "BTCUSDT") -> dict[str, object]:
    return {"symbol": symbol, "fundingRate": rate, "fundingRateTimestamp": ts}


FUNDING_BAD = {
    "missing rate": _body([{"symbol": "BTCUSDT", "fundingRateTimestamp": str(T)}]),
    "missing time": _body([{"symbol": "BTCUSDT", "fundingRate": "0.0001"}]),
    "missing symbol": _body([{"fundingRate": "0.0001", "fundingRateTimestamp": str(T)}]),
    "NaN rate": _body([_f(rate="NaN")]),
    "inf rate": _body([_f(rate="inf")]),
    "overflowing rate": _body([_f(rate="1e400")]),
    "absurd rate": _body([_f(rate="12.5")]),
    "rate not a number": _body([_f(rate="0x10")]),
    "rate is an object": _body([_f(rate={"v": 1})]),
    "time not a number": _body([_f(ts="soon")]),
    "time overflows int64": _body([_f(ts="9" * 30)]),
    "time in seconds": _body([_f(ts=str(T // 1000))]),
    "ascending rows": _body([_f(ts=str(T)), _f(ts=str(T + H8))]),
    "repeated time": _body([_f(ts=str(T)), _f(ts=str(T))]),
    "two symbols": _body([_f(ts=str(T + H8)), _f(ts=str(T), symbol="ETHUSDT")]),
    "list is an object": _body({"a": 1}),
    "no list": msgspec.json.encode({"category": "linear"}),
}


def _k(ts: int, o: str = "1", h: str = "2", lo: str = "0.5", c: str = "1.5") -> list[str]:
    return [str(ts), o, h, lo, c]


KLINE_BAD = {
    "4 fields": _body([_k(T)[:4]]),
    "6 fields (a trade kline)": _body([_k(T) + ["10"]]),
    "NaN": _body([_k(T, o="nan")]),
    "overflow": _body([_k(T, h="1e400")]),
    "high below low": _body([_k(T, h="0.4")]),
    "zero mark price": _body([_k(T, lo="0")]),
    "negative mark price": _body([_k(T, o="-1")]),
    "time not a number": _body([["x", "1", "2", "0.5", "1.5"]]),
    "ascending rows": _body([_k(T), _k(T + 60_000)]),
    "repeated time": _body([_k(T), _k(T)]),
    "nested junk": _body([[T, {"x": [[1]]}, "2", "0.5", "1.5"]]),
}


def _oi(ts: int, v: object = "100.5") -> dict[str, object]:
    return {"openInterest": v, "timestamp": str(ts)}


OI_BAD = {
    "missing value": _body([{"timestamp": str(T)}]),
    "missing time": _body([{"openInterest": "1"}]),
    "negative": _body([_oi(T, "-1")]),
    "NaN": _body([_oi(T, "NaN")]),
    "overflow": _body([_oi(T, "1e999")]),
    "ascending rows": _body([_oi(T), _oi(T + 300_000)]),
    "repeated time": _body([_oi(T), _oi(T)]),
    "cursor is a number": _body([_oi(T)], nextPageCursor=5),
    "time far future": _body([_oi(9_999_999_999_999)]),
}


def _assert_one_line(decode: Callable[[bytes], object], body: bytes, word: str) -> None:
    with pytest.raises(ExchangeProtocolError) as err:
        decode(body)
    assert not isinstance(err.value, MalformedJSONError)
    text = str(err.value)
    assert "\n" not in text and word in text and len(text) < 400


@pytest.mark.parametrize("body", FUNDING_BAD.values(), ids=FUNDING_BAD.keys())
def test_hostile_funding_results(body: bytes) -> None:
    _assert_one_line(decode_funding_result, body, "funding")


@pytest.mark.parametrize("kind", ["mark", "index"])
@pytest.mark.parametrize("body", KLINE_BAD.values(), ids=KLINE_BAD.keys())
def test_hostile_price_kline_results(body: bytes, kind: str) -> None:
    _assert_one_line(lambda b: decode_price_kline_result(b, kind), body, f"{kind} price kline")


def test_premium_accepts_signed_values_but_not_other_faults() -> None:
    ok = decode_price_kline_result(_body([_k(T, o="-0.001", h="0", lo="-0.002", c="-0.0015")]), "premium")
    assert ok.low.tolist() == [-0.002]
    for name in ("NaN", "overflow", "high below low", "ascending rows", "4 fields"):
        _assert_one_line(lambda b: decode_price_kline_result(b, "premium"), KLINE_BAD[name], "premium")


@pytest.mark.parametrize("body", OI_BAD.values(), ids=OI_BAD.keys())
def test_hostile_open_interest_results(body: bytes) -> None:
    _assert_one_line(decode_open_interest_result, body, "open interest")


@pytest.mark.parametrize(
    ("decode", "full"),
    [
        (decode_funding_result, _body([_f()])),
        (decode_open_interest_result, _body([_oi(T)])),
        (lambda b: decode_price_kline_result(b, "mark"), _body([_k(T)])),
    ],
)
def test_cut_bodies_are_malformed_json(decode: Callable[[bytes], object], full: bytes) -> None:
    with pytest.raises(MalformedJSONError):
        decode(full[: len(full) // 2])


def test_empty_lists_decode_to_empty_batches() -> None:
    assert len(decode_funding_result(_body([]))) == 0
    assert len(decode_open_interest_result(_body([]))) == 0
    assert len(decode_price_kline_result(_body([]), "index")) == 0


def test_instrument_sizes_that_are_not_numbers_are_refused() -> None:
    good = Instrument(symbol="BTCUSDT", category="linear", status="Trading", tick_size="0.10", qty_step="0.001")
    assert instruments_snapshot_frame([good])["tick_size"].to_list() == [0.1]
    for bad in ("abc", "nan", "-0.1", "inf"):
        with pytest.raises(ExchangeProtocolError, match="tickSize"):
            instruments_snapshot_frame([Instrument(symbol="X", category="linear", status="Trading", tick_size=bad)])


def test_a_funding_interval_that_is_not_minutes_is_refused() -> None:
    from marketlake.exchanges.bybit.parse import decode_instruments_result

    body = _body([{"symbol": "BTCUSDT", "status": "Trading", "fundingInterval": 10_000_000}])
    with pytest.raises(ExchangeProtocolError, match="fundingInterval"):
        decode_instruments_result(body)
    body = _body([{"symbol": "BTCUSDT", "status": "Trading", "fundingInterval": "8h"}])
    with pytest.raises(ExchangeProtocolError):
        decode_instruments_result(body)
