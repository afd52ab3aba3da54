"""The stored schemas of the ``candles`` and ``trades`` datasets, and normalisation of user frames.

A frame handed to the lake is normalised here (pure, no I/O) into exactly the stored columns, in
order, with the stored types; anything that cannot be converted raises
:class:`~marketlake.errors.SchemaMismatchError` naming the column (and the first bad row).
"""

from __future__ import annotations

from typing import Final

import polars as pl
import pyarrow as pa

from marketlake.errors import SchemaMismatchError

__all__ = [
    "CANDLE_ARROW_SCHEMA",
    "CANDLE_DEFAULTS",
    "REQUIRED_COLUMNS",
    "CANDLE_COLUMNS",
    "CANDLE_SCHEMA",
    "CANDLE_KEY",
    "TRADE_ARROW_SCHEMA",
    "TRADE_COLUMNS",
    "TRADE_KEY",
    "TRADE_SCHEMA",
    "normalize_candles",
    "normalize_trades",
]

UTC: Final = "UTC"

#: Stored candle columns (partition columns exchange/category/symbol/timeframe/date are in the path).
CANDLE_SCHEMA: Final[dict[str, pl.DataType]] = {
    "ts": pl.Datetime("ms", UTC),
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "close": pl.Float64(),
    "volume": pl.Float64(),
    "turnover": pl.Float64(),
    "trades": pl.Int64(),
    "buy_volume": pl.Float64(),
    "filled": pl.Boolean(),
}
CANDLE_COLUMNS: Final = tuple(CANDLE_SCHEMA)
CANDLE_KEY: Final = "ts"
_CANDLE_REQUIRED: Final = ("ts", "open", "high", "low", "close", "volume")
#: Columns added to the stored schema later, with the value older files imply for them.
CANDLE_DEFAULTS: Final[dict[str, object]] = {"filled": False}
_CANDLE_NULLABLE: Final = frozenset({"turnover", "trades", "buy_volume"})

#: Stored trade columns. Microseconds: Bybit's daily archives carry sub-millisecond times.
TRADE_SCHEMA: Final[dict[str, pl.DataType]] = {
    "ts": pl.Datetime("us", UTC),
    "price": pl.Float64(),
    "size": pl.Float64(),
    "side": pl.String(),
    "trade_id": pl.String(),
    "tick_direction": pl.String(),
    "is_block_trade": pl.Boolean(),
}
TRADE_COLUMNS: Final = tuple(TRADE_SCHEMA)
TRADE_KEY: Final = "trade_id"
_TRADE_REQUIRED: Final = ("ts", "price", "size", "side", "trade_id")
_TRADE_NULLABLE: Final = frozenset({"tick_direction", "is_block_trade"})
#: Columns every stored file of a dataset must have (the others may be missing in older files).
REQUIRED_COLUMNS: Final = {"candles": _CANDLE_REQUIRED, "trades": _TRADE_REQUIRED}

CANDLE_ARROW_SCHEMA: Final = pa.schema(
    [
        pa.field("ts", pa.timestamp("ms", tz=UTC), nullable=False),
        *(pa.field(c, pa.float64(), nullable=False) for c in ("open", "high", "low", "close", "volume")),
        pa.field("turnover", pa.float64()),
        pa.field("trades", pa.int64()),
        pa.field("buy_volume", pa.float64()),
        pa.field("filled", pa.bool_(), nullable=False),
    ]
)
TRADE_ARROW_SCHEMA: Final = pa.schema(
    [
        pa.field("ts", pa.timestamp("us", tz=UTC), nullable=False),
        pa.field("price", pa.float64(), nullable=False),
        pa.field("size", pa.float64(), nullable=False),
        pa.field("side", pa.string(), nullable=False),
        pa.field("trade_id", pa.string(), nullable=False),
        pa.field("tick_direction", pa.string()),
        pa.field("is_block_trade", pa.bool_()),
    ]
)

# Columns a caller's frame may carry that describe the series or are derived; they are dropped.
_IGNORABLE: Final = frozenset(
    {"symbol", "timeframe", "exchange", "category", "date", "datetime", "confirm", "end", "interval"}
)
_TS_ALIASES: Final = ("timestamp", "start", "timestamp_ms")
_TS_MIN_MS: Final = 631_152_000_000  # 1990-01-01
_TS_MAX_MS: Final = 7_258_118_400_000  # 2200-01-01


def _as_polars(frame: object) -> pl.DataFrame:
    if isinstance(frame, pl.DataFrame):
        return frame
    if isinstance(frame, pa.Table):
        return pl.from_arrow(frame)  # type: ignore[return-value]
    if isinstance(frame, pl.LazyFrame):
        return frame.collect()
    raise SchemaMismatchError(
        f"expected a polars DataFrame or a pyarrow Table, got {type(frame).__name__}"
    )


def _to_timestamp(col: pl.Series, unit: str) -> pl.Series:
    """Int epoch ms or any datetime → Datetime(unit, UTC); naive datetimes are taken as UTC."""
    dtype = col.dtype
    if dtype.is_integer():
        out = pl.from_epoch(col.cast(pl.Int64), time_unit="ms")
        return out.dt.replace_time_zone(UTC).dt.cast_time_unit(unit)  # type: ignore[arg-type]
    if isinstance(dtype, pl.Datetime):
        out = col if dtype.time_zone else col.dt.replace_time_zone(UTC)
        return out.dt.convert_time_zone(UTC).dt.cast_time_unit(unit)  # type: ignore[arg-type]
    raise SchemaMismatchError(
        f"column 'ts' must be int64 epoch milliseconds or a datetime, got {dtype}"
    )


def _check_ts_range(ts: pl.Series, what: str) -> None:
    """Reject times outside 1990..2200: almost always seconds or microseconds passed as ms."""
    ms = ts.dt.epoch("ms")
    bad = (ms < _TS_MIN_MS) | (ms >= _TS_MAX_MS)
    if bad.any():
        row = _first_bad_row(bad.fill_null(False))
        raise SchemaMismatchError(
            f"{what}: ts {ms[row]} at row {row} is not between 1990 and 2200 "
            "(epoch seconds or microseconds given as milliseconds?)"
        )


def _first_bad_row(mask: pl.Series) -> int:
    return int(mask.arg_true()[0])


def _normalize(
    frame: object,
    schema: dict[str, pl.DataType],
    required: tuple[str, ...],
    nullable: frozenset[str],
    what: str,
) -> pl.DataFrame:
    df = _as_polars(frame)
    if "ts" not in df.columns:
        for alias in _TS_ALIASES:
            if alias in df.columns:
                df = df.rename({alias: "ts"})
                break
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise SchemaMismatchError(f"{what}: missing column(s) {', '.join(missing)}")
    unknown = [c for c in df.columns if c not in schema and c not in _IGNORABLE]
    if unknown:
        raise SchemaMismatchError(
            f"{what}: unexpected column(s) {', '.join(map(repr, unknown[:5]))}; "
            f"stored columns are {', '.join(schema)}"
        )
    out: dict[str, pl.Series] = {}
    for name, dtype in schema.items():
        if name not in df.columns:
            # (pl.repeat, not a Python list of None: that cost 1.1 s of a 7.7 s bulk write)
            out[name] = pl.repeat(None, df.height, dtype=dtype, eager=True).rename(name)
            continue
        col = df.get_column(name)
        if name == "ts":
            conv = _to_timestamp(col, dtype.time_unit)  # type: ignore[attr-defined]
            _check_ts_range(conv, what)
        else:
            try:
                conv = col.cast(dtype, strict=True)
            except (pl.exceptions.InvalidOperationError, pl.exceptions.ComputeError) as exc:
                raise SchemaMismatchError(
                    f"{what}: column '{name}' cannot be read as {dtype}: {str(exc).splitlines()[0]}"
                ) from None
        if name not in nullable and conv.null_count():
            row = _first_bad_row(conv.is_null())
            raise SchemaMismatchError(f"{what}: column '{name}' is null at row {row}")
        out[name] = conv.rename(name)
    return pl.DataFrame(out)


def normalize_candles(frame: object) -> pl.DataFrame:
    """Return ``frame`` as exactly the stored candle columns and types.

    ``ts`` may be int64 epoch ms or a datetime (naive = UTC); ``timestamp`` is accepted as its name.
    ``turnover``, ``trades`` and ``buy_volume`` (taker buy volume, known only for candles built
    from trades) are optional (stored as null). ``filled`` marks flat candles written by
    ``repair --fill`` over a gap; it defaults to false. Series-describing columns
    (``symbol``, ``timeframe``, ``datetime``, ``confirm`` ...) are dropped.

    Raises:
        SchemaMismatchError: a required column is missing or null, a column has an unconvertible
            type, or an unknown column is present.
    """
    out = _normalize(frame, CANDLE_SCHEMA, _CANDLE_REQUIRED, _CANDLE_NULLABLE | {"filled"}, "candles")
    return out.with_columns(pl.col("filled").fill_null(False))


def normalize_trades(frame: object) -> pl.DataFrame:
    """Return ``frame`` as exactly the stored trade columns and types.

    ``side`` is normalised to ``Buy``/``Sell`` (any case); ``trade_id`` is cast to string.

    Raises:
        SchemaMismatchError: as for :func:`normalize_candles`, or a side that is neither buy nor sell.
    """
    df = _as_polars(frame)
    if "trade_id" in df.columns and df.schema["trade_id"] != pl.String:
        df = df.with_columns(pl.col("trade_id").cast(pl.String))
    if (
        "side" in df.columns
        and df.schema["side"] in (pl.String, pl.Categorical)
        and not (df.schema["side"] == pl.String and df.get_column("side").is_in(["Buy", "Sell"]).all())
    ):
        side = pl.col("side").cast(pl.String).str.to_lowercase()
        df = df.with_columns(
            pl.when(side == "buy").then(pl.lit("Buy"))
            .when(side == "sell").then(pl.lit("Sell"))
            .otherwise(None)
            .alias("side"),
            pl.col("side").alias("_side_in"),
        )
        bad = df.get_column("side").is_null() & df.get_column("_side_in").is_not_null()
        if bad.any():
            row = _first_bad_row(bad)
            raise SchemaMismatchError(
                f"trades: column 'side' is {df['_side_in'][row]!r} at row {row}; expected Buy or Sell"
            )
        df = df.drop("_side_in")
    return _normalize(df, TRADE_SCHEMA, _TRADE_REQUIRED, _TRADE_NULLABLE, "trades")
