"""Bucket arithmetic inside numba: floor and next bucket open for fixed and calendar-month timeframes.

Kernels never see :class:`~marketlake.core.timeframes.Timeframe` objects; they get plain integers
``(kind, dur, off)`` in the *units of the timestamps they scan* (ms, µs or ns), made by
:func:`tf_params`. Working in the native unit means a trade column stored as ``Datetime("us")`` is
bucketed without first materialising a converted copy of it.

Month flooring uses Howard Hinnant's ``days_from_civil`` / ``civil_from_days`` algorithms (exact
proleptic Gregorian integer arithmetic, valid for any int64 day count that matters here).
"""

from __future__ import annotations

from typing import Final

from numba import njit

from marketlake.core.timeframes import DAY_MS, Timeframe

__all__ = [
    "KIND_FIXED",
    "KIND_MONTH",
    "buckets_between",
    "civil_from_days",
    "days_from_civil",
    "floor_ts",
    "next_open",
    "tf_params",
]

KIND_FIXED: Final = 0
KIND_MONTH: Final = 1


def tf_params(tf: Timeframe, scale: int = 1) -> tuple[int, int, int]:
    """Return ``(kind, dur, off)`` for the kernels, in units of ``1/scale`` ms.

    Args:
        tf: The timeframe.
        scale: Timestamp units per millisecond (1 for ms, 1000 for µs, 1_000_000 for ns).

    Returns:
        ``kind`` (:data:`KIND_FIXED` or :data:`KIND_MONTH`), the bucket length and the anchor offset
        (both 0 for months; for months ``dur`` carries the length of one day instead, which is
        what the month arithmetic needs).
    """
    if tf.kind == "month":
        return KIND_MONTH, DAY_MS * scale, 0
    return KIND_FIXED, tf.duration_ms * scale, tf.offset_ms * scale


@njit(cache=True, nogil=True)
def days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of the proleptic Gregorian date ``y-m-d``."""
    y -= 1 if m <= 2 else 0
    era = y // 400
    yoe = y - era * 400
    mp = (m + 9) % 12
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


@njit(cache=True, nogil=True)
def civil_from_days(z: int) -> tuple[int, int, int]:
    """``(year, month, day)`` of the date ``z`` days after 1970-01-01."""
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    y = yoe + era * 400 + (1 if m <= 2 else 0)
    return y, m, d


@njit(cache=True, nogil=True)
def month_index(t: int, day: int) -> int:
    """Months since 1970-01 of the month holding timestamp ``t`` (``day`` = units per day)."""
    y, m, _ = civil_from_days(t // day)
    return (y - 1970) * 12 + (m - 1)


@njit(cache=True, nogil=True)
def month_open(idx: int, day: int) -> int:
    """Timestamp of 00:00 UTC on the 1st of month ``idx`` (months since 1970-01)."""
    y = 1970 + idx // 12
    m = idx % 12 + 1
    return days_from_civil(y, m, 1) * day


@njit(cache=True, nogil=True)
def floor_ts(t: int, kind: int, dur: int, off: int) -> int:
    """Open of the bucket holding ``t``."""
    if kind == KIND_MONTH:
        return month_open(month_index(t, dur), dur)
    return ((t - off) // dur) * dur + off


@njit(cache=True, nogil=True)
def next_open(b: int, kind: int, dur: int, off: int) -> int:
    """Open of the bucket after the one opening at ``b`` (``b`` must be a bucket open)."""
    if kind == KIND_MONTH:
        return month_open(month_index(b, dur) + 1, dur)
    return b + dur


@njit(cache=True, nogil=True)
def buckets_between(a: int, b: int, kind: int, dur: int, off: int) -> int:
    """Number of bucket opens ``x`` with ``floor(a) <= x <= floor(b)``; 0 when ``b < a``."""
    if b < a:
        return 0
    if kind == KIND_MONTH:
        return month_index(b, dur) - month_index(a, dur) + 1
    return (floor_ts(b, kind, dur, off) - floor_ts(a, kind, dur, off)) // dur + 1
