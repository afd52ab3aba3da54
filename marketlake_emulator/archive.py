"""The emulator's stand-in for ``public.bybit.com``: daily trade archives of its market.

Routes (on the emulator's own port, so one base URL serves REST, WebSocket and archives):

* ``GET /{trading|spot}/{SYMBOL}/`` — an HTML index linking one file per completed UTC day from
  the listing day to the day before the market clock's today (or the delisting day);
* ``GET /{trading|spot}/{SYMBOL}/{file}`` — that day's trades as a gzip'd CSV in the real
  formats (:mod:`~marketlake.exchanges.bybit.parse_archive`): the same trades, ids and times the
  REST ``recent-trade`` endpoint and the WebSocket serve. ``trading/`` files run newest first
  with times in seconds and trailing zeros trimmed (``1704067200.5``), as some real files do;
  spot files are ascending with per-file ids 1..N.

The fault knobs apply as to REST (``paths`` may name ``/archive``): a drop, 429, 5xx, a slow
answer, or a body cut in half (a gzip stream that does not verify). The archive host has no
envelope and no bans, so 403/10006/10016 draws answer 503.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import html
import time
from typing import TYPE_CHECKING, Final

from aiohttp import web

from marketlake.exchanges.bybit import constants as C
from marketlake_emulator.market_types import InstrumentSpec
from marketlake.exchanges.bybit.parse_archive import archive_file_name

if TYPE_CHECKING:
    from marketlake_emulator.control import EmulatorControl
    from marketlake_emulator.market import SyntheticMarket

__all__ = ["ARCHIVE_FAULT_PATH", "EmulatorArchive"]

#: The path name the fault knobs use for every archive request.
ARCHIVE_FAULT_PATH: Final = "/archive"
_DAY_MS: Final = 86_400_000
_CACHE_FILES: Final = 64


class EmulatorArchive:
    """Serves the market's trades as Bybit's daily archive files.

    Args:
        market: The market whose trades it serves (the one the REST side serves).
        control: The REST side's clock, fault knobs and request log (shared, so one fault
            schedule and one log cover every route).
    """

    def __init__(self, market: SyntheticMarket, control: EmulatorControl) -> None:
        self._market = market
        self._control = control
        self._files: dict[tuple[str, str, dt.date], bytes] = {}

    def install(self, app: web.Application) -> None:
        """Add the archive routes to ``app``."""
        for directory in sorted(set(C.ARCHIVE_DIRS.values())):
            app.router.add_get(f"/{directory}/{{symbol}}/", self._index(directory))
            app.router.add_get(f"/{directory}/{{symbol}}/{{name}}", self._file(directory))

    # ------------------------------------------------------------------ what exists

    def _spec(self, directory: str, symbol: str) -> InstrumentSpec | None:
        market = self._market
        for category, d in C.ARCHIVE_DIRS.items():
            if d == directory and market.has(symbol, category):
                return market.instrument(symbol, category)
        return None

    def published_days(self, spec: InstrumentSpec) -> list[dt.date]:
        """Completed UTC days from the listing day on (to the delisting day), by market clock."""
        today = self._control.clock.now_ms() // _DAY_MS
        first = spec.launch_ms // _DAY_MS
        last = today - 1
        if spec.delist_ms is not None:
            last = min(last, (spec.delist_ms - 1) // _DAY_MS)
        epoch = dt.date(1970, 1, 1)
        return [epoch + dt.timedelta(days=d) for d in range(first, last + 1)]

    def day_file(self, spec: InstrumentSpec, day: dt.date) -> bytes:
        """The gzip'd CSV of ``spec``'s trades on ``day`` (deterministic, cached)."""
        key = (spec.category, spec.symbol, day)
        if key not in self._files:
            start = (day - dt.date(1970, 1, 1)).days * _DAY_MS
            trades = self._market.trades_between(spec, start, start + _DAY_MS)
            text = _spot_csv(trades) if spec.category == "spot" else _trading_csv(spec, trades)
            if len(self._files) >= _CACHE_FILES:
                self._files.pop(next(iter(self._files)))
            self._files[key] = gzip.compress(text.encode(), compresslevel=1, mtime=0)
        return self._files[key]

    # ------------------------------------------------------------------ handlers

    async def _faulted(self, request: web.Request) -> tuple[web.StreamResponse | None, str | None]:
        """Draw and apply a fault: the response to send instead (or None), and the fault."""
        fault = self._control.draw_fault(ARCHIVE_FAULT_PATH)
        if fault == "disconnect":
            self._log(request, 0, fault)
            if request.transport is not None:
                request.transport.close()
            raise asyncio.CancelledError
        if fault == "slow":
            await asyncio.sleep(self._control.faults.slow_seconds)
        if fault == "429":
            return self._reply(request, 429, b"429 Too Many Requests", "text/plain", fault), fault
        if fault in ("5xx", "403", "10006", "10016"):
            status = self._control.faults.status_5xx if fault == "5xx" else 503
            body = b"<html><body>Service Unavailable</body></html>"
            return self._reply(request, status, body, "text/html", fault), fault
        return None, fault

    def _index(self, directory: str):
        async def handler(request: web.Request) -> web.StreamResponse:
            early, fault = await self._faulted(request)
            if early is not None:
                return early
            symbol = request.match_info["symbol"]
            spec = self._spec(directory, symbol)
            if spec is None:
                return self._reply(request, 404, b"<html><body>404 Not Found</body></html>", "text/html", fault)
            names = [archive_file_name(symbol, spec.category, d) for d in self.published_days(spec)]
            rows = "\n".join(f'<li><a href="{html.escape(n)}">{html.escape(n)}</a></li>' for n in names)
            page = (
                f"<html><head><title>Index of /{directory}/{symbol}/</title></head><body>"
                f'<ul><li><a href="../">../</a></li>\n{rows}\n</ul></body></html>'
            )
            return self._reply(request, 200, page.encode(), "text/html", fault)

        return handler

    def _file(self, directory: str):
        async def handler(request: web.Request) -> web.StreamResponse:
            early, fault = await self._faulted(request)
            if early is not None:
                return early
            symbol, name = request.match_info["symbol"], request.match_info["name"]
            spec = self._spec(directory, symbol)
            day = None
            if spec is not None:
                day = next((d for d in self.published_days(spec) if archive_file_name(symbol, spec.category, d) == name), None)
            if spec is None or day is None:
                return self._reply(request, 404, b"<html><body>404 Not Found</body></html>", "text/html", fault)
            body = await asyncio.to_thread(self.day_file, spec, day)
            if fault == "truncated":
                body = body[: max(1, len(body) // 2)]
            return self._reply(request, 200, body, "application/gzip", fault)

        return handler

    def _reply(
        self, request: web.Request, status: int, body: bytes, content_type: str, fault: str | None = None
    ) -> web.Response:
        self._log(request, status, fault)
        resp = web.Response(status=status, body=body)
        resp.content_type = content_type
        return resp

    def _log(self, request: web.Request, status: int, fault: str | None) -> None:
        self._control.record(
            time.monotonic(),
            time.time_ns() / 1e6,
            self._control.clock.now_ms(),
            request.path,
            dict(request.query),
            status,
            None,
            fault,
        )


def _trimmed(price: object) -> str:
    """A REST trade price (padded to the price scale, ``"0.2270"``) as the archive files write it
    (``0.227``)."""
    text = str(price)
    return text.rstrip("0").rstrip(".") if "." in text else text


def _spot_csv(trades: list[dict[str, object]]) -> str:
    lines = ["id,timestamp,price,volume,side,rpi"]
    for i, t in enumerate(trades, 1):
        lines.append(f"{i},{t['time']},{_trimmed(t['price'])},{t['size']},{str(t['side']).lower()},0")
    return "\n".join(lines) + "\n"


def _trading_csv(spec: InstrumentSpec, trades: list[dict[str, object]]) -> str:
    lines = []
    prev_price, last_move = None, "Plus"
    for t in trades:
        price = float(t["price"])  # type: ignore[arg-type]
        size = float(t["size"])  # type: ignore[arg-type]
        if prev_price is not None and price != prev_price:
            last_move = "Plus" if price > prev_price else "Minus"
            tick = f"{last_move}Tick"
        else:
            tick = f"Zero{last_move}Tick" if prev_price is not None else "ZeroPlusTick"
        prev_price = price
        ms = int(t["time"])  # type: ignore[call-overload]
        seconds = f"{ms // 1000}.{ms % 1000:03d}".rstrip("0").rstrip(".")
        if spec.category == "inverse":
            home, foreign = size / price, size
        else:
            home, foreign = size, size * price
        lines.append(
            f"{seconds},{spec.symbol},{t['side']},{t['size']},{_trimmed(t['price'])},{tick},{t['execId']},"
            f"{foreign * 1e8:.7e},{home:.10g},{foreign:.10g},0"
        )
    header = "timestamp,symbol,side,size,price,tickDirection,trdMatchID,grossValue,homeNotional,foreignNotional,RPI"
    return "\n".join([header, *reversed(lines)]) + "\n"
