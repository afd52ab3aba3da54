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

import hashlib
import math
import random
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import polars as pl

from marketlake.core.symbols import validate_category, validate_symbol
from marketlake.core.timeframes import DAY_MS, MINUTE_MS, Timeframe, parse_timeframe
from marketlake.errors import InvalidSymbolError

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
_FLOAT_EXACT: Final = 2**53
_SUMMARY_CACHE: Final = 500_000
# Periods (days) and amplitudes (log-price) of the slow price waves; phases are seeded.
_WAVES: Final = ((17.0, 0.04), (97.0, 0.15), (431.0, 0.45))


def format_decimal(units: int, scale: int) -> str:
    """Write ``units * 10**-scale`` as Bybit does: no exponent, no trailing zeros (``43488``,
    ``43376.1``, ``0.000005``)."""
    if scale == 0:
        return str(units)
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), 10**scale)
    if frac == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{frac:0{scale}d}".rstrip("0")


_POW10: Final = np.array([10**k for k in range(19)], dtype=np.int64)


def format_decimal_column(units: np.ndarray, scale: int) -> list[str]:
    """:func:`format_decimal` over an int64 array (non-negative), vectorised where numpy can."""
    if scale == 0:
        return [str(u) for u in units.tolist()]
    whole, frac = np.divmod(units, 10**scale)
    zeros = np.zeros(units.size, dtype=np.int64)
    for k in range(1, scale):
        zeros += frac % _POW10[k] == 0
    digits = np.where(frac == 0, 0, scale - zeros)
    shown = frac // _POW10[np.where(frac == 0, 0, zeros)]
    return [
        "%d.%0*d" % (w, k, f) if k else "%d" % w
        for w, k, f in zip(whole.tolist(), digits.tolist(), shown.tolist(), strict=True)
    ]


def _units_to_float(units: np.ndarray, scale: int) -> np.ndarray:
    """Exact-as-parsed floats: the float nearest to ``units * 10**-scale``, as ``float(str)``
    of the decimal string gives (one correctly rounded division while both operands are exact)."""
    if units.size and int(np.abs(units).max()) >= _FLOAT_EXACT:
        return np.array([int(u) / 10**scale for u in units], dtype=np.float64)
    return units.astype(np.float64) / float(10**scale)


def _stable_hash(*parts: object) -> int:
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


@dataclass(frozen=True, slots=True)
class InstrumentSpec:
    """One synthetic instrument.

    Attributes:
        symbol: Exchange symbol.
        category: ``linear``, ``spot`` or ``inverse``.
        base_coin: Base coin.
        quote_coin: Quote coin (inverse: USD).
        launch_ms: Listing time; the first candle is the one containing it.
        base_price: Price level the walk moves around.
        price_scale: Decimal places of prices; tick = ``tick_units * 10**-price_scale``.
        tick_units: Tick size in units of ``10**-price_scale``.
        qty_scale: Decimal places of quantities; lot = ``lot_units * 10**-qty_scale``.
        lot_units: Lot step in units of ``10**-qty_scale``.
        turnover_scale: Decimal places of turnover (linear/spot: price + qty scales; inverse: 8).
        daily_vol: Daily log-price volatility of the intraday walk.
        mean_lots: Mean volume per minute, in lots.
        delist_ms: Delisting time (no candles from there on), or None.
    """

    symbol: str
    category: str
    base_coin: str
    quote_coin: str
    launch_ms: int
    base_price: float
    price_scale: int
    tick_units: int
    qty_scale: int
    lot_units: int
    turnover_scale: int
    daily_vol: float = 0.03
    mean_lots: float = 1000.0
    delist_ms: int | None = None
    key: int = field(default=0, compare=False)

    @property
    def tick_size(self) -> str:
        """Tick as Bybit writes it (``"0.10"`` style: padded to the price scale)."""
        whole, frac = divmod(self.tick_units, 10**self.price_scale)
        return f"{whole}.{frac:0{self.price_scale}d}" if self.price_scale else str(whole)

    @property
    def qty_step(self) -> str:
        """Lot step as Bybit writes it."""
        whole, frac = divmod(self.lot_units, 10**self.qty_scale)
        return f"{whole}.{frac:0{self.qty_scale}d}" if self.qty_scale else str(whole)

    def status(self, now_ms: int) -> str:
        """Bybit ``status`` at ``now_ms``: PreLaunch, Trading or Closed."""
        if now_ms < self.launch_ms:
            return "PreLaunch"
        if self.delist_ms is not None and now_ms >= self.delist_ms:
            return "Closed"
        return "Trading"


@dataclass(frozen=True, slots=True)
class RawCandles:
    """Candles as exact integers (units of ``10**-scale`` of the instrument), ascending by ts."""

    spec: InstrumentSpec
    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    turnover: np.ndarray

    def __len__(self) -> int:
        return int(self.ts.size)

    def take(self, idx: np.ndarray | slice) -> RawCandles:
        """Rows at ``idx``."""
        return RawCandles(self.spec, self.ts[idx], self.open[idx], self.high[idx], self.low[idx],
                          self.close[idx], self.volume[idx], self.turnover[idx])

    def to_frame(self) -> pl.DataFrame:
        """Float frame: ts (Datetime ms UTC), open, high, low, close, volume, turnover."""
        s = self.spec
        return pl.DataFrame(
            {
                "ts": pl.Series(self.ts, dtype=pl.Int64).cast(pl.Datetime("ms", "UTC")),
                "open": _units_to_float(self.open, s.price_scale),
                "high": _units_to_float(self.high, s.price_scale),
                "low": _units_to_float(self.low, s.price_scale),
                "close": _units_to_float(self.close, s.price_scale),
                "volume": _units_to_float(self.volume, s.qty_scale),
                "turnover": _units_to_float(self.turnover, s.turnover_scale),
            }
        )

    def _wire_columns(self) -> list[list[str]]:
        s = self.spec
        scales = (s.price_scale,) * 4 + (s.qty_scale, s.turnover_scale)
        cols = (self.open, self.high, self.low, self.close, self.volume, self.turnover)
        return [[str(t) for t in self.ts.tolist()]] + [
            format_decimal_column(c, k) for c, k in zip(cols, scales, strict=True)
        ]

    def wire_rows(self) -> list[list[str]]:
        """Rows as Bybit sends them: 7 strings each, newest first."""
        rows = [list(r) for r in zip(*self._wire_columns(), strict=True)]
        rows.reverse()
        return rows

    def wire_json(self) -> bytes:
        """:meth:`wire_rows` encoded as a JSON array (the emulator splices it into the envelope;
        building the text directly is several times faster than encoding nested lists)."""
        if not len(self):
            return b"[]"
        rows = ['","'.join(r) for r in zip(*self._wire_columns(), strict=True)]
        rows.reverse()
        return ('[["' + '"],["'.join(rows) + '"]]').encode()


_Agg = tuple[int, int, int, int, int, int]  # open, high, low, close, volume, turnover (units)


def _combine(parts: Sequence[_Agg | None]) -> _Agg | None:
    present = [p for p in parts if p is not None]
    if not present:
        return None
    return (present[0][0], max(p[1] for p in present), min(p[2] for p in present),
            present[-1][3], sum(p[4] for p in present), sum(p[5] for p in present))


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
            keyed = InstrumentSpec(**{**_spec_fields(spec), "key": _stable_hash(spec.category, spec.symbol)})
            self._specs[(spec.category, spec.symbol)] = keyed
        ordered = sorted((int(a), int(b)) for a, b in outages)
        for a, b in ordered:
            if a % MINUTE_MS or b % MINUTE_MS or b <= a:
                raise ValueError(f"outage ({a}, {b}) must be minute-aligned with start < end")
        self.outages: tuple[tuple[int, int], ...] = tuple(ordered)
        self._out_starts = np.array([a for a, _ in ordered], dtype=np.int64)
        self._out_ends = np.array([b for _, b in ordered], dtype=np.int64)
        self._blocks: OrderedDict[tuple[int, int], _DayBlock] = OrderedDict()
        self._summaries: dict[tuple[int, int], _Agg | None] = {}
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
        specs = [_make_spec(seed, "linear", s, listing_from_ms, listing_until_ms) for s in names]
        specs += [_make_spec(seed, "spot", s, listing_from_ms, listing_until_ms) for s in spot]
        specs += [_make_spec(seed, "inverse", s, listing_from_ms, listing_until_ms) for s in inverse]
        if outages is None:
            outages = _seeded_outages(seed)
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
        rnd = random.Random(_stable_hash(self.seed, spec.key, "phase"))
        level = math.log(spec.base_price)
        for period, amp in _WAVES:
            level += amp * math.sin(2 * math.pi * day / period + rnd.uniform(0, 2 * math.pi))
        noise = random.Random(_stable_hash(self.seed, spec.key, day, "mid")).gauss(0.0, 1.0)
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
        hi = np.maximum(o, c) + np.floor(np.abs(rng.standard_normal(n)) * wick).astype(np.int64) * spec.tick_units
        lo = np.minimum(o, c) - np.floor(np.abs(rng.standard_normal(n)) * wick).astype(np.int64) * spec.tick_units
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

    def _summary(self, spec: InstrumentSpec, day: int) -> _Agg | None:
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
                    int(b.open[idx[0]]), int(b.high[idx].max()), int(b.low[idx].min()),
                    int(b.close[idx[-1]]), int(b.volume[idx].sum()), int(b.turnover[idx].sum()),
                )
        return self._summaries[key]

    def _span(self, spec: InstrumentSpec, a: int, b: int) -> _Agg | None:
        """Aggregate of the minutes opening in ``[a, b)`` (minute-aligned)."""
        parts: list[_Agg | None] = []
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
                parts.append((int(blk.open[idx[0]]), int(blk.high[idx].max()), int(blk.low[idx].min()),
                              int(blk.close[idx[-1]]), int(blk.volume[idx].sum()),
                              int(blk.turnover[idx].sum())))
            t = stop
        return _combine(parts)

    # ---------------------------------------------------------------- candles

    def raw_candles(
        self, spec: InstrumentSpec, tf: Timeframe, start_ms: int, end_ms: int
    ) -> RawCandles:
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

    def _collect_intraday(self, spec: InstrumentSpec, tf: Timeframe, lo: int, hi: int,
                          cols: list[list[np.ndarray]]) -> None:
        m = tf.duration_ms // MINUTE_MS
        stop = hi if spec.delist_ms is None else min(hi, spec.delist_ms)
        for day in range(lo // DAY_MS, stop // DAY_MS + 1):
            any_, o, h, low, c, v, t = _group_reduce(self._block(spec, day), m)
            opens = day * DAY_MS + np.arange(any_.size, dtype=np.int64) * tf.duration_ms
            keep = any_ & (opens >= lo) & (opens <= hi)
            for dst, src in zip(cols, (opens, o, h, low, c, v, t), strict=True):
                dst.append(src[keep])

    def _collect_from_days(self, spec: InstrumentSpec, tf: Timeframe, lo: int, hi: int,
                           cols: list[list[np.ndarray]]) -> None:
        bucket = lo
        last = hi if spec.delist_ms is None else min(hi, spec.delist_ms)
        out: list[tuple[int, _Agg]] = []
        while bucket <= last:
            nxt = tf.next_open(bucket)
            agg = _combine([self._summary(spec, d) for d in range(bucket // DAY_MS, nxt // DAY_MS)])
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
        current minute's part, scaled by how much of the minute has passed."""
        bucket = tf.floor(now_ms)
        minute = (now_ms // MINUTE_MS) * MINUTE_MS
        frac = (now_ms - minute) / MINUTE_MS
        parts: list[_Agg | None] = [self._span(spec, bucket, minute) if minute > bucket else None]
        day = minute // DAY_MS
        blk = self._block(spec, day)
        i = (minute - day * DAY_MS) // MINUTE_MS
        if frac > 0 and blk.present[i]:
            o, c = int(blk.open[i]), int(blk.close[i])
            tu = spec.tick_units
            cf = o + int(round(frac * (c - o) / tu)) * tu
            hf = max(o, cf) + int(frac * (int(blk.high[i]) - max(o, c)) / tu) * tu
            lf = max(min(o, cf) - int(frac * (min(o, c) - int(blk.low[i])) / tu) * tu, tu)
            vf = int(frac * int(blk.volume[i]) / spec.lot_units) * spec.lot_units
            vwap = min(max(int(blk.high[i] + blk.low[i]) // 2 // tu * tu, lf), hf)
            tv = int(self._turnover(spec, np.array([vf]), np.array([vwap]))[0])
            parts.append((o, hf, lf, cf, vf, tv))
        agg = _combine(parts)
        if agg is None:
            empty = np.empty(0, dtype=np.int64)
            return RawCandles(spec, *([empty] * 7))
        return RawCandles(spec, np.array([bucket], dtype=np.int64),
                          *(np.array([x], dtype=np.int64) for x in agg))

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

        Anchoring: with ``end`` (or neither bound) the newest ``limit`` candles up to ``end``;
        with only ``start`` the oldest ``limit`` candles from ``start`` (as the recorded ccxt
        payload shows). A client paging in windows of at most ``limit`` candles is unaffected.
        """
        upper = now_ms if end_ms is None else min(end_ms, now_ms)
        listed = tf.floor((spec.launch_ms // MINUTE_MS) * MINUTE_MS)
        lower = listed if start_ms is None else max(start_ms, listed)
        if upper < lower:
            return _concat(spec, [])
        forming_open = tf.floor(now_ms)
        closed_hi = min(upper, forming_open - 1)
        forming = (self.forming_candle(spec, tf, now_ms)
                   if lower <= forming_open <= upper else None)
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
            out = _concat(spec, pieces)
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
        out = _concat(spec, pieces)
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

    def _minute_trades(self, spec: InstrumentSpec, blk: _DayBlock, i: int, minute: int) -> list[dict[str, object]]:
        rng = random.Random(_stable_hash(self.seed, spec.key, minute, "trades"))
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
            tid = _stable_hash(self.seed, spec.key, minute, k)
            if spec.category == "spot":
                exec_id = str(2_100_000_000_000_000_000 + (minute // MINUTE_MS) * 16 + k)
            else:
                h16 = f"{tid:016x}{_stable_hash(tid):016x}"
                exec_id = f"{h16[:8]}-{h16[8:12]}-5{h16[13:16]}-8{h16[17:20]}-{h16[20:32]}"
            side = "Buy" if prices[k] > prev or (prices[k] == prev and rng.random() < 0.5) else "Sell"
            prev = prices[k]
            out.append({
                "execId": exec_id,
                "symbol": spec.symbol,
                "price": format_decimal(prices[k], spec.price_scale),
                "size": format_decimal(sizes[k] * spec.lot_units, spec.qty_scale),
                "side": side,
                "time": str(minute + times[k]),
                "isBlockTrade": False,
                "isRPITrade": False,
                "seq": str((minute // MINUTE_MS) * 16 + k),
            })
        return out


def _concat(spec: InstrumentSpec, pieces: Sequence[RawCandles]) -> RawCandles:
    if not pieces:
        empty = np.empty(0, dtype=np.int64)
        return RawCandles(spec, *([empty] * 7))
    return RawCandles(spec, *(np.concatenate([getattr(p, f) for p in pieces])
                              for f in ("ts", "open", "high", "low", "close", "volume", "turnover")))


def _spec_fields(spec: InstrumentSpec) -> dict[str, object]:
    return {f: getattr(spec, f) for f in InstrumentSpec.__dataclass_fields__}


_KNOWN: Final = {
    # (category, symbol): launch_ms, base price, price scale, tick units, qty scale, lot units,
    # mean lots per minute
    ("linear", "BTCUSDT"): (1_585_526_400_000, 30_000.0, 2, 10, 3, 1, 20_000.0),
    ("linear", "ETHUSDT"): (1_615_766_400_000, 2_000.0, 2, 1, 2, 1, 30_000.0),
    ("spot", "BTCUSDT"): (1_625_097_600_000, 30_000.0, 2, 1, 6, 1, 2_000_000.0),
    ("spot", "ETHUSDT"): (1_625_097_600_000, 2_000.0, 2, 1, 5, 1, 1_000_000.0),
    ("inverse", "BTCUSD"): (1_542_153_600_000, 30_000.0, 1, 5, 0, 1, 150_000.0),
    ("inverse", "ETHUSD"): (1_548_979_200_000, 2_000.0, 2, 5, 0, 1, 20_000.0),
}


def _make_spec(seed: int, category: str, symbol: str, listing_from: int, listing_until: int) -> InstrumentSpec:
    validate_symbol(symbol)
    rnd = random.Random(f"{seed}:{category}:{symbol}")
    quote = "USD" if category == "inverse" else ("USDC" if symbol.endswith("USDC") else "USDT")
    base = symbol[: -len(quote)] if symbol.endswith(quote) and len(symbol) > len(quote) else symbol
    delist = None
    known = _KNOWN.get((category, symbol))
    if known is not None:
        launch, price, ps, tu, qs, lu, mean = known
    else:
        launch = rnd.randrange(listing_from, max(listing_from + 1, listing_until))
        price = 10 ** rnd.uniform(-2.0, 3.0)
        mag = math.floor(math.log10(price))
        ps, tu = max(0, 4 - mag), 1
        lot_exp = math.floor(math.log10(1.0 / price))
        qs, lu = max(0, -lot_exp), 10 ** max(0, lot_exp)
        mean = rnd.uniform(50.0, 5_000.0)
        digits = "".join(ch for ch in symbol if ch.isdigit())
        if digits and int(digits) % 40 == 0:
            delist = launch + rnd.randrange(300, 700) * DAY_MS
    turnover_scale = 8 if category == "inverse" else ps + qs
    return InstrumentSpec(
        symbol=symbol, category=category, base_coin=base, quote_coin=quote, launch_ms=launch,
        base_price=price, price_scale=ps, tick_units=tu, qty_scale=qs, lot_units=lu,
        turnover_scale=turnover_scale, daily_vol=rnd.uniform(0.02, 0.06), mean_lots=mean,
        delist_ms=delist,
    )


def _seeded_outages(seed: int) -> list[tuple[int, int]]:
    rnd = random.Random(f"{seed}:outages")
    out = []
    t = 1_546_300_800_000  # 2019-01-01
    end = 1_924_992_000_000  # 2031-01-01
    while t < end:
        t += rnd.randrange(25, 55) * DAY_MS + rnd.randrange(_MIN_PER_DAY) * MINUTE_MS
        out.append((t, t + rnd.randrange(10, 121) * MINUTE_MS))
    return out
