"""Slow, obviously-right twins of the numba kernels, in plain Python.

They exist to be compared with the kernels (``tests/property``) and are written for clarity, not
speed: Python ints, lists, dicts and :mod:`datetime` calendar arithmetic, no numpy, no shared code
with the kernels beyond the definition of a timeframe. Each states the semantics it implements;
the kernels must give the same answers (float sums may differ only in rounding where a kernel
documents a different summation order; today none does).

Rows are dicts with the candle column names; ``None`` is a null.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from typing import Any

from marketlake.core.timeframes import Timeframe

__all__ = [
    "ref_bucket_open",
    "ref_candles_from_trades",
    "ref_check",
    "ref_fill",
    "ref_next_open",
    "ref_resample",
]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MS = dt.timedelta(milliseconds=1)

Row = dict[str, Any]


def _to_dt(ms: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(milliseconds=ms)


def _to_ms(t: dt.datetime) -> int:
    return (t - _EPOCH) // _MS


def ref_bucket_open(ms: int, tf: Timeframe) -> int:
    """Open (epoch ms) of the ``tf`` bucket holding ``ms``, by calendar arithmetic for D/W/M."""
    t = _to_dt(ms)
    midnight = t.replace(hour=0, minute=0, second=0, microsecond=0)
    if tf.name == "M":
        return _to_ms(midnight.replace(day=1))
    if tf.name == "W":
        return _to_ms(midnight - dt.timedelta(days=t.weekday()))  # Monday 00:00 UTC
    if tf.name == "D":
        return _to_ms(midnight)
    return (ms // tf.duration_ms) * tf.duration_ms  # intraday: multiples of the length from epoch


def ref_next_open(open_ms: int, tf: Timeframe) -> int:
    """Open of the bucket after the one opening at ``open_ms``."""
    if tf.name == "M":
        t = _to_dt(open_ms)
        year, month = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
        return _to_ms(t.replace(year=year, month=month))
    return open_ms + tf.duration_ms


def _hi(values: list[float]) -> float:
    return math.nan if any(math.isnan(x) for x in values) else max(values)


def _lo(values: list[float]) -> float:
    return math.nan if any(math.isnan(x) for x in values) else min(values)


def ref_candles_from_trades(
    ts: list[int],
    price: list[float],
    size: list[float],
    side: list[str] | None,
    tf: Timeframe,
    *,
    units_per_ms: int = 1,
) -> list[Row]:
    """Candles from trades.

    Trades are ordered by (ts, input position) (Python's sort is stable). Per bucket: open =
    first price, close = last price, high/low = max/min price (NaN when any price is NaN),
    volume = Σ size, turnover = Σ price·size, trades = count, buy_volume = Σ size·[side is Buy]
    (None without sides), each sum taken left to right from 0.0.
    """
    order = sorted(range(len(ts)), key=lambda i: ts[i])
    buckets: dict[int, list[int]] = {}
    for i in order:
        buckets.setdefault(ref_bucket_open(ts[i] // units_per_ms, tf), []).append(i)
    out: list[Row] = []
    for b, rows in buckets.items():
        prices = [price[i] for i in rows]
        volume = turnover = buy = 0.0
        for i in rows:
            volume += size[i]
            turnover += price[i] * size[i]
            if side is not None:
                buy += size[i] * (1.0 if side[i].lower() == "buy" else 0.0)
        out.append(
            {
                "ts": b, "open": prices[0], "high": _hi(prices), "low": _lo(prices),
                "close": prices[-1], "volume": volume, "turnover": turnover,
                "trades": len(rows), "buy_volume": buy if side is not None else None,
            }
        )
    return out


def ref_fill(candles: list[Row], tf: Timeframe) -> list[Row]:
    """Insert flat candles (previous close, zero sums) into every empty bucket between rows."""
    out: list[Row] = []
    for row in candles:
        if out:
            b = ref_next_open(out[-1]["ts"], tf)
            while b < row["ts"]:
                last = out[-1]["close"]
                out.append(
                    {
                        "ts": b, "open": last, "high": last, "low": last, "close": last,
                        "volume": 0.0, "turnover": 0.0, "trades": 0,
                        "buy_volume": None if row["buy_volume"] is None else 0.0,
                    }
                )
                b = ref_next_open(b, tf)
        out.append(row)
    return out


def _sum_or_none(values: list[Any]) -> Any:
    if any(v is None for v in values):
        return None
    total = values[0] * 0  # 0 or 0.0, same type as the values
    for v in values:
        total += v
    return total


def ref_resample(candles: list[Row], tf: Timeframe) -> list[Row]:
    """Candles of ``tf`` from smaller candles (ts in epoch ms), in time order (stable).

    First open, max high, min low (NaN when any is NaN), last close; sums of volume, turnover,
    trades, buy_volume left to right, None when any input in the bucket is None. ``rows`` counts
    the input candles of the bucket.
    """
    order = sorted(range(len(candles)), key=lambda i: candles[i]["ts"])
    buckets: dict[int, list[Row]] = {}
    for i in order:
        buckets.setdefault(ref_bucket_open(candles[i]["ts"], tf), []).append(candles[i])
    out: list[Row] = []
    for b, rows in buckets.items():
        vol = 0.0
        for r in rows:
            vol += r["volume"]
        out.append(
            {
                "ts": b, "open": rows[0]["open"], "high": _hi([r["high"] for r in rows]),
                "low": _lo([r["low"] for r in rows]), "close": rows[-1]["close"], "volume": vol,
                "turnover": _sum_or_none([r.get("turnover") for r in rows]),
                "trades": _sum_or_none([r.get("trades") for r in rows]),
                "buy_volume": _sum_or_none([r.get("buy_volume") for r in rows]),
                "rows": len(rows),
            }
        )
    return out


def _finite(x: float | None) -> bool:
    return x is None or math.isfinite(x)


def ref_invalid_reasons(row: Row) -> set[str]:
    """Names (as in :data:`marketlake.core.integrity.INVALID_REASONS`) of what is wrong with a row."""
    o, h, lo, c, v = row["open"], row["high"], row["low"], row["close"], row["volume"]
    tv, tr = row.get("turnover"), row.get("trades")
    reasons = set()
    if not all(_finite(x) for x in (o, h, lo, c, v, tv)):
        reasons.add("nan_or_inf")
    if any(x <= 0 for x in (o, h, lo, c)):
        reasons.add("price_not_positive")
    if h < max(o, c):  # NaN compares false, as in the kernel: a NaN row is nan_or_inf only
        reasons.add("high_below_open_or_close")
    if lo > min(o, c):
        reasons.add("low_above_open_or_close")
    if h < lo:
        reasons.add("high_below_low")
    if v < 0:
        reasons.add("negative_volume")
    if tv is not None and tv < 0:
        reasons.add("negative_turnover")
    if tr is not None and tr < 0:
        reasons.add("negative_trades")
    return reasons


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def ref_check(candles: list[Row], tf: Timeframe) -> dict[str, Any]:
    """Every fault of a candle series (ts in epoch ms), by row position in the input.

    Returns:
        ``invalid``: {row: set of reasons}; ``misaligned``: [rows]; ``out_of_order``: [rows
        with ts < the previous row's]; ``duplicates``: {row: (first row with that ts, values
        differ)}; ``gaps``: [(row after, ts before, ts after, missing candles)], where gaps lie
        between consecutive distinct timestamps in time order, ``row after`` is the earliest row
        with the later ts, and missing candles are bucket opens strictly between their buckets.
    """
    ts = [r["ts"] for r in candles]
    invalid = {i: rs for i, r in enumerate(candles) if (rs := ref_invalid_reasons(r))}
    misaligned = [i for i, t in enumerate(ts) if ref_bucket_open(t, tf) != t]
    out_of_order = [i for i in range(1, len(ts)) if ts[i] < ts[i - 1]]
    first_row: dict[int, int] = {}
    duplicates: dict[int, tuple[int, bool]] = {}
    cols = ("open", "high", "low", "close", "volume", "turnover", "trades")
    for i, t in enumerate(ts):
        if t in first_row:
            j = first_row[t]
            differs = not all(_same(candles[i].get(k), candles[j].get(k)) for k in cols)
            duplicates[i] = (j, differs)
        else:
            first_row[t] = i
    gaps = []
    distinct = sorted(first_row)
    for a, b in itertools.pairwise(distinct):
        ba, bb = ref_bucket_open(a, tf), ref_bucket_open(b, tf)
        missing = 0
        x = ref_next_open(ba, tf)
        while x < bb:
            missing += 1
            x = ref_next_open(x, tf)
        if missing:
            gaps.append((first_row[b], a, b, missing))
    return {
        "invalid": invalid, "misaligned": misaligned, "out_of_order": out_of_order,
        "duplicates": duplicates, "gaps": gaps,
    }
