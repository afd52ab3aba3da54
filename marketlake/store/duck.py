"""DuckDB views over the lake: ``candles`` and ``trades``, with the hive columns exposed.

Each view reads an explicit list of live files (computed by :mod:`marketlake.store.reader`), so a
query never globs the lake and never sees a superseded or temporary file. The list is a snapshot
taken when the views are (re)created; :meth:`marketlake.Lake.refresh` rebuilds them.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa

from marketlake.store.layout import CANDLES, TRADES
from marketlake.store.reader import PartitionFiles

__all__ = ["create_views", "sandbox"]

_HIVE = {
    CANDLES: ("exchange", "category", "symbol", "timeframe", "date"),
    TRADES: ("exchange", "category", "symbol", "date"),
}
_COLUMNS = {
    CANDLES: (
        ("ts", "TIMESTAMPTZ"), ("open", "DOUBLE"), ("high", "DOUBLE"), ("low", "DOUBLE"),
        ("close", "DOUBLE"), ("volume", "DOUBLE"), ("turnover", "DOUBLE"), ("trades", "BIGINT"),
        ("buy_volume", "DOUBLE"), ("filled", "BOOLEAN"),
    ),
    TRADES: (
        ("ts", "TIMESTAMPTZ"), ("price", "DOUBLE"), ("size", "DOUBLE"), ("side", "VARCHAR"),
        ("trade_id", "VARCHAR"), ("tick_direction", "VARCHAR"), ("is_block_trade", "BOOLEAN"),
    ),
}


# Columns added after the first release, read from older files with their default.
_DEFAULTS = {(CANDLES, "filled"): 'coalesce("filled", false) AS "filled"'}


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _view_sql(dataset: str, files: list[Path]) -> str:
    hive = _HIVE[dataset]
    cols = _COLUMNS[dataset]
    typed = ", ".join([*(f'NULL::VARCHAR AS "{h}"' for h in hive), *(f'NULL::{t} AS "{c}"' for c, t in cols)])
    if not files:
        return f"CREATE OR REPLACE VIEW {dataset} AS SELECT {typed} WHERE false"
    names = ", ".join(
        [*(f'"{h}"' for h in hive), *(_DEFAULTS.get((dataset, c), f'"{c}"') for c, _ in cols)]
    )
    file_list = "[" + ", ".join(_quote(str(f)) for f in files) + "]"
    hive_types = "{" + ", ".join(f"{_quote(h)}: 'VARCHAR'" for h in hive) + "}"
    # Files written before a column was added lack it: union_by_name reads a mix, and the typed
    # empty row UNIONed BY NAME guarantees every column exists even if no file has it yet.
    return (
        f"CREATE OR REPLACE VIEW {dataset} AS SELECT {names} FROM ("
        f"SELECT * FROM read_parquet({file_list}, hive_partitioning = true, hive_types = {hive_types}, "
        f"union_by_name = true) UNION ALL BY NAME SELECT {typed} WHERE false)"
    )


def create_views(
    con: duckdb.DuckDBPyConnection,
    parts: dict[str, list[PartitionFiles]],
    coverage: pa.Table | None = None,
) -> None:
    """(Re)create the ``candles`` and ``trades`` views of ``con`` over the given live files, and
    the ``coverage`` view over the ledger's ranges when given."""
    if con.execute("SELECT current_setting('TimeZone')").fetchone() != ("UTC",):
        con.execute("SET TimeZone = 'UTC'")  # (a sandboxed connection is locked, and already UTC)
    for dataset in (CANDLES, TRADES):
        files = [f for p in parts.get(dataset, []) for f in p.files]
        con.execute(_view_sql(dataset, files))
    if coverage is not None:
        # A registered Arrow table: no DuckDB extension (sqlite_scanner) needs downloading.
        con.register("coverage", coverage)


def sandbox(con: duckdb.DuckDBPyConnection, root: Path) -> None:
    """Restrict ``con`` to reading the lake: file access only under its tables, no extension
    installs or loads, and the configuration locked so a query cannot lift it."""
    dirs = [str(root / ds) + "/" for ds in (CANDLES, TRADES)]
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute(f"SET allowed_directories = [{', '.join(_quote(d) for d in dirs)}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
