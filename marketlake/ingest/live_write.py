"""Writing the live stream's micro-batches: off the event loop, through the store, then the ledger.

A flush hands :class:`BatchWriter` one :class:`WriteJob` per series that completed something. In
a worker thread the candles of trade timeframes are built (the kernel, and its first JIT compile,
must not hold the loop where the socket is read) and every job is written through the store; back
on the loop, each written job's span is recorded in the ledger: present, verified empty, failed.
A job whose write failed keeps its rows for the next flush and is not recorded, so the ledger
never claims what the lake does not hold.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from marketlake.core.intervals import subtract
from marketlake.core.timeframes import Timeframe
from marketlake.ingest.callbacks import CallbackHub
from marketlake.ingest.live_tracks import FlushBatch, TradeCandles
from marketlake.ingest.live_types import LiveStats, candles_frame, trades_frame
from marketlake.store import Lake
from marketlake.store.layout import CANDLES, TRADES, SeriesId
from marketlake.store.ledger import Status

__all__ = ["BatchWriter", "WriteJob"]

log = logging.getLogger(__name__)

#: Most of a quarantined frame kept in the ledger.
QUARANTINE_TEXT: Final = 4096


@dataclass(eq=False, slots=True)
class WriteJob:
    """One series' micro-batch (``published``: its candles already went to the callbacks)."""

    sid: SeriesId
    batch: FlushBatch
    published: bool = False


class BatchWriter:
    """Writes micro-batches of one live run.

    Args:
        lake: The lake (and its ledger).
        stats: The run's figures (written, replaced/unchanged rows, failures).
        hub: Where candles built from trades are published once built.
        candle_sid: The series id of a symbol's candles of a timeframe.
    """

    def __init__(
        self,
        lake: Lake,
        stats: LiveStats,
        hub: CallbackHub,
        candle_sid: Callable[[str, Timeframe], SeriesId],
    ) -> None:
        self.lake = lake
        self.stats = stats
        self.hub = hub
        self.candle_sid = candle_sid
        self.run_id: str | None = None
        self.retry: list[WriteJob] = []

    async def write(self, jobs: list[WriteJob], builds: list[tuple[TradeCandles, FlushBatch]]) -> None:
        """Build, write and record; a cancellation waits for the commit (and records it) first."""
        t0 = time.perf_counter()
        work = asyncio.ensure_future(asyncio.to_thread(self._build_and_write, jobs, builds))
        try:
            done, outcomes = await asyncio.shield(work)
        except asyncio.CancelledError:
            # The rows are being committed: wait for that and record it before giving up.
            self._settle(*await work)
            raise
        self.stats.write_seconds += time.perf_counter() - t0
        self._settle(done, outcomes)

    def quarantine(self, frames: list[tuple[str, bytes, int]]) -> None:
        """Log skipped frames in the ledger (the first :data:`QUARANTINE_TEXT` bytes of each)."""
        for reason, data, size in frames:
            self.stats.quarantined += 1
            text = data.decode("utf-8", "backslashreplace")[:QUARANTINE_TEXT]
            self.lake.ledger.event(
                "quarantine", detail=f"{reason} ({size} bytes): {text}", run_id=self.run_id
            )

    def _build_and_write(
        self, jobs: list[WriteJob], builds: list[tuple[TradeCandles, FlushBatch]]
    ) -> tuple[list[WriteJob], list[BaseException | None]]:
        """In the worker thread: candles from the final trades, then every write."""
        for built, batch in builds:
            built.feed(batch.rows, batch.failed)
            made = built.build(batch.span[1])
            if made is not None:
                jobs.append(WriteJob(self.candle_sid(built.symbol, built.tf), made))
        return jobs, self._write(jobs)

    def _settle(self, jobs: list[WriteJob], outcomes: list[BaseException | None]) -> None:
        for job, error in zip(jobs, outcomes, strict=True):
            rows = job.batch.rows
            if not job.published and job.sid.dataset == CANDLES and rows and rows[0].source == "trades":
                job.published = True
                for c in rows:
                    self.hub.publish_candle(c)
            if error is None:
                self._record(job)
            else:
                self.stats.write_failures += 1
                self.retry.append(job)
                log.error("write of %s failed (kept for the next flush): %s", job.sid.label(), error)

    def _write(self, jobs: list[WriteJob]) -> list[BaseException | None]:
        out: list[BaseException | None] = []
        for job in jobs:
            try:
                if job.batch.rows:
                    sid = job.sid
                    if sid.dataset == TRADES:
                        result = self.lake.write_trades(
                            trades_frame(job.batch.rows).drop("seq"),
                            symbol=sid.symbol,
                            exchange=sid.exchange,
                            category=sid.category,
                        )
                    else:
                        result = self.lake.write_candles(
                            candles_frame(job.batch.rows),
                            symbol=sid.symbol,
                            timeframe=sid.timeframe,  # type: ignore[arg-type]
                            exchange=sid.exchange,
                            category=sid.category,
                        )
                    # Counted here (a worker thread, one flush at a time): every row should be new.
                    self.stats.rows_replaced += result.rows_replaced
                    self.stats.rows_unchanged += result.rows_unchanged
                out.append(None)
            except Exception as exc:  # noqa: BLE001 - any failure of one job: kept for the next flush
                out.append(exc)
        return out

    def _record(self, job: WriteJob) -> None:
        ledger, b, sid = self.lake.ledger, job.batch, job.sid
        if sid.dataset == TRADES:
            self.stats.trades_written += len(b.rows)
        elif b.rows and b.rows[0].source == "trades":
            self.stats.trade_candles_written += len(b.rows)
        else:
            self.stats.candles_written += len(b.rows)
        # The whole span (failed parts aside) first, then the empty runs over it: each record is
        # its own transaction, and a kill between them must leave no hole in the coverage (at
        # worst a few empty buckets claimed present, which they are: nothing is missing there).
        for a, z in subtract([b.span], b.failed):
            ledger.record(sid, a, z, Status.PRESENT, run_id=self.run_id)
        ledger.record_many(sid, b.empty, Status.EMPTY, detail="nothing at the exchange", run_id=self.run_id)
        ledger.record_many(sid, b.failed, Status.FAILED, detail="not recoverable from REST", run_id=self.run_id)
