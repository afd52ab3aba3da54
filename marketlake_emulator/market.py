"""A deterministic synthetic crypto market: the ground truth the Bybit emulator serves.

Every value is a pure function of ``(seed, category, symbol, minute)``, computable for any window
without generating the history before it:

* The log price at each UTC midnight is an O(1) function of the day (a few seeded sinusoids plus
  seeded daily noise). Each day's 1440 one-minute candles are a seeded Brownian bridge between that
  day's and the next day's midnight price, so days chain continuously (a day's last close is the
  next day's first open) and a day block is generated alone, seeded by (seed, instrument, day).
* Prices live on the instrument's tick grid, volumes on its lot step; both are held as integers
  (units of ``10**-scale``) so that aggregation to every timeframe is *exact*: a 4h candle's volume
  is the integer sum of its 1m volumes, written as the same decimal string Bybit would send.
* Listing times, delistings and exchange-wide outages remove minutes: a bucket of any timeframe
  aggregates the minutes that exist and is absent when none does.

The emulator asks :meth:`SyntheticMarket.select_klines` for what Bybit would answer at a given
server time (newest first, closed candles plus the forming one); tests ask
:meth:`SyntheticMarket.candles` for the ground truth as a polars frame.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import polars as pl

from marketlake.core.symbols import validate_category, validate_symbol
from marketlake.core.timeframes import DAY_MS, MINUTE_MS, Timeframe, parse_timeframe
from marketlake.errors import InvalidSymbolError
from marketlake_emulator.market_types import (
    Agg,
    InstrumentSpec,
    RawCandles,
    combine,
    concat_candles,
    format_decimal,
    format_fixed,
    parse_units,
    format_decimal_column,
    make_instrument,
    seeded_outages,
    stable_hash,
)

__all__ = [
    "InstrumentSpec",
    "RawCandles",
    "SyntheticMarket",
    "format_decimal",
    "format_decimal_column",
]

_MIN_PER_DAY: Final = 1440
_I64_MIN: Final = np.iinfo(np.int64).min
_I64_MAX: Final = np.iinfo(np.int64).max
_SUMMARY_CACHE: Final = 500_000
# Periods (days) and amplitudes (log-price) of the slow price waves; phases are seeded.
_WAVES: Final = ((17.0, 0.04), (97.0, 0.15), (431.0, 0.45))


@dataclass(slots=True)
class _DayBlock:
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    turnover: np.ndarray
    present: np.ndarray


def _group_reduce(block: _DayBlock, m: int) -> tuple[np.ndarray, ...]:
    """Aggregate a day's minutes into buckets of ``m`` minutes (``m`` divides 1440)."""
    shape = (_MIN_PER_DAY // m, m)
    pres = block.present.reshape(shape)
    any_ = pres.any(axis=1)
    first = np.argmax(pres, axis=1)
    last = m - 1 - np.argmax(pres[:, ::-1], axis=1)
    rows = np.arange(shape[0])
    o = block.open.reshape(shape)[rows, first]
    c = block.close.reshape(shape)[rows, last]
    h = np.where(pres, block.high.reshape(shape), _I64_MIN).max(axis=1)
    lo = np.where(pres, block.low.reshape(shape), _I64_MAX).min(axis=1)
    v = np.where(pres, block.volume.reshape(shape), 0).sum(axis=1)
    t = np.where(pres, block.turnover.reshape(shape), 0).sum(axis=1)
    return any_, o, h, lo, c, v, t


class SyntheticMarket:
    """A seeded market of instruments whose candles are computable for any window.

    Args:
        seed: Seed of every random choice.
        instruments: The instruments served (at most one per (category, symbol)).
        outages: Exchange-wide outages as ``(start_ms, end_ms)`` pairs (minute-aligned,
            end exclusive): no instrument has a candle minute inside one.
        cache_days: How many generated day blocks to keep in memory.
    """

    def __init__(
        self,
        seed: int,
        instruments: Sequence[InstrumentSpec],
        outages: Sequence[tuple[int, int]] = (),
        *,
        cache_days: int = 512,
    ) -> None:
        self.seed = int(seed)
        self._specs: dict[tuple[str, str], InstrumentSpec] = {}
        for spec in instruments:
            validate_symbol(spec.symbol)
            validate_category(spec.category)
            keyed = dataclasses.replace(spec, key=stable_hash(spec.category, spec.symbol))
            self._specs[(spec.category, spec.symbol)] = keyed
        ordered = sorted((int(a), int(b)) for a, b in outages)
        for a, b in ordered:
            if a % MINUTE_MS or b % MINUTE_MS or b <= a:
                raise ValueError(f"outage ({a}, {b}) must be minute-aligned with start < end")
        self.outages: tuple[tuple[int, int], ...] = tuple(ordered)
        self._out_starts = np.array([a for a, _ in ordered], dtype=np.int64)
        self._out_ends = np.array([b for _, b in ordered], dtype=np.int64)
        self._blocks: OrderedDict[tuple[int, int], _DayBlock] = OrderedDict()
        self._summaries: dict[tuple[int, int], Agg | None] = {}
        self._cache_days = cache_days

    # ---------------------------------------------------------------- construction helpers

    @classmethod
    def generate(
        cls,
        seed: int = 0,
        symbols: int | Sequence[str] = 10,
        *,
        listing_from_ms: int = 1_609_459_200_000,  # 2021-01-01
        listing_until_ms: int = 1_704_067_200_000,  # 2024-01-01
        outages: Sequence[tuple[int, int]] | None = None,
        spot: Sequence[str] = ("BTCUSDT", "ETHUSDT"),
        inverse: Sequence[str] = ("BTCUSD", "ETHUSD"),
    ) -> SyntheticMarket:
        """Build a market: linear ``BTCUSDT``, ``ETHUSDT`` and generated ``SYM001USDT`` ...

        Args:
            seed: Seed of everything.
            symbols: How many linear symbols in total (BTCUSDT, ETHUSDT, then SYM001USDT ...), or
                an explicit list of linear symbols.
            listing_from_ms: Earliest listing time of generated symbols.
            listing_until_ms: Latest listing time of generated symbols.
            outages: Exchange-wide outages; None draws a seeded set (one every ~40 days,
                10-120 minutes each, 2019-2031); ``()`` for none.
            spot: Spot symbols (each must also be a linear-style ``...USDT`` name).
            inverse: Inverse symbols (``...USD``).
        """
        if isinstance(symbols, int):
            if not 1 <= symbols <= 9999:
                raise ValueError("symbols must be 1..9999")
            names = ["BTCUSDT", "ETHUSDT"][:symbols] + [f"SYM{i:03d}USDT" for i in range(1, symbols - 1)]
        else:
            names = [validate_symbol(s) for s in symbols]
        specs = [make_instrument(seed, "linear", s, listing_from_ms, listing_until_ms) for s in names]
        specs += [make_instrument(seed, "spot", s, listing_from_ms, listing_until_ms) for s in spot]
        specs += [make_instrument(seed, "inverse", s, listing_from_ms, listing_until_ms) for s in inverse]
        if outages is None:
            outages = seeded_outages(seed)
        return cls(seed, specs, outages)

    # ---------------------------------------------------------------- lookups

    def instrument(self, symbol: str, category: str = "linear") -> InstrumentSpec:
        """The instrument (category, symbol).

        Raises:
            InvalidSymbolError: no such instrument.
        """
        spec = self._specs.get((category, symbol))
        if spec is None:
            raise InvalidSymbolError(f"the synthetic market has no {category} symbol {symbol[:40]!r}")
        return spec

    def has(self, symbol: str, category: str = "linear") -> bool:
        """True when the market lists (category, symbol)."""
        return (category, symbol) in self._specs

    def instruments(self, category: str = "linear") -> list[InstrumentSpec]:
        """Instruments of a category, sorted by symbol."""
        return sorted((s for (c, _), s in self._specs.items() if c == category), key=lambda s: s.symbol)

    def symbols(self, category: str = "linear") -> list[str]:
        """Symbols of a category, sorted."""
        return [s.symbol for s in self.instruments(category)]

    # ---------------------------------------------------------------- generation

    def _log_midnight(self, spec: InstrumentSpec, day: int) -> float:
        rnd = random.Random(stable_hash(self.seed, spec.key, "phase"))
        level = math.log(spec.base_price)
        for period, amp in _WAVES:
            level += amp * math.sin(2 * math.pi * day / period + rnd.uniform(0, 2 * math.pi))
        noise = random.Random(stable_hash(self.seed, spec.key, day, "mid")).gauss(0.0, 1.0)
        return level + 0.5 * spec.daily_vol * noise

    def _present(self, spec: InstrumentSpec, minute_opens: np.ndarray) -> np.ndarray:
        first = (spec.launch_ms // MINUTE_MS) * MINUTE_MS
        ok = minute_opens >= first
        if spec.delist_ms is not None:
            ok &= minute_opens < spec.delist_ms
        if self._out_starts.size:
            i = np.searchsorted(self._out_starts, minute_opens, side="right") - 1
            inside = (i >= 0) & (minute_opens < self._out_ends[np.maximum(i, 0)])
            ok &= ~inside
        return ok

    def _block(self, spec: InstrumentSpec, day: int) -> _DayBlock:
        key = (spec.key, day)
        blk = self._blocks.get(key)
        if blk is not None:
            self._blocks.move_to_end(key)
            return blk
        blk = self._generate_block(spec, day)
        self._blocks[key] = blk
        if len(self._blocks) > self._cache_days:
            self._blocks.popitem(last=False)
        return blk

    def _generate_block(self, spec: InstrumentSpec, day: int) -> _DayBlock:
        n = _MIN_PER_DAY
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, spec.key, day + 100_000])
        l0, l1 = self._log_midnight(spec, day), self._log_midnight(spec, day + 1)
        sigma = spec.daily_vol / math.sqrt(n)
        walk = np.concatenate(([0.0], np.cumsum(rng.standard_normal(n) * sigma)))
        frac = np.arange(n + 1) / n
        logp = l0 + frac * (l1 - l0) + (walk - frac * walk[-1])
        tick = spec.tick_units / 10**spec.price_scale
        px = np.maximum(np.rint(np.exp(logp) / tick), 1).astype(np.int64) * spec.tick_units
        o, c = px[:-1], px[1:]
        wick = sigma * 0.8 * np.exp(logp[:-1]) / tick
        hi = (
            np.maximum(o, c)
            + np.floor(np.abs(rng.standard_normal(n)) * wick).astype(np.int64) * spec.tick_units
        )
        lo = (
            np.minimum(o, c)
            - np.floor(np.abs(rng.standard_normal(n)) * wick).astype(np.int64) * spec.tick_units
        )
        lo = np.maximum(lo, spec.tick_units)
        phase = (spec.key % 1000) / 1000 * 2 * math.pi
        season = 1.0 + 0.5 * np.sin(2 * math.pi * np.arange(n) / n + phase)
        lots = np.maximum(1, np.rint(spec.mean_lots * season * rng.lognormal(-0.25, 0.7, n)))
        vol = lots.astype(np.int64) * spec.lot_units
        steps = (hi - lo) // spec.tick_units + 1
        vwap = lo + np.floor(rng.random(n) * steps).astype(np.int64) * spec.tick_units
        turnover = self._turnover(spec, vol, vwap)
        opens = day * DAY_MS + np.arange(n, dtype=np.int64) * MINUTE_MS
        return _DayBlock(o, hi, lo, c, vol, turnover, self._present(spec, opens))

    @staticmethod
    def _turnover(spec: InstrumentSpec, vol: np.ndarray, vwap: np.ndarray) -> np.ndarray:
        if spec.category == "inverse":
            # Inverse: volume in contracts (quote), turnover in base = volume / price, 8 decimals.
            base = (vol / 10**spec.qty_scale) / (vwap / 10**spec.price_scale)
            return np.rint(base * 10**spec.turnover_scale).astype(np.int64)
        return vol * vwap  # units of 10**-(price_scale + qty_scale)

    def _summary(self, spec: InstrumentSpec, day: int) -> Agg | None:
        key = (spec.key, day)
        if key not in self._summaries:
            if len(self._summaries) >= _SUMMARY_CACHE:
                self._summaries.clear()  # tiny entries; a rare full reset beats LRU bookkeeping
            b = self._block(spec, day)
            if not b.present.any():
                self._summaries[key] = None
            else:
                idx = np.flatnonzero(b.present)
                self._summaries[key] = (
                    int(b.open[idx[0]]),
                    int(b.high[idx].max()),
                    int(b.low[idx].min()),
                    int(b.close[idx[-1]]),
                    int(b.volume[idx].sum()),
                    int(b.turnover[idx].sum()),
                )
        return self._summaries[key]

    def _span(self, spec: InstrumentSpec, a: int, b: int) -> Agg | None:
        """Aggregate of the minutes opening in ``[a, b)`` (minute-aligned)."""
        parts: list[Agg | None] = []
        t = a
        while t < b:
            day = t // DAY_MS
            day_end = (day + 1) * DAY_MS
            if t == day * DAY_MS and b >= day_end:
                parts.append(self._summary(spec, day))
                t = day_end
                continue
            stop = min(b, day_end)
            blk = self._block(spec, day)
            i0, i1 = (t - day * DAY_MS) // MINUTE_MS, (stop - day * DAY_MS) // MINUTE_MS
            idx = np.flatnonzero(blk.present[i0:i1]) + i0
            if idx.size:
                parts.append(
                    (
                        int(blk.open[idx[0]]),
                        int(blk.high[idx].max()),
                        int(blk.low[idx].min()),
                        int(blk.close[idx[-1]]),
                        int(blk.volume[idx].sum()),
                        int(blk.turnover[idx].sum()),
                    )
                )
            t = stop
        return combine(parts)

    # ---------------------------------------------------------------- candles

    def raw_candles(self, spec: InstrumentSpec, tf: Timeframe, start_ms: int, end_ms: int) -> RawCandles:
        """Complete candles whose open time is in ``[start_ms, end_ms]`` (both inclusive)."""
        first_open = tf.floor(max(start_ms, (spec.launch_ms // MINUTE_MS) * MINUTE_MS))
        if first_open < start_ms:
            first_open = tf.next_open(first_open)
        cols: list[list[np.ndarray]] = [[] for _ in range(7)]
        if first_open <= end_ms:
            if tf.kind == "fixed" and tf.duration_ms <= DAY_MS and DAY_MS % tf.duration_ms == 0:
                self._collect_intraday(spec, tf, first_open, end_ms, cols)
            else:
                self._collect_from_days(spec, tf, first_open, end_ms, cols)
        arrays = [np.concatenate(c) if c else np.empty(0, dtype=np.int64) for c in cols]
        return RawCandles(spec, *arrays)

    def _collect_intraday(
        self, spec: InstrumentSpec, tf: Timeframe, lo: int, hi: int, cols: list[list[np.ndarray]]
    ) -> None:
        m = tf.duration_ms // MINUTE_MS
        stop = hi if spec.delist_ms is None else min(hi, spec.delist_ms)
        for day in range(lo // DAY_MS, stop // DAY_MS + 1):
            any_, o, h, low, c, v, t = _group_reduce(self._block(spec, day), m)
            opens = day * DAY_MS + np.arange(any_.size, dtype=np.int64) * tf.duration_ms
            keep = any_ & (opens >= lo) & (opens <= hi)
            for dst, src in zip(cols, (opens, o, h, low, c, v, t), strict=True):
                dst.append(src[keep])

    def _collect_from_days(
        self, spec: InstrumentSpec, tf: Timeframe, lo: int, hi: int, cols: list[list[np.ndarray]]
    ) -> None:
        bucket = lo
        last = hi if spec.delist_ms is None else min(hi, spec.delist_ms)
        out: list[tuple[int, Agg]] = []
        while bucket <= last:
            nxt = tf.next_open(bucket)
            agg = combine([self._summary(spec, d) for d in range(bucket // DAY_MS, nxt // DAY_MS)])
            if agg is not None:
                out.append((bucket, agg))
            bucket = nxt
        if out:
            cols[0].append(np.array([b for b, _ in out], dtype=np.int64))
            for j in range(6):
                cols[j + 1].append(np.array([a[j] for _, a in out], dtype=np.int64))

    def candles(
        self, symbol: str, timeframe: str, start_ms: int, end_ms: int, *, category: str = "linear"
    ) -> pl.DataFrame:
        """Ground truth: every complete candle with ``start_ms <= ts <= end_ms``, ascending.

        Columns: ts (Datetime("ms", "UTC")), open, high, low, close, volume, turnover (float64,
        equal to what parsing the served strings gives).
        """
        spec = self.instrument(symbol, category)
        return self.raw_candles(spec, parse_timeframe(timeframe), start_ms, end_ms).to_frame()

    def forming_candle(self, spec: InstrumentSpec, tf: Timeframe, now_ms: int) -> RawCandles:
        """The candle still forming at ``now_ms`` (0 or 1 row): complete minutes so far plus the
        trades of the current minute up to ``now_ms`` (none yet: the minute adds nothing), so it
        changes only when a trade happens, as on Bybit.

        Its turnover is the exact sum of those trades' price x size (the closed candle's turnover
        uses the minute's drawn average price instead, see :meth:`recent_trades`).
        """
        bucket = tf.floor(now_ms)
        minute = (now_ms // MINUTE_MS) * MINUTE_MS
        parts: list[Agg | None] = [self._span(spec, bucket, minute) if minute > bucket else None]
        done = [t for t in self.minute_trades(spec, minute) if int(t["time"]) <= now_ms]  # type: ignore[call-overload]
        if done:
            prices = [parse_units(str(t["price"]), spec.price_scale) for t in done]
            sizes = [parse_units(str(t["size"]), spec.qty_scale) for t in done]
            # price x size carries price_scale + qty_scale decimals; rescale to the turnover's.
            shift = spec.price_scale + spec.qty_scale - spec.turnover_scale
            if spec.category == "inverse":  # turnover in the base coin: size / price
                turnover = sum(
                    size * 10 ** (spec.turnover_scale + spec.price_scale - spec.qty_scale) // price
                    for price, size in zip(prices, sizes, strict=True)
                )
            else:
                raw = sum(p * q for p, q in zip(prices, sizes, strict=True))
                turnover = raw // 10**shift if shift >= 0 else raw * 10**-shift
            parts.append((prices[0], max(prices), min(prices), prices[-1], sum(sizes), turnover))
        agg = combine(parts)
        if agg is None:
            empty = np.empty(0, dtype=np.int64)
            return RawCandles(spec, *([empty] * 7))
        return RawCandles(
            spec, np.array([bucket], dtype=np.int64), *(np.array([x], dtype=np.int64) for x in agg)
        )

    def select_klines(
        self,
        spec: InstrumentSpec,
        tf: Timeframe,
        start_ms: int | None,
        end_ms: int | None,
        limit: int,
        now_ms: int,
    ) -> RawCandles:
        """What ``/v5/market/kline`` answers at server time ``now_ms`` (ascending; the handler
        reverses it): candles with ``start <= ts <= end`` (both optional), at most ``limit``,
        the forming candle included when in range.

        An unaligned ``start`` with an ``end`` includes the candle containing ``start``; ``start``
        after ``end`` is an empty range.

        Anchoring: with ``end`` (or neither bound) the newest ``limit`` candles up to ``end``;
        with only ``start`` the oldest ``limit`` candles from ``start`` (as the recorded ccxt
        payload shows). A client paging in windows of at most ``limit`` candles is unaffected.
        """
        upper = now_ms if end_ms is None else min(end_ms, now_ms)
        listed = tf.floor((spec.launch_ms // MINUTE_MS) * MINUTE_MS)
        if start_ms is not None and end_ms is not None and start_ms > end_ms:
            # No recorded Bybit answer for start > end was found (docs, issues); the documented
            # range semantics (candles in [start, end]) make it an empty range: retCode 0 and an
            # empty list, as Bybit answers any range without candles.
            return concat_candles(spec, [])
        if start_ms is None:
            lower = listed
        elif end_ms is None:
            lower = max(start_ms, listed)
        else:
            # With both bounds Bybit includes the candle containing an unaligned start (mainnet,
            # start=1683472808000 end=1683472876000 -> 1683472800000 and 1683472860000); with
            # start alone it begins at the next aligned open (the recorded ccxt answer).
            lower = max(tf.floor(start_ms), listed)
        if upper < lower:
            return concat_candles(spec, [])
        forming_open = tf.floor(now_ms)
        closed_hi = min(upper, forming_open - 1)
        forming = self.forming_candle(spec, tf, now_ms) if lower <= forming_open <= upper else None
        span = max(tf.duration_ms, DAY_MS if tf.kind == "month" else 0) * (limit + 1)
        pieces: list[RawCandles] = []
        got = 0
        if start_ms is not None and end_ms is None:
            a = lower
            while a <= closed_hi and got < limit:
                b = min(closed_hi, a + span)
                piece = self.raw_candles(spec, tf, a, b)
                pieces.append(piece)
                got += len(piece)
                a = b + 1
            if forming is not None:
                pieces.append(forming)
            out = concat_candles(spec, pieces)
            return out.take(slice(0, limit))
        if forming is not None:
            pieces.append(forming)
            got = len(forming)
        b = closed_hi
        while b >= lower and got < limit:
            a = max(lower, b - span)
            piece = self.raw_candles(spec, tf, a, b)
            pieces.insert(0, piece)
            got += len(piece)
            b = a - 1
        out = concat_candles(spec, pieces)
        return out.take(slice(max(0, len(out) - limit), len(out)))

    # ---------------------------------------------------------------- trades

    def recent_trades(self, spec: InstrumentSpec, now_ms: int, limit: int) -> list[dict[str, object]]:
        """The newest ``limit`` trades at or before ``now_ms``, newest first, as wire objects.

        Each minute's trades split that minute's volume exactly and start at its open and end at
        its close; their turnover is not the candle's (which uses a drawn average price).
        """
        out: list[dict[str, object]] = []
        minute = (now_ms // MINUTE_MS) * MINUTE_MS
        floor = max((spec.launch_ms // MINUTE_MS) * MINUTE_MS, minute - 7 * DAY_MS)
        while len(out) < limit and minute >= floor:
            day = minute // DAY_MS
            blk = self._block(spec, day)
            i = (minute - day * DAY_MS) // MINUTE_MS
            if blk.present[i]:
                trades = self._minute_trades(spec, blk, i, minute)
                out.extend(t for t in reversed(trades) if int(t["time"]) <= now_ms)  # type: ignore[call-overload]
            minute -= MINUTE_MS
        return out[:limit]

    def minute_trades(self, spec: InstrumentSpec, minute_ms: int) -> list[dict[str, object]]:
        """The trades of the minute opening at ``minute_ms`` (aligned), oldest first, as REST wire
        objects; empty when the instrument has no candle that minute."""
        minute = (minute_ms // MINUTE_MS) * MINUTE_MS
        if minute < (spec.launch_ms // MINUTE_MS) * MINUTE_MS:
            return []
        day = minute // DAY_MS
        blk = self._block(spec, day)
        i = (minute - day * DAY_MS) // MINUTE_MS
        return self._minute_trades(spec, blk, i, minute) if blk.present[i] else []

    def trades_between(self, spec: InstrumentSpec, start_ms: int, end_ms: int) -> list[dict[str, object]]:
        """Every trade with ``start_ms <= time < end_ms``, oldest first, as REST wire objects (the
        same trades :meth:`recent_trades` and the WebSocket ``publicTrade`` pushes serve)."""
        out: list[dict[str, object]] = []
        minute = (start_ms // MINUTE_MS) * MINUTE_MS
        while minute < end_ms:
            out.extend(
                t for t in self.minute_trades(spec, minute) if start_ms <= int(t["time"]) < end_ms  # type: ignore[call-overload]
            )
            minute += MINUTE_MS
        return out

    def trades(self, symbol: str, start_ms: int, end_ms: int, *, category: str = "linear") -> pl.DataFrame:
        """Ground truth: every trade with ``start_ms <= ts < end_ms``, oldest first.

        Columns: ts (Datetime("us", "UTC")), price, size (float64), side, trade_id (string), seq
        (int64): the stored trade schema's key columns plus the exchange's sequence number.
        """
        rows = self.trades_between(self.instrument(symbol, category), start_ms, end_ms)
        return pl.DataFrame(
            {
                "ts": pl.Series([int(t["time"]) * 1000 for t in rows], dtype=pl.Int64).cast(  # type: ignore[call-overload]
                    pl.Datetime("us", "UTC")
                ),
                "price": pl.Series([float(t["price"]) for t in rows], dtype=pl.Float64),  # type: ignore[arg-type]
                "size": pl.Series([float(t["size"]) for t in rows], dtype=pl.Float64),  # type: ignore[arg-type]
                "side": pl.Series([t["side"] for t in rows], dtype=pl.String),
                "trade_id": pl.Series([t["execId"] for t in rows], dtype=pl.String),
                "seq": pl.Series([int(t["seq"]) for t in rows], dtype=pl.Int64),  # type: ignore[call-overload]
            }
        )

    def _minute_trades(
        self, spec: InstrumentSpec, blk: _DayBlock, i: int, minute: int
    ) -> list[dict[str, object]]:
        rng = random.Random(stable_hash(self.seed, spec.key, minute, "trades"))
        lots = int(blk.volume[i]) // spec.lot_units
        n = max(1, min(lots, rng.randint(2, 12)))
        weights = [rng.random() + 0.1 for _ in range(n)]
        total = sum(weights)
        sizes = [1 + int(w / total * (lots - n)) for w in weights]
        sizes[-1] += lots - sum(sizes)
        o, h, lo, c = (int(x) for x in (blk.open[i], blk.high[i], blk.low[i], blk.close[i]))
        tu = spec.tick_units
        prices = [lo + rng.randrange((h - lo) // tu + 1) * tu for _ in range(n)]
        prices[0] = o
        if n >= 4:
            prices[1], prices[2] = h, lo
        prices[-1] = c
        times = sorted(rng.randrange(MINUTE_MS) for _ in range(n))
        out = []
        prev = o
        for k in range(n):
            tid = stable_hash(self.seed, spec.key, minute, k)
            if spec.category == "spot":
                exec_id = str(2_100_000_000_000_000_000 + (minute // MINUTE_MS) * 16 + k)
            else:
                h16 = f"{tid:016x}{stable_hash(tid):016x}"
                exec_id = f"{h16[:8]}-{h16[8:12]}-5{h16[13:16]}-8{h16[17:20]}-{h16[20:32]}"
            side = "Buy" if prices[k] > prev or (prices[k] == prev and rng.random() < 0.5) else "Sell"
            prev = prices[k]
            out.append(
                {
                    "execId": exec_id,
                    "symbol": spec.symbol,
                    "price": format_fixed(prices[k], spec.price_scale),  # "51444.40", as Bybit
                    "size": format_decimal(sizes[k] * spec.lot_units, spec.qty_scale),
                    "side": side,
                    "time": str(minute + times[k]),
                    "isBlockTrade": False,
                    "isRPITrade": False,
                    "seq": str((minute // MINUTE_MS) * 16 + k),
                }
            )
        return out
