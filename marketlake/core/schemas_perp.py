"""Stored schemas of the perpetual-futures datasets, and normalisation of frames into them. Pure.

Datasets (issue 13), each keyed by ``ts`` within its series except ``instruments``:

========================  =====================================  ==================================
dataset                   series identity (hive columns)         stored columns
========================  =====================================  ==================================
``funding``               exchange, category, symbol             ts, rate, interval_minutes
``mark_candles``,         exchange, category, symbol, timeframe  ts, open, high, low, close
``index_candles``,
``premium_candles``
``open_interest``         exchange, category, symbol, interval   ts, open_interest
``instruments``           exchange (one table per exchange)      see :data:`INSTRUMENT_SCHEMA`
========================  =====================================  ==================================

Semantics the store and the readers rely on:

* ``funding.ts`` is the settlement time (epoch ms, UTC): the rate is *known* at ``ts``, not before
  (the no-lookahead rule). ``rate`` is the fraction of position value paid per settlement (longs
  pay shorts when positive). ``interval_minutes`` is the length of the funding period that ends at
  ``ts`` (see :func:`marketlake.core.funding.infer_funding_intervals`).
* Price candles (mark, index, premium index) have Bybit's 5 kline fields and no volume; their ``ts``
  is the open time, as for trade candles, and they are kept in their own datasets so they never mix
  with trade candles. The premium index is a signed ratio: its "prices" may be negative or zero.
* ``open_interest.ts`` is the open time of the ``interval`` (``5min`` ... ``1d``) the value belongs
  to, on that interval's grid; ``open_interest`` is Bybit's two-sided figure in base units
  (inverse: contracts / USD).
* ``instruments`` is a validity-interval history: one row per symbol and set of attributes, valid
  over ``[valid_from, valid_to)``; ``valid_to`` null means "still current at ``last_seen``". It is
  built by :mod:`marketlake.core.instruments` from instrument snapshots; a snapshot's rows have
  :data:`INSTRUMENT_SNAPSHOT_SCHEMA`.

Normalisers accept int epoch ms or datetimes (naive = UTC) for time columns and raise
:class:`~marketlake.errors.SchemaMismatchError` naming the column, like
:func:`marketlake.core.schemas.normalize_candles`.
"""

from __future__ import annotations

from typing import Final

import polars as pl
import pyarrow as pa

from marketlake.core.schemas import _as_polars, _check_ts_range, _normalize, _to_timestamp
from marketlake.errors import SchemaMismatchError

__all__ = [
    "FUNDING_ARROW_SCHEMA",
    "FUNDING_SCHEMA",
    "INSTRUMENT_ARROW_SCHEMA",
    "INSTRUMENT_ATTRIBUTES",
    "INSTRUMENT_SCHEMA",
    "INSTRUMENT_SNAPSHOT_SCHEMA",
    "OPEN_INTEREST_ARROW_SCHEMA",
    "OPEN_INTEREST_SCHEMA",
    "PERP_KEYS",
    "PERP_REQUIRED_COLUMNS",
    "PRICE_CANDLE_ARROW_SCHEMA",
    "PRICE_CANDLE_SCHEMA",
    "normalize_funding",
    "normalize_instrument_history",
    "normalize_instrument_snapshot",
    "normalize_open_interest",
    "normalize_price_candles",
]

UTC: Final = "UTC"
_MS: Final = pl.Datetime("ms", UTC)

FUNDING_SCHEMA: Final[dict[str, pl.DataType]] = {
    "ts": _MS,
    "rate": pl.Float64(),
    "interval_minutes": pl.Int32(),
}
PRICE_CANDLE_SCHEMA: Final[dict[str, pl.DataType]] = {
    "ts": _MS,
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "close": pl.Float64(),
}
OPEN_INTEREST_SCHEMA: Final[dict[str, pl.DataType]] = {
    "ts": _MS,
    "open_interest": pl.Float64(),
}

#: The attributes whose change starts a new row of the instrument history. Steps and sizes are
#: float64 parsed from Bybit's decimal strings: "0.10" and "0.1" are the same tick and must not
#: start a new row.
INSTRUMENT_ATTRIBUTES: Final = (
    "status",
    "contract_type",
    "launch_time",
    "delivery_time",
    "tick_size",
    "qty_step",
    "min_order_qty",
    "funding_interval_minutes",
    "price_scale",
    "base_coin",
    "quote_coin",
)
#: One instrument as seen in one instruments-info answer.
INSTRUMENT_SNAPSHOT_SCHEMA: Final[dict[str, pl.DataType]] = {
    "symbol": pl.String(),
    "category": pl.String(),
    "status": pl.String(),
    "contract_type": pl.String(),
    "launch_time": _MS,
    "delivery_time": _MS,
    "tick_size": pl.Float64(),
    "qty_step": pl.Float64(),
    "min_order_qty": pl.Float64(),
    "funding_interval_minutes": pl.Int32(),
    "price_scale": pl.Int32(),
    "base_coin": pl.String(),
    "quote_coin": pl.String(),
}
#: The instrument history. ``valid_from``/``valid_to``: the attribute set holds on
#: ``[valid_from, valid_to)``, ``valid_to`` null = current. ``observed_from``: the snapshot that
#: first showed this attribute set (``valid_from`` is earlier only for a symbol's first row, back-
#: dated to its ``launch_time``). ``last_seen``: the latest snapshot that still showed it.
INSTRUMENT_SCHEMA: Final[dict[str, pl.DataType]] = {
    "symbol": pl.String(),
    "category": pl.String(),
    "valid_from": _MS,
    "valid_to": _MS,
    "observed_from": _MS,
    "last_seen": _MS,
    **{k: v for k, v in INSTRUMENT_SNAPSHOT_SCHEMA.items() if k not in ("symbol", "category")},
}

FUNDING_ARROW_SCHEMA: Final = pa.schema(
    [
        pa.field("ts", pa.timestamp("ms", tz=UTC), nullable=False),
        pa.field("rate", pa.float64(), nullable=False),
        pa.field("interval_minutes", pa.int32(), nullable=False),
    ]
)
PRICE_CANDLE_ARROW_SCHEMA: Final = pa.schema(
    [
        pa.field("ts", pa.timestamp("ms", tz=UTC), nullable=False),
        *(pa.field(c, pa.float64(), nullable=False) for c in ("open", "high", "low", "close")),
    ]
)
OPEN_INTEREST_ARROW_SCHEMA: Final = pa.schema(
    [
        pa.field("ts", pa.timestamp("ms", tz=UTC), nullable=False),
        pa.field("open_interest", pa.float64(), nullable=False),
    ]
)
_INSTRUMENT_NOT_NULL: Final = frozenset(
    {"symbol", "category", "valid_from", "observed_from", "last_seen", "status"}
)
_ARROW_TYPES: Final = {
    pl.String(): pa.string(),
    _MS: pa.timestamp("ms", tz=UTC),
    pl.Float64(): pa.float64(),
    pl.Int32(): pa.int32(),
}
INSTRUMENT_ARROW_SCHEMA: Final = pa.schema(
    [pa.field(c, _ARROW_TYPES[t], nullable=c not in _INSTRUMENT_NOT_NULL) for c, t in INSTRUMENT_SCHEMA.items()]
)

#: Key column of each keyed dataset (unique within a series).
PERP_KEYS: Final = {"funding": "ts", "price_candles": "ts", "open_interest": "ts"}
#: Columns every stored file of a dataset must have (mirrors ``schemas.REQUIRED_COLUMNS``).
PERP_REQUIRED_COLUMNS: Final = {
    "funding": ("ts", "rate", "interval_minutes"),
    "price_candles": ("ts", "open", "high", "low", "close"),
    "open_interest": ("ts", "open_interest"),
    "instruments": ("symbol", "category", "valid_from", "observed_from", "last_seen", "status"),
}


def normalize_funding(frame: object) -> pl.DataFrame:
    """Return ``frame`` as exactly the stored funding columns: ts, rate (float64),
    interval_minutes (int32), all non-null.

    Raises:
        SchemaMismatchError: a missing, null or unconvertible column, or an unknown column.
    """
    return _normalize(frame, FUNDING_SCHEMA, tuple(FUNDING_SCHEMA), frozenset(), "funding")


def normalize_price_candles(frame: object, what: str = "price candles") -> pl.DataFrame:
    """Return ``frame`` as exactly the stored price-candle columns: ts, open, high, low, close.

    A frame with ``volume`` or ``turnover`` is refused: mark, index and premium candles have
    none, and such a frame is almost certainly trade candles given to the wrong dataset.

    Args:
        frame: A polars DataFrame/LazyFrame or a pyarrow Table.
        what: The dataset named in error messages (``mark_candles`` ...).
    """
    return _normalize(frame, PRICE_CANDLE_SCHEMA, tuple(PRICE_CANDLE_SCHEMA), frozenset(), what)


def normalize_open_interest(frame: object) -> pl.DataFrame:
    """Return ``frame`` as exactly the stored open-interest columns: ts, open_interest."""
    return _normalize(frame, OPEN_INTEREST_SCHEMA, tuple(OPEN_INTEREST_SCHEMA), frozenset(), "open_interest")


def _times(df: pl.DataFrame, columns: tuple[str, ...], what: str) -> pl.DataFrame:
    out = []
    for name in columns:
        if name not in df.columns:
            continue
        col = df.get_column(name)
        if col.dtype == pl.Null:
            col = col.cast(pl.Int64)
        try:
            conv = _to_timestamp(col, "ms")
        except SchemaMismatchError:
            raise SchemaMismatchError(
                f"{what}: column '{name}' must be int64 epoch milliseconds or a datetime, got {col.dtype}"
            ) from None
        _check_ts_range(conv.drop_nulls(), f"{what} column '{name}'")
        out.append(conv.rename(name))
    return df.with_columns(out) if out else df


def _normalize_table(frame: object, schema: dict[str, pl.DataType], required: tuple[str, ...], what: str) -> pl.DataFrame:
    df = _as_polars(frame)
    times = tuple(c for c, t in schema.items() if t == _MS)
    df = _times(df, times, what)
    nullable = frozenset(schema) - _INSTRUMENT_NOT_NULL
    out = _normalize(df, schema, required, nullable, what)
    return out


def normalize_instrument_snapshot(frame: object) -> pl.DataFrame:
    """Return one snapshot's instruments as exactly :data:`INSTRUMENT_SNAPSHOT_SCHEMA`.

    ``symbol``, ``category`` and ``status`` are required; the other attributes may be missing or
    null (Bybit's spot listing has no launch time, no funding interval ...).
    """
    return _normalize_table(
        frame, INSTRUMENT_SNAPSHOT_SCHEMA, ("symbol", "category", "status"), "instruments snapshot"
    )


def normalize_instrument_history(frame: object) -> pl.DataFrame:
    """Return an instrument history as exactly :data:`INSTRUMENT_SCHEMA`.

    Raises:
        SchemaMismatchError: as for :func:`normalize_funding`, or a row with ``valid_to`` not
            after ``valid_from``.
    """
    required = tuple(c for c in INSTRUMENT_SCHEMA if c in _INSTRUMENT_NOT_NULL)
    out = _normalize_table(frame, INSTRUMENT_SCHEMA, required, "instruments")
    bad = out.get_column("valid_to") <= out.get_column("valid_from")
    if bad.any():
        row = int(bad.fill_null(False).arg_true()[0])
        raise SchemaMismatchError(f"instruments: valid_to is not after valid_from at row {row}")
    return out
