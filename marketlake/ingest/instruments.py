"""Instrument snapshots for the point-in-time universe (issue 13): every ingest, archive and
stream start, and ``marketlake instruments``, fetch instruments-info of the categories in play in
every status and fold it into the lake's instrument history (:meth:`Lake.record_instruments`).

A snapshot older than the history's newest observation (a clock moved back, or a concurrent run
that recorded a newer one first) is not an error of the run: it is skipped with a note, the
history keeps what it knows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from marketlake.errors import DataValidationError, ExchangeBannedError, MarketlakeError
from marketlake.exchanges.bybit.rest import BybitRestClient
from marketlake.exchanges.bybit.rest_perp import InstrumentSnapshot
from marketlake.store import Lake

__all__ = [
    "SnapshotResult",
    "fetch_snapshot",
    "record_snapshot",
    "record_snapshot_best_effort",
    "snapshot_note",
    "store_snapshot",
]

_BAN_RETRIES = 3


@dataclass(slots=True)
class SnapshotResult:
    """What :func:`record_snapshot` did.

    Attributes:
        snapshot: The snapshot fetched.
        recorded: True when it was folded into the history.
        history_rows: The exchange's history rows afterwards (0 when not recorded).
        note: Why it was not recorded, when it was not.
    """

    snapshot: InstrumentSnapshot
    recorded: bool
    history_rows: int = 0
    note: str | None = None


async def fetch_snapshot(client: BybitRestClient, categories: Sequence[str]) -> InstrumentSnapshot:
    """A complete snapshot of ``categories`` (every status); a ban is waited out (the client
    sends nothing until it lifts) up to three times.

    Raises:
        ExchangeError: the snapshot could not be fetched.
    """
    for attempt in range(_BAN_RETRIES + 1):
        try:
            return await client.get_instrument_snapshot(tuple(dict.fromkeys(categories)))
        except ExchangeBannedError:
            if attempt == _BAN_RETRIES:
                raise
    raise AssertionError("unreachable")


async def store_snapshot(lake: Lake, snap: InstrumentSnapshot, *, exchange: str | None = None) -> SnapshotResult:
    """Fold a fetched snapshot into the lake's instrument history (in a worker thread).

    Raises:
        LakeWriteError: the history could not be written.
    """
    try:
        rows = await asyncio.to_thread(
            lake.record_instruments, snap.frame, snap.taken_ms, exchange=exchange, categories=snap.categories
        )
    except DataValidationError as exc:
        return SnapshotResult(snap, False, note=f"instrument snapshot not recorded: {exc}")
    return SnapshotResult(snap, True, rows)


async def record_snapshot(
    lake: Lake, client: BybitRestClient, categories: Sequence[str], *, exchange: str | None = None, write: bool = True
) -> SnapshotResult:
    """Fetch a complete snapshot of ``categories`` (every status) and record it (unless ``write``
    is false, e.g. for a dry run).

    Raises:
        ExchangeError: the snapshot could not be fetched.
        LakeWriteError: the history could not be written.
    """
    snap = await fetch_snapshot(client, categories)
    if not write:
        return SnapshotResult(snap, False)
    return await store_snapshot(lake, snap, exchange=exchange)


async def record_snapshot_best_effort(
    lake: Lake, client: BybitRestClient, categories: Sequence[str], *, exchange: str | None = None
) -> str | None:
    """:func:`record_snapshot` for commands whose own work does not depend on it (archive,
    stream): any failure becomes a note (returned) instead of failing the command."""
    try:
        result = await record_snapshot(lake, client, categories, exchange=exchange)
    except (MarketlakeError, OSError, TimeoutError) as exc:
        return f"instrument snapshot not recorded: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}"
    return result.note


async def snapshot_note(
    lake: Lake, base_url: str, categories: Sequence[str], *, rate_limit_per_5s: int, exchange: str | None = None
) -> str | None:
    """:func:`record_snapshot_best_effort` with a client of its own (the lake's shared budget,
    two attempts, silent retries): for ``archive``, whose own requests go to the archive host, so
    an unreachable REST host costs a second, not the backoff of a full retry ladder."""
    from marketlake.net.backoff import Backoff
    from marketlake.net.ratelimit import RateBudget

    try:
        budget = RateBudget(rate_limit_per_5s, state_dir=lake.storage.state_dir)
        client = BybitRestClient(base_url, budget=budget, backoff=Backoff(base=0.5, cap=2.0, max_attempts=2))
    except MarketlakeError as exc:
        return f"instrument snapshot not recorded: {exc}"
    async with client:
        return await record_snapshot_best_effort(lake, client, categories, exchange=exchange)
