"""Cross-timeframe consistency: a stored higher-timeframe series against the resampled 1m series.

Bybit's 5m/15m/60m/D candles are aggregates of its 1m candles, so a lake that stores both can
check one against the other. Only buckets that the base series' time span fully covers are
compared (a bucket half outside the stored 1m range says nothing about either series). Within
that span each bucket is one of:

* ``missing_in_higher``: the base has candles there, the higher series has no row;
* ``missing_in_base``: the higher series has a row, the base has no candle in the bucket;
* ``values_differ``: both have it and some column differs. Prices (open, high, low, close) and
  ``trades`` must be equal (NaN equals NaN); volume and turnover may differ by ``rel_tol``
  relative (float sums depend on summation order). Null turnover or trades on either side is
  not compared. ``base_rows``/``expected_rows`` tell whether the base bucket was complete.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import msgspec
import numpy as np
import polars as pl

from marketlake.core._frames import FrameLike, as_frame, ts_column
from marketlake.core.candles import expected_rows, resample_with_counts
from marketlake.core.integrity import format_ts
from marketlake.core.timeframes import Timeframe, parse_timeframe
from marketlake.errors import SchemaMismatchError

__all__ = ["ConsistencyResult", "Mismatch", "check_consistency"]

_PRICES: Final = ("open", "high", "low", "close")
_SUMS: Final = ("volume", "turnover")


class Mismatch(msgspec.Struct, frozen=True):
    """One bucket where the stored higher timeframe disagrees with the resampled base.

    Attributes:
        ts: Bucket open (epoch ms).
        kind: ``missing_in_higher``, ``missing_in_base`` or ``values_differ``.
        columns: The differing columns (``values_differ`` only).
        base_rows: Base candles in the bucket.
        expected_rows: Base candles a complete bucket holds.
    """

    ts: int
    kind: str
    columns: tuple[str, ...]
    base_rows: int
    expected_rows: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with ``ts`` also as UTC text."""
        out = msgspec.structs.asdict(self)
        out["columns"] = list(self.columns)
        out["timestamp"] = format_ts(self.ts)
        return out


@dataclass(frozen=True, slots=True)
class ConsistencyResult:
    """Outcome of :func:`check_consistency`.

    Attributes:
        timeframe: The higher timeframe checked.
        compared: Buckets compared (inside the base series' span).
        mismatches: The disagreeing buckets, in time order.
    """

    timeframe: Timeframe
    compared: int
    mismatches: list[Mismatch]

    @property
    def ok(self) -> bool:
        """True when no bucket disagrees."""
        return not self.mismatches

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "timeframe": self.timeframe.name,
            "compared": self.compared,
            "mismatches": [m.to_dict() for m in self.mismatches],
        }


def _same_exact(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a == b) | (np.isnan(a) & np.isnan(b))


def _same_rel(a: np.ndarray, b: np.ndarray, rel_tol: float) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        close = np.abs(a - b) <= rel_tol * np.maximum(np.abs(a), np.abs(b))
    return close | (a == b) | (np.isnan(a) & np.isnan(b))


def check_consistency(
    base: FrameLike,
    higher: FrameLike,
    timeframe: str | int | Timeframe,
    *,
    base_timeframe: str | int | Timeframe = "1",
    rel_tol: float = 1e-9,
) -> ConsistencyResult:
    """Compare a stored ``timeframe`` series with the resample of the stored base (1m) series.

    Args:
        base: The base candles (``ts`` int ms or Datetime, open, high, low, close, volume,
            optional turnover, trades), assumed free of duplicates (see ``check_candles``).
        higher: The stored candles of ``timeframe``, same columns.
        timeframe: The higher timeframe (5, 15, 60, D ...).
        base_timeframe: The timeframe of ``base`` (default 1 minute).
        rel_tol: Relative tolerance for volume and turnover.

    Returns:
        The buckets compared and those that disagree (see the module docstring).

    Raises:
        SchemaMismatchError: a required column is missing or null.
        InvalidTimeframeError: a timeframe is unknown.
        DataValidationError: ``timeframe`` buckets are not unions of ``base_timeframe`` buckets.
    """
    tf = parse_timeframe(timeframe)
    src = parse_timeframe(base_timeframe)
    resampled, rows = resample_with_counts(base, tf, src)
    hi = as_frame(higher, "higher candles")
    hts, scale = ts_column(hi, "higher candles")
    for name in (*_PRICES, "volume"):
        if name not in hi.columns:
            raise SchemaMismatchError(f"higher candles: missing column {name!r}")
    if resampled.height == 0:
        return ConsistencyResult(tf, 0, [])
    base_ts, bscale = ts_column(as_frame(base, "candles"), "candles")
    span_lo = int(base_ts.min()) // bscale
    span_hi = int(base_ts.max()) // bscale + src.duration_ms  # exclusive end of the last candle

    def inside(opens: np.ndarray) -> np.ndarray:
        ends = np.array([tf.next_open(int(b)) for b in opens], np.int64) if tf.kind == "month" \
            else opens + tf.duration_ms
        return (opens >= span_lo) & (ends <= span_hi)

    r = resampled.with_columns(pl.col("ts").dt.epoch("ms").alias("ts"), pl.Series("_rows", rows))
    r = r.filter(pl.Series(inside(r.get_column("ts").to_numpy())))
    cols = [c for c in (*_PRICES, *_SUMS, "trades") if c in hi.columns]
    h = hi.select(pl.Series("ts", hts // scale), *[pl.col(c) for c in cols])
    h = h.filter(pl.Series(inside(h.get_column("ts").to_numpy())))
    joined = r.join(h, on="ts", how="full", coalesce=True, suffix="_h").sort("ts")
    opens = joined.get_column("ts").to_numpy()
    in_base = joined.get_column("_rows").is_not_null().to_numpy()
    in_high = joined.get_column("open_h").is_not_null().to_numpy()
    n_rows = joined.get_column("_rows").fill_null(0).to_numpy()
    want = expected_rows(opens, tf, src)
    differ: list[list[str]] = [[] for _ in range(joined.height)]
    both = in_base & in_high
    for c in cols:
        a = joined.get_column(c).cast(pl.Float64).to_numpy()
        b = joined.get_column(f"{c}_h").cast(pl.Float64).to_numpy()
        if c in _PRICES or c == "trades":
            same = _same_exact(a, b)
        else:
            same = _same_rel(a, b, rel_tol)
        if c in ("turnover", "trades"):  # a null on either side is not compared
            nulls = joined.get_column(c).is_null() | joined.get_column(f"{c}_h").is_null()
            same = same | nulls.to_numpy()
        for k in np.flatnonzero(both & ~same):
            differ[k].append(c)
    mismatches = []
    for k in range(joined.height):
        if in_base[k] and not in_high[k]:
            kind, columns = "missing_in_higher", ()
        elif in_high[k] and not in_base[k]:
            kind, columns = "missing_in_base", ()
        elif differ[k]:
            kind, columns = "values_differ", tuple(differ[k])
        else:
            continue
        mismatches.append(Mismatch(int(opens[k]), kind, columns, int(n_rows[k]), int(want[k])))
    return ConsistencyResult(tf, joined.height, mismatches)
