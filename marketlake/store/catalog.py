"""What is stored, per series: rows, first/last ``ts``, partitions, files and bytes.

Everything comes from the table's log (each file's row count, size and ``ts`` range are recorded
when it is committed), so listing a lake of any size reads no data file and no footer.
"""

from __future__ import annotations

import polars as pl

from marketlake.store.datasets import spec
from marketlake.store.table import Snapshot

__all__ = ["SERIES_SCHEMA", "series_table"]

SERIES_SCHEMA = {
    "dataset": pl.String(),
    "exchange": pl.String(),
    "category": pl.String(),
    "symbol": pl.String(),
    "timeframe": pl.String(),
    "first_ts": pl.Datetime("ms", "UTC"),
    "last_ts": pl.Datetime("ms", "UTC"),
    "rows": pl.Int64(),
    "partitions": pl.Int64(),
    "files": pl.Int64(),
    "bytes": pl.Int64(),
}


def series_table(snapshots: list[Snapshot]) -> pl.DataFrame:
    """One row per series in ``snapshots``, in (dataset, exchange, category, symbol, timeframe) order."""
    frames = []
    for snap in snapshots:
        if snap.files.is_empty():
            continue
        f = snap.files
        if not spec(snap.dataset).has_timeframe:
            f = f.with_columns(pl.lit(None, dtype=pl.String).alias("timeframe"))
        frames.append(
            f.group_by("exchange", "category", "symbol", "timeframe").agg(
                pl.col("first_ms").min().alias("first_ts"),
                pl.col("last_ms").max().alias("last_ts"),
                pl.col("rows").sum().alias("rows"),
                pl.col("date").n_unique().cast(pl.Int64).alias("partitions"),
                pl.len().cast(pl.Int64).alias("files"),
                pl.col("size").sum().alias("bytes"),
            ).with_columns(pl.lit(snap.dataset).alias("dataset"))
        )
    if not frames:
        return pl.DataFrame(schema=SERIES_SCHEMA)
    from marketlake.core.timeframes import TIMEFRAMES

    order = {name: i for i, name in enumerate(TIMEFRAMES)}
    df = pl.concat(frames, how="vertical").with_columns(
        pl.col("first_ts").cast(pl.Datetime("ms", "UTC")),
        pl.col("last_ts").cast(pl.Datetime("ms", "UTC")),
        pl.col("timeframe").replace_strict(order, default=-1, return_dtype=pl.Int64).alias("__tf"),
    )
    return df.sort("dataset", "exchange", "category", "symbol", "__tf").select(list(SERIES_SCHEMA))
