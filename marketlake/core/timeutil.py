"""Conversions between the time values users type and epoch milliseconds (UTC)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Final, TypeAlias

from marketlake.errors import DataValidationError

__all__ = ["TimeLike", "ms_to_datetime", "ms_to_text", "to_ms"]

#: What every time argument of the public API accepts.
TimeLike: TypeAlias = "int | dt.datetime | dt.date | str"

_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_DIGITS: Final = re.compile(r"-?\d+")
# Epoch ms for 1990-01-01 and 2200-01-01: a plain integer outside this range is not milliseconds.
_MS_MIN: Final = 631_152_000_000
_MS_MAX: Final = 7_258_118_400_000


def to_ms(value: TimeLike, *, what: str = "time") -> int:
    """Convert ``value`` to epoch milliseconds (UTC).

    Accepts epoch ms as int (or a string of digits), an aware or naive ``datetime`` (naive means
    UTC), a ``date`` (its midnight UTC) or an ISO-8601 string (``2024-01-31``,
    ``2024-01-31 12:00:00``, ``2024-01-31T12:00:00+02:00``).

    Raises:
        DataValidationError: the value cannot be read as a time, or an integer that is plainly not
            milliseconds (e.g. seconds).
    """
    if isinstance(value, bool):
        raise DataValidationError(f"{what}: expected a time, got a bool")
    if isinstance(value, int):
        return _check_ms(value, what)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        # Integer arithmetic on timedeltas: exact, unlike value.timestamp() * 1000.
        return (value - _EPOCH) // dt.timedelta(milliseconds=1)
    if isinstance(value, dt.date):
        return to_ms(dt.datetime(value.year, value.month, value.day, tzinfo=dt.timezone.utc))
    if isinstance(value, str):
        text = value.strip()
        if _DIGITS.fullmatch(text):
            return _check_ms(int(text), what)
        try:
            parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise DataValidationError(
                f"{what}: cannot read {text[:40]!r} as a time; use YYYY-MM-DD[ HH:MM:SS] or epoch ms"
            ) from None
        return to_ms(parsed, what=what)
    raise DataValidationError(f"{what}: expected a time, got {type(value).__name__}")


def _check_ms(value: int, what: str) -> int:
    if not _MS_MIN <= value <= _MS_MAX:
        raise DataValidationError(
            f"{what}: {value} is not epoch milliseconds between 1990 and 2200 "
            "(seconds? multiply by 1000)"
        )
    return value


def ms_to_datetime(ms: int) -> dt.datetime:
    """Epoch ms → aware UTC datetime."""
    return _EPOCH + dt.timedelta(milliseconds=ms)


def ms_to_text(ms: int) -> str:
    """Epoch ms → ``YYYY-MM-DD HH:MM:SS`` (UTC), the old CSV files' ``datetime`` format."""
    return ms_to_datetime(ms).strftime("%Y-%m-%d %H:%M:%S")
