"""The emulator's REST market endpoints: kline, instruments-info, recent-trade, time, tickers.

Each is a pure function of the query and the market time (``now_ms``) returning an
:class:`~marketlake_emulator.answers.Answer`; the server wraps it in the envelope, applies the
faults and the limits. Shapes follow the recorded payloads in ``../shared/fixtures/bybit`` and
Bybit's documented example responses.
"""

from __future__ import annotations

import time
import urllib.parse
from typing import Any

import msgspec

from marketlake.core.timeframes import DAY_MS, MINUTE_MS, parse_timeframe
from marketlake.exchanges.bybit import constants as C
from marketlake_emulator.answers import Answer, cursor_value, int_param, params_error
from marketlake_emulator.derivatives import DerivativesModel
from marketlake_emulator.items import Snapshot, derivative_item, spot_item, ticker_item
from marketlake_emulator.market import InstrumentSpec, SyntheticMarket
from marketlake_emulator.market_types import concat_candles

__all__ = ["PATH_TICKERS", "MarketEndpoints"]

#: Not in the client's constants: marketlake itself never asks for tickers.
PATH_TICKERS = "/v5/market/tickers"
_ONE_MINUTE = parse_timeframe("1")


class MarketEndpoints:
    """The market endpoints over one market.

    Args:
        market: The market served.
        derivatives: Its premium index, funding and open interest.
    """

    def __init__(self, market: SyntheticMarket, derivatives: DerivativesModel) -> None:
        self.market = market
        self.derivatives = derivatives
        self._ids: dict[tuple[str, str], int] = {}

    def routes(self) -> dict[str, Any]:
        """Path -> handler ``(query, now_ms) -> Answer``."""
        return {
            C.PATH_KLINE: self.kline,
            C.PATH_INSTRUMENTS: self.instruments,
            C.PATH_RECENT_TRADE: self.recent_trade,
            C.PATH_SERVER_TIME: self.server_time,
            PATH_TICKERS: self.tickers,
        }

    def symbol_id(self, spec: InstrumentSpec) -> int:
        """``symbolId``: a stable number per (category, symbol), in listing order, from 1."""
        if not self._ids:
            for category in C.CATEGORIES:
                ordered = sorted(self.market.instruments(category), key=lambda s: (s.launch_ms, s.symbol))
                self._ids.update({(category, s.symbol): i for i, s in enumerate(ordered, 1)})
        return self._ids[(spec.category, spec.symbol)]

    def spec(self, category: str, symbol: str | None) -> InstrumentSpec | None:
        if not symbol or not self.market.has(symbol, category):
            return None
        return self.market.instrument(symbol, category)

    def kline(self, q: Any, now_ms: int) -> Answer:
        category = q.get("category") or "linear"
        if category not in C.KLINE_CATEGORIES:
            return params_error(C.MSG_ILLEGAL_CATEGORY)
        symbol = q.get("symbol")
        if not symbol:
            return params_error("params error: symbol is required")
        interval = q.get("interval")
        if not interval:
            return params_error("params error: interval is required")
        if interval not in C.INTERVALS:
            return params_error(f"params error: interval invalid, use one of {','.join(C.INTERVALS)}")
        start = int_param(q, "start", None)
        end = int_param(q, "end", None)
        limit = int_param(q, "limit", C.KLINE_LIMIT_DEFAULT, 1, C.KLINE_LIMIT_MAX)
        spec = self.spec(category, symbol)
        if spec is None:
            return params_error(C.MSG_NOT_SUPPORTED_SYMBOLS)
        assert limit is not None
        raw = self.market.select_klines(spec, parse_timeframe(interval), start, end, limit, now_ms)
        return Answer(
            0, C.MSG_OK, {"symbol": symbol, "category": category, "list": msgspec.Raw(raw.wire_json())}
        )

    def instruments(self, q: Any, now_ms: int) -> Answer:
        category = q.get("category")
        if not category:
            return params_error("params error: category is required")
        if category not in C.CATEGORIES:
            return params_error(C.MSG_ILLEGAL_CATEGORY)
        status = q.get("status") or None
        if status is not None and status not in C.INSTRUMENT_STATUSES:
            return params_error(
                f"params error: status invalid, use one of {','.join(C.INSTRUMENT_STATUSES)}"
            )
        specs = self.market.instruments(category)
        wanted = status or "Trading"
        specs = [s for s in specs if s.status(now_ms) == wanted]
        if q.get("symbol"):
            specs = [s for s in specs if s.symbol == q["symbol"]]
        if q.get("baseCoin") and category != "spot":
            specs = [s for s in specs if s.base_coin == q["baseCoin"]]
        if category == "spot":
            # Spot has no pagination: limit/cursor are ignored and nextPageCursor is absent.
            items = [spot_item(s, now_ms, self.symbol_id(s)) for s in specs]
            return Answer(0, C.MSG_OK, {"category": "spot", "list": items})
        limit = int_param(q, "limit", C.INSTRUMENTS_LIMIT_DEFAULT, 1, C.INSTRUMENTS_LIMIT_MAX)
        assert limit is not None
        cursor = q.get("cursor")
        if cursor:
            last = cursor_value(cursor, "last")
            specs = [s for s in specs if s.symbol > last]
        page, rest = specs[:limit], specs[limit:]
        next_cursor = (
            urllib.parse.quote(f"first={page[0].symbol}&last={page[-1].symbol}", safe="")
            if rest and page
            else ""
        )
        return Answer(
            0,
            C.MSG_OK,
            {
                "category": category,
                "list": [
                    derivative_item(s, now_ms, self.symbol_id(s), self.derivatives.interval_minutes(s, now_ms))
                    for s in page
                ],
                "nextPageCursor": next_cursor,
            },
        )

    def recent_trade(self, q: Any, now_ms: int) -> Answer:
        category = q.get("category")
        if not category:
            return params_error("params error: category is required")
        if category not in C.TRADE_LIMITS or category == "option":
            return params_error(C.MSG_ILLEGAL_CATEGORY)
        symbol = q.get("symbol")
        if not symbol:
            return params_error("params error: symbol is required")
        default, most = C.TRADE_LIMITS[category]
        limit = int_param(q, "limit", default, 1, most)
        assert limit is not None
        spec = self.spec(category, symbol)
        if spec is None:
            return params_error(C.MSG_NOT_SUPPORTED_SYMBOLS)
        trades = self.market.recent_trades(spec, now_ms, limit)
        return Answer(0, C.MSG_OK, {"category": category, "list": trades})

    def server_time(self, q: Any, now_ms: int) -> Answer:
        nano = now_ms * 1_000_000 + int(time.time_ns() % 1_000_000)
        return Answer(0, C.MSG_OK, {"timeSecond": str(nano // 1_000_000_000), "timeNano": str(nano)})

    def tickers(self, q: Any, now_ms: int) -> Answer:
        """``/v5/market/tickers``: one symbol or every trading one of a category."""
        category = q.get("category")
        if not category:
            return params_error("params error: category is required")
        if category not in C.KLINE_CATEGORIES:
            return params_error(C.MSG_ILLEGAL_CATEGORY)
        symbol = q.get("symbol")
        if symbol:
            spec = self.spec(category, symbol)
            if spec is None:
                return params_error(C.MSG_NOT_SUPPORTED_SYMBOLS)
            specs = [spec]
        else:
            specs = [s for s in self.market.instruments(category) if s.status(now_ms) == "Trading"]
        items = [ticker_item(s, self._snapshot(s, now_ms), self.derivatives, now_ms) for s in specs]
        return Answer(0, C.MSG_OK, {"category": category, "list": items})

    def _snapshot(self, spec: InstrumentSpec, now_ms: int) -> Snapshot:
        forming_open = (now_ms // MINUTE_MS) * MINUTE_MS
        closed = self.market.raw_candles(spec, _ONE_MINUTE, now_ms - DAY_MS, forming_open - 1)
        forming = self.market.forming_candle(spec, _ONE_MINUTE, now_ms)
        return Snapshot(concat_candles(spec, [closed, forming]), now_ms - 3_600_000)
