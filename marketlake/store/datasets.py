"""The time-series datasets the lake stores, each one Delta table: identity, key, schema, period.

A dataset's rows belong to series identified by its hive columns; within a series each row is
unique by its key (``ts`` except for trades, whose key is the exchange's ``trade_id``).

=================  =========================================  ==========  ====================
dataset (table)    series identity                            key         partition period
=================  =========================================  ==========  ====================
``candles``        exchange, category, symbol, timeframe      ts          by timeframe (layout)
``trades``         exchange, category, symbol                 trade_id    day
``funding``        exchange, category, symbol                 ts          year
``mark_candles``,  exchange, category, symbol, timeframe      ts          as candles
``index_candles``,
``premium_candles``
``open_interest``  exchange, category, symbol, timeframe      ts          year
=================  =========================================  ==========  ====================

``open_interest``'s timeframe is Bybit's ``intervalTime`` in the lake's timeframe names:
``5min`` → ``5``, ``15min`` → ``15``, ``30min`` → ``30``, ``1h`` → ``60``, ``4h`` → ``240``,
``1d`` → ``D``. Funding settles 1 to 3 times in 8 hours (8,760 rows a year at most), open
interest at 5 minutes is 105,120 a year: a year per file keeps them in the tens of thousands.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import polars as pl
import pyarrow as pa

from marketlake.core.schemas import (
    CANDLE_ARROW_SCHEMA,
    CANDLE_DEFAULTS,
    CANDLE_SCHEMA,
    REQUIRED_COLUMNS,
    TRADE_ARROW_SCHEMA,
    TRADE_SCHEMA,
    normalize_candles,
    normalize_trades,
)
from marketlake.core.schemas_perp import (
    FUNDING_ARROW_SCHEMA,
    FUNDING_SCHEMA,
    OPEN_INTEREST_ARROW_SCHEMA,
    OPEN_INTEREST_SCHEMA,
    PRICE_CANDLE_ARROW_SCHEMA,
    PRICE_CANDLE_SCHEMA,
    normalize_funding,
    normalize_open_interest,
    normalize_price_candles,
)

__all__ = [
    "CANDLES",
    "DATASETS",
    "FUNDING",
    "INDEX_CANDLES",
    "MARK_CANDLES",
    "OPEN_INTEREST",
    "PREMIUM_CANDLES",
    "PRICE_CANDLE_DATASETS",
    "TRADES",
    "DatasetSpec",
    "spec",
]

CANDLES: Final = "candles"
TRADES: Final = "trades"
FUNDING: Final = "funding"
MARK_CANDLES: Final = "mark_candles"
INDEX_CANDLES: Final = "index_candles"
PREMIUM_CANDLES: Final = "premium_candles"
OPEN_INTEREST: Final = "open_interest"
PRICE_CANDLE_DATASETS: Final = (MARK_CANDLES, INDEX_CANDLES, PREMIUM_CANDLES)

_DUCK_TYPES: Final = {
    pl.Float64(): "DOUBLE", pl.Int64(): "BIGINT", pl.Int32(): "INTEGER", pl.String(): "VARCHAR",
    pl.Boolean(): "BOOLEAN",
}


@dataclass(frozen=True, slots=True)
class DatasetSpec:
    """What the store needs to know about one dataset.

    Attributes:
        name: Table directory and SQL view name.
        has_timeframe: Whether ``timeframe`` is part of a series' identity.
        key: The column rows are unique by within a series.
        ts_unit: ``ms`` or ``us``: the unit of ``ts`` in the files.
        schema: The stored columns (Polars types).
        arrow_schema: The same for Parquet.
        normalize: Frame in (any accepted shape) → frame in ``schema``.
        required: Columns every file must have (later additions may be absent in older files).
        defaults: Values older files' missing columns read as (``None``: null).
        year_periods: True when every series of the dataset is partitioned by year.
    """

    name: str
    has_timeframe: bool
    key: str
    ts_unit: str
    schema: dict[str, pl.DataType]
    arrow_schema: pa.Schema
    normalize: Callable[[Any], pl.DataFrame]
    required: tuple[str, ...]
    defaults: dict[str, object] = field(default_factory=dict)
    year_periods: bool = False

    @property
    def hive(self) -> tuple[str, ...]:
        """The partition columns, outermost first."""
        base = ("exchange", "category", "symbol")
        return (*base, "timeframe", "date") if self.has_timeframe else (*base, "date")

    def duck_columns(self) -> tuple[tuple[str, str], ...]:
        """(column, DuckDB type) of the data columns, for the SQL views."""
        return tuple(
            (c, "TIMESTAMPTZ" if c == "ts" else _DUCK_TYPES[t]) for c, t in self.schema.items()
        )


_PRICE = dict(
    has_timeframe=True, key="ts", ts_unit="ms", schema=PRICE_CANDLE_SCHEMA,
    arrow_schema=PRICE_CANDLE_ARROW_SCHEMA, normalize=normalize_price_candles,
    required=("ts", "open", "high", "low", "close"),
)

_SPECS: Final[dict[str, DatasetSpec]] = {
    s.name: s
    for s in (
        DatasetSpec(CANDLES, True, "ts", "ms", CANDLE_SCHEMA, CANDLE_ARROW_SCHEMA, normalize_candles,
                    tuple(REQUIRED_COLUMNS[CANDLES]), dict(CANDLE_DEFAULTS)),
        DatasetSpec(TRADES, False, "trade_id", "us", TRADE_SCHEMA, TRADE_ARROW_SCHEMA, normalize_trades,
                    tuple(REQUIRED_COLUMNS[TRADES])),
        DatasetSpec(FUNDING, False, "ts", "ms", FUNDING_SCHEMA, FUNDING_ARROW_SCHEMA, normalize_funding,
                    ("ts", "rate", "interval_minutes"), year_periods=True),
        DatasetSpec(MARK_CANDLES, **_PRICE),  # type: ignore[arg-type]
        DatasetSpec(INDEX_CANDLES, **_PRICE),  # type: ignore[arg-type]
        DatasetSpec(PREMIUM_CANDLES, **_PRICE),  # type: ignore[arg-type]
        DatasetSpec(OPEN_INTEREST, True, "ts", "ms", OPEN_INTEREST_SCHEMA, OPEN_INTEREST_ARROW_SCHEMA,
                    normalize_open_interest, ("ts", "open_interest"), year_periods=True),
    )
}

#: Every time-series dataset, in the order tables are listed.
DATASETS: Final = tuple(_SPECS)


def spec(dataset: str) -> DatasetSpec:
    """The spec of ``dataset``.

    Raises:
        KeyError: not a dataset of the lake.
    """
    return _SPECS[dataset]
