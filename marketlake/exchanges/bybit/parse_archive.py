"""Pure decoding of Bybit's daily public trade dumps (``public.bybit.com``), as far as a real file
pins the format: the **spot** dump ``id,timestamp,price,volume,side,rpi`` (ms timestamps,
lower-case side, ascending). Downloading and the derivatives dump belong to the archive
ingest (a later issue); no real derivatives file was available to pin its format.
"""

from __future__ import annotations

import io
from typing import Final

import polars as pl

from marketlake.errors import ExchangeProtocolError

__all__ = ["SPOT_DUMP_COLUMNS", "parse_spot_trade_dump"]

#: Header of a spot daily trade dump.
SPOT_DUMP_COLUMNS: Final = ("id", "timestamp", "price", "volume", "side", "rpi")

_SCHEMA: Final = {
    "id": pl.String(),
    "timestamp": pl.Int64(),
    "price": pl.Float64(),
    "volume": pl.Float64(),
    "side": pl.String(),
    "rpi": pl.Int64(),
}


def parse_spot_trade_dump(data: bytes) -> pl.DataFrame:
    """Decode a spot daily trade dump (uncompressed CSV) into the stored trade schema.

    Returns:
        Columns ts (Datetime µs UTC), price, size, side (``Buy``/``Sell``), trade_id,
        tick_direction (null), is_block_trade (null), sorted by ts (stable).

    Raises:
        ExchangeProtocolError: the header is not the spot dump's, a value does not parse, or a
            side is neither buy nor sell.
    """
    first_line = data.split(b"\n", 1)[0].strip().decode("utf-8", "replace")
    header = tuple(first_line.split(","))
    if header != SPOT_DUMP_COLUMNS:
        raise ExchangeProtocolError(
            f"bybit spot trade dump: header {first_line[:80]!r} is not {','.join(SPOT_DUMP_COLUMNS)}"
        )
    try:
        raw = pl.read_csv(io.BytesIO(data), schema=_SCHEMA, has_header=True)
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError) as exc:
        msg = str(exc).splitlines()[0]
        raise ExchangeProtocolError(f"bybit spot trade dump: cannot read CSV: {msg}") from None
    side = pl.col("side").str.to_lowercase()
    out = raw.select(
        (pl.col("timestamp") * 1000).cast(pl.Datetime("us", "UTC")).alias("ts"),
        pl.col("price"),
        pl.col("volume").alias("size"),
        pl.when(side == "buy")
        .then(pl.lit("Buy"))
        .when(side == "sell")
        .then(pl.lit("Sell"))
        .otherwise(None)
        .alias("side"),
        pl.col("id").alias("trade_id"),
        pl.lit(None, dtype=pl.String).alias("tick_direction"),
        pl.lit(None, dtype=pl.Boolean).alias("is_block_trade"),
    )
    nulls = out.select(pl.all().exclude("tick_direction", "is_block_trade").null_count()).row(0)
    if any(nulls):
        col = out.columns[next(i for i, n in enumerate(nulls) if n)]
        raise ExchangeProtocolError(f"bybit spot trade dump: column {col!r} has empty or bad values")
    return out.sort("ts", maintain_order=True)
