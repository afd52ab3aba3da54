"""Wire objects of instruments-info and tickers, shaped as Bybit's documented example responses
(``docs/v5/market/instrument.mdx`` and ``tickers.mdx`` of bybit-exchange/docs; the instrument
examples are the fixtures ``docs_rest_instruments_{linear,spot}_BTCUSDT.json``).

Number formats follow those examples: order-size limits at the quantity scale (``"1190.000"``),
prices at the price scale (``"16597.00"``), 24 h changes with 6 decimals (spot: 4), open-interest
value with 2.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from marketlake_emulator.derivatives import FUNDING_CAP, RATE_SCALE, DerivativesModel
from marketlake_emulator.market_types import InstrumentSpec, RawCandles, format_decimal, format_fixed, stable_hash

__all__ = ["Snapshot", "derivative_item", "spot_item", "ticker_item"]


def _risk() -> dict[str, str]:
    return {"priceLimitRatioX": "0.05", "priceLimitRatioY": "0.1"}


def _lots(spec: InstrumentSpec, lots: int) -> str:
    return format_fixed(lots * spec.lot_units, spec.qty_scale)


def derivative_item(s: InstrumentSpec, now_ms: int, symbol_id: int, funding_minutes: int) -> dict[str, Any]:
    """A linear/inverse instrument as instruments-info lists it."""
    contract = "InversePerpetual" if s.category == "inverse" else "LinearPerpetual"
    max_lots = 1_190_000  # BTCUSDT's documented 1190.000 at a 0.001 step
    cap = format_decimal(FUNDING_CAP, RATE_SCALE)
    return {
        "symbol": s.symbol,
        "symbolId": symbol_id,
        "contractType": contract,
        "status": s.status(now_ms),
        "baseCoin": s.base_coin,
        "quoteCoin": s.quote_coin,
        "launchTime": str(s.launch_ms),
        "deliveryTime": str(s.delist_ms or 0),
        "deliveryFeeRate": "",
        "priceScale": str(s.price_scale),
        "leverageFilter": {"minLeverage": "1", "maxLeverage": "50.00", "leverageStep": "0.01"},
        "priceFilter": {"minPrice": s.tick_size, "maxPrice": "9999999.00", "tickSize": s.tick_size},
        "lotSizeFilter": {
            "maxOrderQty": _lots(s, max_lots),
            "minOrderQty": s.qty_step,
            "qtyStep": s.qty_step,
            "postOnlyMaxOrderQty": _lots(s, max_lots),
            "maxMktOrderQty": _lots(s, 500_000),
            "minNotionalValue": "5",
        },
        "unifiedMarginTrade": True,
        "fundingInterval": funding_minutes,
        "settleCoin": s.base_coin if s.category == "inverse" else s.quote_coin,
        "copyTrading": "none",
        "upperFundingRate": cap,
        "lowerFundingRate": "-" + cap,
        "isPreListing": False,
        "preListingInfo": None,
        "riskParameters": _risk(),
        "symbolType": "",
    }


def spot_item(s: InstrumentSpec, now_ms: int, symbol_id: int) -> dict[str, Any]:
    """A spot instrument as instruments-info lists it (no launchTime, no cursor)."""
    # The documented example writes spot size limits without padding ("83", "41.5").
    max_qty = 10**6 * s.lot_units
    return {
        "symbolId": symbol_id,
        "symbol": s.symbol,
        "baseCoin": s.base_coin,
        "quoteCoin": s.quote_coin,
        "innovation": "0",
        "status": s.status(now_ms),
        "marginTrading": "none",
        "stTag": "0",
        "lotSizeFilter": {
            "basePrecision": s.qty_step,
            "quotePrecision": "0.0000001",
            "minOrderQty": s.qty_step,
            "maxOrderQty": format_decimal(max_qty, s.qty_scale),
            "minOrderAmt": "5",
            "maxOrderAmt": "8000000",
            "maxLimitOrderQty": format_decimal(max_qty, s.qty_scale),
            "maxMarketOrderQty": format_decimal(max_qty // 2, s.qty_scale),
            "postOnlyMaxLimitOrderSize": "60000",
        },
        "priceFilter": {"tickSize": s.tick_size},
        "riskParameters": _risk(),
        "symbolType": "",
    }


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The 24 h window a ticker describes: its 1-minute candles (closed ones plus the forming
    one), ascending; empty when nothing traded (an outage, before the listing)."""

    candles: RawCandles
    hour_ago_ms: int


def _change(last: int, prev: int, decimals: int) -> str:
    if prev <= 0:
        return "0"
    # Exact decimal rounding of last/prev - 1 to ``decimals`` places, half away from zero.
    num, den = (last - prev) * 10**decimals, prev
    q = (abs(num) * 2 + den) // (2 * den)
    return format_fixed(q if num >= 0 else -q, decimals)


def ticker_item(spec: InstrumentSpec, snap: Snapshot, model: DerivativesModel, now_ms: int) -> dict[str, Any]:
    """One ``/v5/market/tickers`` item of ``spec`` (linear/inverse or spot shape)."""
    c, ps = snap.candles, spec.price_scale
    if len(c):
        last, prev = int(c.close[-1]), int(c.open[0])
        after = [i for i, t in enumerate(c.ts) if int(t) >= snap.hour_ago_ms]
        prev1h = int(c.open[after[0]]) if after else last
        high, low = int(c.high.max()), int(c.low.min())
        volume, turnover = int(c.volume.sum()), int(c.turnover.sum())
    else:
        last = prev = prev1h = high = low = volume = turnover = 0
    rnd = random.Random(stable_hash(model.market.seed, spec.key, now_ms // 1000, "book"))
    bid, ask = last, last + spec.tick_units
    book = {
        "bid1Price": format_fixed(bid, ps),
        "bid1Size": format_decimal(rnd.randint(1, 500) * spec.lot_units, spec.qty_scale),
        "ask1Price": format_fixed(ask, ps),
        "ask1Size": format_decimal(rnd.randint(1, 500) * spec.lot_units, spec.qty_scale),
    }
    stats = {
        "lastPrice": format_fixed(last, ps),
        "prevPrice24h": format_fixed(prev, ps),
        "price24hPcnt": _change(last, prev, 4 if spec.category == "spot" else 6),
        "highPrice24h": format_fixed(high, ps),
        "lowPrice24h": format_fixed(low, ps),
        "turnover24h": format_decimal(turnover, spec.turnover_scale),
        "volume24h": format_decimal(volume, spec.qty_scale),
    }
    if spec.category == "spot":
        return {"symbol": spec.symbol, **book, **stats, "usdIndexPrice": format_fixed(last, ps)}
    prem = model.premium_minutes(spec, now_ms - 60_000, now_ms)
    p = int(prem.close[-1]) if len(prem) else 0
    index = (last * (2_000_000 - 2 * p) + 1_000_000) // 2_000_000
    mark = (last * (2_000_000 - p) + 1_000_000) // 2_000_000
    step = 300_000
    oi = int(model.open_interest(spec, [now_ms // step * step])[0])
    if spec.category == "inverse":  # contracts are USD: the value is in the base coin
        oi_value = oi * 10**ps * 100 // max(mark, 1) // 10**spec.qty_scale
    else:
        oi_value = oi * mark * 100 // 10 ** (ps + spec.qty_scale)
    settle = model.next_settlement(spec, now_ms)
    return {
        "symbol": spec.symbol,
        "lastPrice": stats["lastPrice"],
        "indexPrice": format_fixed(index, ps),
        "markPrice": format_fixed(mark, ps),
        "prevPrice24h": stats["prevPrice24h"],
        "price24hPcnt": stats["price24hPcnt"],
        "highPrice24h": stats["highPrice24h"],
        "lowPrice24h": stats["lowPrice24h"],
        "prevPrice1h": format_fixed(prev1h, ps),
        "openInterest": format_decimal(oi, spec.qty_scale),
        "openInterestValue": format_fixed(oi_value, 2),
        "turnover24h": stats["turnover24h"],
        "volume24h": stats["volume24h"],
        # The rate of the running interval so far (Bybit shows the predicted one).
        "fundingRate": format_decimal(model.funding_rate(spec, settle, upto_ms=now_ms), RATE_SCALE),
        "nextFundingTime": str(settle),
        "predictedDeliveryPrice": "",
        "basisRate": "",
        "deliveryFeeRate": "",
        "deliveryTime": str(spec.delist_ms or 0),
        "ask1Size": book["ask1Size"],
        "bid1Price": book["bid1Price"],
        "ask1Price": book["ask1Price"],
        "bid1Size": book["bid1Size"],
    }
