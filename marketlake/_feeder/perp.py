"""Funding and price candles (mark, index, premium index) for backtests, without lookahead.

The rules (``docs/research.md``, "A perpetual backtest's data"):

* a **funding rate is known at its settlement time**, not before: at time ``t`` the rate in force
  is the last one whose settlement time ``ts <= t``;
* a **price candle of any kind exists once closed**, like a trade candle: at ``t`` the usable
  mark candle is the last one with ``open + duration <= t``; its close is the mark price then.

:func:`join_funding` and :func:`join_price` put both on the rows of
:meth:`marketlake.DataFeeder.aligned` (keyed by each base candle's close time, as the other
timeframes are): backward as-of joins, exact matches allowed (a settlement or a candle close at the
very instant the base candle closes is known at that instant).
"""

from __future__ import annotations

from typing import Final

import numpy as np
import polars as pl

from marketlake._feeder.rules import close_time_expr
from marketlake.core.funding import MINUTE_MS, funding_gaps
from marketlake.core.integrity import format_ts
from marketlake.core.timeframes import Timeframe

__all__ = ["LONGEST_FUNDING_MS", "PRICE_KINDS", "funding_holes", "join_funding", "join_price", "price_suffixed"]

#: ``aligned`` keyword → dataset of the price candles.
PRICE_KINDS: Final = {"mark": "mark_candles", "index": "index_candles", "premium": "premium_candles"}
#: Bybit's longest funding interval (8 h): how far around a range funding is read to check it.
LONGEST_FUNDING_MS: Final = 480 * MINUTE_MS
_PRICE_COLUMNS: Final = ("ts", "open", "high", "low", "close")


def price_suffixed(column: str, kind: str) -> str:
    """Name of a price-candle column in an aligned frame: ``close_mark``, ``ts_index`` ..."""
    return f"{column}_{kind}"


def join_price(lf: pl.LazyFrame, kind: str, tf: Timeframe, candles: pl.LazyFrame) -> pl.LazyFrame:
    """Join onto ``lf`` (which has ``close_time``) the last ``kind`` candle of ``tf`` closed by
    each row's close time: columns ``ts_{kind}``, ``open_{kind}`` ... ``close_{kind}``."""
    right = candles.select(
        *(pl.col(c).alias(price_suffixed(c, kind)) for c in _PRICE_COLUMNS),
        close_time_expr(tf).alias("_close"),
    )
    return lf.join_asof(
        right, left_on="close_time", right_on="_close", strategy="backward",
        allow_exact_matches=True, check_sortedness=False,
    ).drop("_close")


def join_funding(lf: pl.LazyFrame, funding: pl.LazyFrame) -> pl.LazyFrame:
    """Join onto ``lf`` (``ts`` open and ``close_time``) the funding known at each row's close:
    ``funding_ts`` (settlement time of the rate in force), ``funding_rate``,
    ``funding_interval_minutes``, and ``funding_settled`` (a settlement fell within the row's
    candle, ``ts < funding_ts <= close_time``)."""
    right = funding.select(
        pl.col("ts").alias("funding_ts"),
        pl.col("rate").alias("funding_rate"),
        pl.col("interval_minutes").alias("funding_interval_minutes"),
    )
    out = lf.join_asof(
        right, left_on="close_time", right_on="funding_ts", strategy="backward",
        allow_exact_matches=True, check_sortedness=False,
    )
    settled = (pl.col("funding_ts") > pl.col("ts")) & (pl.col("funding_ts") <= pl.col("close_time"))
    return out.with_columns(settled.fill_null(False).alias("funding_settled"))


def funding_holes(funding: pl.DataFrame, lo: int, hi: int) -> list[str]:
    """Where stored settlements are missing in ``(lo, hi]``, as sentences (empty: complete).

    ``funding``: the series' rows from at least ``LONGEST_FUNDING_MS`` before ``lo`` to as long
    after ``hi``, sorted. Missing means: a gap at the interval in force
    (:func:`~marketlake.core.funding.funding_gaps`) with an expected settlement in the range; the
    series starting inside the range (the settlement before its first row would lie in it); or
    ending inside it (the successor of its last row would).
    """
    ts = funding.get_column("ts").dt.epoch("ms").to_numpy().astype(np.int64)
    step = funding.get_column("interval_minutes").cast(pl.Int64).to_numpy() * MINUTE_MS
    if ts.size == 0:
        return [f"no settlement stored between {format_ts(lo - LONGEST_FUNDING_MS)} and {format_ts(hi + LONGEST_FUNDING_MS)}"]
    out: list[str] = []
    gaps = funding_gaps(ts, step // MINUTE_MS)
    for before, after, missing in gaps.select(
        pl.col("before").dt.epoch("ms"), pl.col("after").dt.epoch("ms"), "missing"
    ).iter_rows():
        s = int(step[np.searchsorted(ts, after)])
        expected = [after - k * s for k in range(1, missing + 1)]
        inside = [e for e in expected if lo < e <= hi]
        if inside:
            out.append(f"{len(inside)} settlement(s) missing between {format_ts(before)} and {format_ts(after)}")
    if ts[0] > lo and lo < ts[0] - step[0] <= hi:
        out.append(f"stored from {format_ts(int(ts[0]))} only")
    last = int(np.searchsorted(ts, hi, "right")) - 1
    if last >= 0 and last == ts.size - 1 and ts[last] + step[last] <= hi:
        out.append(f"stored until {format_ts(int(ts[last]))} only")
    return out
