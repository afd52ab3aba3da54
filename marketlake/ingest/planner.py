"""The plan of a historical ingest: the requested range minus what the ledger already covers.

For each series the planner clips the request at the instrument's listing time and at the last
closed candle (the server's present), subtracts every range the ledger records as present or
verified empty, and cuts what is left into kline windows of at most 1000 candles: one request each.
Pure apart from reading the ledger; the plan is data, so ``--dry-run`` can print it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from marketlake.core.intervals import Interval
from marketlake.core.timeutil import ms_to_text
from marketlake.exchanges.bybit.rest import kline_windows
from marketlake.store.layout import SeriesId
from marketlake.store.ledger import Ledger

__all__ = ["Plan", "SeriesPlan", "make_plan"]


@dataclass(frozen=True, slots=True)
class SeriesPlan:
    """What to fetch for one series.

    Attributes:
        sid: The series.
        start_ms: Inclusive start after clipping (first candle open wanted).
        end_ms: Exclusive end after clipping (open of the first candle not wanted).
        windows: ``(first_open, last_open)`` kline windows, inclusive, at most 1000 candles each.
        candles: Candles the windows can hold.
        before_listing: ``[start, listing)`` of the request that precedes the listing: verified
            empty without a request.
    """

    sid: SeriesId
    start_ms: int
    end_ms: int
    windows: tuple[tuple[int, int], ...]
    candles: int
    before_listing: Interval | None = None

    @property
    def requests(self) -> int:
        """One request per window."""
        return len(self.windows)


@dataclass(slots=True)
class Plan:
    """A whole ingest plan."""

    series: list[SeriesPlan] = field(default_factory=list)

    @property
    def requests(self) -> int:
        """Requests the plan needs (one per window)."""
        return sum(s.requests for s in self.series)

    @property
    def candles(self) -> int:
        """Candles the windows can hold (an upper bound: outages hold none)."""
        return sum(s.candles for s in self.series)

    def eta_seconds(self, requests_per_5s: int) -> float:
        """Time the plan takes at a request budget of ``requests_per_5s``."""
        return self.requests * 5.0 / max(1, requests_per_5s)

    def to_dict(self, requests_per_5s: int) -> dict:
        """Plain data for ``--dry-run --json``."""
        return {
            "requests": self.requests,
            "candles": self.candles,
            "eta_seconds": round(self.eta_seconds(requests_per_5s), 1),
            "series": [
                {
                    "series": s.sid.label(),
                    "start": ms_to_text(s.start_ms) if s.end_ms > s.start_ms else None,
                    "end": ms_to_text(s.end_ms) if s.end_ms > s.start_ms else None,
                    "requests": s.requests,
                    "candles": s.candles,
                }
                for s in self.series
            ],
        }


def make_plan(
    ledger: Ledger,
    sids: Iterable[SeriesId],
    start_ms: int,
    end_ms: int,
    *,
    now_ms: int,
    listings: Mapping[str, int | None] | None = None,
) -> Plan:
    """Plan the fetch of ``[start_ms, end_ms)`` for every series.

    Args:
        ledger: What is already covered.
        sids: Candle series to fill.
        start_ms: Inclusive start of the request.
        end_ms: Exclusive end of the request.
        now_ms: The exchange's present (server time): candles opening at or after the open of the
            forming candle are not requested.
        listings: Listing time per symbol (``launchTime``), when known.
    """
    plan = Plan()
    for sid in sids:
        tf = sid.timeframe
        assert tf is not None, "only candle series are planned"
        lo = tf.floor(start_ms)
        if lo < start_ms:
            lo = tf.next_open(lo)
        hi = min(end_ms, tf.floor(now_ms))  # opens before the forming candle's open
        listed = (listings or {}).get(sid.symbol)
        before: Interval | None = None
        if listed is not None:
            first = tf.floor(listed)
            if first > lo:
                before = (lo, min(first, hi)) if min(first, hi) > lo else None
                lo = first
        windows: list[tuple[int, int]] = []
        if hi > lo:
            for a, b in ledger.missing(sid, lo, hi):
                windows.extend(kline_windows(tf, a, b - 1))
        candles = sum(tf.count_between(a, tf.next_open(b)) for a, b in windows)
        plan.series.append(SeriesPlan(sid, lo, max(lo, hi), tuple(windows), candles, before))
    return plan
