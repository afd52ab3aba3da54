"""The quarantine: rows taken out of the lake by ``repair`` (invalid or misaligned), kept, not lost.

Quarantined rows are written as Parquet files under ``_meta/quarantine/candles/<series path>/``
with two extra columns, ``reason`` and ``quarantined_at``; :func:`read_quarantine` reads them all.
Files of unreadable data moved aside by ``fsck --fix`` live beside them under their lake path.
"""

from __future__ import annotations

import io
import uuid

import polars as pl
import pyarrow as pa

from marketlake.core.schemas import CANDLE_ARROW_SCHEMA, CANDLE_SCHEMA
from marketlake.store.files import publish_table
from marketlake.store.layout import META_DIR, SeriesId
from marketlake.store.storage import Storage

__all__ = ["QUARANTINE_SCHEMA", "quarantine_dir", "read_quarantine", "write_quarantine"]

QUARANTINE_SCHEMA = {
    "exchange": pl.String(), "category": pl.String(), "symbol": pl.String(), "timeframe": pl.String(),
    **CANDLE_SCHEMA, "reason": pl.String(), "quarantined_at": pl.Datetime("ms", "UTC"),
}
_ARROW = pa.schema([*CANDLE_ARROW_SCHEMA, pa.field("reason", pa.string()), pa.field("quarantined_at", pa.timestamp("ms", tz="UTC"))])


def quarantine_dir(root: Storage) -> str:
    """Where quarantined candle rows go (a key prefix of the lake)."""
    return f"{META_DIR}/quarantine/candles"


def write_quarantine(root: Storage, sid: SeriesId, rows: pl.DataFrame, reasons: pl.Series, now_ms: int) -> None:
    """Publish ``rows`` (stored candle schema) with a reason each, atomically, as one file."""
    if rows.is_empty():
        return
    frame = rows.select(list(CANDLE_SCHEMA)).with_columns(
        reasons.alias("reason").cast(pl.String),
        pl.lit(now_ms).cast(pl.Datetime("ms", "UTC")).alias("quarantined_at"),
    )
    key = "/".join([quarantine_dir(root), *sid.parts, f"q-{now_ms}-{uuid.uuid4().hex[:8]}.parquet"])
    publish_table(root, key, frame.to_arrow().cast(_ARROW))


def read_quarantine(root: Storage) -> pl.DataFrame:
    """Every quarantined row, with its series (exchange, category, symbol, timeframe)."""
    base = quarantine_dir(root)
    frames = []
    for o in sorted(root.list(base), key=lambda o: o.key):
        rel = o.key[len(base) + 1:].split("/")
        name = rel[-1]
        if not (name.startswith("q-") and name.endswith(".parquet")):
            continue
        parts = dict(p.split("=", 1) for p in rel[:-1] if "=" in p)
        frames.append(
            pl.read_parquet(io.BytesIO(root.read(o.key))).with_columns(
                pl.lit(parts.get("exchange")).alias("exchange"),
                pl.lit(parts.get("category")).alias("category"),
                pl.lit(parts.get("symbol")).alias("symbol"),
                pl.lit(parts.get("timeframe")).alias("timeframe"),
            )
        )
    if not frames:
        return pl.DataFrame(schema=QUARANTINE_SCHEMA)
    out = pl.concat(frames, how="vertical").select(list(QUARANTINE_SCHEMA))
    # A repair interrupted between quarantining and deleting repeats itself: keep one copy.
    return out.unique(subset=["exchange", "category", "symbol", "timeframe", "ts", "reason"], keep="last", maintain_order=True)
