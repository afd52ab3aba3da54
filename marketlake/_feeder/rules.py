"""The no-lookahead rule, the time arguments of the feeder, and candle rows as Python dicts.

**No lookahead.** A candle opening at ``o`` is *closed*, and therefore usable, at time ``t`` when
``close(o) <= t``, where ``close(o) = o + duration`` for fixed timeframes (``1`` ... ``D``, ``W``)
and the first instant of the next calendar month for ``M``. ``close`` is monotone in ``o``, so
"closed at ``t``" is the same as ``o < available_before(tf, t)``: a prefix of the sorted ``ts``
column, found with one binary search.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Final

import numpy as np
import polars as pl

from marketlake.core.timeframes import DAY_MS, Timeframe
from marketlake.core.timeutil import TimeLike, ms_to_datetime, to_ms
from marketlake.errors import DataValidationError

__all__ = [
    "available_before",
    "candle_dict",
    "close_ms",
    "close_time_expr",
    "half_open_window",
    "old_window",
    "time_ms",
]

_DATE_ONLY: Final = re.compile(r"\s*\d{4}-\d{2}-\d{2}\s*")


def close_ms(tf: Timeframe, open_ms: int) -> int:
    """When the candle of ``tf`` opening at ``open_ms`` closes (exclusive end of its period)."""
    if tf.kind == "month":
        return tf.next_open(open_ms)
    return open_ms + tf.duration_ms


def available_before(tf: Timeframe, t_ms: int) -> int:
    """Exclusive upper bound on the open time of the candles of ``tf`` closed at ``t_ms``.

    A candle opening at ``o`` is closed at ``t`` iff ``o < available_before(tf, t)``.
    """
    if tf.kind == "month":
        # next_open(o) <= t  <=>  month(o) + 1 <= month(t)  <=>  o < first instant of t's month
        return tf.floor(t_ms)
    # o + d <= t  <=>  o < t - d + 1
    return t_ms - tf.duration_ms + 1


def close_time_expr(tf: Timeframe, column: str = "ts") -> pl.Expr:
    """Polars expression of :func:`close_ms` over a Datetime column of open times."""
    col = pl.col(column)
    if tf.kind == "month":
        return col.dt.truncate("1mo").dt.offset_by("1mo")
    return col + pl.duration(milliseconds=tf.duration_ms)


def time_ms(value: TimeLike | np.integer | np.datetime64, *, what: str) -> int:
    """Epoch ms of a time argument: int ms, ``datetime`` (naive = UTC), ``date``, ISO string,
    a numpy integer or ``datetime64``, or a pandas ``Timestamp`` (a ``datetime``).

    Raises:
        DataValidationError: the value is not a time (the message names ``what``).
    """
    if isinstance(value, np.datetime64):
        if np.isnat(value):
            raise DataValidationError(f"{what}: NaT is not a time")
        return to_ms(int(value.astype("datetime64[ms]").astype(np.int64)), what=what)
    if isinstance(value, np.integer):
        return to_ms(int(value), what=what)
    if value is None:
        raise DataValidationError(f"{what}: expected a time, got None")
    return to_ms(value, what=what)


def _is_date_only(value: object) -> bool:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return True
    return isinstance(value, str) and _DATE_ONLY.fullmatch(value) is not None


def old_window(start: Any, end: Any) -> tuple[int | None, int | None]:
    """``[lo, hi)`` in epoch ms for the old DataFeeder's ``start_date`` / ``end_date``.

    The old feeder sliced a pandas DatetimeIndex, ``df.loc[start_date:end_date]``, which includes
    its end label, and a date-only label (``'2023-12-31'``) covers that whole day. Both are kept so
    that ``load_data(..., '2023-01-01', '2023-12-31')`` still means the whole of 2023.

    Raises:
        DataValidationError: a bound is not a time, or ``start`` is after ``end``.
    """
    lo = None if start is None else time_ms(start, what="start_date")
    hi: int | None = None
    if end is not None:
        hi = time_ms(end, what="end_date")
        hi += DAY_MS if _is_date_only(end) else 1
    if lo is not None and hi is not None and hi <= lo:
        raise DataValidationError(f"start_date {start!r} is after end_date {end!r}")
    return lo, hi


def half_open_window(start: Any, end: Any) -> tuple[int | None, int | None]:
    """``[lo, hi)`` in epoch ms for the new methods (``scan``, ``iter_batches``, ``aligned``),
    which take the lake's half-open ranges: ``start`` included, ``end`` excluded.

    Raises:
        DataValidationError: a bound is not a time, or ``start`` is after ``end``.
    """
    lo = None if start is None else time_ms(start, what="start")
    hi = None if end is None else time_ms(end, what="end")
    if lo is not None and hi is not None and hi < lo:
        raise DataValidationError(f"start {start!r} is after end {end!r}")
    return lo, hi


def candle_dict(frame: pl.DataFrame, index: int, ts_ms: int, tf: Timeframe) -> dict[str, Any]:
    """Row ``index`` of a stored-candle frame as the old feeder's dict of Python values.

    Keys: ``timestamp`` and ``timestamp_ms`` (open time, int epoch ms; the old code used both
    names), ``datetime`` (open time, aware UTC ``datetime``), ``close_time_ms`` (when the candle
    closed: the earliest time it may be used), then the stored columns ``open high low close
    volume turnover trades buy_volume filled``.
    """
    row = frame.row(index, named=True)
    out: dict[str, Any] = {
        "timestamp": ts_ms,
        "timestamp_ms": ts_ms,
        "datetime": ms_to_datetime(ts_ms),
        "close_time_ms": close_ms(tf, ts_ms),
    }
    for name, value in row.items():
        if name not in ("ts", "symbol", "timeframe"):
            out[name] = value
    return out
