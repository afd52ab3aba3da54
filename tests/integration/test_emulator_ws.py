"""The emulator's WebSocket over a real socket, seen by a bare aiohttp client: recorded ack shapes,
pushes consistent with REST and the ground truth, and every fault kind."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from marketlake.errors import ExchangeProtocolError
from marketlake_emulator import BybitEmulator
from marketlake.exchanges.bybit.ws_frames import decode_frame
from tests.integration.emulated import run_with_emulator

Frame = dict[str, Any]


def run(test: Callable[[BybitEmulator], Awaitable[None]], **kw: Any) -> None:
    kw.setdefault("speed", 600.0)  # a market minute every 0.1 s

    async def checked(emu: BybitEmulator) -> None:
        await test(emu)
        assert not emu.ws.errors

    run_with_emulator(checked, **kw)


async def send(ws: aiohttp.ClientWebSocketResponse, **body: Any) -> None:
    await ws.send_str(json.dumps(body))


async def frames(ws: aiohttp.ClientWebSocketResponse, seconds: float) -> list[bytes]:
    """Every text frame received within ``seconds``."""
    out: list[bytes] = []
    end = asyncio.get_running_loop().time() + seconds
    while (left := end - asyncio.get_running_loop().time()) > 0:
        try:
            msg = await ws.receive(timeout=left)
        except TimeoutError:
            break
        if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
            out.append(msg.data if isinstance(msg.data, bytes) else msg.data.encode())
        else:
            break
    return out


async def reply(ws: aiohttp.ClientWebSocketResponse) -> Frame:
    """The next frame that is not a push."""
    while True:
        msg = await ws.receive(timeout=5)
        body = json.loads(msg.data)
        if "topic" not in body:
            return body


def pushes(raw: list[bytes], topic: str | None = None) -> list[Frame]:
    out = []
    for f in raw:
        try:
            body = json.loads(f)
        except ValueError:
            continue
        if isinstance(body, dict) and "topic" in body and (topic is None or body["topic"] == topic):
            out.append(body)
    return out


def decodes(frame: bytes) -> bool:
    try:
        decode_frame(frame)
    except ExchangeProtocolError:
        return False
    return True


def shape(frame: Frame) -> list[tuple[str, str]]:
    return [(k, type(v).__name__) for k, v in frame.items()]


def _load(shared_dir: Path, name: str) -> Frame:
    return json.loads((shared_dir / "fixtures" / "bybit" / name).read_text())


@pytest.mark.parametrize("category", ["linear", "inverse", "spot"])
def test_acks_and_pongs_have_the_recorded_shape_of_each_market(shared_dir: Path, category: str) -> None:
    spot = category == "spot"
    ack_fixture = _load(
        shared_dir, f"docs_ws_subscribe_ack_public_{'spot' if spot else 'linear_inverse'}.json"
    )
    pong_fixture = _load(shared_dir, f"docs_ws_pong_public_{'spot' if spot else 'linear_inverse'}.json")
    symbol = "BTCUSD" if category == "inverse" else "BTCUSDT"

    async def t(emu: BybitEmulator) -> None:
        async with aiohttp.ClientSession() as s, s.ws_connect(emu.ws_url(category)) as ws:
            await send(ws, op="subscribe", args=[f"kline.1.{symbol}"], req_id="10001")
            ack = await reply(ws)
            assert shape(ack) == shape(ack_fixture) and ack["ret_msg"] == ack_fixture["ret_msg"]
            assert ack["req_id"] == "10001" and ack["success"] is True
            await send(ws, op="ping")
            pong = await reply(ws)
            assert shape(pong) == shape(pong_fixture) and pong["ret_msg"] == "pong" and pong["op"] == "ping"
            assert pong["conn_id"] == ack["conn_id"]
            await send(ws, op="unsubscribe", args=[f"kline.1.{symbol}"])
            unsub = await reply(ws)
            assert unsub["op"] == "unsubscribe" and unsub["success"] is True
            assert ("req_id" in unsub) is (not spot)  # spot echoes a req_id only when one was sent

    run(t)


def test_an_unknown_topic_fails_the_whole_request_with_bybits_message() -> None:
    async def t(emu: BybitEmulator) -> None:
        async with aiohttp.ClientSession() as s, s.ws_connect(emu.ws_url()) as ws:
            await send(ws, op="subscribe", args=["kline.1.BTCUSDT", "kline.7.BTCUSDT"], req_id="a")
            ack = await reply(ws)
            assert ack == {
                "success": False,
                "ret_msg": "error:handler not found,topic:kline.7.BTCUSDT",
                "conn_id": ack["conn_id"],
                "req_id": "a",
                "op": "subscribe",
            }
            assert pushes(await frames(ws, 0.5)) == []  # the valid topic was not subscribed either
            for bad in ("publicTrade.NOPEUSDT", "kline.1.BTCUSD", "orderbook.50.BTCUSDT", "kline..BTCUSDT"):
                await send(ws, op="subscribe", args=[bad])
                assert (await reply(ws))["ret_msg"] == f"error:handler not found,topic:{bad}"
            await send(ws, op="bogus")
            assert (await reply(ws))["success"] is False
            await ws.send_str("{not json")
            assert (await reply(ws))["success"] is False

    run(t)


def test_args_limits_spot_ten_topics_linear_21000_characters() -> None:
    async def t(emu: BybitEmulator) -> None:
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(emu.ws_url("spot")) as ws:
                await send(
                    ws,
                    op="subscribe",
                    args=[f"kline.{i}.BTCUSDT" for i in (1, 3, 5, 15, 30, 60, 120, 240, 360, 720, "D")],
                )
                assert (await reply(ws))["ret_msg"] == "args size >10"
                await send(
                    ws,
                    op="subscribe",
                    args=[f"kline.{i}.BTCUSDT" for i in (1, 3, 5, 15, 30, 60, 120, 240, 360, 720)],
                )
                assert (await reply(ws))["success"] is True
            async with s.ws_connect(emu.ws_url("linear")) as ws:
                await send(ws, op="subscribe", args=["kline.1.BTCUSDT"] * 1401)  # 21,015 characters
                assert (await reply(ws))["ret_msg"] == "args length >21000"
                assert [r.success for r in emu.ws.requests] == [False, True, False]

    run(t)


def test_klines_repeat_confirm_false_then_close_once_with_the_rest_and_truth_values() -> None:
    async def t(emu: BybitEmulator) -> None:
        emu.ws.configure(push_interval_s=0.02)
        async with aiohttp.ClientSession() as s, s.ws_connect(emu.ws_url()) as ws:
            await send(ws, op="subscribe", args=["kline.1.BTCUSDT", "kline.5.ETHUSDT"])
            await reply(ws)
            got = pushes(await frames(ws, 2.5))
            for topic, tf_ms in (("kline.1.BTCUSDT", 60_000), ("kline.5.ETHUSDT", 300_000)):
                rows = [(p["ts"], p["type"], p["data"][0]) for p in got if p["topic"] == topic]
                closed = [d for _, _, d in rows if d["confirm"]]
                assert len(closed) >= (3 if tf_ms == 60_000 else 1)
                assert all(tp == "snapshot" for _, tp, _ in rows)
                starts = [d["start"] for d in closed]
                assert starts == sorted(set(starts))  # each candle closes exactly once, in order
                updated = 0
                for d in closed:
                    forming = [x for _, _, x in rows if x["start"] == d["start"] and not x["confirm"]]
                    updated += bool(forming)
                    assert d["end"] == d["start"] + tf_ms - 1
                    assert isinstance(d["start"], int) and isinstance(d["open"], str)
                # Repeated confirm:false updates precede a close (a stalled machine may skip a
                # whole candle between two ticks, so not every single one).
                assert updated >= len(closed) - 1
                sym = topic.split(".")[2]
                truth = emu.market.candles(sym, topic.split(".")[1], starts[0], starts[-1])
                assert truth["ts"].dt.epoch("ms").to_list() == starts
                assert truth["close"].to_list() == [float(d["close"]) for d in closed]
                assert truth["volume"].to_list() == [float(d["volume"]) for d in closed]
                q = {
                    "category": "linear",
                    "symbol": sym,
                    "interval": topic.split(".")[1],
                    "start": str(starts[0]),
                    "end": str(starts[-1]),
                }
                async with s.get(emu.url + "/v5/market/kline", params=q) as resp:
                    rest = (await resp.json())["result"]["list"][::-1]
                wire = [
                    [str(d["start"]), d["open"], d["high"], d["low"], d["close"], d["volume"], d["turnover"]]
                    for d in closed
                ]
                assert rest[: len(wire)] == wire  # the very strings REST serves

    run(t, speed=180.0)  # a market minute every 0.33 s: a dozen ticks per candle


def test_trades_come_ascending_in_capped_batches_and_equal_the_ground_truth() -> None:
    async def t(emu: BybitEmulator) -> None:
        emu.ws.configure(push_interval_s=0.02, trade_batch_max=2)
        async with aiohttp.ClientSession() as s, s.ws_connect(emu.ws_url()) as ws:
            await send(ws, op="subscribe", args=["publicTrade.BTCUSDT"])
            await reply(ws)
            got = pushes(await frames(ws, 1.5), "publicTrade.BTCUSDT")
        items = [d for p in got for d in p["data"]]
        assert all(1 <= len(p["data"]) <= 2 and all(d["T"] <= p["ts"] for d in p["data"]) for p in got)
        times = [d["T"] for d in items]
        assert len(items) > 20 and times == sorted(times)
        assert {tuple(d) for d in items} == {("T", "s", "S", "v", "p", "L", "i", "BT", "seq")}
        truth = emu.market.trades("BTCUSDT", times[0], times[-1] + 1)
        assert truth["trade_id"].to_list() == [d["i"] for d in items]
        assert truth["price"].to_list() == [float(d["p"]) for d in items]
        assert truth["seq"].to_list() == [d["seq"] for d in items]

    run(t)


def test_close_1006_goaway_and_reset_end_the_connection_as_named() -> None:
    async def t(emu: BybitEmulator) -> None:
        emu.ws.configure(push_interval_s=0.02)
        async with aiohttp.ClientSession() as s:
            for kind, codes in (("close1006", {1006}), ("goaway", {1001}), ("reset", {1006, None})):
                async with s.ws_connect(emu.ws_url()) as ws:
                    await send(ws, op="subscribe", args=["kline.1.BTCUSDT"])
                    await reply(ws)
                    assert emu.ws.inject(kind) == 1
                    while (msg := await ws.receive(timeout=5)).type in (aiohttp.WSMsgType.TEXT,):
                        pass
                    assert msg.type in (
                        aiohttp.WSMsgType.CLOSE,
                        aiohttp.WSMsgType.CLOSED,
                        aiohttp.WSMsgType.ERROR,
                    )
                    assert ws.close_code in codes, (kind, ws.close_code)
        ends = [c.end for c in emu.ws.connections]
        assert ends == ["close1006", "goaway", "reset"]

    run(t)


def test_a_silent_socket_stays_open_but_answers_nothing_not_even_pings() -> None:
    async def t(emu: BybitEmulator) -> None:
        emu.ws.configure(push_interval_s=0.02)
        async with aiohttp.ClientSession() as s, s.ws_connect(emu.ws_url()) as ws:
            await send(ws, op="subscribe", args=["kline.1.BTCUSDT"])
            await reply(ws)
            assert pushes(await frames(ws, 0.2))
            emu.ws.inject("silent")
            await asyncio.sleep(0.1)
            await send(ws, op="ping")
            await frames(ws, 0.1)  # what was in flight before the fault
            assert await frames(ws, 0.6) == [] and not ws.closed

    run(t)


def test_delay_holds_frames_then_sends_them_all_in_order() -> None:
    async def t(emu: BybitEmulator) -> None:
        emu.ws.configure(push_interval_s=0.02, delay_s=0.5)
        async with aiohttp.ClientSession() as s, s.ws_connect(emu.ws_url()) as ws:
            await send(ws, op="subscribe", args=["publicTrade.BTCUSDT"])
            await reply(ws)
            before = pushes(await frames(ws, 0.3))
            emu.ws.inject("delay")
            await frames(ws, 0.05)
            held = await frames(ws, 0.3)
            after = pushes(await frames(ws, 0.6))
        assert held == [] and len(after) >= 5
        times = [d["T"] for p in before + after for d in p["data"]]
        truth = emu.market.trades("BTCUSDT", times[0], times[-1] + 1)
        assert truth["trade_id"].to_list() == [
            d["i"] for p in before + after for d in p["data"]
        ]  # nothing lost

    run(t)


def test_duplicate_reorder_malformed_and_oversized_frames_are_extra_or_moved_never_lost() -> None:
    async def t(emu: BybitEmulator) -> None:
        emu.ws.configure(push_interval_s=0.05, oversized_bytes=300_000)
        async with (
            aiohttp.ClientSession() as s,
            s.ws_connect(emu.ws_url(), max_msg_size=0, decode_text=False) as ws,
        ):
            await send(ws, op="subscribe", args=["kline.1.BTCUSDT", "kline.1.ETHUSDT"])
            await reply(ws)
            await frames(ws, 0.2)
            emu.ws.inject("duplicate")
            dup = await frames(ws, 0.2)
            assert any(a == b for a, b in itertools.pairwise(dup))
            emu.ws.inject("reorder")
            order = [p["topic"] for p in pushes(await frames(ws, 0.2)) if not p["data"][0]["confirm"]]
            assert any(
                a == "kline.1.ETHUSDT" and b == "kline.1.BTCUSDT" for a, b in itertools.pairwise(order)
            )
            emu.ws.inject(*["malformed"] * 6)
            junk = [f for f in await frames(ws, 0.3) if not decodes(f)]
            assert len(junk) == 6 and any(b"\xff" in j for j in junk)
            emu.ws.inject("oversized")
            assert max(len(f) for f in await frames(ws, 0.3)) == 300_000
        assert emu.ws.injected["malformed"] == 6 and emu.ws.injected["oversized"] == 1

    run(t)


def test_random_faults_follow_their_probabilities_and_knobs_are_validated() -> None:
    async def t(emu: BybitEmulator) -> None:
        emu.ws.configure(push_interval_s=0.02, p_duplicate=1.0)
        async with aiohttp.ClientSession() as s, s.ws_connect(emu.ws_url()) as ws:
            await send(ws, op="subscribe", args=["kline.1.BTCUSDT"])
            await reply(ws)
            got = await frames(ws, 0.6)
        twice = [f for f in set(got) if got.count(f) == 2]
        assert len(twice) >= 3 and all(got.count(f) <= 2 for f in got)  # one push per tick sent twice
        for bad in ({"p_reset": 1.5}, {"push_interval_s": 0}, {"bogus": 1}, {"connect_limit": 0}):
            with pytest.raises(ValueError):
                emu.ws.configure(**bad)
        with pytest.raises(ValueError):
            emu.ws.inject("explode")

    run(t)


def test_the_connection_limit_refuses_upgrades_and_the_admin_routes_inject() -> None:
    async def t(emu: BybitEmulator) -> None:
        emu.ws.configure(connect_limit=2, connect_window_s=60.0)
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(emu.ws_url()) as ws1, s.ws_connect(emu.ws_url()):
                with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
                    await s.ws_connect(emu.ws_url())
                assert exc.value.status == 429
                async with s.post(emu.url + "/_emulator/ws/inject", json={"faults": ["goaway"]}) as resp:
                    assert resp.status == 200
                assert (await ws1.receive(timeout=5)).type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSED,
                )
            async with s.post(emu.url + "/_emulator/ws/faults", json={"p_silent": 2}) as resp:
                assert resp.status == 400
            async with s.post(emu.url + "/_emulator/ws/inject", json={"faults": "goaway"}) as resp:
                assert resp.status == 400
            async with s.get(emu.url + "/_emulator/ws/state") as resp:
                state = await resp.json()
        assert state["connections"] == 2 and emu.ws.max_connects_in_window(60.0) == 2

    run(t)
