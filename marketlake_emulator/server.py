"""A Bybit v5 exchange emulator: a real aiohttp server on 127.0.0.1 (design.md §8), REST part.

It speaks ``/v5/market/kline``, ``/v5/market/instruments-info``, ``/v5/market/recent-trade`` and
``/v5/market/time`` exactly as the recorded payloads in ``../shared/fixtures/bybit`` show (envelope
with numeric ``retCode``/``time``, 7-string kline rows newest first, ``X-Bapi-Limit*`` headers),
serves a :class:`~marketlake_emulator.market.SyntheticMarket`, and injects the faults of
:class:`~marketlake_emulator.control.FaultConfig`. The WebSocket part
(``/v5/public/{linear,spot,inverse}``) is :mod:`~marketlake_emulator.ws`, served on the
same application and port (``emu.ws``: its faults, connections and request log).

Usage in tests::

    async with BybitEmulator(symbols=5, seed=1, start_ms=..., speed=0) as emu:
        emu.control.schedule("429", "truncated")
        ... BybitRestClient(emu.url) ...
        assert emu.control.log.max_in_window(5.0) <= 600
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any, Final, Self

import msgspec
from aiohttp import web

from marketlake.errors import ConfigError
from marketlake.exchanges.bybit import constants as C
from marketlake_emulator.control import (
    EmulatorClock,
    EmulatorControl,
    FaultConfig,
)
from marketlake_emulator.archive import EmulatorArchive
from marketlake_emulator.ws import EmulatorWs, WsFaultConfig
from marketlake_emulator.ws_config import read_admin_json
from marketlake_emulator.answers import Answer, ParamError, params_error
from marketlake_emulator.derivatives import DerivativesModel
from marketlake_emulator.endpoints import MarketEndpoints
from marketlake_emulator.endpoints_perp import PerpEndpoints
from marketlake_emulator.market import SyntheticMarket

__all__ = ["BybitEmulator", "serve"]

log = logging.getLogger(__name__)

_JSON: Final = "application/json; charset=utf-8"
_ADMIN: Final = "/_emulator"


class BybitEmulator:
    """The emulator server. Start it with ``async with`` or :meth:`start`/:meth:`stop`.

    Args:
        market: The market to serve; built with :meth:`SyntheticMarket.generate` from
            ``symbols``/``seed`` when None.
        symbols: Linear symbols to generate (a count or a list) when ``market`` is None.
        seed: Seed of the market and of the random faults.
        start_ms: Market time at start (default: the real time now).
        speed: Market milliseconds per real millisecond (0 freezes market time).
        faults: Initial fault configuration (default: none).
        host: Interface to bind (127.0.0.1: never expose it by accident).
        port: TCP port; 0 picks a free one (see :attr:`url` after start).
        ws_faults: Initial WebSocket behaviour and faults (see :attr:`ws`).
    """

    def __init__(
        self,
        market: SyntheticMarket | None = None,
        *,
        symbols: int | Sequence[str] = 10,
        seed: int = 0,
        start_ms: int | None = None,
        speed: float = 1.0,
        faults: FaultConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        ws_faults: WsFaultConfig | None = None,
    ) -> None:
        self.market = market if market is not None else SyntheticMarket.generate(seed, symbols)
        self.control = EmulatorControl(faults or FaultConfig(), EmulatorClock(start_ms, speed), seed)
        self.ws = EmulatorWs(self.market, self.control.clock, ws_faults)
        self.archive = EmulatorArchive(self.market, self.control)
        self.derivatives = DerivativesModel(self.market)
        self.endpoints = MarketEndpoints(self.market, self.derivatives)
        self.perp_endpoints = PerpEndpoints(self.market, self.derivatives)
        self.host = host
        self.port = port
        self.app = self._build_app()
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (valid once started)."""
        return f"http://{self.host}:{self.port}"

    def ws_url(self, category: str = "linear") -> str:
        """Public WebSocket URL of ``category``, e.g. ``ws://127.0.0.1:54321/v5/public/linear``."""
        return f"ws://{self.host}:{self.port}{C.WS_PUBLIC_PATHS[category]}"

    @property
    def faults(self) -> FaultConfig:
        """The live fault configuration (same object as ``control.faults``)."""
        return self.control.faults

    @property
    def clock(self) -> EmulatorClock:
        """The market clock."""
        return self.control.clock

    async def start(self) -> None:
        """Bind and serve; afterwards :attr:`url` holds the real port."""
        if self._runner is not None:
            return
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        await site.start()
        server = site._server  # the bound asyncio server: the only place the real port is known
        if server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]
        self._runner = runner

    async def stop(self) -> None:
        """Stop serving and close every connection."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ app

    def _build_app(self) -> web.Application:
        app = web.Application()
        self._endpoints: dict[str, Callable[[Any, int], Answer]] = {
            **self.endpoints.routes(),
            **self.perp_endpoints.routes(),
        }
        for path in self._endpoints:
            app.router.add_get(path, self._serve)
        app.router.add_get(f"{_ADMIN}/state", self._admin_state)
        app.router.add_post(f"{_ADMIN}/faults", self._admin_faults)
        app.router.add_post(f"{_ADMIN}/schedule", self._admin_schedule)
        app.router.add_post(f"{_ADMIN}/clock", self._admin_clock)
        app.router.add_post(f"{_ADMIN}/ban", self._admin_ban)
        app.router.add_get(f"{_ADMIN}/requests", self._admin_requests)
        self.ws.install(app)
        self.archive.install(app)
        return app

    def _record(
        self,
        mono: float,
        wall: float,
        server_ms: int,
        request: web.Request,
        status: int,
        ret_code: int | None,
        fault: str | None,
    ) -> None:
        self.control.record(mono, wall, server_ms, request.path, dict(request.query), status, ret_code, fault)

    def _limit_headers(self, mono: float, server_ms: int) -> dict[str, str]:
        f, ctl = self.control.faults, self.control
        limit = f.api_limit or f.ip_limit or C.IP_LIMIT_PER_WINDOW
        used = ctl.api_window.count(mono, f.window_seconds)
        remaining = max(0, limit - used)
        wait = ctl.api_window.frees_in(mono, f.window_seconds, limit) if remaining == 0 else 0.0
        return {
            C.HEADER_LIMIT: str(limit),
            C.HEADER_LIMIT_STATUS: str(remaining),
            C.HEADER_LIMIT_RESET: str(server_ms + int(wait * 1000) + (1 if wait else 0)),
        }

    def _envelope(self, answer: Answer, server_ms: int) -> bytes:
        return msgspec.json.encode(
            {
                "retCode": int(answer.ret_code),
                "retMsg": answer.ret_msg,
                "result": answer.result,
                "retExtInfo": {},
                "time": server_ms,
            }
        )

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        ctl, f = self.control, self.control.faults
        mono, wall = time.monotonic(), time.time_ns() / 1e6
        arrival_ms = ctl.clock.now_ms()

        def reply(
            status: int,
            body: bytes,
            ret_code: int | None,
            fault: str | None,
            headers: dict[str, str] | None = None,
            content_type: str = _JSON,
        ) -> web.Response:
            self._record(mono, wall, arrival_ms, request, status, ret_code, fault)
            resp = web.Response(status=status, body=body, headers=headers)
            resp.content_type = content_type.split(";")[0]
            if content_type == _JSON:
                resp.charset = "utf-8"
            return resp

        # The IP limit and bans come first: Bybit's gateway answers them without the envelope.
        ctl.ip_window.add(mono)
        if ctl.is_banned(mono):
            return reply(
                403, b"403 Forbidden: access too frequent", None, "banned", content_type="text/plain"
            )
        if f.ip_limit is not None and ctl.ip_window.count(mono, f.window_seconds) > f.ip_limit:
            ctl.ban()
            return reply(
                403, b"403 Forbidden: access too frequent", None, "limit-403", content_type="text/plain"
            )
        fault = ctl.draw_fault(request.path)
        if fault == "403":
            ctl.ban()
            return reply(403, b"403 Forbidden: access too frequent", None, fault, content_type="text/plain")
        if fault == "disconnect":
            self._record(mono, wall, arrival_ms, request, 0, None, fault)
            if request.transport is not None:
                request.transport.close()
            raise asyncio.CancelledError  # nothing is sent: the client sees the connection drop
        if fault == "slow":
            await asyncio.sleep(f.slow_seconds)
        if fault == "429":
            return reply(429, b"429 Too Many Requests", None, fault, content_type="text/plain")
        if fault == "5xx":
            body = f"<html><body><h1>{f.status_5xx} Service Unavailable</h1></body></html>".encode()
            return reply(f.status_5xx, body, None, fault, content_type="text/html")
        server_ms = ctl.clock.now_ms()
        if fault == "10016":
            answer = Answer(C.RetCode.SERVER_ERROR, C.MSG_SERVER_ERROR, {})
            return reply(
                200,
                self._envelope(answer, server_ms),
                answer.ret_code,
                fault,
                self._limit_headers(mono, server_ms),
            )
        over = f.api_limit is not None and ctl.api_window.count(mono, f.window_seconds) >= f.api_limit
        if fault == "10006" or over:
            answer = Answer(C.RetCode.TOO_MANY_VISITS, C.MSG_TOO_MANY_VISITS, {})
            headers = self._limit_headers(mono, server_ms)
            if fault == "10006" and not over:
                # A forced 10006 still says when to come back: one window from now at most.
                headers[C.HEADER_LIMIT_STATUS] = "0"
                headers[C.HEADER_LIMIT_RESET] = str(server_ms + int(f.window_seconds * 1000))
            return reply(
                200, self._envelope(answer, server_ms), answer.ret_code, fault or "limit-10006", headers
            )
        ctl.api_window.add(mono)
        try:
            answer = self._endpoints[request.path](request.query, server_ms)
        except ParamError as exc:
            answer = params_error(str(exc))
        body = self._envelope(answer, server_ms)
        if fault == "truncated":
            body = body[: max(1, len(body) // 2)]
        return reply(200, body, answer.ret_code, fault, self._limit_headers(mono, server_ms))

    # ------------------------------------------------------------------ admin routes

    async def _admin_state(self, request: web.Request) -> web.Response:
        f = self.control.faults
        state = {
            "time_ms": self.control.clock.now_ms(),
            "speed": self.control.clock.speed,
            "faults": {x.name: getattr(f, x.name) for x in fields(FaultConfig) if x.name != "paths"},
            "paths": sorted(f.paths) if f.paths is not None else None,
            "scheduled": self.control.scheduled,
            "banned_seconds": self.control.ban_remaining_seconds,
            "requests": len(self.control.log),
            "max_requests_in_window": self.control.log.max_in_window(f.window_seconds),
        }
        return web.json_response(state)

    async def _read_json(self, request: web.Request) -> dict[str, Any]:
        return await read_admin_json(request)

    async def _admin_faults(self, request: web.Request) -> web.Response:
        data = await self._read_json(request)
        try:
            self.control.configure(**data)
        except (TypeError, ValueError) as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        return await self._admin_state(request)

    async def _admin_schedule(self, request: web.Request) -> web.Response:
        data = await self._read_json(request)
        kinds = data.get("faults")
        if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
            raise web.HTTPBadRequest(text='expected {"faults": ["429", ...]}')
        try:
            self.control.schedule(*kinds)
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        return await self._admin_state(request)

    async def _admin_clock(self, request: web.Request) -> web.Response:
        data = await self._read_json(request)
        t, speed = data.get("time_ms"), data.get("speed")
        if (t is not None and not isinstance(t, int)) or (
            speed is not None and not isinstance(speed, (int, float))
        ):
            raise web.HTTPBadRequest(text='expected {"time_ms": int, "speed": number}')
        try:
            self.control.set_clock(time_ms=t, speed=speed)
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        return await self._admin_state(request)

    async def _admin_ban(self, request: web.Request) -> web.Response:
        data = await self._read_json(request)
        seconds = data.get("seconds")
        if seconds is not None and (not isinstance(seconds, (int, float)) or seconds < 0):
            raise web.HTTPBadRequest(text='expected {"seconds": number >= 0} (0 lifts the ban)')
        if seconds == 0:
            self.control.unban()
        else:
            self.control.ban(seconds)
        return await self._admin_state(request)

    async def _admin_requests(self, request: web.Request) -> web.Response:
        rows = [
            {
                "wall_ms": r.wall_ms,
                "server_ms": r.server_ms,
                "path": r.path,
                "params": r.params,
                "status": r.status,
                "ret_code": r.ret_code,
                "fault": r.fault,
            }
            for r in self.control.log.records
        ]
        return web.Response(body=msgspec.json.encode(rows), content_type="application/json")


def serve(
    host: str = "127.0.0.1",
    port: int = 8765,
    symbols: int | Sequence[str] = 10,
    seed: int = 0,
    speed: float = 1.0,
    *,
    start_ms: int | None = None,
    faults: FaultConfig | None = None,
    on_ready: Callable[[str], None] | None = None,
    market: SyntheticMarket | None = None,
) -> None:
    """Serve the emulator until interrupted (Ctrl-C / SIGTERM); for ``marketlake serve``.

    Args:
        host: Interface to bind.
        port: TCP port (0: a free one, reported through ``on_ready``).
        symbols: Linear symbols: a count or a list.
        seed: Market seed.
        speed: Market-time speed-up.
        start_ms: Market time at start (default: now).
        faults: Initial faults.
        on_ready: Called with the base URL once the server listens.
        market: The market to serve instead of a generated one (e.g. a lake replay).

    Raises:
        ConfigError: it cannot listen on ``host:port``.
    """

    async def main() -> None:
        emu = BybitEmulator(
            market, symbols=symbols, seed=seed, start_ms=start_ms, speed=speed, faults=faults, host=host, port=port
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, stop.set)
        try:
            await emu.start()
        except OSError as exc:  # a port in use, an address not of this machine: bad settings
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        try:
            log.info("bybit emulator listening on %s", emu.url)
            if on_ready is not None:
                on_ready(emu.url)
            await stop.wait()
        finally:
            await emu.stop()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
