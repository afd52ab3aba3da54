"""``DatabaseManager``: the old PostgreSQL access (pool, queries, batch inserts), bound
parameters only.

Queries take their values as parameters, never as text: ``%s`` placeholders (psycopg's) or
``$1, $2`` (asyncpg's, which the old system used) are both accepted, and the values travel
separately from the SQL to the server. One statement per call: a query with a ``;`` anywhere but
at its end is refused, so nothing can be appended to a statement. ``batch_insert`` validates the
table and column names against an identifier allowlist, quotes them, and loads the rows with
COPY.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from marketlake.errors import ConfigError, DataValidationError, SinkError
from marketlake.interop.postgres import _first_line, _psycopg, mask_dsn
from marketlake.interop.postgres_live import ensure_schema_async

__all__ = ["DatabaseManager"]

_IDENT: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_DOLLAR: Final = re.compile(r"\$\d+")


def _dsn_from_config(cfg: Mapping[str, Any]) -> str:
    psycopg = _psycopg()
    return psycopg.conninfo.make_conninfo(
        host=str(cfg.get("host", "localhost")), port=str(cfg.get("port", 5432)),
        dbname=str(cfg.get("database", "trading_bot")),
    )


class DatabaseManager:
    """A pool of async PostgreSQL connections.

    Args:
        dsn: libpq connection string or URL; default built from ``config["postgres"]``
            (user and password from ``PGUSER``/``PGPASSWORD`` or ``~/.pgpass``).
        config: The old configuration dict (``postgres.max_connections`` sizes the pool).
        create_tables: Create the ``trades``/``candles`` tables on :meth:`initialize`.
        open_timeout_s: How long :meth:`initialize` waits for a first connection.

    Attributes:
        pool: The ``psycopg_pool.AsyncConnectionPool`` (None before :meth:`initialize`).
    """

    def __init__(self, dsn: str | None = None, *, config: Mapping[str, Any] | None = None,
                 create_tables: bool = True, open_timeout_s: float = 15.0) -> None:
        from marketlake.compat.data_management import DATA_MANAGEMENT_CONFIG

        pg = dict((config or DATA_MANAGEMENT_CONFIG).get("postgres", {}))
        self.dsn = dsn if dsn is not None else _dsn_from_config(pg)
        self.max_connections = int(pg.get("max_connections", 20))
        self.create_tables = create_tables
        self.open_timeout_s = open_timeout_s
        self.pool: Any = None

    async def initialize(self) -> None:
        """Open the pool (and create the tables).

        Raises:
            SinkError: the server cannot be reached.
        """
        if self.pool is not None:
            return
        try:
            from psycopg_pool import AsyncConnectionPool
        except ImportError:
            raise ConfigError("DatabaseManager needs psycopg-pool: pip install 'marketlake[postgres]'") from None
        pool = AsyncConnectionPool(
            self.dsn, min_size=1, max_size=max(1, self.max_connections), open=False,
            kwargs={"application_name": "marketlake", "connect_timeout": 10},
        )
        try:
            await pool.open(wait=True, timeout=self.open_timeout_s)
        except Exception as exc:  # PoolTimeout, OperationalError: the server is not there
            await pool.close()
            raise SinkError(f"postgres {mask_dsn(self.dsn)}: cannot open the pool: {_first_line(exc)}") from exc
        self.pool = pool
        if self.create_tables:
            async with pool.connection() as con:
                await ensure_schema_async(con)

    async def close(self) -> None:
        """Close the pool."""
        if self.pool is not None:
            await self.pool.close()
            self.pool = None

    def _need_pool(self) -> Any:
        if self.pool is None:
            raise SinkError("DatabaseManager: call await initialize() first")
        return self.pool

    async def execute_query(self, query: str, params: Sequence[Any] | None = ()) -> list[dict[str, Any]] | int:
        """Run one statement with bound ``params``.

        Returns:
            Rows as dicts for a statement that returns rows, else the affected row count.

        Raises:
            DataValidationError: ``params`` is not a tuple/list, or the query holds several statements.
            SinkError: PostgreSQL refused or failed (constraint violation, bad SQL, lost connection).
        """
        psycopg = _psycopg()
        from psycopg.rows import dict_row

        if not isinstance(query, str) or not query.strip():
            raise DataValidationError("query must be a non-empty string")
        if params is None:
            params = ()
        if isinstance(params, (str, bytes)) or not isinstance(params, (tuple, list)):
            raise DataValidationError("params must be a tuple or list of values (bound, never formatted in)")
        if ";" in query.strip().rstrip(";"):
            raise DataValidationError("one statement per call: the query holds a ';' before its end")
        raw = bool(_DOLLAR.search(query))
        try:
            async with self._need_pool().connection() as con:
                cursor_cls = psycopg.AsyncRawCursor if raw else psycopg.AsyncCursor
                async with cursor_cls(con, row_factory=dict_row) as cur:
                    await cur.execute(query, tuple(params), prepare=False)
                    if cur.description is not None:
                        return await cur.fetchall()
                    return max(cur.rowcount, 0)
        except psycopg.Error as exc:
            raise SinkError(f"postgres {mask_dsn(self.dsn)}: {_first_line(exc)}") from exc

    async def batch_insert(self, table: str, records: Sequence[Mapping[str, Any]]) -> int:
        """Insert ``records`` (dicts with the same keys: the columns) into ``table`` with COPY,
        in one transaction. Returns the rows inserted.

        Raises:
            DataValidationError: a bad table/column name, or records with differing keys.
            SinkError: PostgreSQL refused (a constraint, a type) or failed; nothing was inserted.
        """
        psycopg = _psycopg()
        from psycopg import sql

        parts = table.split(".") if isinstance(table, str) else []
        if not 1 <= len(parts) <= 2 or not all(_IDENT.fullmatch(p) for p in parts):
            raise DataValidationError(f"invalid table name {str(table)[:80]!r}")
        if not records:
            return 0
        cols = list(records[0].keys())
        if not cols or not all(isinstance(c, str) and _IDENT.fullmatch(c) for c in cols):
            raise DataValidationError(f"invalid column names {cols[:10]!r}")
        for i, r in enumerate(records):
            if not isinstance(r, Mapping) or list(r.keys()) != cols and set(r.keys()) != set(cols):
                raise DataValidationError(f"record {i} has other columns than record 0 ({cols})")
        stmt = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(*parts), sql.SQL(", ").join(sql.Identifier(c) for c in cols)
        )
        try:
            async with self._need_pool().connection() as con, con.transaction(), con.cursor() as cur:
                async with cur.copy(stmt) as copy:
                    for r in records:
                        await copy.write_row(tuple(r[c] for c in cols))
        except psycopg.Error as exc:
            raise SinkError(f"postgres {mask_dsn(self.dsn)}: batch insert into {table}: {_first_line(exc)}") from exc
        return len(records)
