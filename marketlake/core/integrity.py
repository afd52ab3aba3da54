"""Integrity of a candle series: :func:`check_candles` and its typed result.

:func:`check_candles` runs one numba pass (see :mod:`marketlake.core.kernels.check`) and returns a
:class:`CheckResult` holding every fault as row positions. The result renders the old
``DataIntegrityChecker`` report exactly (:meth:`CheckResult.file_report` for one series,
:func:`integrity_report` for many), and a fuller form with every fault kind
(:meth:`CheckResult.to_dict`).

Text formats in the reports (chosen to match the old CSV files' ``datetime`` column):

* timestamps: UTC ``YYYY-MM-DD HH:MM:SS`` (``.fff`` appended only when there are milliseconds);
  ``None`` for the first/last timestamp of an empty series;
* durations: Python's ``str(datetime.timedelta)``, e.g. ``0:01:00``, ``0:05:00``,
  ``1 day, 0:00:00``, ``31 days, 0:00:00``.

A gap entry's fields: ``position`` is the row index of the candle after the gap,
``previous_timestamp``/``current_timestamp`` the candles around it, ``expected_interval`` the
length of the bucket after the previous candle, ``actual_interval`` = current - previous,
``gap_duration`` the time no candle covers (from the end of the previous candle's bucket to the
start of the current one's), ``gap_minutes`` the same in minutes, ``missing_candles`` how many
bucket opens lie in it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import numpy as np

from marketlake.core._frames import (
    FrameLike,
    as_frame,
    float_column,
    float_mask_column,
    int_mask_column,
    pick_threads,
    run_parallel,
    ts_column,
)
from marketlake.core.kernels import check as K
from marketlake.core.kernels.calendar import tf_params
from marketlake.core.timeframes import Timeframe, parse_timeframe

__all__ = [
    "INVALID_REASONS",
    "CheckResult",
    "Duplicate",
    "Gap",
    "InvalidCandle",
    "check_candles",
    "format_duration",
    "format_ts",
    "integrity_report",
]

#: Names of the invalid-candle reasons, by ``INV_*`` bit.
INVALID_REASONS: Final[dict[int, str]] = {
    K.INV_NONFINITE: "nan_or_inf",
    K.INV_NONPOSITIVE_PRICE: "price_not_positive",
    K.INV_HIGH_BELOW_BODY: "high_below_open_or_close",
    K.INV_LOW_ABOVE_BODY: "low_above_open_or_close",
    K.INV_HIGH_BELOW_LOW: "high_below_low",
    K.INV_NEGATIVE_VOLUME: "negative_volume",
    K.INV_NEGATIVE_TURNOVER: "negative_turnover",
    K.INV_NEGATIVE_TRADES: "negative_trades",
}

_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def format_ts(ms: int) -> str:
    """Epoch ms → UTC ``YYYY-MM-DD HH:MM:SS`` (with ``.fff`` only when ms are not zero)."""
    t = _EPOCH + dt.timedelta(milliseconds=int(ms))
    text = t.strftime("%Y-%m-%d %H:%M:%S")
    return text if ms % 1000 == 0 else f"{text}.{ms % 1000:03d}"


def format_duration(ms: int) -> str:
    """Milliseconds → ``str(timedelta)``: ``0:05:00``, ``1 day, 0:00:00``."""
    return str(dt.timedelta(milliseconds=int(ms)))


def reasons_of(flags: int) -> tuple[str, ...]:
    """The reason names set in an ``INV_*`` bit set, in bit order."""
    return tuple(name for bit, name in INVALID_REASONS.items() if flags & bit)


class Gap(msgspec.Struct, frozen=True):
    """Missing candles between two consecutive distinct timestamps.

    Attributes:
        position: Row index of the candle after the gap.
        previous_ts: Epoch ms of the candle before the gap.
        current_ts: Epoch ms of the candle after the gap.
        missing_candles: Bucket opens strictly between the two candles' buckets.
    """

    position: int
    previous_ts: int
    current_ts: int
    missing_candles: int


class Duplicate(msgspec.Struct, frozen=True):
    """A row whose ``ts`` equals an earlier row's.

    Attributes:
        position: Row index of the repeated row.
        first_position: Row index of the first row with that ``ts``.
        ts: The shared timestamp (epoch ms).
        differs: True when the row's values differ from the first row's (a conflict, not a copy).
    """

    position: int
    first_position: int
    ts: int
    differs: bool


class InvalidCandle(msgspec.Struct, frozen=True):
    """A row with impossible values.

    Attributes:
        position: Row index.
        ts: Its timestamp (epoch ms).
        reasons: Names from :data:`INVALID_REASONS`.
    """

    position: int
    ts: int
    reasons: tuple[str, ...]


@dataclass(frozen=True, eq=False, slots=True)
class CheckResult:
    """Every integrity fault of one candle series, as row positions (0-based, input order).

    Attributes:
        timeframe: The timeframe checked against.
        total_candles: Rows checked.
        first_ts: Smallest ``ts`` (epoch ms), None when empty.
        last_ts: Largest ``ts`` (epoch ms), None when empty.
        ts: The checked timestamps (epoch ms, input order), for rendering positions.
        invalid_rows: Rows with invalid values; ``invalid_flags`` holds their ``INV_*`` bit sets.
        invalid_flags: See ``invalid_rows``.
        misaligned_rows: Rows whose ``ts`` is not a bucket open.
        out_of_order_rows: Rows whose ``ts`` is smaller than the previous row's.
        duplicate_rows: Rows repeating an earlier row's ``ts``.
        duplicate_first_rows: For each duplicate row, the first row with its ``ts``.
        duplicate_differs: For each duplicate row, whether its values differ from that first row.
        gap_rows: For each gap, the row after it.
        gap_previous_rows: For each gap, the row before it.
        gap_missing: For each gap, the number of missing candles.
    """

    timeframe: Timeframe
    total_candles: int
    first_ts: int | None
    last_ts: int | None
    ts: np.ndarray
    invalid_rows: np.ndarray
    invalid_flags: np.ndarray
    misaligned_rows: np.ndarray
    out_of_order_rows: np.ndarray
    duplicate_rows: np.ndarray
    duplicate_first_rows: np.ndarray
    duplicate_differs: np.ndarray
    gap_rows: np.ndarray
    gap_previous_rows: np.ndarray
    gap_missing: np.ndarray

    @property
    def duplicate_count(self) -> int:
        """Rows repeating an earlier row's ``ts`` (rows minus distinct timestamps)."""
        return int(self.duplicate_rows.shape[0])

    @property
    def conflicting_duplicate_count(self) -> int:
        """Duplicate rows whose values differ from the first row with their ``ts``."""
        return int(np.count_nonzero(self.duplicate_differs))

    @property
    def invalid_count(self) -> int:
        """Rows with invalid values."""
        return int(self.invalid_rows.shape[0])

    @property
    def gap_count(self) -> int:
        """Number of gaps (each may span many missing candles)."""
        return int(self.gap_rows.shape[0])

    @property
    def missing_candles(self) -> int:
        """Missing candles over all gaps."""
        return int(self.gap_missing.sum())

    @property
    def has_issues(self) -> bool:
        """True when any fault of any kind was found."""
        return bool(
            self.invalid_count or self.duplicate_count or self.gap_count
            or self.misaligned_rows.shape[0] or self.out_of_order_rows.shape[0]
        )

    @property
    def gaps(self) -> list[Gap]:
        """The gaps, in time order."""
        return [
            Gap(int(p), int(self.ts[q]), int(self.ts[p]), int(m))
            for p, q, m in zip(self.gap_rows, self.gap_previous_rows, self.gap_missing)
        ]

    @property
    def duplicates(self) -> list[Duplicate]:
        """The duplicate rows, in time order."""
        return [
            Duplicate(int(p), int(f), int(self.ts[p]), bool(d))
            for p, f, d in zip(self.duplicate_rows, self.duplicate_first_rows, self.duplicate_differs)
        ]

    @property
    def invalid(self) -> list[InvalidCandle]:
        """The invalid rows, in row order."""
        return [
            InvalidCandle(int(p), int(self.ts[p]), reasons_of(int(f)))
            for p, f in zip(self.invalid_rows, self.invalid_flags)
        ]

    def gap_entry(self, gap: Gap) -> dict[str, Any]:
        """One gap in the old report's structure (see the module docstring for the fields)."""
        tf = self.timeframe
        prev_open = tf.floor(gap.previous_ts)
        prev_end = tf.next_open(prev_open)
        uncovered = tf.floor(gap.current_ts) - prev_end
        return {
            "position": gap.position,
            "previous_timestamp": format_ts(gap.previous_ts),
            "current_timestamp": format_ts(gap.current_ts),
            "expected_interval": format_duration(prev_end - prev_open),
            "actual_interval": format_duration(gap.current_ts - gap.previous_ts),
            "gap_duration": format_duration(uncovered),
            "missing_candles": gap.missing_candles,
            "gap_minutes": uncovered / 60_000,
        }

    def file_report(self) -> dict[str, Any]:
        """This series in the old per-file report structure, exactly its keys.

        ``has_issues`` is true for any fault kind, including out-of-order and misaligned rows,
        which the old structure has no field for (see :meth:`to_dict`).
        """
        return {
            "has_issues": self.has_issues,
            "gaps": [self.gap_entry(g) for g in self.gaps],
            "duplicate_count": self.duplicate_count,
            "invalid_candles": self.invalid_count,
            "total_candles": self.total_candles,
            "first_timestamp": None if self.first_ts is None else format_ts(self.first_ts),
            "last_timestamp": None if self.last_ts is None else format_ts(self.last_ts),
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything found, JSON-ready: the old fields plus every fault kind in detail."""
        out = self.file_report()
        out.update(
            timeframe=self.timeframe.name,
            missing_candles=self.missing_candles,
            conflicting_duplicate_count=self.conflicting_duplicate_count,
            duplicates=[msgspec.structs.asdict(d) for d in self.duplicates],
            invalid=[
                {"position": c.position, "ts": c.ts, "reasons": list(c.reasons)} for c in self.invalid
            ],
            misaligned_rows=self.misaligned_rows.tolist(),
            out_of_order_rows=self.out_of_order_rows.tolist(),
        )
        return out


def integrity_report(results: Mapping[str, CheckResult]) -> dict[str, Any]:
    """The old multi-file report from results by name (file or series name).

    Returns:
        ``{files_checked, files_with_issues, total_gaps, total_duplicates,
        total_invalid_candles, issues: {name: file_report}}``; every series is listed under
        ``issues`` with its ``has_issues`` flag, as the old checker did.
    """
    return {
        "files_checked": len(results),
        "files_with_issues": sum(1 for r in results.values() if r.has_issues),
        "total_gaps": sum(r.gap_count for r in results.values()),
        "total_duplicates": sum(r.duplicate_count for r in results.values()),
        "total_invalid_candles": sum(r.invalid_count for r in results.values()),
        "issues": {name: r.file_report() for name, r in results.items()},
    }


def _cat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype)


def check_candles(
    candles: FrameLike,
    timeframe: str | int | Timeframe,
    *,
    threads: int | None = None,
) -> CheckResult:
    """Find every integrity fault of one candle series in one pass.

    Faults: duplicates (same ``ts``; and whether they disagree in values), gaps (missing
    candles between consecutive distinct timestamps), out-of-order rows, misaligned ``ts``, and
    invalid candles (NaN/inf, price <= 0, high < max(open, close), low > min(open, close),
    high < low, negative volume/turnover/trades). Nulls in price or volume columns count as NaN.
    Rows are reported by position in the input; duplicates and gaps are found in time order
    (a stable sort is added only when some row is out of order).

    Args:
        candles: Columns ``ts`` (int epoch ms or Datetime), ``open``, ``high``, ``low``,
            ``close``, ``volume``; optional ``turnover``, ``trades``.
        timeframe: The series' timeframe.
        threads: Chunks to scan in parallel (result identical to one thread). Default: one per
            0.5 M rows, up to the core count.

    Raises:
        SchemaMismatchError: a required column is missing or not numeric, or ``ts`` has nulls.
        InvalidTimeframeError: ``timeframe`` is unknown.
    """
    tf = parse_timeframe(timeframe)
    df = as_frame(candles, "candles")
    ts, scale = ts_column(df, "candles")
    if scale != 1:
        ts = ts // scale
    cols = [
        float_column(df, n, "candles", nulls_as_nan=True)
        for n in ("open", "high", "low", "close", "volume")
    ]
    tv, tv_ok = float_mask_column(df, "turnover", "candles")
    tr, tr_ok = int_mask_column(df, "trades", "candles")
    values = (*cols, tv, tv_ok, tr, tr_ok)
    kind, dur, off = tf_params(tf)
    n = ts.shape[0]
    parts = pick_threads(n, threads)
    cuts = K.split_between_runs(ts, parts) if parts > 1 else np.array([0, n])
    outs = run_parallel(
        K.check_chunk,
        [(ts, *values, kind, dur, off, int(cuts[j]), int(cuts[j + 1])) for j in range(len(cuts) - 1)],
    )
    # Each output is (count, arrays...) groups; keep the counted prefix of every array.
    groups = ((0, (1, 2)), (3, (4,)), (5, (6,)), (7, (8, 9, 10)), (11, (12, 13, 14)))
    merged: dict[int, np.ndarray] = {}
    for count_at, arrays in groups:
        for a in arrays:
            merged[a] = _cat([o[a][: o[count_at]] for o in outs], outs[0][a].dtype.type)
    dup = (merged[8], merged[9], merged[10])
    gap = (merged[12], merged[13], merged[14])
    if merged[6].shape[0]:
        order = np.argsort(ts, kind="stable")
        d = K.dups_gaps_in_order(ts, order, *values, kind, dur, off)
        dup = (d[1][: d[0]], d[2][: d[0]], d[3][: d[0]])
        gap = (d[5][: d[4]], d[6][: d[4]], d[7][: d[4]])
        first, last = (int(ts.min()), int(ts.max()))
    else:
        first, last = (int(ts[0]), int(ts[-1])) if n else (None, None)
    return CheckResult(
        timeframe=tf,
        total_candles=n,
        first_ts=first,
        last_ts=last,
        ts=ts,
        invalid_rows=merged[1],
        invalid_flags=merged[2],
        misaligned_rows=merged[4],
        out_of_order_rows=merged[6],
        duplicate_rows=dup[0],
        duplicate_first_rows=dup[1],
        duplicate_differs=dup[2],
        gap_rows=gap[0],
        gap_previous_rows=gap[1],
        gap_missing=gap[2],
    )
