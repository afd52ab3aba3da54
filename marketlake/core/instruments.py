"""The point-in-time instrument universe: a validity history built from instrument snapshots. Pure.

A *snapshot* is one instruments-info answer: the time it was taken (the server's clock, epoch ms)
and a frame in :data:`~marketlake.core.schemas_perp.INSTRUMENT_SNAPSHOT_SCHEMA`. The *history*
(:data:`~marketlake.core.schemas_perp.INSTRUMENT_SCHEMA`) has one row per symbol and attribute set,
valid over ``[valid_from, valid_to)``.

How the store should use it: keep one history table per exchange; on every ingest, archive and
stream start (and ``marketlake instruments``) fetch complete snapshots of the categories in play
(every status: ``Trading`` alone would make delisted symbols vanish early) and fold each in with
:func:`apply_snapshot` under the dataset's lock, passing the categories the snapshot covers in
full. A snapshot older than the history's last observation is refused: rebuild with
:func:`build_instrument_history` from all snapshots, in order, instead. :func:`universe_at` answers
``Lake.universe(at, category)``; the SQL view ``instruments`` can apply the same predicate.

Rules of :func:`apply_snapshot`:

* an instrument whose attributes (:data:`~marketlake.core.schemas_perp.INSTRUMENT_ATTRIBUTES`)
  equal its open row's only moves that row's ``last_seen``;
* a changed attribute set closes the open row at the snapshot time and opens a new one there
  (the change happened after ``last_seen``; the history records when it became known);
* a symbol seen for the first time opens a row at the snapshot time, back-dated to its
  ``launch_time`` when it is ``Trading`` and launched earlier (so a universe taken before the first
  snapshot still holds the symbols listed then, with the attributes first seen);
* an open row of a covered category whose symbol is absent from the snapshot is closed at its
  ``delivery_time`` when that lies between the row's ``last_seen`` and the snapshot, else at the
  snapshot time; it keeps its status. A symbol that comes back gets a new row.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

import polars as pl

from marketlake.core.schemas_perp import (
    INSTRUMENT_ATTRIBUTES,
    INSTRUMENT_SCHEMA,
    normalize_instrument_history,
    normalize_instrument_snapshot,
)
from marketlake.errors import DataValidationError

__all__ = [
    "apply_snapshot",
    "build_instrument_history",
    "empty_instrument_history",
    "funding_observations",
    "universe_at",
]

_TIMES = tuple(c for c, t in INSTRUMENT_SCHEMA.items() if isinstance(t, pl.Datetime))


def empty_instrument_history() -> pl.DataFrame:
    """A history with no rows, in :data:`INSTRUMENT_SCHEMA`."""
    return pl.DataFrame(schema=INSTRUMENT_SCHEMA)


def _rows(frame: pl.DataFrame) -> list[dict[str, Any]]:
    """Rows as dicts with times as epoch-ms ints (None for nulls)."""
    times = [c for c in _TIMES if c in frame.columns]
    return frame.with_columns(pl.col(c).dt.epoch("ms") for c in times).to_dicts()


def _frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    if not rows:
        return empty_instrument_history()
    rows.sort(key=lambda r: (r["category"], r["symbol"], r["valid_from"]))
    schema = {c: (pl.Int64 if c in _TIMES else t) for c, t in INSTRUMENT_SCHEMA.items()}
    return normalize_instrument_history(pl.DataFrame(rows, schema=schema, orient="row"))


def apply_snapshot(
    history: pl.DataFrame,
    snapshot_ms: int,
    snapshot: pl.DataFrame,
    *,
    categories: Collection[str] | None = None,
) -> pl.DataFrame:
    """Fold one instrument snapshot into the history (see the module docstring for the rules).

    Args:
        history: The history so far (:data:`INSTRUMENT_SCHEMA`; may be empty).
        snapshot_ms: When the snapshot was taken, epoch ms (the server's clock).
        snapshot: The instruments seen (:data:`INSTRUMENT_SNAPSHOT_SCHEMA`; extra columns refused).
        categories: Categories the snapshot lists completely: only there does an absent symbol
            count as gone. Default: the categories present in the snapshot. Pass ``()`` for a
            partial snapshot (e.g. one symbol) that must close nothing.

    Returns:
        The new history, sorted by category, symbol, valid_from.

    Raises:
        DataValidationError: a symbol twice in the snapshot, or a snapshot older than the last
            observation of a category it touches.
    """
    snap = _rows(normalize_instrument_snapshot(snapshot))
    rows = _rows(normalize_instrument_history(history)) if history.height else []
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for r in snap:
        key = (r["category"], r["symbol"])
        if key in seen:
            raise DataValidationError(f"instrument snapshot lists {key[0]} {key[1]} twice")
        seen[key] = r
    covered = {k[0] for k in seen} if categories is None else set(categories)
    touched = covered | {k[0] for k in seen}
    latest = max((r["last_seen"] for r in rows if r["category"] in touched), default=None)
    if latest is not None and snapshot_ms < latest:
        raise DataValidationError(
            f"instrument snapshot at {snapshot_ms} is older than the history's last observation at "
            f"{latest}; rebuild the history from all snapshots in order"
        )
    open_rows = {(r["category"], r["symbol"]): r for r in rows if r["valid_to"] is None}
    known = {(r["category"], r["symbol"]) for r in rows}
    for key, new in seen.items():
        current = open_rows.get(key)
        if current is not None and all(_same(current[a], new[a]) for a in INSTRUMENT_ATTRIBUTES):
            current["last_seen"] = snapshot_ms
            continue
        if current is not None:
            current["valid_to"] = snapshot_ms
        start = snapshot_ms
        launch = new["launch_time"]
        if key not in known and new["status"] == "Trading" and launch is not None and launch < snapshot_ms:
            start = launch
        rows.append(
            {**new, "valid_from": start, "valid_to": None, "observed_from": snapshot_ms, "last_seen": snapshot_ms}
        )
    for key, row in open_rows.items():
        if key[0] in covered and key not in seen and row["valid_to"] is None:
            delivery = row["delivery_time"]
            ok = delivery is not None and row["last_seen"] <= delivery <= snapshot_ms and delivery > row["valid_from"]
            row["valid_to"] = delivery if ok else snapshot_ms
    return _frame(rows)


def _same(a: object, b: object) -> bool:
    return a == b or (a is None and b is None)


def build_instrument_history(
    snapshots: Iterable[tuple[int, pl.DataFrame]], *, categories: Collection[str] | None = None
) -> pl.DataFrame:
    """The history of a sequence of snapshots, folded in time order with :func:`apply_snapshot`.

    Args:
        snapshots: ``(snapshot_ms, frame)`` pairs, any order (sorted here, stably).
        categories: As for :func:`apply_snapshot`, for every snapshot.
    """
    history = empty_instrument_history()
    for when, frame in sorted(snapshots, key=lambda s: s[0]):
        history = apply_snapshot(history, when, frame, categories=categories)
    return history


def universe_at(
    history: pl.DataFrame,
    t: int,
    category: str | None = None,
    *,
    statuses: Collection[str] | None = ("Trading",),
) -> pl.DataFrame:
    """The instruments that were listed at ``t`` (epoch ms), with the attributes in force then.

    A row counts when ``valid_from <= t < valid_to`` (open rows: no end), its status is in
    ``statuses`` (None: any) and the symbol had not been delivered (``t < delivery_time`` or
    none, which also ends an open row whose symbol has not yet vanished from a snapshot). A
    delisted symbol is thus in the universe before its delivery time and not after.

    Returns:
        The matching history rows, sorted by category and symbol.
    """
    h = normalize_instrument_history(history) if history.height else empty_instrument_history()
    at = pl.lit(t).cast(pl.Datetime("ms", "UTC"))
    cond = (pl.col("valid_from") <= at) & (pl.col("valid_to").is_null() | (at < pl.col("valid_to")))
    cond &= pl.col("delivery_time").is_null() | (at < pl.col("delivery_time"))
    if category is not None:
        cond &= pl.col("category") == category
    if statuses is not None:
        cond &= pl.col("status").is_in(list(statuses))
    return h.filter(cond).sort("category", "symbol")


def funding_observations(history: pl.DataFrame, symbol: str, category: str) -> list[tuple[int, int]]:
    """``(time_ms, funding_interval_minutes)`` actually observed for one symbol: at each row's
    ``observed_from`` and ``last_seen`` (never the back-dated ``valid_from``). The input of
    :func:`marketlake.core.funding.infer_funding_intervals`."""
    if not history.height:
        return []
    h = normalize_instrument_history(history).filter(
        (pl.col("symbol") == symbol)
        & (pl.col("category") == category)
        & pl.col("funding_interval_minutes").is_not_null()
    )
    out = set()
    for r in _rows(h):
        out.add((r["observed_from"], r["funding_interval_minutes"]))
        out.add((r["last_seen"], r["funding_interval_minutes"]))
    return sorted(out)
