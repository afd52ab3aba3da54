"""Typed decoding of recorded WebSocket frames, hostile frames, subscribe batching, URL derivation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from marketlake.errors import DataValidationError, ExchangeProtocolError
from marketlake.exchanges.bybit.parse_ws import WsCommandResponse
from marketlake.exchanges.bybit.ws_frames import (
    KlinePush,
    TradePush,
    decode_frame,
    ping_frame,
    request_frame,
    subscribe_batches,
    ws_url_for,
)


def _fixture(shared_dir: Path, name: str) -> bytes:
    return (shared_dir / "fixtures" / "bybit" / name).read_bytes()


def test_the_recorded_kline_push_decodes_to_typed_floats(shared_dir: Path) -> None:
    msg = decode_frame(_fixture(shared_dir, "docs_ws_push_kline.5.BTCUSDT.json"))
    assert isinstance(msg, KlinePush)
    assert (msg.topic, msg.symbol, msg.interval, msg.ts_ms) == (
        "kline.5.BTCUSDT",
        "BTCUSDT",
        "5",
        1672324988882,
    )
    (k,) = msg.candles
    assert (k.start, k.end, k.confirm) == (1672324800000, 1672325099999, False)
    assert (k.open, k.close, k.high, k.low) == (16649.5, 16677.0, 16677.0, 16608.0)
    assert (k.volume, k.turnover, k.timestamp) == (2.081, 34666.4005, 1672324988882)


def test_the_recorded_trade_push_decodes_with_every_field(shared_dir: Path) -> None:
    msg = decode_frame(_fixture(shared_dir, "docs_ws_push_publicTrade.BTCUSDT.json"))
    assert isinstance(msg, TradePush) and msg.symbol == "BTCUSDT"
    (t,) = msg.trades
    assert (t.ts_ms, t.side, t.size, t.price) == (1672304486865, "Buy", 0.001, 16578.5)
    assert (t.trade_id, t.tick_direction, t.is_block_trade, t.seq) == (
        "20f43950-d8dd-5b31-9112-a178eb6023af",
        "PlusTick",
        False,
        1783284617,
    )


@pytest.mark.parametrize(
    ("name", "op", "ret_msg"),
    [
        ("docs_ws_subscribe_ack_public_linear_inverse.json", "subscribe", ""),
        ("docs_ws_subscribe_ack_public_spot.json", "subscribe", "subscribe"),
        ("docs_ws_pong_public_linear_inverse.json", "ping", "pong"),
        ("docs_ws_pong_public_spot.json", "ping", "pong"),
        ("docs_ws_pong_public_option_spread.json", "pong", None),
    ],
)
def test_recorded_acks_and_pongs_are_command_responses(
    shared_dir: Path, name: str, op: str, ret_msg: str | None
) -> None:
    msg = decode_frame(_fixture(shared_dir, name))
    assert isinstance(msg, WsCommandResponse)
    assert (msg.op, msg.ret_msg) == (op, ret_msg)


def test_the_option_ack_lists_its_success_topics(shared_dir: Path) -> None:
    msg = decode_frame(_fixture(shared_dir, "docs_ws_subscribe_ack_public_option_spread.json"))
    assert isinstance(msg, WsCommandResponse)
    assert (
        msg.success and msg.success_topics == ["orderbook.100.BTC-6JAN23-18000-C"] and msg.fail_topics == []
    )


KLINE = {
    "start": 60000,
    "end": 119999,
    "interval": "1",
    "open": "1",
    "close": "2",
    "high": "2",
    "low": "1",
    "volume": "3",
    "turnover": "4",
    "confirm": True,
    "timestamp": 1,
}


@pytest.mark.parametrize(
    "frame",
    [
        b'{"topic":"kline.1.BTCUSDT","ts":1,"data":[{"start":',  # cut
        b'{"topic":"kline.1.BTCUSDT","ts":1,"data":"\xff\xfe"}',  # invalid UTF-8
        b"[1,2,3]",  # not an object
        b"",  # empty
        b'{"topic":"orderbook.50.BTCUSDT","ts":1,"type":"snapshot","data":{}}',  # unsupported topic
        b'{"topic":"kline.1.BTCUSDT","type":"snapshot","data":[]}',  # no ts
        b'{"topic":"kline.1.BTCUSDT","ts":1,"type":"snapshot"}',  # no data
        b'{"topic":"kline.1","ts":1,"type":"snapshot","data":[]}',  # topic without a symbol
        b'{"topic":"publicTrade.","ts":1,"type":"snapshot","data":[]}',
        json.dumps({"topic": "kline.1.X", "ts": 1, "data": [{**KLINE, "open": "NaN"}]}).encode(),
        json.dumps({"topic": "kline.1.X", "ts": 1, "data": [{**KLINE, "low": "-1"}]}).encode(),
        json.dumps({"topic": "kline.1.X", "ts": 1, "data": [{**KLINE, "open": "abc"}]}).encode(),
        json.dumps({"topic": "kline.1.X", "ts": 1, "data": [{**KLINE, "start": "x"}]}).encode(),
        json.dumps({"topic": "kline.1.X", "ts": 1, "data": {"a": 1}}).encode(),
        json.dumps(
            {
                "topic": "publicTrade.X",
                "ts": 1,
                "data": [{"T": 1, "s": "X", "S": "Hold", "v": "1", "p": "1", "i": "a"}],
            }
        ).encode(),
        json.dumps(
            {
                "topic": "publicTrade.X",
                "ts": 1,
                "data": [{"T": 1, "s": "X", "S": "Buy", "v": "1", "p": "0", "i": "a"}],
            }
        ).encode(),
        json.dumps(
            {
                "topic": "publicTrade.X",
                "ts": 1,
                "data": [{"T": 1, "s": "X", "S": "Buy", "v": "inf", "p": "1", "i": "a"}],
            }
        ).encode(),
        json.dumps({"topic": "publicTrade.X", "ts": 1, "data": [{"T": 1, "s": "X"}]}).encode(),
        json.dumps({"op": "subscribe", "args": ["kline.1.X"]}).encode(),  # a client request
        json.dumps({"hello": "world"}).encode(),
    ],
)
def test_hostile_frames_raise_protocol_errors_never_anything_else(frame: bytes) -> None:
    with pytest.raises(ExchangeProtocolError):
        decode_frame(frame)


def test_request_and_ping_frames_are_the_documented_json() -> None:
    assert json.loads(request_frame("subscribe", ["kline.1.BTCUSDT"], "7")) == {
        "op": "subscribe",
        "args": ["kline.1.BTCUSDT"],
        "req_id": "7",
    }
    assert json.loads(request_frame("unsubscribe", ["a"])) == {"op": "unsubscribe", "args": ["a"]}
    assert json.loads(ping_frame("p1")) == {"op": "ping", "req_id": "p1"}


def test_spot_batches_hold_at_most_ten_topics() -> None:
    topics = [f"kline.{tf}.SYM{i:03d}USDT" for i in range(7) for tf in ("1", "5", "60")]
    batches = subscribe_batches(topics, "spot")
    assert [len(b) for b in batches] == [10, 10, 1]
    assert [t for b in batches for t in b] == topics


def test_linear_batches_stay_under_21000_characters() -> None:
    topics = [f"publicTrade.S{i:05d}{'X' * 20}USDT" for i in range(2000)]
    batches = subscribe_batches(topics, "linear")
    assert len(batches) > 1
    assert all(sum(map(len, b)) <= 21_000 for b in batches)
    assert [t for b in batches for t in b] == topics
    assert all(len(b) <= 50 for b in subscribe_batches(topics, "linear", max_args=50))


@given(
    st.lists(st.text(alphabet="abcdefXYZ.0123456789", min_size=1, max_size=300), max_size=300),
    st.sampled_from(["spot", "linear", "inverse"]),
    st.one_of(st.none(), st.integers(1, 40)),
)
def test_batches_partition_the_topics_within_every_limit(
    topics: list[str], category: str, most: int | None
) -> None:
    batches = subscribe_batches(topics, category, max_args=most)
    assert [t for b in batches for t in b] == list(dict.fromkeys(topics))
    for b in batches:
        assert b
        if category == "spot":
            assert len(b) <= 10
        else:
            assert len(b) == 1 or sum(map(len, b)) <= 21_000
        if most is not None:
            assert len(b) <= most


@pytest.mark.parametrize(
    ("base", "category", "want"),
    [
        ("https://api.bybit.com", "linear", "wss://stream.bybit.com/v5/public/linear"),
        ("https://api-testnet.bybit.com/", "spot", "wss://stream-testnet.bybit.com/v5/public/spot"),
        ("http://127.0.0.1:8765", "inverse", "ws://127.0.0.1:8765/v5/public/inverse"),
        ("https://example.org:9443/some/path", "linear", "wss://example.org:9443/v5/public/linear"),
    ],
)
def test_the_websocket_url_derives_from_the_base_url(base: str, category: str, want: str) -> None:
    assert ws_url_for(base, category) == want


@pytest.mark.parametrize(("base", "category"), [("ftp://x", "linear"), ("http://x", "option"), ("x", "spot")])
def test_bad_base_urls_and_categories_are_refused(base: str, category: str) -> None:
    with pytest.raises(DataValidationError):
        ws_url_for(base, category)
