"""The WebSocket client against the emulator: batching, keep-alive, silence, reconnects, limits."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, Self

import pytest

from marketlake.clock import ManualClock, use_clock
from marketlake_emulator import BybitEmulator
from marketlake.exchanges.bybit.ws import (
    QUARANTINE_BYTES,
    BybitWsClient,
    Disconnected,
    Malformed,
    Push,
    Subscribed,
    WsEvent,
)
from marketlake.net.backoff import Backoff
from tests.integration.emulated import run_with_emulator

FAST = Backoff(base=0.01, cap=0.05, max_attempts=10**9)


def run(test: Callable[[BybitEmulator], Awaitable[None]], **kw: Any) -> None:
    kw.setdefault("speed", 600.0)

    async def wrapped(emu: BybitEmulator) -> None:
        emu.ws.configure(push_interval_s=0.02)
        await test(emu)
        assert not emu.ws.errors

    run_with_emulator(wrapped, **kw)


class Recorder:
    """Runs a client in the background and keeps its events with their arrival time."""

    def __init__(self, client: BybitWsClient) -> None:
        self.client = client
        self.events: list[tuple[float, WsEvent]] = []
        self.task: asyncio.Task[None] | None = None

    def __call__(self, ev: WsEvent) -> None:
        self.events.append((time.monotonic(), ev))

    async def __aenter__(self) -> Self:
        self.task = asyncio.create_task(self.client.run(self))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.stop()
        assert self.task is not None
        await asyncio.wait_for(self.task, 10)

    def of(self, kind: type) -> list[Any]:
        return [e for _, e in self.events if isinstance(e, kind)]

    async def until(self, pred: Callable[[], bool], timeout: float = 10.0) -> None:
        end = time.monotonic() + timeout
        while not pred():
            assert time.monotonic() < end, "condition not reached"
            await asyncio.sleep(0.01)


def test_spot_topics_go_out_ten_per_request_and_are_all_confirmed() -> None:
    topics = [f"kline.{tf}.{s}" for s in ("BTCUSDT", "ETHUSDT") for tf in ("1", "3", "5", "15", "60", "D")]

    async def t(emu: BybitEmulator) -> None:
        async with Recorder(BybitWsClient(emu.ws_url("spot"), topics, backoff=FAST)) as rec:
            await rec.until(lambda: bool(rec.of(Subscribed)))
        subs = [r for r in emu.ws.requests if r.op == "subscribe"]
        assert [len(r.args) for r in subs] == [10, 2] and all(r.success for r in subs)
        assert rec.of(Subscribed)[0].topics == frozenset(topics)

    run(t)


def test_unknown_topics_are_rejected_once_and_every_resubscription_confirms_exactly_the_rest() -> None:
    good = ["kline.1.BTCUSDT", "kline.5.ETHUSDT", "publicTrade.BTCUSDT", "publicTrade.ETHUSDT"]
    bad = ["kline.7.BTCUSDT", "publicTrade.NOPEUSDT"]

    async def t(emu: BybitEmulator) -> None:
        client = BybitWsClient(
            emu.ws_url(), good[:2] + bad + good[2:], backoff=FAST, ping_interval_s=0.3, pong_timeout_s=0.3
        )
        async with Recorder(client) as rec:
            await rec.until(lambda: bool(rec.of(Subscribed)))
            for kind in ("close1006", "reset", "goaway", "silent", "close1006"):
                n = len(rec.of(Subscribed))
                emu.ws.inject(kind)
                await rec.until(lambda n=n: len(rec.of(Subscribed)) > n)
        subs = rec.of(Subscribed)
        assert len(subs) == 6 and all(s.topics == frozenset(good) for s in subs)
        assert set(subs[-1].rejected) == set(bad) and client.wanted == frozenset(good)
        later = [
            r for r in emu.ws.requests if r.op == "subscribe" and r.conn_id != emu.ws.connections[0].conn_id
        ]
        assert later and not any(set(r.args) & set(bad) for r in later)  # never asked for again
        assert list(client.stats.subscribed_sets) == [frozenset(good)] * 6
        assert [c.end for c in emu.ws.connections][:5] == [
            "close1006",
            "reset",
            "goaway",
            "client",
            "close1006",
        ]

    run(t)


def test_pings_keep_a_quiet_connection_alive() -> None:
    async def t(emu: BybitEmulator) -> None:
        client = BybitWsClient(emu.ws_url(), [], backoff=FAST, ping_interval_s=0.2, pong_timeout_s=0.2)
        async with Recorder(client) as rec:
            await asyncio.sleep(1.3)
        pings = [r for r in emu.ws.requests if r.op == "ping"]
        assert 4 <= len(pings) <= 7 and client.stats.pongs >= len(pings) - 1
        assert client.stats.connects == 1 and not rec.of(Disconnected)[:-1]  # only the final stop

    run(t)


def test_a_silent_socket_is_detected_within_ping_interval_plus_timeout_and_replaced() -> None:
    interval, timeout = 0.3, 0.3

    async def t(emu: BybitEmulator) -> None:
        client = BybitWsClient(
            emu.ws_url(), ["kline.1.BTCUSDT"], backoff=FAST, ping_interval_s=interval, pong_timeout_s=timeout
        )
        async with Recorder(client) as rec:
            await rec.until(lambda: len(rec.of(Push)) > 5)
            emu.ws.inject("silent")
            await rec.until(lambda: any(d.silent for d in rec.of(Disconnected)))
            await rec.until(lambda: len(rec.of(Subscribed)) == 2)
            n = len(rec.of(Push))
            await rec.until(lambda: len(rec.of(Push)) > n)  # pushes flow again on the new socket
        cut = next(i for i, (_, e) in enumerate(rec.events) if isinstance(e, Disconnected))
        last_rx = max(at for at, e in rec.events[:cut] if isinstance(e, Push))
        silence = rec.events[cut][0] - last_rx
        # Never sooner than the bound (no false alarm); not much later either (a loaded machine).
        assert interval + timeout - 0.05 <= silence <= interval + timeout + 0.5
        assert client.stats.silent_detected == 1

    run(t)


def test_a_delay_shorter_than_the_bound_is_not_a_disconnect() -> None:
    async def t(emu: BybitEmulator) -> None:
        emu.ws.configure(delay_s=0.3)
        client = BybitWsClient(
            emu.ws_url(), ["kline.1.BTCUSDT"], backoff=FAST, ping_interval_s=0.5, pong_timeout_s=0.5
        )
        async with Recorder(client) as rec:
            await rec.until(lambda: len(rec.of(Push)) > 3)
            emu.ws.inject("delay")
            await asyncio.sleep(0.8)
        assert client.stats.connects == 1 and client.stats.silent_detected == 0

    run(t)


def test_malformed_and_oversized_frames_are_counted_and_skipped_on_the_same_connection() -> None:
    async def t(emu: BybitEmulator) -> None:
        emu.ws.configure(oversized_bytes=200_000)
        client = BybitWsClient(emu.ws_url(), ["kline.1.BTCUSDT"], backoff=FAST, max_frame_bytes=100_000)
        async with Recorder(client) as rec:
            await rec.until(lambda: len(rec.of(Push)) > 3)
            emu.ws.inject(*["malformed"] * 6, "oversized")
            await rec.until(lambda: len(rec.of(Malformed)) == 7)
            n = len(rec.of(Push))
            await rec.until(lambda: len(rec.of(Push)) > n + 3)
        bad = rec.of(Malformed)
        assert client.stats.malformed == 6 and client.stats.oversized == 1 and client.stats.connects == 1
        assert all(len(m.data) <= QUARANTINE_BYTES for m in bad) and bad[-1].size == 200_000

    run(t)


def test_topics_can_be_added_and_dropped_while_connected() -> None:
    async def t(emu: BybitEmulator) -> None:
        client = BybitWsClient(emu.ws_url(), ["kline.1.BTCUSDT"], backoff=FAST)
        async with Recorder(client) as rec:
            await rec.until(lambda: bool(rec.of(Subscribed)))
            await client.subscribe(["publicTrade.ETHUSDT"])
            await rec.until(lambda: any(p.msg.topic == "publicTrade.ETHUSDT" for p in rec.of(Push)))
            await client.unsubscribe(["kline.1.BTCUSDT"])
            await asyncio.sleep(0.1)
            n = len(rec.of(Push))
            await rec.until(lambda: len(rec.of(Push)) > n + 3)
            assert not any(p.msg.topic == "kline.1.BTCUSDT" for p in rec.of(Push)[n + 1 :])
            assert client.confirmed == frozenset({"publicTrade.ETHUSDT"})

    run(t)


def test_the_connection_rate_stays_under_the_cap_while_the_server_keeps_dropping_it() -> None:
    async def t(emu: BybitEmulator) -> None:
        emu.ws.configure(p_close1006=1.0)
        client = BybitWsClient(
            emu.ws_url(),
            ["kline.1.BTCUSDT"],
            backoff=Backoff(0.001, 0.002, 10**9),
            connect_limit=5,
            connect_window_s=1.0,
        )
        async with Recorder(client):
            await asyncio.sleep(2.5)
        assert len(emu.ws.connections) >= 8  # it keeps reconnecting ...
        assert emu.ws.max_connects_in_window(1.0) <= 5  # ... never faster than the cap
        assert client.stats.throttled_s > 0

    run(t)


class _LoggedBackoff(Backoff):
    def __post_init__(self) -> None:
        super().__post_init__()
        self.given: list[tuple[int, float]] = []

    def delay(self, attempt: int, not_before_s: float = 0.0) -> float:
        d = super().delay(attempt, not_before_s)
        self.given.append((attempt, d))
        return d


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_reconnect_delays_are_jittered_capped_exponential_and_attempts_respect_the_window() -> None:
    import random

    backoff = _LoggedBackoff(base=0.5, cap=8.0, max_attempts=10**9, rng=random.Random(1))

    async def main() -> list[float]:
        clock = ManualClock()  # sleeping advances it at once: minutes of retries in no time
        times: list[float] = []
        with use_clock(clock):
            client = BybitWsClient(
                f"ws://127.0.0.1:{_dead_port()}/v5/public/linear",
                ["kline.1.BTCUSDT"],
                backoff=backoff,
                connect_limit=5,
                connect_window_s=100.0,
            )

            def on(ev: WsEvent) -> None:
                assert isinstance(ev, Disconnected) and ev.reason.startswith("connect failed")
                times.append(clock.monotonic())
                if len(times) == 40:
                    asyncio.ensure_future(client.stop())

            await asyncio.wait_for(client.run(on), 30)
        return times

    times = asyncio.run(main())
    # The exponent is one more than the consecutive connections that did not stay up.
    assert len(times) == 40 and [a for a, _ in backoff.given][:39] == list(range(2, 41))
    assert all(0 <= d <= min(8.0, 0.5 * 2 ** (a - 1)) for a, d in backoff.given)  # exponential, capped
    assert len({round(d, 6) for _, d in backoff.given}) == len(backoff.given)  # jittered: no two alike
    for i in range(len(times)):  # never more than 5 attempts in any 100 s
        assert sum(1 for t in times[i:] if t - times[i] < 100.0) <= 5


@pytest.mark.parametrize("url", ["http://x/v5/public/linear", "ftp://x"])
def test_a_non_websocket_url_is_refused(url: str) -> None:
    from marketlake.errors import DataValidationError

    with pytest.raises(DataValidationError):
        BybitWsClient(url, [])
