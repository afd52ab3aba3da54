"""Funding: interval history, gap checks and funding paid. Pure: arrays and frames in, out.

How the store and the rest of marketlake use this module:

* **ingest** (funding): Bybit's funding history has no interval column. Before writing a page,
  the ingest runs :func:`infer_funding_intervals` over the series' settlement times (stored plus
  new, so the inference sees whole runs) with the observations of the instrument history
  (:func:`marketlake.core.instruments.funding_observations`), and writes ``interval_minutes``.
  Re-running it over the whole series after new settlements may relabel the last rows of a
  series whose interval just changed (a lone new spacing inherits the older interval until a
  second one confirms it); the writer's replace path absorbs that.
* **check**: :func:`funding_gaps` (settlement missing at the interval in force; an interval change
  is not a gap) and, for open interest, :func:`grid_gaps` per interval.
* **views / research**: :func:`funding_interval_history` gives the interval history of a symbol;
  :func:`funding_payments` / :func:`funding_paid` price a backtest's position.

Interval inference (the rules :func:`infer_funding_intervals` applies, in order):

1. A run of at least ``min_run`` equal spacings between consecutive settlements is a regime: its
   rows get that spacing as their interval (Bybit settles on the grid of the interval in force).
2. An observation ``(t, minutes)`` (an instrument snapshot's ``fundingInterval`` at time ``t``)
   fixes the interval of the settlement whose period holds ``t`` (the first with ``ts >= t``); it
   wins over rule 1.
3. Every other row (a lone spacing: a missed settlement, or the step across an interval change)
   takes the interval of the nearest fixed row before it if its spacing fits in it, else of the
   nearest fixed row after it if it fits there, else the one before (then after). So a missed
   settlement (spacing k × I between runs of I) stays a gap, and the short or long step into a
   new regime is labelled with the regime it fits.
4. Rows with no fixed row anywhere take their own spacing when it is one of Bybit's intervals,
   else ``fallback_minutes``. The first row (no spacing before it) takes the nearest fixed value,
   else the second row's, else the fallback.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import polars as pl

from marketlake.core.kernels.gaps import spaced_gaps
from marketlake.errors import DataValidationError

__all__ = [
    "FUNDING_INTERVALS_MINUTES",
    "funding_gaps",
    "funding_interval_history",
    "funding_paid",
    "funding_payments",
    "grid_gaps",
    "infer_funding_intervals",
]

MINUTE_MS = 60_000
#: Funding intervals Bybit has used (minutes); what rule 4 accepts as a spacing on its own.
FUNDING_INTERVALS_MINUTES = (60, 120, 240, 480)


def _ms_array(ts: object, what: str) -> np.ndarray:
    """Epoch ms int64 from a sequence, numpy array, or polars Series (int or datetime)."""
    if isinstance(ts, pl.Series):
        if isinstance(ts.dtype, pl.Datetime):
            ts = ts.dt.epoch("ms")
        if ts.null_count():
            raise DataValidationError(f"{what}: times must not be null")
        return ts.cast(pl.Int64).to_numpy()
    arr = np.asarray(ts)
    if arr.dtype.kind == "M":
        return arr.astype("datetime64[ms]").astype(np.int64)
    if arr.size and arr.dtype.kind not in "iu":
        raise DataValidationError(f"{what}: times must be integers (epoch ms), got {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _strictly_ascending(ts: np.ndarray, what: str) -> None:
    if ts.size > 1:
        bad = np.diff(ts) <= 0
        if bad.any():
            i = int(np.argmax(bad)) + 1
            raise DataValidationError(
                f"{what}: times must be strictly ascending; row {i} ({ts[i]}) follows {ts[i - 1]}"
            )


def infer_funding_intervals(
    ts: Sequence[int] | np.ndarray | pl.Series,
    observed: Iterable[tuple[int, int]] = (),
    *,
    fallback_minutes: int = 480,
    min_run: int = 2,
) -> np.ndarray:
    """The funding interval in force at each settlement (the length of the period ending there).

    Args:
        ts: Settlement times, epoch ms (or datetimes), strictly ascending.
        observed: ``(time_ms, minutes)`` observations of ``fundingInterval`` (instrument
            snapshots), any order.
        fallback_minutes: The interval when nothing says otherwise (Bybit's historical 8 h).
        min_run: Equal spacings in a row needed to establish a regime (rule 1).

    Returns:
        int32 minutes, one per settlement. See the module docstring for the rules.

    Raises:
        DataValidationError: unsorted or repeated times, ``min_run < 1``, non-positive minutes.
    """
    t = _ms_array(ts, "funding settlements")
    _strictly_ascending(t, "funding settlements")
    if min_run < 1 or fallback_minutes <= 0:
        raise DataValidationError("min_run must be >= 1 and fallback_minutes > 0")
    n = t.size
    value = np.zeros(n, np.int64)  # ms; 0 = not fixed
    if n > 1:
        d = np.diff(t)  # d[i - 1] is the spacing before row i
        start = 0
        while start < d.size:  # runs of equal spacings (rule 1)
            end = start
            while end + 1 < d.size and d[end + 1] == d[start]:
                end += 1
            if end - start + 1 >= min_run:
                value[start + 1 : end + 2] = d[start]
            start = end + 1
    for when, minutes in observed:  # rule 2
        if minutes <= 0:
            raise DataValidationError(f"observed funding interval {minutes} is not positive")
        b = int(np.searchsorted(t, when, side="left"))
        if b < n:
            value[b] = minutes * MINUTE_MS
    fixed = np.flatnonzero(value)
    out = value.copy()
    for i in np.flatnonzero(value == 0):  # rules 3 and 4
        k = int(np.searchsorted(fixed, i))
        prev = int(value[fixed[k - 1]]) if k > 0 else 0
        nxt = int(value[fixed[k]]) if k < fixed.size else 0
        if i == 0:
            continue  # after the others: it may copy row 1
        gap = int(t[i] - t[i - 1])
        if prev and gap <= prev:
            out[i] = prev
        elif nxt and gap <= nxt:
            out[i] = nxt
        elif prev or nxt:
            out[i] = prev or nxt
        elif gap % MINUTE_MS == 0 and gap // MINUTE_MS in FUNDING_INTERVALS_MINUTES:
            out[i] = gap
        else:
            out[i] = fallback_minutes * MINUTE_MS
    if n and out[0] == 0:
        first_fixed = int(value[fixed[0]]) if fixed.size else 0
        out[0] = first_fixed or (int(out[1]) if n > 1 else fallback_minutes * MINUTE_MS)
    return (out // MINUTE_MS).astype(np.int32)


def funding_interval_history(
    ts: Sequence[int] | np.ndarray | pl.Series, interval_minutes: Sequence[int] | np.ndarray | pl.Series
) -> pl.DataFrame:
    """Compress per-settlement intervals into the interval history of one symbol.

    A regime of interval ``I`` starting at settlement ``i`` is valid from the previous settlement
    (the start of the first period it governs; ``ts[0] - I`` for the first row) to the last
    settlement under it; the last regime has a null ``valid_to`` (still in force as far as the data
    knows). Intervals are half-open ``[valid_from, valid_to)`` and contiguous.

    Returns:
        Columns valid_from, valid_to (Datetime ms UTC), interval_minutes (int32), ascending.
    """
    t = _ms_array(ts, "funding settlements")
    iv = np.asarray(interval_minutes.to_numpy() if isinstance(interval_minutes, pl.Series) else interval_minutes, np.int64)
    if iv.size != t.size:
        raise DataValidationError(f"{t.size} settlements but {iv.size} intervals")
    _strictly_ascending(t, "funding settlements")
    starts = [i for i in range(t.size) if i == 0 or iv[i] != iv[i - 1]]
    rows_from, rows_to, rows_iv = [], [], []
    for k, i in enumerate(starts):
        rows_from.append(int(t[i - 1]) if i else int(t[0] - iv[0] * MINUTE_MS))
        rows_to.append(int(t[starts[k + 1] - 1]) if k + 1 < len(starts) else None)
        rows_iv.append(int(iv[i]))
    ms = pl.Datetime("ms", "UTC")
    return pl.DataFrame(
        {
            "valid_from": pl.Series(rows_from, dtype=pl.Int64).cast(ms),
            "valid_to": pl.Series(rows_to, dtype=pl.Int64).cast(ms),
            "interval_minutes": pl.Series(rows_iv, dtype=pl.Int32),
        }
    )


def _gap_frame(before: np.ndarray, after: np.ndarray, missing: np.ndarray) -> pl.DataFrame:
    ms = pl.Datetime("ms", "UTC")
    return pl.DataFrame(
        {
            "before": pl.Series(before, dtype=pl.Int64).cast(ms),
            "after": pl.Series(after, dtype=pl.Int64).cast(ms),
            "missing": pl.Series(missing, dtype=pl.Int64),
        }
    )


def funding_gaps(
    ts: Sequence[int] | np.ndarray | pl.Series, interval_minutes: Sequence[int] | np.ndarray | pl.Series
) -> pl.DataFrame:
    """Missing funding settlements: a settlement missing at the interval in force is a gap, an
    interval change is not (see :mod:`marketlake.core.kernels.gaps` for the rule).

    Args:
        ts: Settlement times (epoch ms or datetimes), strictly ascending.
        interval_minutes: The stored ``interval_minutes`` of each settlement (> 0).

    Returns:
        One row per gap: before, after (the settlements around it, Datetime ms UTC), missing
        (settlements expected strictly between them).
    """
    t = _ms_array(ts, "funding settlements")
    _strictly_ascending(t, "funding settlements")
    iv = np.asarray(interval_minutes.to_numpy() if isinstance(interval_minutes, pl.Series) else interval_minutes)
    if iv.size != t.size:
        raise DataValidationError(f"{t.size} settlements but {iv.size} intervals")
    step = iv.astype(np.int64) * MINUTE_MS
    if (step <= 0).any():
        raise DataValidationError("interval_minutes must be > 0")
    return _gap_frame(*spaced_gaps(t, step))


def grid_gaps(ts: Sequence[int] | np.ndarray | pl.Series, step_ms: int) -> pl.DataFrame:
    """Gaps of a series on a fixed grid (open interest of one ``intervalTime``): consecutive
    rows further apart than ``step_ms``. Same columns as :func:`funding_gaps`.

    Candle gaps use :func:`marketlake.check_candles`; this is for series with no price columns
    (its candle kernel needs open/high/low/close) and fixed-length steps only.
    """
    t = _ms_array(ts, "series")
    _strictly_ascending(t, "series")
    if step_ms <= 0:
        raise DataValidationError("step_ms must be > 0")
    return _gap_frame(*spaced_gaps(t, np.full(t.size, step_ms, np.int64)))


def _asof_before(times: np.ndarray, values: np.ndarray, at: np.ndarray, *, inclusive: bool) -> tuple[np.ndarray, np.ndarray]:
    """The value of the last row at (``inclusive``) or strictly before each time in ``at``."""
    if times.size == 0:
        return np.full(at.size, np.nan), np.zeros(at.size, bool)
    idx = np.searchsorted(times, at, side="right" if inclusive else "left") - 1
    found = idx >= 0
    return np.where(found, values[np.clip(idx, 0, None)], np.nan), found


def funding_payments(
    funding: pl.DataFrame,
    position: pl.DataFrame,
    start_ms: int,
    end_ms: int,
    *,
    prices: pl.DataFrame | None = None,
    inverse: bool = False,
) -> pl.DataFrame:
    """Funding paid by a position at each settlement ``t`` with ``start_ms < t <= end_ms``.

    Sign convention: a positive rate means longs pay shorts. ``payment = notional × rate`` with a
    signed notional (long > 0), so a positive payment is money paid by the holder and a negative
    one money received. Bybit charges ``position value × rate`` where position value is priced at
    the mark price at settlement.

    Args:
        funding: Columns ts (settlement time, epoch ms or datetime) and rate.
        position: A step function of the position: columns ts and either ``notional`` (signed,
            in the settle currency) or ``size`` (signed, base units; inverse: contracts). A row
            holds from its ts until the next row; a change exactly at a settlement instant takes
            effect after it (the position in force at ``t`` is the last row with ``ts < t``; flat
            before the first row).
        start_ms: Exclusive start (epoch ms).
        end_ms: Inclusive end (epoch ms).
        prices: Required with ``size``: columns ts and price (e.g. mark closes re-timed to their
            close time); the price at ``t`` is the last with ``ts <= t``.
        inverse: Inverse contract: notional in coin = size / price.

    Returns:
        Columns ts (Datetime ms UTC), rate, position, price (null without ``prices``), notional,
        payment; one row per settlement in range, ascending.

    Raises:
        DataValidationError: unsorted inputs, missing columns, or no price at or before a
            settlement (never priced as 0).
    """
    ft = _ms_array(funding.get_column("ts"), "funding")
    _strictly_ascending(ft, "funding")
    rate = funding.get_column("rate").cast(pl.Float64).to_numpy()
    keep = (ft > start_ms) & (ft <= end_ms)
    ft, rate = ft[keep], rate[keep]
    if "notional" in position.columns:
        column, priced = "notional", False
    elif "size" in position.columns:
        column, priced = "size", True
    else:
        raise DataValidationError("position needs a 'notional' or a 'size' column")
    pt = _ms_array(position.get_column("ts"), "position")
    if pt.size > 1 and (np.diff(pt) < 0).any():
        raise DataValidationError("position rows must be ascending by ts")
    held, found = _asof_before(pt, position.get_column(column).cast(pl.Float64).to_numpy(), ft, inclusive=False)
    held = np.where(found, held, 0.0)
    price = np.full(ft.size, np.nan)
    if priced:
        if prices is None:
            raise DataValidationError("a position given as 'size' needs prices")
        qt = _ms_array(prices.get_column("ts"), "prices")
        if qt.size > 1 and (np.diff(qt) < 0).any():
            raise DataValidationError("prices must be ascending by ts")
        price, have = _asof_before(qt, prices.get_column("price").cast(pl.Float64).to_numpy(), ft, inclusive=True)
        if not have.all():
            first = int(ft[np.argmin(have)])
            raise DataValidationError(f"no price at or before the settlement at {first} ms")
        notional = held / price if inverse else held * price
    else:
        notional = held
    return pl.DataFrame(
        {
            "ts": pl.Series(ft, dtype=pl.Int64).cast(pl.Datetime("ms", "UTC")),
            "rate": rate,
            "position": held,
            "price": pl.Series(price, dtype=pl.Float64) if priced else pl.Series([None] * ft.size, dtype=pl.Float64),
            "notional": notional,
            "payment": notional * rate,
        }
    )


def funding_paid(
    funding: pl.DataFrame,
    position: pl.DataFrame,
    start_ms: int,
    end_ms: int,
    *,
    prices: pl.DataFrame | None = None,
    inverse: bool = False,
) -> float:
    """Total funding paid over ``(start_ms, end_ms]`` (positive = paid, negative = received);
    the sum of :func:`funding_payments`' ``payment`` (same arguments and conventions)."""
    pays = funding_payments(funding, position, start_ms, end_ms, prices=prices, inverse=inverse)
    return float(pays.get_column("payment").sum())
