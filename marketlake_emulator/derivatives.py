"""The derivatives side of the synthetic market: premium index, index and mark prices, funding and
open interest, each a pure function of the market's seed, so tests can compute the truth.

* **premium index** (units of 1e-6): per minute an open/high/low/close around an hourly level
  drawn about a daily level about a per-symbol bias; every listed minute outside the market's
  outages has one.
* **index / mark price** candles: the trade candle's open/high/low/close scaled by
  ``1 - premium`` (index) and ``1 - premium / 2`` (mark), rounded to the price scale, with the
  premium close of the candle's last minute.
* **funding** (units of 1e-6) settles on a grid of ``interval`` minutes from 00:00 UTC: Bybit's
  formula ``F = P + clamp(I - P, -0.05%, 0.05%)`` with ``P`` the mean premium close of the
  interval's minutes and ``I = 0.01% * interval / 8h``, clamped to the instrument's caps. Every
  fifth generated linear symbol switches from 8 h to 1 h at a seeded day of its history.
* **open interest**: a random walk of the log size, one step per 5 minutes (a mean-reverting
  day-level walk, bridged within each day so any point is computable without the ones before it).
"""

from __future__ import annotations

import random
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import numpy as np

from marketlake.core.timeframes import DAY_MS, MINUTE_MS, Timeframe
from marketlake_emulator.market_types import InstrumentSpec, stable_hash

if TYPE_CHECKING:
    from marketlake_emulator.market import SyntheticMarket

__all__ = ["FUNDING_CAP", "OI_STEP_MS", "RATE_SCALE", "DerivativesModel", "PriceCandles", "oi_text"]

#: Decimals of the premium index and of funding rates.
RATE_SCALE: Final = 6
#: Funding rate caps (``upperFundingRate`` / ``lowerFundingRate`` of instruments-info), 1e-6 units.
FUNDING_CAP: Final = 5_000
#: One open-interest step.
OI_STEP_MS: Final = 300_000
_BASE_INTERVAL_MIN: Final = 480
_CHANGED_INTERVAL_MIN: Final = 60
_OI_DAYS: Final = 16_384  # day-level walk length: 45 years from the listing day


@dataclass(frozen=True, slots=True)
class PriceCandles:
    """5-field candles (no volume) of one kind, ascending: ts and open/high/low/close units."""

    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    scale: int

    def __len__(self) -> int:
        return len(self.ts)


class DerivativesModel:
    """Premium index, index/mark prices, funding and open interest of a market's derivatives.

    Args:
        market: The market whose trade candles anchor the prices (a lake replay works too: only
            its public candle methods are used).
        cache_days: Generated premium days kept in memory.
    """

    def __init__(self, market: SyntheticMarket, cache_days: int = 1024) -> None:
        self.market = market
        self._premium: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._walks: dict[int, np.ndarray] = {}
        self._cache_days = cache_days

    # ------------------------------------------------------------------ funding intervals

    def interval_change(self, spec: InstrumentSpec) -> int | None:
        """When ``spec``'s funding interval switches from 8 h to 1 h (a day boundary), or None."""
        if spec.category != "linear" or spec.symbol in ("BTCUSDT", "ETHUSDT"):
            return None
        rnd = random.Random(stable_hash(self.market.seed, spec.key, "funding-interval"))
        if rnd.random() >= 0.2:
            return None
        launch_day = spec.launch_ms // DAY_MS + 1
        end_day = (spec.delist_ms // DAY_MS) if spec.delist_ms else launch_day + 900
        return (launch_day + rnd.randrange(30, max(31, end_day - launch_day))) * DAY_MS

    def interval_minutes(self, spec: InstrumentSpec, at_ms: int) -> int:
        """The funding interval in force at ``at_ms`` (``fundingInterval``, minutes)."""
        change = self.interval_change(spec)
        return _CHANGED_INTERVAL_MIN if change is not None and at_ms >= change else _BASE_INTERVAL_MIN

    def settlements(self, spec: InstrumentSpec, start_ms: int, end_ms: int) -> list[int]:
        """Funding settlement times in ``[start_ms, end_ms]``, ascending, from the first one
        after the listing to the delivery time."""
        lo = max(start_ms, spec.launch_ms + 1)
        hi = end_ms if spec.delist_ms is None else min(end_ms, spec.delist_ms)
        out: list[int] = []
        change = self.interval_change(spec)
        for a, b, minutes in (
            ((lo, hi, _BASE_INTERVAL_MIN),)
            if change is None
            else ((lo, min(hi, change - 1), _BASE_INTERVAL_MIN), (max(lo, change), hi, _CHANGED_INTERVAL_MIN))
        ):
            step = minutes * MINUTE_MS
            t = -(-a // step) * step
            out.extend(range(t, b + 1, step))
        return out

    def next_settlement(self, spec: InstrumentSpec, now_ms: int) -> int:
        """The first settlement after ``now_ms`` (``nextFundingTime`` of a ticker)."""
        step = self.interval_minutes(spec, now_ms) * MINUTE_MS
        return (now_ms // step + 1) * step

    def funding_rate(self, spec: InstrumentSpec, settle_ms: int, *, upto_ms: int | None = None) -> int:
        """The rate settled at ``settle_ms`` (1e-6 units) for the interval ending there; with
        ``upto_ms`` inside the interval, the rate predicted from the premium so far."""
        minutes = self.interval_minutes(spec, settle_ms - 1)
        interest = round(100 * minutes / _BASE_INTERVAL_MIN)
        last = settle_ms - 1 if upto_ms is None else min(settle_ms - 1, upto_ms)
        prem = self.premium_minutes(spec, settle_ms - minutes * MINUTE_MS, last)
        p = round(float(prem.close.mean())) if len(prem) else interest
        rate = p + min(500, max(-500, interest - p))
        return min(FUNDING_CAP, max(-FUNDING_CAP, rate))

    # ------------------------------------------------------------------ premium and prices

    def _premium_day(self, spec: InstrumentSpec, day: int) -> np.ndarray:
        key = (spec.key, day)
        got = self._premium.get(key)
        if got is not None:
            self._premium.move_to_end(key)
            return got
        bias = random.Random(stable_hash(self.market.seed, spec.key, "premium-bias")).uniform(-300.0, 500.0)
        rng = np.random.default_rng([self.market.seed & 0xFFFFFFFF, spec.key, day + 200_000])
        level = rng.normal(bias, 300.0)  # the day's level, then hours about it
        hourly = np.repeat(rng.normal(level, 300.0, 24), 60)
        noise = rng.normal(0.0, 60.0, (4, 1440))
        o = np.rint(hourly + noise[0]).astype(np.int64)
        c = np.rint(hourly + noise[1]).astype(np.int64)
        h = np.maximum(o, c) + np.rint(np.abs(noise[2])).astype(np.int64)
        lo = np.minimum(o, c) - np.rint(np.abs(noise[3])).astype(np.int64)
        block = np.stack([o, h, lo, c])
        self._premium[key] = block
        if len(self._premium) > self._cache_days:
            self._premium.popitem(last=False)
        return block

    def _minutes(self, spec: InstrumentSpec, start_ms: int, end_ms: int) -> np.ndarray:
        """Opens of the minutes in ``[start_ms, end_ms]`` while listed and outside outages."""
        lo = max(start_ms, (spec.launch_ms // MINUTE_MS) * MINUTE_MS)
        hi = end_ms if spec.delist_ms is None else min(end_ms, spec.delist_ms - 1)
        first = -(-lo // MINUTE_MS) * MINUTE_MS
        if hi < first:
            return np.empty(0, dtype=np.int64)
        ts = np.arange(first, hi + 1, MINUTE_MS, dtype=np.int64)
        for a, b in self.market.outages:
            if a <= hi and b > first:
                ts = ts[(ts < a) | (ts >= b)]
        return ts

    def _premium_at(self, spec: InstrumentSpec, ts: np.ndarray) -> np.ndarray:
        """Premium open/high/low/close (4 x n) of the minutes opening at ``ts``."""
        out = np.empty((4, len(ts)), dtype=np.int64)
        if not len(ts):
            return out
        days = ts // DAY_MS
        # ``ts`` is ascending for every caller: one slice per day, not one mask per day.
        cuts = np.flatnonzero(np.r_[True, days[1:] != days[:-1], True])
        for a, b in zip(cuts[:-1], cuts[1:], strict=False):
            day = int(days[a])
            idx = (ts[a:b] - day * DAY_MS) // MINUTE_MS
            out[:, a:b] = self._premium_day(spec, day)[:, idx]
        return out

    def premium_minutes(self, spec: InstrumentSpec, start_ms: int, end_ms: int) -> PriceCandles:
        """Premium-index minutes opening in ``[start_ms, end_ms]`` (listed, no outage)."""
        ts = self._minutes(spec, start_ms, end_ms)
        p = self._premium_at(spec, ts)
        return PriceCandles(ts, p[0], p[1], p[2], p[3], RATE_SCALE)

    def price_candles(
        self, spec: InstrumentSpec, kind: str, tf: Timeframe, start_ms: int, end_ms: int, *, now_ms: int
    ) -> PriceCandles:
        """Candles of ``kind`` (``mark``, ``index``, ``premium``) opening in ``[start_ms, end_ms]``
        by market time ``now_ms``, the forming one included.

        Premium candles aggregate their minutes (those opening by ``now_ms``). Index and mark
        candles are the trade candle of the same bucket (the forming one as it stands) scaled by
        ``1 - premium`` (index) or ``1 - premium / 2`` (mark), with the premium close of the
        bucket's last minute (of the current minute while forming): one factor per candle keeps
        ``low <= open, close <= high`` through the (monotone) rounding, and a year of daily
        candles costs no minute data.
        """
        now_minute = now_ms - now_ms % MINUTE_MS
        if kind == "premium":
            # Every minute of the bucket holding ``end_ms`` (not only its first): the last
            # candle of a page aggregates its whole bucket, as far as it has formed.
            last = min(tf.next_open(tf.floor(end_ms)) - MINUTE_MS, now_minute)
            m = self.premium_minutes(spec, start_ms, last)
            if not len(m) or (tf.duration_ms == MINUTE_MS and tf.kind != "month"):
                return m
            lo = tf.floor(start_ms)
            first = m.ts >= (lo if lo >= start_ms else tf.next_open(lo))  # whole buckets only
            m = PriceCandles(m.ts[first], m.open[first], m.high[first], m.low[first], m.close[first], m.scale)
            if not len(m):
                return m
            buckets = tf.floor_array(m.ts)
            starts = np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1]])
            ends = np.r_[starts[1:], len(buckets)] - 1
            return PriceCandles(
                buckets[starts],
                m.open[starts],
                np.maximum.reduceat(m.high, starts),
                np.minimum.reduceat(m.low, starts),
                m.close[ends],
                m.scale,
            )
        forming_open = tf.floor(now_ms)
        raw = self.market.raw_candles(spec, tf, start_ms, min(end_ms, forming_open - 1))
        last_minutes = [tf.next_open(int(t)) - MINUTE_MS for t in raw.ts]
        parts = [raw]
        if start_ms <= forming_open <= end_ms:
            forming = self.market.forming_candle(spec, tf, now_ms)
            if len(forming):
                parts.append(forming)
                last_minutes.append(now_minute)
        ts, o, h, lo_, c = (np.concatenate([getattr(x, f) for x in parts]) for f in ("ts", "open", "high", "low", "close"))
        close = self._premium_at(spec, np.array(last_minutes, dtype=np.int64))[3]
        factor = 2_000_000 - close * 2 if kind == "index" else 2_000_000 - close
        cols = [(x * factor + 1_000_000) // 2_000_000 for x in (o, h, lo_, c)]
        return PriceCandles(ts, *cols, spec.price_scale)

    # ------------------------------------------------------------------ open interest

    def _base_oi(self, spec: InstrumentSpec) -> float:
        """Typical open interest in lots: about a third of a day's volume."""
        return spec.mean_lots * 1440 / 3

    def _walk(self, spec: InstrumentSpec) -> np.ndarray:
        walk = self._walks.get(spec.key)
        if walk is None:
            rng = np.random.default_rng([self.market.seed & 0xFFFFFFFF, spec.key, 300_000])
            steps = rng.normal(0.0, 0.06, _OI_DAYS)
            # Mean-reverting (AR(1), 0.98 a day): a plain walk would wander to 1% or 100x of
            # its start over years; this one stays within about +-60% of the typical size.
            walk = np.empty(_OI_DAYS + 1)
            walk[0] = 0.0
            for d in range(_OI_DAYS):
                walk[d + 1] = 0.98 * walk[d] + steps[d]
            self._walks[spec.key] = walk
        return walk

    def open_interest(self, spec: InstrumentSpec, times_ms: np.ndarray) -> np.ndarray:
        """Open interest (units of ``10**-qty_scale``, whole lots) at each 5-minute point."""
        walk = self._walk(spec)
        first_day = spec.launch_ms // DAY_MS
        t = np.asarray(times_ms, dtype=np.int64)
        days = t // DAY_MS
        steps = (t - days * DAY_MS) // OI_STEP_MS
        out = np.empty(len(t), dtype=np.int64)
        per_day = DAY_MS // OI_STEP_MS
        for day in np.unique(days):
            d = min(max(int(day) - first_day, 0), _OI_DAYS - 1)
            rng = np.random.default_rng([self.market.seed & 0xFFFFFFFF, spec.key, int(day) + 400_000])
            z = np.cumsum(rng.normal(0.0, 0.004, per_day))
            k = np.arange(per_day)
            # Brownian bridge: the day's path starts at its level and ends at the next day's.
            path = walk[d] + (walk[d + 1] - walk[d]) * k / per_day + z - z[-1] * k / per_day
            sel = days == day
            lots = np.rint(self._base_oi(spec) * np.exp(path[steps[sel]]))
            out[sel] = np.maximum(lots, 1).astype(np.int64) * spec.lot_units
        return out

    def oi_points(self, spec: InstrumentSpec, step_ms: int, start_ms: int, end_ms: int) -> np.ndarray:
        """Open-interest times on the ``step_ms`` grid in ``[start_ms, end_ms]`` while listed."""
        lo = max(start_ms, spec.launch_ms)
        hi = end_ms if spec.delist_ms is None else min(end_ms, spec.delist_ms - 1)
        first = -(-lo // step_ms) * step_ms
        return np.arange(first, hi + 1, step_ms, dtype=np.int64) if hi >= first else np.empty(0, np.int64)


def oi_text(units: int, qty_scale: int) -> str:
    """Open interest as the open-interest endpoint writes it: 8 decimals (``"62129.45500000"``)."""
    value = units * 10 ** (8 - qty_scale) if qty_scale <= 8 else units // 10 ** (qty_scale - 8)
    whole, frac = divmod(value, 10**8)
    return f"{whole}.{frac:08d}"

