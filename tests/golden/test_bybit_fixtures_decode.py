"""Every recorded Bybit payload in ../shared/fixtures/bybit decodes with marketlake's decoders.

The test is parametrised over the directory listing: a new fixture file is covered automatically,
and a file no decoder claims fails the test until one does.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import msgspec
import numpy as np
import polars as pl
import pytest

from marketlake.core.timeframes import parse_timeframe
from marketlake.exchanges.bybit.parse import (
    decode_envelope,
    decode_instruments_result,
    decode_kline_result,
    decode_recent_trades_result,
    decode_server_time_result,
    drop_forming,
    klines_frame,
    parse_rate_limit_headers,
    trades_frame,
)
from marketlake.exchanges.bybit.parse_archive import parse_spot_trade_dump
from marketlake.exchanges.bybit.parse_perp import decode_open_interest_result
from marketlake.exchanges.bybit.parse_ws import (
    WsCommandResponse,
    WsKlinePush,
    WsRequest,
    WsTradePush,
    decode_ws_message,
)

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "bybit"
DOCS = {"SOURCES.md"}


def _files() -> list[str]:
    if not FIXTURES.is_dir():
        return []
    return sorted(p.name for p in FIXTURES.iterdir() if p.is_file() and p.name not in DOCS)


def _result(name: str, data: bytes) -> bytes:
    """The wire ``result`` of a fixture: hirokisan stored only the result (sometimes wrapped)."""
    if name.startswith("hirokisan_") and "result_wrapped" in name:
        return msgspec.json.encode(msgspec.json.decode(data)["LinearInverse"])
    if name.startswith("hirokisan_") and "result_only" in name:
        return data
    env = decode_envelope(data)
    assert env.ret_code == 0 and env.ret_msg == "OK"
    assert env.time_ms is not None and env.time_ms > 1_600_000_000_000
    return env.result


def check_kline(name: str, data: bytes) -> None:
    parts = name.removesuffix(".json").split("_")
    interval = parts[parts.index("kline") + 3]  # ..._kline_{category}_{symbol}_{interval}...
    batch = decode_kline_result(_result(name, data))
    assert len(batch) == 3
    assert np.all(np.diff(batch.ts) > 0), "rows must come back ascending"
    tf = parse_timeframe(interval)
    assert np.all(tf.floor_array(batch.ts) == batch.ts), "open times on the interval grid"
    assert np.all(batch.high >= np.maximum(batch.open, batch.close))
    assert np.all(batch.low <= np.minimum(batch.open, batch.close))
    frame = klines_frame(batch)
    assert frame.columns == ["ts", "open", "high", "low", "close", "volume", "turnover"]
    assert frame["ts"].dtype == pl.Datetime("ms", "UTC")
    server = decode_envelope(data).time_ms
    assert server is not None
    closed = drop_forming(batch, interval, server)
    if name.startswith("nautilus_"):
        # Recorded on 2023-09-14 06:55 UTC: the 2023-09-14 daily candle was still forming.
        assert len(closed) == 2 and int(batch.ts[-1]) == 1_694_649_600_000
    else:
        assert len(closed) == 3


def check_instruments(name: str, data: bytes) -> None:
    page = decode_instruments_result(_result(name, data), "linear" if "linear" in name else "spot")
    assert page.instruments
    for inst in page.instruments:
        assert inst.symbol and inst.status in {"Trading", "PreLaunch", "Delivering", "Closed"}
        assert inst.tick_size and float(inst.tick_size) > 0
    if "hirokisan" in name:
        assert len(page.instruments) == 214 and page.next_cursor == ""
    if "with_cursor" in name:
        assert page.next_cursor == "first%3DBIOUSDT%26last%3DBIOUSDT"
        assert page.instruments[0].status == "PreLaunch"
    if "spot" in name:
        # Bybit's spot listing has neither launchTime nor pagination.
        assert all(i.launch_time_ms is None for i in page.instruments)
        assert page.next_cursor == ""
    if name == "docs_rest_instruments_linear_BTCUSDT.json":
        inst = page.instruments[0]
        assert (inst.launch_time_ms, inst.tick_size, inst.qty_step, inst.price_scale) == (
            1_585_526_400_000,
            "0.10",
            "0.001",
            2,
        )


def check_recent_trades(name: str, data: bytes) -> None:
    trades = decode_recent_trades_result(_result(name, data))
    assert trades
    assert [t.ts_ms for t in trades] == sorted(t.ts_ms for t in trades)
    assert all(t.side in ("Buy", "Sell") and t.price > 0 and t.size > 0 for t in trades)
    frame = trades_frame(trades)
    assert frame.height == len(trades) and frame["trade_id"].n_unique() == len(trades)
    if "hirokisan" in name:
        # Sent newest first; the oldest one is last on the wire.
        assert trades[0].trade_id == "6ef7091c-e265-5412-8cad-7c7cf3503635"


def check_server_time(name: str, data: bytes) -> None:
    env = decode_envelope(data)
    ms = decode_server_time_result(env.result)
    assert ms == env.time_ms


def check_open_interest(name: str, data: bytes) -> None:
    env = decode_envelope(data)
    assert env.ret_code == 0 and isinstance(env.time_ms, int)
    page = decode_open_interest_result(env.result)
    assert len(page) and page.next_cursor.startswith("lastid%3D")
    assert np.all(np.diff(page.ts) > 0) and np.all(page.open_interest > 0)


def check_headers(name: str, data: bytes) -> None:
    lines = data.decode().splitlines()
    headers = dict(line.split(": ", 1) for line in lines if ": " in line)
    info = parse_rate_limit_headers(headers)
    assert (info.limit, info.remaining, info.reset_ms) == (10, 9, 1_672_738_134_824)


def check_ws(name: str, data: bytes) -> None:
    msg = decode_ws_message(data)
    if "push_kline" in name:
        assert isinstance(msg, WsKlinePush) and msg.interval == "5" and msg.symbol == "BTCUSDT"
        k = msg.candles[0]
        assert k.end_ms == k.start_ms + 5 * 60_000 - 1 and k.confirm is False
    elif "push_publicTrade" in name:
        assert isinstance(msg, WsTradePush) and msg.trades[0].side == "Buy"
    elif "unsubscribe_request" in name:
        assert isinstance(msg, WsRequest) and msg.op == "unsubscribe" and msg.args
    else:
        assert isinstance(msg, WsCommandResponse)
        if "pong" in name:
            assert msg.op == "pong" or msg.ret_msg == "pong"
        else:
            assert msg.success is True


def check_spot_dump(name: str, data: bytes) -> None:
    frame = parse_spot_trade_dump(data)
    assert frame.height == 200
    assert frame["ts"].is_sorted()
    assert set(frame["side"].unique()) <= {"Buy", "Sell"}
    first = frame["ts"][0]
    assert first.date() == dt.date(2025, 5, 19)


DECODERS: list[tuple[Callable[[str], bool], Callable[[str, bytes], None]]] = [
    (lambda n: "_rest_kline_" in n, check_kline),
    (lambda n: "instruments" in n, check_instruments),
    (lambda n: "recent_trade" in n, check_recent_trades),
    (lambda n: "server_time" in n, check_server_time),
    (lambda n: "open_interest" in n, check_open_interest),
    (lambda n: n.endswith("rate_limit_response_headers.txt"), check_headers),
    (lambda n: "_ws_" in n, check_ws),
    (lambda n: "spot_dump" in n and n.endswith(".csv"), check_spot_dump),
]


def test_the_fixture_directory_is_present_and_not_empty() -> None:
    assert len(_files()) >= 25, f"expected the recorded payloads in {FIXTURES}"


@pytest.mark.parametrize("name", _files())
def test_every_recorded_bybit_payload_decodes(name: str) -> None:
    matching = [check for claims, check in DECODERS if claims(name)]
    assert len(matching) == 1, f"fixture {name}: no (or several) decoders claim it; add one"
    matching[0](name, (FIXTURES / name).read_bytes())
