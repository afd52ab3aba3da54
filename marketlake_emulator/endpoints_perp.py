"""The emulator's perpetual-futures endpoints: funding history, mark / index / premium-index price
klines and open interest, over :class:`~marketlake_emulator.derivatives.DerivativesModel`.

Shapes are Bybit's documented example responses (bybit-exchange/docs ``docs/v5/market/``
``history-fund-rate.mdx``, ``mark-kline.mdx``, ``open-interest.mdx``) and the recorded open-interest
payload (``ccxt_mainnet_rest_open_interest_linear_BTCUSDT_with_cursor.json``):

* funding history: newest first, at most 200 rows; ``startTime`` alone is an error, ``endTime``
  alone (or neither) gives the 200 rows up to it (or now);
* price klines: 5 strings a row (no volume), newest first, paged like ``/v5/market/kline``
  (the candle containing an unaligned ``start`` with an ``end`` included); mark and index values
  are written like kline prices (trimmed), the premium index with 6 decimals (``"-0.000480"``);
  ``limit`` up to 1000 as for klines (the mark-kline page of the docs says 200; the client asks
  for up to 1000 and Bybit's kline family shares the limit);
* open interest: newest first, ``limit`` 1..200 (default 50), ``nextPageCursor`` of the recorded
  shape ``lastid%3D<n>%26lasttime%3D<seconds>`` while older rows remain, values with 8 decimals.
"""

from __future__ import annotations

import functools
import urllib.parse
from collections.abc import Callable
from typing import Any, Final

import numpy as np

from marketlake.core.timeframes import DAY_MS, Timeframe, parse_timeframe
from marketlake.exchanges.bybit import constants as C
from marketlake_emulator.answers import Answer, cursor_value, int_param, params_error
from marketlake_emulator.derivatives import RATE_SCALE, DerivativesModel, PriceCandles, oi_text
from marketlake_emulator.market import InstrumentSpec, SyntheticMarket
from marketlake_emulator.market_types import format_decimal, format_fixed

__all__ = ["PerpEndpoints"]

_PRICE_LIMIT_MAX: Final = C.KLINE_LIMIT_MAX


class PerpEndpoints:
    """Funding, price-kline and open-interest endpoints over one market.

    Args:
        market: The market served.
        derivatives: Its premium index, funding and open interest.
    """

    def __init__(self, market: SyntheticMarket, derivatives: DerivativesModel) -> None:
        self.market = market
        self.derivatives = derivatives

    def routes(self) -> dict[str, Callable[[Any, int], Answer]]:
        """Path -> handler ``(query, now_ms) -> Answer``."""
        out: dict[str, Callable[[Any, int], Answer]] = {
            C.PATH_FUNDING_HISTORY: self.funding_history,
            C.PATH_OPEN_INTEREST: self.open_interest,
        }
        for kind, path in C.PATH_PRICE_KLINES.items():
            out[path] = functools.partial(self.price_kline, kind)
        return out

    def _spec(self, q: Any, categories: tuple[str, ...]) -> InstrumentSpec | Answer:
        category = q.get("category")
        if not category:
            return params_error("params error: category is required")
        if category not in categories:
            return params_error(C.MSG_ILLEGAL_CATEGORY)
        symbol = q.get("symbol")
        if not symbol:
            return params_error("params error: symbol is required")
        if not self.market.has(symbol, category):
            return params_error(C.MSG_NOT_SUPPORTED_SYMBOLS)
        return self.market.instrument(symbol, category)

    # ------------------------------------------------------------------ funding

    def funding_history(self, q: Any, now_ms: int) -> Answer:
        """``/v5/market/funding/history``."""
        spec = self._spec(q, C.FUNDING_CATEGORIES)
        if isinstance(spec, Answer):
            return spec
        start = int_param(q, "startTime", None)
        end = int_param(q, "endTime", None)
        limit = int_param(q, "limit", C.FUNDING_LIMIT_MAX, 1, C.FUNDING_LIMIT_MAX)
        assert limit is not None
        if start is not None and end is None:
            # Documented ("Passing startTime only, it returns error"); the wording is ours.
            return params_error("params error: endTime is required with startTime")
        hi = now_ms if end is None else min(end, now_ms)
        lo = spec.launch_ms if start is None else start
        model = self.derivatives
        times = model.settlements(spec, lo, hi)[::-1][:limit] if lo <= hi else []
        rows = [
            {
                "symbol": spec.symbol,
                "fundingRate": format_decimal(model.funding_rate(spec, t), RATE_SCALE),
                "fundingRateTimestamp": str(t),
            }
            for t in times
        ]
        return Answer(0, C.MSG_OK, {"category": spec.category, "list": rows})

    # ------------------------------------------------------------------ price klines

    def price_kline(self, kind: str, q: Any, now_ms: int) -> Answer:
        """``/v5/market/{mark,index,premium-index}-price-kline``."""
        spec = self._spec(q, C.PRICE_KLINE_CATEGORIES[kind])
        if isinstance(spec, Answer):
            return spec
        interval = q.get("interval")
        if not interval:
            return params_error("params error: interval is required")
        if interval not in C.INTERVALS:
            return params_error(f"params error: interval invalid, use one of {','.join(C.INTERVALS)}")
        start = int_param(q, "start", None)
        end = int_param(q, "end", None)
        limit = int_param(q, "limit", C.KLINE_LIMIT_DEFAULT, 1, _PRICE_LIMIT_MAX)
        assert limit is not None
        tf = parse_timeframe(interval)
        candles = self.select(spec, kind, tf, start, end, limit, now_ms)
        if kind == "premium":
            fmt: Callable[[int], str] = functools.partial(format_fixed, scale=RATE_SCALE)
        else:
            fmt = functools.partial(format_decimal, scale=candles.scale)
        rows = [
            [str(int(candles.ts[i])), *(fmt(int(col[i])) for col in (candles.open, candles.high, candles.low, candles.close))]
            for i in range(len(candles) - 1, -1, -1)
        ]
        return Answer(0, C.MSG_OK, {"symbol": spec.symbol, "category": spec.category, "list": rows})

    def select(
        self,
        spec: InstrumentSpec,
        kind: str,
        tf: Timeframe,
        start_ms: int | None,
        end_ms: int | None,
        limit: int,
        now_ms: int,
    ) -> PriceCandles:
        """What a price-kline request answers, ascending (the handler reverses it): candles
        opening in the range and by ``now_ms`` (the forming one included), ``limit`` of them,
        anchored as ``/v5/market/kline`` anchors."""
        empty = PriceCandles(*(np.empty(0, dtype=np.int64) for _ in range(5)), spec.price_scale)
        if start_ms is not None and end_ms is not None and start_ms > end_ms:
            return empty
        hi = now_ms if end_ms is None else min(end_ms, now_ms)
        if spec.delist_ms is not None:
            hi = min(hi, spec.delist_ms - 1)
        listed = tf.floor(spec.launch_ms)
        if start_ms is None:
            lo = listed
        elif end_ms is None:
            lo = max(start_ms, listed)
        else:
            lo = max(tf.floor(start_ms), listed)
        if hi < lo:
            return empty
        # Only as many buckets as the answer can hold: a range from the listing costs no more.
        span = max(tf.duration_ms, 31 * DAY_MS if tf.kind == "month" else 0) * (limit + 1)
        if start_ms is not None and end_ms is None:
            hi = min(hi, lo + span)
        else:
            lo = max(lo, hi - span)
        got = self.derivatives.price_candles(spec, kind, tf, lo, hi, now_ms=now_ms)
        keep = slice(0, limit) if start_ms is not None and end_ms is None else slice(max(0, len(got) - limit), len(got))
        return PriceCandles(got.ts[keep], got.open[keep], got.high[keep], got.low[keep], got.close[keep], got.scale)

    # ------------------------------------------------------------------ open interest

    def open_interest(self, q: Any, now_ms: int) -> Answer:
        """``/v5/market/open-interest``."""
        spec = self._spec(q, C.OI_CATEGORIES)
        if isinstance(spec, Answer):
            return spec
        interval = q.get("intervalTime")
        if interval not in C.OI_INTERVALS:
            return params_error("params error: intervalTime is invalid")
        step = C.OI_INTERVALS[interval]
        start = int_param(q, "startTime", None)
        end = int_param(q, "endTime", None)
        limit = int_param(q, "limit", C.OI_LIMIT_DEFAULT, 1, C.OI_LIMIT_MAX)
        assert limit is not None
        hi = now_ms if end is None else min(end, now_ms)
        if spec.delist_ms is not None:  # the newest rows of a delisted symbol: before delivery
            hi = min(hi, spec.delist_ms - 1)
        cursor = q.get("cursor")
        if cursor:
            seconds = cursor_value(cursor, "lasttime")
            if not (seconds.isascii() and seconds.isdigit()):
                return params_error("params error: cursor invalid")
            hi = min(hi, int(seconds) * 1000 - 1)  # the next page: strictly older rows
        lo = spec.launch_ms if start is None else start
        first = max(lo, hi - step * limit)  # the newest ``limit`` grid points at most
        points = self.derivatives.oi_points(spec, step, first, hi)[::-1][:limit]
        values = self.derivatives.open_interest(spec, points)
        rows = [
            {"openInterest": oi_text(int(v), spec.qty_scale), "timestamp": str(int(t))}
            for t, v in zip(points, values, strict=True)
        ]
        next_cursor = ""
        oldest_point = -(-max(lo, spec.launch_ms) // step) * step  # the first grid point in range
        if len(points) == limit and int(points[-1]) - step >= oldest_point:
            last = int(points[-1])
            ident = (last - spec.launch_ms) // step + 1
            next_cursor = urllib.parse.quote(f"lastid={ident}&lasttime={last // 1000}", safe="")
        return Answer(
            0,
            C.MSG_OK,
            {"symbol": spec.symbol, "category": spec.category, "list": rows, "nextPageCursor": next_cursor},
        )
