"""DuckDB views over the lake: ``candles`` and ``trades``, with the hive columns exposed.

Each view reads an explicit list of live files (computed by :mod:`marketlake.store.reader`), so a
query never globs the lake and never sees a superseded or temporary file. The list is a snapshot
taken when the views are (re)created; :meth:`marketlake.Lake.refresh` rebuilds them.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa

from marketlake.store.datasets import CANDLES, DATASETS, spec
from marketlake.store.reader import PartitionFiles
from marketlake.store.storage import Storage
from marketlake.store.table import table_arrow_schema

__all__ = ["create_views", "sandbox"]

# Columns added after the first release, read from older files with their default.
_DEFAULTS = {(CANDLES, "filled"): 'coalesce("filled", false) AS "filled"'}


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _view_sql(dataset: str, files: list[str]) -> str:
    hive = spec(dataset).hive
    cols = spec(dataset).duck_columns()
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


def _remote_view(con: duckdb.DuckDBPyConnection, dataset: str, files: list[str], storage: Storage) -> str:
    """A view over files on an object store: DuckDB reads them through a registered Arrow
    dataset (pyarrow's S3 client, the lake's credentials), so no DuckDB extension (httpfs) has
    to be downloaded. Filters and projections are pushed down into the dataset scan."""
    import pyarrow.dataset as pads

    fs, to_path = storage.arrow_filesystem()
    hive = spec(dataset).hive
    base = to_path(dataset)
    schema = table_arrow_schema(dataset)
    data = pads.dataset(
        [to_path(f"{dataset}/{f.split(storage.uri(dataset) + '/', 1)[1]}") for f in files],
        schema=schema, format="parquet", filesystem=fs,
        partitioning=pads.partitioning(pa.schema([pa.field(h, pa.string()) for h in hive]), flavor="hive"),
        partition_base_dir=base,
    )
    name = f"__files_{dataset}"
    con.register(name, data)
    names = ", ".join([*(f'"{h}"' for h in hive), *(_DEFAULTS.get((dataset, c), f'"{c}"') for c, _ in spec(dataset).duck_columns())])
    return f"CREATE OR REPLACE VIEW {dataset} AS SELECT {names} FROM {name}"


def create_views(
    con: duckdb.DuckDBPyConnection,
    parts: dict[str, list[PartitionFiles]],
    coverage: pa.Table | None = None,
    storage: Storage | None = None,
) -> None:
    """(Re)create one view per dataset (``candles``, ``trades``, ``funding``, ``mark_candles`` ...)
    over the given files, and the ``coverage`` view over the ledger's ranges when given."""
    if con.execute("SELECT current_setting('TimeZone')").fetchone() != ("UTC",):
        con.execute("SET TimeZone = 'UTC'")  # (a sandboxed connection is locked, and already UTC)
    for dataset in DATASETS:
        files = [f for p in parts.get(dataset, []) for f in p.files]
        if files and storage is not None and not storage.is_local:
            con.execute(_remote_view(con, dataset, files, storage))
        else:
            con.execute(_view_sql(dataset, files))
    if coverage is not None:
        # A registered Arrow table: no DuckDB extension (sqlite_scanner) needs downloading.
        con.register("coverage", coverage)


def sandbox(con: duckdb.DuckDBPyConnection, storage: Storage) -> None:
    """Restrict ``con`` to reading the lake: file access only under its tables (none at all for
    a lake on an object store, read through registered datasets), no extension installs or
    loads, and the configuration locked so a query cannot lift it."""
    dirs = [storage.uri(ds) + "/" for ds in DATASETS] if storage.is_local else []
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute(f"SET allowed_directories = [{', '.join(_quote(d) for d in dirs)}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
