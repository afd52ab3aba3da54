"""``check`` for the perpetual-futures datasets (issue 13): funding, mark/index/premium candles,
open interest. :func:`marketlake.quality.check.check_lake` calls in here; candles stay in ``check``.

What is checked, per series:

* **funding** — a settlement missing at the interval in force is a gap, an interval change is not
  (:func:`marketlake.core.funding.funding_gaps` over the stored ``interval_minutes``); repeated or
  unordered settlement times; invalid rows (a rate that is null, NaN or infinite; an interval that
  is null or not positive); ranges the ledger records ``present`` that miss settlements at their
  edges (*unstored*: the first stored settlement of the range comes more than its interval after
  the range's start, the last one's successor falls inside the range, or a range longer than the
  longest interval holds none at all). The interval history is reported (not an issue).
* **mark / index / premium candles** — the candle checks of klines (:func:`check_candles`: gaps,
  duplicates, invalid OHLC, misaligned, out of order), the gaps classified with the ledger as for
  klines, and unstored ``present`` ranges. The premium index is a signed ratio: a negative or zero
  premium is not invalid (mark and index prices must be positive).
* **open interest** — gaps on each interval's grid (:func:`marketlake.core.funding.grid_gaps`),
  repeated or unordered times, rows off the grid, invalid values (null, NaN, infinite or negative),
  unstored ``present`` ranges.

A gap ``(before, after)`` with ``missing`` expected rows covers ``[after - missing × step, after)``
(its *hole*); it is *explained* when one verified-empty range of the ledger holds the whole hole,
as for klines. Ledger ranges of these datasets are keyed by the dataset's own series id
(``SeriesId("funding", ...)``, ``SeriesId("open_interest", ..., timeframe="5")``).
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import polars as pl

from marketlake.core.funding import MINUTE_MS, funding_gaps, funding_interval_history, grid_gaps
from marketlake.core.integrity import CheckResult, check_candles, format_ts
from marketlake.core.intervals import merge
from marketlake.core.kernels.check import INV_NONPOSITIVE_PRICE
from marketlake.core.symbols import parse_symbols
from marketlake.core.timeframes import parse_timeframes
from marketlake.errors import CorruptLakeError, DataValidationError
from marketlake.store import Lake
from marketlake.store.datasets import (
    CANDLES,
    FUNDING,
    INDEX_CANDLES,
    MARK_CANDLES,
    OPEN_INTEREST,
    PREMIUM_CANDLES,
    TRADES,
    spec,
)
from marketlake.store.layout import SeriesId
from marketlake.store.ledger import Status
from marketlake.store.reader import find_series

__all__ = [
    "DATA_KINDS",
    "KIND_DATASET",
    "PerpSeriesCheck",
    "SpacedGap",
    "check_funding",
    "check_open_interest",
    "check_price_candles",
    "kind_of",
    "parse_data",
    "perp_series",
    "series_name",
]

#: What ``check --data`` (and ``repair --data``, ``export-csv --data``) take, as ``ingest --data``
#: names them (plus ``trades``: the trades lost while streaming).
DATA_KINDS: Final = ("klines", "trades", "funding", "mark", "index", "premium", "oi")
KIND_DATASET: Final[dict[str, str]] = {
    "klines": CANDLES, "trades": TRADES, "funding": FUNDING, "mark": MARK_CANDLES,
    "index": INDEX_CANDLES, "premium": PREMIUM_CANDLES, "oi": OPEN_INTEREST,
}
_DATASET_KIND: Final = {v: k for k, v in KIND_DATASET.items()}
#: Other spellings accepted: the dataset (table) names.
_ALIASES: Final = {**{v: k for k, v in KIND_DATASET.items()}, "open-interest": "oi", "candles": "klines"}
#: Kinds without a timeframe: a ``--timeframes`` filter alone leaves them out (as it always left
#: out lost trades).
TIMELESS: Final = ("trades", "funding")
#: The perpetual kinds, in the order checked.
PERP_KINDS: Final = ("funding", "mark", "index", "premium", "oi")
_LONGEST_FUNDING_MS: Final = 480 * MINUTE_MS


def kind_of(dataset: str) -> str:
    """``mark_candles`` → ``mark``; ``candles`` → ``klines``."""
    return _DATASET_KIND[dataset]


def series_name(sid: SeriesId) -> str:
    """How a series is named in check's output: the label for candles (as always), the kind and
    the label for the others (``funding:bybit/linear/BTCUSDT``, ``mark:bybit/linear/BTCUSDT/1``,
    ``oi:bybit/linear/BTCUSDT/5``)."""
    if sid.dataset == CANDLES:
        return sid.label()
    return f"{kind_of(sid.dataset)}:{sid.label()}"


def parse_data(
    data: str | Sequence[str] | None,
    timeframes: object = None,
    *,
    allowed: Sequence[str] = DATA_KINDS,
    default: Sequence[str] | None = None,
) -> tuple[str, ...]:
    """The kinds asked for, in :data:`DATA_KINDS` order.

    Args:
        data: ``"funding,mark"``, a list, ``"all"``; None: ``default`` (every allowed kind, minus
            those without a timeframe when ``timeframes`` filters).
        allowed: The kinds this command knows.

    Raises:
        DataValidationError: an unknown kind, or none.
    """
    if data is None:
        kinds = list(default if default is not None else allowed)
        if default is None and timeframes is not None:
            kinds = [k for k in kinds if k not in TIMELESS]
        return tuple(kinds)
    items = data.split(",") if isinstance(data, str) else list(data)
    chosen: set[str] = set()
    for raw in items:
        item = str(raw).strip().lower()
        if not item:
            continue
        if item == "all":
            chosen.update(allowed)
            continue
        item = _ALIASES.get(item, item)
        if item not in allowed:
            raise DataValidationError(f"--data {raw!r}: use {', '.join(allowed)} or all")
        chosen.add(item)
    if not chosen:
        raise DataValidationError(f"--data is empty: use {', '.join(allowed)} or all")
    return tuple(k for k in allowed if k in chosen)


# ---------------------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class SpacedGap:
    """Rows missing between two stored rows of a funding or open-interest series.

    Attributes:
        before: The stored row before the gap (epoch ms).
        after: The stored row after it.
        missing: Rows expected strictly between them (at the interval in force at ``after``).
        first_missing: The earliest expected missing time: ``after - missing × step``.
    """

    before: int
    after: int
    missing: int
    first_missing: int

    @property
    def hole(self) -> tuple[int, int]:
        """``[first_missing, after)``: what the ledger must call empty to explain the gap, and
        what repair makes it forget."""
        return self.first_missing, self.after

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "before": format_ts(self.before), "after": format_ts(self.after), "missing": self.missing,
            "before_ms": self.before, "after_ms": self.after, "first_missing_ms": self.first_missing,
        }

    def describe(self) -> str:
        """``2024-01-01 08:00:00 → 2024-01-02 00:00:00 (1 missing)``."""
        return f"{format_ts(self.before)} → {format_ts(self.after)} ({self.missing} missing)"


@dataclass(slots=True)
class PerpSeriesCheck:
    """The check of one funding or open-interest series.

    Attributes:
        sid: The series (dataset ``funding`` or ``open_interest``).
        rows: Stored rows.
        first_ts / last_ts: The stored range (epoch ms), None when empty.
        unexplained: Gaps the ledger does not explain (issues).
        explained: Gaps inside verified-empty ranges.
        duplicates: Rows repeating an earlier row's ``ts``.
        out_of_order: Rows whose ``ts`` is smaller than the previous row's.
        invalid: ``(ts, reason)`` of invalid rows.
        misaligned: ``ts`` of open-interest rows off their interval's grid.
        unstored: ``[start, end)`` ranges the ledger claims ``present`` that miss rows.
        damaged: The error when the series' files cannot be read.
        intervals: Funding: the interval history (valid_from, valid_to, interval_minutes).
    """

    sid: SeriesId
    rows: int = 0
    first_ts: int | None = None
    last_ts: int | None = None
    unexplained: list[SpacedGap] = field(default_factory=list)
    explained: list[SpacedGap] = field(default_factory=list)
    duplicates: int = 0
    out_of_order: int = 0
    invalid: list[tuple[int, str]] = field(default_factory=list)
    misaligned: list[int] = field(default_factory=list)
    unstored: list[tuple[int, int]] = field(default_factory=list)
    damaged: str | None = None
    intervals: list[dict[str, Any]] = field(default_factory=list)

    @property
    def kind(self) -> str:
        """``funding`` or ``oi``."""
        return kind_of(self.sid.dataset)

    @property
    def name(self) -> str:
        """``funding:bybit/linear/BTCUSDT``, ``oi:bybit/linear/BTCUSDT/5``."""
        return series_name(self.sid)

    @property
    def has_issues(self) -> bool:
        """Any fault other than an explained gap."""
        return bool(self.unexplained or self.unstored or self.damaged or self.duplicates
                    or self.out_of_order or self.invalid or self.misaligned)

    @property
    def holes(self) -> list[tuple[int, int]]:
        """What is missing: unexplained gaps' holes and unstored ranges, merged, in time order."""
        return merge([*(g.hole for g in self.unexplained), *self.unstored])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "series": self.name,
            "data": self.kind,
            "has_issues": self.has_issues,
            "rows": self.rows,
            "first_timestamp": None if self.first_ts is None else format_ts(self.first_ts),
            "last_timestamp": None if self.last_ts is None else format_ts(self.last_ts),
            "gaps": [g.to_dict() for g in self.unexplained],
            "explained_gaps": [g.to_dict() for g in self.explained],
            "missing": sum(g.missing for g in self.unexplained),
            "duplicate_count": self.duplicates,
            "out_of_order_count": self.out_of_order,
            "invalid": [{"ts": t, "reason": r} for t, r in self.invalid],
            "misaligned": self.misaligned,
            "unstored": [[a, b] for a, b in self.unstored],
            "damaged": self.damaged,
            "intervals": self.intervals,
        }


# ---------------------------------------------------------------------------------------- series


def perp_series(
    lake: Lake, kind: str, exchange: str | None, category: str | None,
    symbols: str | Sequence[str] | None, timeframes: str | Sequence[str] | None,
) -> list[SeriesId]:
    """Stored series of a perpetual kind matching the filters (every exchange and category when
    None), plus series the ledger claims something of but the lake no longer holds."""
    dataset = KIND_DATASET[kind]
    syms = None if symbols is None else parse_symbols(symbols)
    tfs = None if timeframes is None or not spec(dataset).has_timeframe else parse_timeframes(timeframes)  # type: ignore[arg-type]
    sids = find_series(lake.snapshot(dataset), exchange=exchange, category=category, symbols=syms, timeframes=tfs)
    if not lake.has_ledger:
        return sids
    from marketlake.quality.check import _with_ledger_series

    return _with_ledger_series(lake, sids, exchange, category, syms,
                               None if tfs is None else [t.name for t in tfs], dataset)


def _read(lake: Lake, sid: SeriesId) -> tuple[pl.DataFrame, str | None]:
    """Every stored row of ``sid`` in stored order (empty and the error when unreadable)."""
    tfs = None if sid.timeframe is None else [sid.timeframe]
    cols = list(spec(sid.dataset).schema)
    try:
        frame = lake.read(sid.dataset, [sid.symbol], tfs, exchange=sid.exchange, category=sid.category)
        return frame.select(cols), None
    except CorruptLakeError as exc:
        return pl.DataFrame(schema=spec(sid.dataset).schema), str(exc)


def _ts_ms(frame: pl.DataFrame) -> np.ndarray:
    return frame.get_column("ts").dt.epoch("ms").to_numpy().astype(np.int64)


def _order_faults(ts: np.ndarray) -> tuple[int, int]:
    """(duplicates, out-of-order rows) of ``ts`` in stored order."""
    if ts.size < 2:
        return 0, 0
    unordered = int(np.count_nonzero(np.diff(ts) < 0))
    return int(ts.size - np.unique(ts).size), unordered


def _classify_spaced(lake: Lake, sid: SeriesId, gaps: list[SpacedGap]) -> tuple[list[SpacedGap], list[SpacedGap]]:
    """(unexplained, explained): explained when one verified-empty range holds the gap's hole."""
    if not gaps or not lake.has_ledger:
        return gaps, []
    lo = min(g.first_missing for g in gaps)
    hi = max(g.after for g in gaps)
    empty = lake.ledger.covered(sid, lo, hi, Status.EMPTY)
    starts = [s for s, _ in empty]
    unexplained, explained = [], []
    for g in gaps:
        a, b = g.hole
        i = bisect.bisect_right(starts, a) - 1
        (explained if i >= 0 and empty[i][1] >= b else unexplained).append(g)
    return unexplained, explained


def _spaced(frame: pl.DataFrame, step: np.ndarray) -> list[SpacedGap]:
    """Gap frame of :func:`funding_gaps` / :func:`grid_gaps` → :class:`SpacedGap` (``step``: the
    step in ms in force at each gap's ``after``)."""
    before = frame.get_column("before").dt.epoch("ms").to_list()
    after = frame.get_column("after").dt.epoch("ms").to_list()
    missing = frame.get_column("missing").to_list()
    return [SpacedGap(int(b), int(a), int(m), int(a - m * s)) for b, a, m, s in zip(before, after, missing, step, strict=True)]


def _present(lake: Lake, sid: SeriesId) -> list[tuple[int, int]]:
    if not lake.has_ledger:
        return []
    return merge((c.start_ms, c.end_ms) for c in lake.ledger.ranges(sid) if c.status is Status.PRESENT)


def check_funding(lake: Lake, sid: SeriesId) -> PerpSeriesCheck:
    """Check one funding series (see the module docstring)."""
    frame, damaged = _read(lake, sid)
    out = PerpSeriesCheck(sid, rows=frame.height, damaged=damaged)
    ts = _ts_ms(frame)
    if ts.size:
        out.first_ts, out.last_ts = int(ts.min()), int(ts.max())
    out.duplicates, out.out_of_order = _order_faults(ts)
    rate = frame.get_column("rate")
    iv = frame.get_column("interval_minutes")
    bad_rate = (rate.is_null() | ~rate.is_finite().fill_null(False)).to_numpy()
    bad_iv = (iv.is_null() | (iv.fill_null(0) <= 0)).to_numpy()
    for i in np.flatnonzero(bad_rate | bad_iv):
        why = [w for w, bad in (("rate not finite", bad_rate[i]), ("interval not positive", bad_iv[i])) if bad]
        out.invalid.append((int(ts[i]), ", ".join(why)))
    # Gaps over the distinct settlements with a usable interval, in time order (the last
    # stored row of a repeated ts wins, as the merge would keep it).
    clean = (
        pl.DataFrame({"ts": ts, "iv": iv.fill_null(0).cast(pl.Int64).to_numpy()})
        .filter(pl.col("iv") > 0)
        .unique("ts", keep="last", maintain_order=True)
        .sort("ts")
    )
    t = clean.get_column("ts").to_numpy()
    ivs = clean.get_column("iv").to_numpy()
    if t.size:
        found = funding_gaps(t, ivs)
        after = found.get_column("after").dt.epoch("ms").to_numpy()
        step = ivs[np.searchsorted(t, after)] * MINUTE_MS
        out.unexplained, out.explained = _classify_spaced(lake, sid, _spaced(found, step))
        out.intervals = [
            {"valid_from": None if r[0] is None else format_ts(int(r[0].timestamp() * 1000)),
             "valid_to": None if r[1] is None else format_ts(int(r[1].timestamp() * 1000)),
             "interval_minutes": int(r[2])}
            for r in funding_interval_history(t, ivs).iter_rows()
        ]
    out.unstored = _funding_unstored(_present(lake, sid), t, ivs * MINUTE_MS)
    return out


def _funding_unstored(present: list[tuple[int, int]], t: np.ndarray, step: np.ndarray) -> list[tuple[int, int]]:
    """Edges of ``present`` ranges missing settlements (gaps inside are found as gaps)."""
    out: list[tuple[int, int]] = []
    for a, b in present:
        lo, hi = int(np.searchsorted(t, a, "left")), int(np.searchsorted(t, b, "left"))
        if lo == hi:
            if b - a > _LONGEST_FUNDING_MS:
                out.append((a, b))  # no settlement at all where the longest interval has one
            continue
        first, last = int(t[lo]), int(t[hi - 1])
        if first - int(step[lo]) >= a:  # the settlement before the first one lies in the range
            out.append((a, first))
        if hi < t.size and int(t[hi]) - last <= int(step[hi]):
            continue  # the next stored settlement (beyond b) follows in time: nothing missing
        if last + int(step[hi - 1]) < b:  # the successor of the last one lies in the range
            out.append((last + 1, b))
    return merge(out)


def check_open_interest(lake: Lake, sid: SeriesId) -> PerpSeriesCheck:
    """Check one open-interest series (see the module docstring)."""
    from marketlake.quality.check import unstored_ranges

    tf = sid.timeframe
    assert tf is not None
    frame, damaged = _read(lake, sid)
    out = PerpSeriesCheck(sid, rows=frame.height, damaged=damaged)
    ts = _ts_ms(frame)
    if ts.size:
        out.first_ts, out.last_ts = int(ts.min()), int(ts.max())
    out.duplicates, out.out_of_order = _order_faults(ts)
    oi = frame.get_column("open_interest")
    bad = (oi.is_null() | ~oi.is_finite().fill_null(False) | (oi.fill_null(0.0) < 0)).to_numpy()
    out.invalid = [(int(ts[i]), "open interest not a finite non-negative number") for i in np.flatnonzero(bad)]
    floor = tf.floor_array(ts) if ts.size else ts
    out.misaligned = [int(x) for x in ts[floor != ts]]
    t = np.unique(ts)
    step = tf.duration_ms if tf.kind != "month" else None
    if t.size and step:
        found = grid_gaps(t, step)
        out.unexplained, out.explained = _classify_spaced(
            lake, sid, _spaced(found, np.full(found.height, step, np.int64)))
    if lake.has_ledger:
        out.unstored = unstored_ranges(lake, sid, ts)
    return out


def _allow_nonpositive(result: CheckResult) -> CheckResult:
    """The result without the "price not positive" reason (a premium may be negative or zero)."""
    flags = result.invalid_flags & ~np.int64(INV_NONPOSITIVE_PRICE)
    keep = flags != 0
    return dataclasses.replace(result, invalid_rows=result.invalid_rows[keep],
                               invalid_flags=flags[keep].astype(result.invalid_flags.dtype))


def check_price_candles(lake: Lake, sid: SeriesId) -> Any:
    """Check one mark / index / premium candle series: a :class:`SeriesCheck` like klines'."""
    from marketlake.quality.check import SeriesCheck, _classify, unstored_ranges

    tf = sid.timeframe
    assert tf is not None
    frame, damaged = _read(lake, sid)
    # The candle kernel wants a volume: price candles have none, zero is always valid.
    result = check_candles(frame.with_columns(pl.lit(0.0).alias("volume")), tf)
    if sid.dataset == PREMIUM_CANDLES:
        result = _allow_nonpositive(result)
    unexplained, explained = _classify(lake, sid, result, from_trades=False)
    sc = SeriesCheck(sid, result, unexplained, explained, 0, damaged=damaged)
    if lake.has_ledger and tf.is_bybit:
        sc.unstored = unstored_ranges(lake, sid, _ts_ms(frame))
    return sc
