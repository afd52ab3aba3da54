"""The plan of a historical ingest: the requested range minus what the ledger already covers.

For each series the planner clips the request at the instrument's listing time, at its delivery
time (a delisted symbol has nothing after it) and at the last closed candle (the server's
present), subtracts every range the ledger records as present or verified empty, and cuts what is
left into windows, one request each:

==========================  ================================================================
dataset                     windows
==========================  ================================================================
candles, mark/index/premium  ``(first_open, last_open)`` inclusive, <= 1000 candles (klines)
open_interest               ``[start, end)`` half-open, <= 200 points of the interval's grid
funding                     ``[start, end)`` half-open ranges, each one newest-first walk of
                            200-row pages (sequential: each page's end is the previous page's
                            oldest row), so its request count is an estimate
==========================  ================================================================

Pure apart from reading the ledger; the plan is data, so ``--dry-run`` can print it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from marketlake.core.intervals import Interval
from marketlake.core.timeutil import ms_to_text
from marketlake.exchanges.bybit import constants as C
from marketlake.exchanges.bybit.rest import kline_windows
from marketlake.store.datasets import CANDLES, FUNDING, OPEN_INTEREST
from marketlake.store.layout import SeriesId
from marketlake.store.ledger import Ledger

__all__ = ["FUNDING_SETTLE_MS", "OI_SETTLE_MS", "Plan", "SeriesPlan", "make_plan", "oi_interval_time", "series_label"]

#: A funding settlement is planned once it is this old by the server's clock (Bybit publishes the
#: history row shortly after the settlement; the ledger must never claim a range before that).
FUNDING_SETTLE_MS = 60_000
#: An open-interest point is final this long after its time.
OI_SETTLE_MS = 2_000
_OI_TIME = {"5": "5min", "15": "15min", "30": "30min", "60": "1h", "240": "4h", "D": "1d"}


def oi_interval_time(sid: SeriesId) -> str:
    """Bybit's ``intervalTime`` of an open-interest series (its timeframe ``5`` -> ``5min`` ...)."""
    assert sid.timeframe is not None
    return _OI_TIME[sid.timeframe.name]


def series_label(sid: SeriesId) -> str:
    """``bybit/linear/BTCUSDT/1`` for candles, ``mark_candles:bybit/linear/BTCUSDT/1`` otherwise
    (``SeriesId.label`` does not name the dataset)."""
    return sid.label() if sid.dataset == CANDLES else f"{sid.dataset}:{sid.label()}"


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
        after_delivery: ``[delivery, end)`` of the request after a delisted symbol's delivery
            time: verified empty without a request.
        est_requests: Funding only: the requests its walks are expected to take (a walk's page
            count depends on the rows found).
    """

    sid: SeriesId
    start_ms: int
    end_ms: int
    windows: tuple[tuple[int, int], ...]
    candles: int
    before_listing: Interval | None = None
    after_delivery: Interval | None = None
    est_requests: int | None = None

    @property
    def requests(self) -> int:
        """One request per window (funding: the estimate of its walks)."""
        return len(self.windows) if self.est_requests is None else self.est_requests

    @property
    def rows(self) -> int:
        """Rows the windows can hold (candles, points, settlements; an upper bound / estimate)."""
        return self.candles


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
                    "dataset": s.sid.dataset,
                    "series": series_label(s.sid),
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
    deliveries: Mapping[str, int | None] | None = None,
    funding_minutes: Mapping[str, int | None] | None = None,
) -> Plan:
    """Plan the fetch of ``[start_ms, end_ms)`` for every series (of any dataset, see the module
    docstring).

    Args:
        ledger: What is already covered.
        sids: Series to fill.
        start_ms: Inclusive start of the request.
        end_ms: Exclusive end of the request.
        now_ms: The exchange's present (server time): candles opening at or after the open of the
            forming candle are not requested.
        listings: Listing time per symbol (``launchTime``), when known.
        deliveries: Delivery time per symbol (``deliveryTime`` of a delisted or delisting
            perpetual), when known: nothing is requested after it.
        funding_minutes: Current funding interval per symbol, for the funding request estimate.
    """
    plan = Plan()
    for sid in sids:
        listed = (listings or {}).get(sid.symbol)
        delivered = (deliveries or {}).get(sid.symbol)
        if sid.dataset == FUNDING:
            minutes = (funding_minutes or {}).get(sid.symbol) or 480
            plan.series.append(_funding_plan(ledger, sid, start_ms, end_ms, now_ms, listed, delivered, minutes))
            continue
        tf = sid.timeframe
        assert tf is not None, "candle and open-interest series have a timeframe"
        lo = tf.floor(start_ms)
        if lo < start_ms:
            lo = tf.next_open(lo)
        if sid.dataset == OPEN_INTEREST:  # a point is final once its time has passed
            hi = min(end_ms, tf.next_open(tf.floor(now_ms - OI_SETTLE_MS)))
        else:
            hi = min(end_ms, tf.floor(now_ms))  # opens before the forming candle's open
        before: Interval | None = None
        after: Interval | None = None
        if listed is not None:
            first = tf.floor(listed)
            if first > lo:
                before = (lo, min(first, hi)) if min(first, hi) > lo else None
                lo = first
        if delivered is not None:
            stop = tf.next_open(tf.floor(delivered - 1))  # the bucket holding the last moment
            if stop < hi:
                after = (max(stop, lo), hi) if hi > max(stop, lo) else None
                hi = max(lo, stop)
        windows: list[tuple[int, int]] = []
        if hi > lo:
            for a, b in ledger.missing(sid, lo, hi):
                if sid.dataset == OPEN_INTEREST:
                    windows.extend(_oi_windows(tf.duration_ms, a, b))
                else:
                    windows.extend(kline_windows(tf, a, b - 1))
        if sid.dataset == OPEN_INTEREST:
            rows = sum(tf.count_between(a, b) for a, b in windows)
        else:
            rows = sum(tf.count_between(a, tf.next_open(b)) for a, b in windows)
        plan.series.append(SeriesPlan(sid, lo, max(lo, hi), tuple(windows), rows, before, after))
    return plan


def _oi_windows(step: int, a: int, b: int) -> list[tuple[int, int]]:
    """``[a, b)`` (grid-aligned start) in half-open windows of at most 200 grid points."""
    width = C.OI_LIMIT_MAX * step
    return [(lo, min(b, lo + width)) for lo in range(a, b, width)]


def _funding_plan(
    ledger: Ledger, sid: SeriesId, start_ms: int, end_ms: int, now_ms: int,
    listed: int | None, delivered: int | None, minutes: int,
) -> SeriesPlan:
    lo = start_ms
    hi = min(end_ms, now_ms - FUNDING_SETTLE_MS)
    before: Interval | None = None
    after: Interval | None = None
    if listed is not None and listed > lo:
        before = (lo, min(listed, hi)) if min(listed, hi) > lo else None
        lo = listed
    if delivered is not None and delivered + 1 < hi:  # the last settlement is at delivery
        stop = max(lo, delivered + 1)
        after = (stop, hi) if hi > stop else None
        hi = stop
    windows = tuple(ledger.missing(sid, lo, hi)) if hi > lo else ()
    step = max(1, minutes) * 60_000
    rows = sum((b - a) // step + 1 for a, b in windows)
    requests = sum(((b - a) // step + 1) // C.FUNDING_LIMIT_MAX + 1 for a, b in windows)
    return SeriesPlan(sid, lo, max(lo, hi), windows, rows, before, after, est_requests=requests)
