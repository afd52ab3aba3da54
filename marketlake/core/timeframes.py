"""Timeframes: Bybit's interval names, their aliases, and bucket arithmetic in epoch milliseconds.

Bybit names ``1 3 5 15 30 60 120 240 360 720 D W M`` are canonical (they are what the lake's
``timeframe=`` partition holds). Aliases such as ``1m 5m 1h 4h 1d 1w 1M`` are accepted on input.
Sub-minute timeframes ``1s 5s 15s`` exist for candles built from trades (Bybit does not serve them).

Buckets open at multiples of the duration from the Unix epoch, except:

* ``W`` opens on Monday 00:00 UTC (the epoch was a Thursday, hence a 4-day offset);
* ``M`` opens on the 1st of each month 00:00 UTC and has no fixed length.

Everything here is pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

import numpy as np

from marketlake.errors import InvalidTimeframeError

__all__ = [
    "BYBIT_TIMEFRAMES",
    "TIMEFRAMES",
    "Timeframe",
    "TimeframeKind",
    "parse_timeframe",
    "parse_timeframes",
]

SECOND_MS: Final = 1_000
MINUTE_MS: Final = 60_000
DAY_MS: Final = 86_400_000
WEEK_MS: Final = 7 * DAY_MS
# 1970-01-01 was a Thursday; the first Monday 00:00 UTC is 4 days later.
WEEK_OFFSET_MS: Final = 4 * DAY_MS

TimeframeKind = Literal["fixed", "month"]


@dataclass(frozen=True, slots=True)
class Timeframe:
    """One candle timeframe.

    Attributes:
        name: Canonical name (Bybit's interval name, or ``1s``/``5s``/``15s``).
        kind: ``"fixed"`` for buckets of constant length (W included), ``"month"`` for calendar months.
        duration_ms: Bucket length in ms; for ``M`` the length of the shortest month (28 days),
            only useful as a lower bound.
        offset_ms: Where fixed buckets are anchored relative to the epoch (non-zero only for ``W``).
    """

    name: str
    kind: TimeframeKind
    duration_ms: int
    offset_ms: int = 0

    @property
    def is_bybit(self) -> bool:
        """True when Bybit serves this interval (REST ``interval=`` / WS ``kline.{interval}``)."""
        return self.name in BYBIT_TIMEFRAMES

    @property
    def minutes(self) -> float:
        """Nominal length in minutes (28 days for ``M``)."""
        return self.duration_ms / MINUTE_MS

    def floor(self, ts_ms: int) -> int:
        """Open time of the bucket that contains ``ts_ms``."""
        if self.kind == "month":
            month = np.datetime64(int(ts_ms), "ms").astype("datetime64[M]")
            return int(month.astype("datetime64[ms]").astype(np.int64))
        d, off = self.duration_ms, self.offset_ms
        return ((int(ts_ms) - off) // d) * d + off

    def floor_array(self, ts_ms: np.ndarray) -> np.ndarray:
        """Vectorised :meth:`floor` over an int64 array of epoch ms."""
        ts = np.asarray(ts_ms, dtype=np.int64)
        if self.kind == "month":
            return ts.astype("datetime64[ms]").astype("datetime64[M]").astype("datetime64[ms]").astype(np.int64)
        d, off = self.duration_ms, self.offset_ms
        return ((ts - off) // d) * d + off

    def next_open(self, open_ms: int) -> int:
        """Open time of the bucket after the one opening at ``open_ms`` (its exclusive close)."""
        if self.kind == "month":
            month = np.datetime64(int(open_ms), "ms").astype("datetime64[M]") + 1
            return int(month.astype("datetime64[ms]").astype(np.int64))
        return self.floor(open_ms) + self.duration_ms

    def close_time(self, open_ms: int) -> int:
        """Exclusive close of the bucket opening at ``open_ms``; the candle is closed at this time."""
        return self.next_open(open_ms)

    def is_aligned(self, ts_ms: int) -> bool:
        """True when ``ts_ms`` is a bucket open time."""
        return self.floor(ts_ms) == ts_ms

    def opens_between(self, start_ms: int, end_ms: int) -> np.ndarray:
        """All bucket open times ``t`` with ``start_ms <= t < end_ms`` (int64 array)."""
        first = self.floor(start_ms)
        if first < start_ms:
            first = self.next_open(first)
        if first >= end_ms:
            return np.empty(0, dtype=np.int64)
        if self.kind == "month":
            m0 = np.datetime64(first, "ms").astype("datetime64[M]")
            m1 = np.datetime64(end_ms - 1, "ms").astype("datetime64[M]")
            months = np.arange(m0, m1 + 1)
            return months.astype("datetime64[ms]").astype(np.int64)
        return np.arange(first, end_ms, self.duration_ms, dtype=np.int64)

    def count_between(self, start_ms: int, end_ms: int) -> int:
        """How many buckets open in ``[start_ms, end_ms)``."""
        if self.kind == "month":
            return int(self.opens_between(start_ms, end_ms).size)
        first = self.floor(start_ms)
        if first < start_ms:
            first += self.duration_ms
        if first >= end_ms:
            return 0
        return (end_ms - 1 - first) // self.duration_ms + 1

    def __str__(self) -> str:
        return self.name


def _fixed(name: str, ms: int, offset: int = 0) -> Timeframe:
    return Timeframe(name=name, kind="fixed", duration_ms=ms, offset_ms=offset)


#: Every timeframe marketlake knows, by canonical name, shortest first.
TIMEFRAMES: Final[dict[str, Timeframe]] = {
    tf.name: tf
    for tf in (
        _fixed("1s", SECOND_MS),
        _fixed("5s", 5 * SECOND_MS),
        _fixed("15s", 15 * SECOND_MS),
        *(_fixed(str(m), m * MINUTE_MS) for m in (1, 3, 5, 15, 30, 60, 120, 240, 360, 720)),
        _fixed("D", DAY_MS),
        _fixed("W", WEEK_MS, WEEK_OFFSET_MS),
        Timeframe(name="M", kind="month", duration_ms=28 * DAY_MS),
    )
}

#: The intervals Bybit serves, in its own spelling.
BYBIT_TIMEFRAMES: Final[tuple[str, ...]] = (
    "1", "3", "5", "15", "30", "60", "120", "240", "360", "720", "D", "W", "M",
)

_ALIASES: Final[dict[str, str]] = {
    "1m": "1", "3m": "3", "5m": "5", "15m": "15", "30m": "30", "60m": "60",
    "1h": "60", "2h": "120", "4h": "240", "6h": "360", "12h": "720",
    "1d": "D", "1D": "D", "d": "D",
    "1w": "W", "1W": "W", "w": "W",
    "1M": "M", "1mo": "M",
    "1S": "1s", "5S": "5s", "15S": "15s",
}


def parse_timeframe(value: str | int | Timeframe) -> Timeframe:
    """Return the :class:`Timeframe` named by ``value`` (canonical name, alias, or minutes as int).

    Raises:
        InvalidTimeframeError: ``value`` names no timeframe. Note ``1m`` is a minute, ``1M`` a month.
    """
    if isinstance(value, Timeframe):
        return value
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidTimeframeError(f"timeframe must be a string, got {type(value).__name__}")
    key = str(value).strip()
    tf = TIMEFRAMES.get(key) or TIMEFRAMES.get(_ALIASES.get(key, ""))
    if tf is None:
        shown = key if len(key) <= 20 and key.isprintable() else repr(key[:20])
        raise InvalidTimeframeError(
            f"unknown timeframe {shown!s}; use one of {', '.join(TIMEFRAMES)} "
            "(aliases 1m 5m 1h 4h 1d 1w 1M)"
        )
    return tf


def parse_timeframes(values: str | int | Timeframe | list | tuple | None) -> list[Timeframe]:
    """Parse a comma-separated string or a sequence of timeframes, keeping order, dropping repeats."""
    if values is None:
        return []
    if isinstance(values, (str, int, Timeframe)):
        items = str(values).split(",") if isinstance(values, str) else [values]
    else:
        items = list(values)
    out: list[Timeframe] = []
    for item in items:
        if isinstance(item, str) and not item.strip():
            continue
        tf = parse_timeframe(item)
        if tf not in out:
            out.append(tf)
    return out
