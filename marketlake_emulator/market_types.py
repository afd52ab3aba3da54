"""Data types of the synthetic market: instruments, integer candles, Bybit-style decimals, and the
seeded construction of instruments and outages. Split from :mod:`market` to keep files small."""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import msgspec
import numpy as np
import polars as pl

from marketlake.core.symbols import validate_symbol
from marketlake.core.timeframes import DAY_MS, MINUTE_MS

__all__ = [
    "Agg",
    "InstrumentSpec",
    "RawCandles",
    "decimal_rows_json",
    "format_decimal",
    "format_decimal_column",
    "make_instrument",
    "seeded_outages",
]

_MIN_PER_DAY: Final = 1440
_FLOAT_EXACT: Final = 2**53


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


def format_fixed(units: int, scale: int) -> str:
    """Write ``units * 10**-scale`` with exactly ``scale`` decimals (``51444.40``, ``1190.000``):
    how Bybit writes trade prices and order-size limits, unlike kline values (trimmed)."""
    if scale == 0:
        return str(units)
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), 10**scale)
    return f"{sign}{whole}.{frac:0{scale}d}"


def parse_units(text: str, scale: int) -> int:
    """The inverse of :func:`format_decimal` / :func:`format_fixed`: ``"51444.40"`` at scale 2 is
    5144440 (exact: no float on the way)."""
    whole, _, frac = text.partition(".")
    sign = -1 if whole.startswith("-") else 1
    frac = (frac + "0" * scale)[:scale]
    return sign * (abs(int(whole or "0")) * 10**scale + int(frac or "0"))


_POW10_DESC: Final = np.array([10**k for k in range(18, -1, -1)], dtype=np.int64)  # 10**18 .. 1


def _decimal_chars(units: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """ASCII of :func:`format_decimal` for every value, as a fixed-width character matrix and the
    mask of the characters to keep (leading zeros, trailing fraction zeros and a bare dot dropped).
    """
    if units.size and int(units.min()) < 0:
        raise ValueError("format_decimal_column takes non-negative units")
    top = int(units.max()) if units.size else 0
    width = max(len(str(top)), scale + 1)
    digits = (units[:, None] // _POW10_DESC[None, 19 - width :]) % 10  # most significant first
    whole = width - scale
    nonzero = digits[:, :whole] != 0
    first = np.where(nonzero.any(axis=1), nonzero.argmax(axis=1), whole - 1)
    keep_whole = np.arange(whole)[None, :] >= first[:, None]
    if scale == 0:
        return (digits + 48).astype(np.uint8), keep_whole
    frac_nonzero = digits[:, whole:] != 0
    has_frac = frac_nonzero.any(axis=1)
    last = scale - 1 - frac_nonzero[:, ::-1].argmax(axis=1)
    keep_frac = (np.arange(scale)[None, :] <= last[:, None]) & has_frac[:, None]
    chars = np.empty((units.size, width + 1), dtype=np.uint8)
    chars[:, :whole] = digits[:, :whole] + 48
    chars[:, whole] = ord(".")
    chars[:, whole + 1 :] = digits[:, whole:] + 48
    return chars, np.concatenate([keep_whole, has_frac[:, None], keep_frac], axis=1)


def _literal(n: int, text: bytes) -> tuple[np.ndarray, np.ndarray]:
    row = np.frombuffer(text, dtype=np.uint8)
    return np.broadcast_to(row, (n, row.size)), np.ones((n, row.size), dtype=bool)


def decimal_rows_json(columns: Sequence[np.ndarray], scales: Sequence[int]) -> bytes:
    """A JSON array of rows of decimal strings (``[["1","0.5"],...]``), built without a Python
    loop over values: character matrices are laid side by side and the kept characters read out
    in row order. Several times faster than formatting each value (the emulator's hot path).
    """
    n = columns[0].size
    if n == 0:
        return b"[]"
    parts = [_literal(n, b'["')]
    for i, (col, scale) in enumerate(zip(columns, scales, strict=True)):
        if i:
            parts.append(_literal(n, b'","'))
        parts.append(_decimal_chars(np.ascontiguousarray(col, dtype=np.int64), scale))
    parts.append(_literal(n, b'"],'))
    chars = np.concatenate([p[0] for p in parts], axis=1)
    keep = np.concatenate([p[1] for p in parts], axis=1)
    return b"[" + chars[keep].tobytes()[:-1] + b"]"


def format_decimal_column(units: np.ndarray, scale: int) -> list[str]:
    """:func:`format_decimal` over an int64 array of non-negative units."""
    return [row[0] for row in msgspec.json.decode(decimal_rows_json([units], [scale]))]


def units_to_float(units: np.ndarray, scale: int) -> np.ndarray:
    """Exact-as-parsed floats: the float nearest to ``units * 10**-scale``, as ``float(str)``
    of the decimal string gives (one correctly rounded division while both operands are exact)."""
    if units.size and int(np.abs(units).max()) >= _FLOAT_EXACT:
        return np.array([int(u) / 10**scale for u in units], dtype=np.float64)
    return units.astype(np.float64) / float(10**scale)


def stable_hash(*parts: object) -> int:
    """A hash of ``parts`` that is the same in every process and run (unlike ``hash``)."""
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
        return RawCandles(
            self.spec,
            self.ts[idx],
            self.open[idx],
            self.high[idx],
            self.low[idx],
            self.close[idx],
            self.volume[idx],
            self.turnover[idx],
        )

    def to_frame(self) -> pl.DataFrame:
        """Float frame: ts (Datetime ms UTC), open, high, low, close, volume, turnover."""
        s = self.spec
        return pl.DataFrame(
            {
                "ts": pl.Series(self.ts, dtype=pl.Int64).cast(pl.Datetime("ms", "UTC")),
                "open": units_to_float(self.open, s.price_scale),
                "high": units_to_float(self.high, s.price_scale),
                "low": units_to_float(self.low, s.price_scale),
                "close": units_to_float(self.close, s.price_scale),
                "volume": units_to_float(self.volume, s.qty_scale),
                "turnover": units_to_float(self.turnover, s.turnover_scale),
            }
        )

    def wire_json(self) -> bytes:
        """Rows as Bybit sends them (7 strings each, newest first), as JSON array text (the
        emulator splices it into the envelope)."""
        s = self.spec
        cols = (self.ts, self.open, self.high, self.low, self.close, self.volume, self.turnover)
        scales = (0,) + (s.price_scale,) * 4 + (s.qty_scale, s.turnover_scale)
        return decimal_rows_json([c[::-1] for c in cols], scales)

    def wire_rows(self) -> list[list[str]]:
        """Rows as Bybit sends them: 7 strings each, newest first."""
        return msgspec.json.decode(self.wire_json())


Agg = tuple[int, int, int, int, int, int]  # open, high, low, close, volume, turnover (units)


def combine(parts: Sequence[Agg | None]) -> Agg | None:
    """Aggregate consecutive candle parts (None = no candle): first open, max high, min low,
    last close, summed volume and turnover; None when no part exists."""
    present = [p for p in parts if p is not None]
    if not present:
        return None
    return (
        present[0][0],
        max(p[1] for p in present),
        min(p[2] for p in present),
        present[-1][3],
        sum(p[4] for p in present),
        sum(p[5] for p in present),
    )


def concat_candles(spec: InstrumentSpec, pieces: Sequence[RawCandles]) -> RawCandles:
    """Concatenate candle pieces of one instrument (in the order given)."""
    if not pieces:
        empty = np.empty(0, dtype=np.int64)
        return RawCandles(spec, *([empty] * 7))
    return RawCandles(
        spec,
        *(
            np.concatenate([getattr(p, f) for p in pieces])
            for f in ("ts", "open", "high", "low", "close", "volume", "turnover")
        ),
    )


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


def make_instrument(
    seed: int, category: str, symbol: str, listing_from: int, listing_until: int
) -> InstrumentSpec:
    """A seeded instrument: known parameters for BTC/ETH, drawn ones (price level, tick, lot,
    listing time, every 40th delisted) for generated names."""
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
        symbol=symbol,
        category=category,
        base_coin=base,
        quote_coin=quote,
        launch_ms=launch,
        base_price=price,
        price_scale=ps,
        tick_units=tu,
        qty_scale=qs,
        lot_units=lu,
        turnover_scale=turnover_scale,
        daily_vol=rnd.uniform(0.02, 0.06),
        mean_lots=mean,
        delist_ms=delist,
    )


def seeded_outages(seed: int) -> list[tuple[int, int]]:
    """Seeded exchange-wide outages: one every 25-55 days, 10-120 minutes long, 2019-2031."""
    rnd = random.Random(f"{seed}:outages")
    out = []
    t = 1_546_300_800_000  # 2019-01-01
    end = 1_924_992_000_000  # 2031-01-01
    while t < end:
        t += rnd.randrange(25, 55) * DAY_MS + rnd.randrange(_MIN_PER_DAY) * MINUTE_MS
        out.append((t, t + rnd.randrange(10, 121) * MINUTE_MS))
    return out
