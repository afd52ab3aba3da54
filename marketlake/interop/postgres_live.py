"""Mirror the live stream's closed candles into PostgreSQL as they close.

``PostgresMirror(dsn).attach(runner)`` registers an async callback on a
:class:`~marketlake.ingest.live.LiveRunner`. Each closed candle is inserted into ``candles``
(an upsert: the same rows, key and rule as :func:`~marketlake.interop.postgres.export_postgres`)
on one async connection. The runner hands callbacks their candles from a bounded queue, off the
socket's path, so PostgreSQL being slow or down holds up neither the stream nor the lake.

When PostgreSQL fails, the candles stay pending (at most ``max_pending``; the oldest are dropped
beyond that and counted) and go in with the next candle once a connection works again. The
lake has every candle regardless: ``marketlake export-postgres`` afterwards fills in whatever the
mirror dropped, and skips what it already inserted.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections import deque
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from marketlake.errors import SinkError
from marketlake.interop.postgres import COLUMNS, SCHEMA_SQL, _first_line, _psycopg, mask_dsn, upsert_sql

if TYPE_CHECKING:
    from marketlake.ingest.live_types import LiveCandle

__all__ = ["PostgresMirror", "ensure_schema_async"]

log = logging.getLogger(__name__)


async def ensure_schema_async(con: Any) -> None:
    """:func:`~marketlake.interop.postgres.ensure_schema` on an async psycopg connection."""
    psycopg = _psycopg()
    try:
        async with con.transaction():
            await con.execute("SELECT pg_advisory_xact_lock(%s)", (7_310_420_117,))
            for statement in (s.strip() for s in SCHEMA_SQL.split(";")):
                if statement:
                    await con.execute(statement)
    except psycopg.Error as exc:
        raise SinkError(f"cannot create the tables: {_first_line(exc)}") from exc


def _num(x: float | None) -> Decimal | None:
    # Decimal of the float's shortest text: the value export_postgres sends for the same row
    # (a float8 -> numeric cast in PostgreSQL would keep only 15 digits).
    return None if x is None else Decimal(repr(float(x)))


class PostgresMirror:
    """An async live-runner callback inserting closed candles into PostgreSQL.

    Args:
        dsn: libpq connection string or URL.
        exchange: Exchange of the streamed series.
        category: Category of the streamed series.
        max_pending: Candles kept while PostgreSQL is unreachable.

    Attributes:
        inserted: Candles inserted (new to PostgreSQL).
        failures: Flushes that failed.
        dropped: Candles dropped because ``max_pending`` was exceeded.
    """

    def __init__(self, dsn: str, *, exchange: str = "bybit", category: str = "linear", max_pending: int = 100_000) -> None:
        self.psycopg = _psycopg()
        self.dsn = dsn
        self.exchange = exchange
        self.category = category
        self.pending: deque[LiveCandle] = deque()
        self.max_pending = max(1, max_pending)
        self.inserted = 0
        self.failures = 0
        self.dropped = 0
        self._con: Any = None
        cols = COLUMNS["candles"]
        self._sql = upsert_sql("candles", f"VALUES ({', '.join(['%s'] * len(cols))})")

    def attach(self, runner: Any) -> PostgresMirror:
        """Register on ``runner`` for closed candles (its ``add_callback``)."""
        runner.add_callback(self, candles=True, trades=False)
        return self

    async def __call__(self, candle: LiveCandle) -> None:
        """Queue a closed candle and insert everything pending."""
        if not candle.confirm:
            return
        if len(self.pending) >= self.max_pending:
            self.pending.popleft()
            self.dropped += 1
        self.pending.append(candle)
        try:
            await self.flush()
        except SinkError as exc:
            self.failures += 1
            log.warning("postgres mirror: %d candle(s) pending: %s", len(self.pending), exc)

    def _row(self, c: LiveCandle) -> tuple[Any, ...]:
        return (
            self.exchange, self.category, c.symbol, c.timeframe, dt.datetime.fromtimestamp(c.ts_ms / 1000, dt.UTC),
            _num(c.open), _num(c.high), _num(c.low), _num(c.close), _num(c.volume), _num(c.turnover),
        )

    async def flush(self) -> int:
        """Insert every pending candle in one transaction; returns how many were new.

        Raises:
            SinkError: PostgreSQL is unreachable or refused; the candles stay pending.
        """
        if not self.pending:
            return 0
        batch = list(self.pending)
        try:
            if self._con is None or self._con.closed or self._con.broken:
                await self._close()
                self._con = await self.psycopg.AsyncConnection.connect(
                    self.dsn, connect_timeout=10, application_name="marketlake-mirror"
                )
                await ensure_schema_async(self._con)
            async with self._con.transaction(), self._con.cursor() as cur:
                await cur.executemany(self._sql, [self._row(c) for c in batch], returning=False)
                new = max(cur.rowcount, 0)
        except self.psycopg.Error as exc:
            await self._close()
            raise SinkError(f"postgres {mask_dsn(self.dsn)}: mirror insert failed: {_first_line(exc)}") from exc
        for _ in batch:
            self.pending.popleft()
        self.inserted += new
        return new

    async def _close(self) -> None:
        if self._con is not None:
            with contextlib.suppress(Exception):
                await self._con.close()
            self._con = None

    async def close(self) -> None:
        """Try a last flush, then close the connection (pending candles are dropped, logged)."""
        with contextlib.suppress(SinkError):
            await self.flush()
        if self.pending:
            log.warning("postgres mirror closed with %d candle(s) not inserted", len(self.pending))
        await self._close()
