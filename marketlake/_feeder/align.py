"""``aligned``: higher-timeframe candles joined onto base rows without lookahead.

A base row (a candle of the base timeframe) is *known* at its close time. At that instant the
usable candle of another timeframe is the last one with ``close <= base close``: a backward as-of
join of the other series, keyed by its close time, onto the base rows keyed by theirs. Both keys
are monotone in ``ts``, so both sides stay sorted as stored.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from marketlake._feeder.rules import close_time_expr
from marketlake.core.schemas import CANDLE_COLUMNS
from marketlake.core.timeframes import Timeframe

__all__ = ["aligned_frame", "suffixed"]


def suffixed(column: str, tf: Timeframe) -> str:
    """Name of ``column`` of timeframe ``tf`` in an aligned frame, e.g. ``close_60``, ``ts_D``."""
    return f"{column}_{tf.name}"


def aligned_frame(
    base: pl.LazyFrame, base_tf: Timeframe, others: Sequence[tuple[Timeframe, pl.LazyFrame]]
) -> pl.LazyFrame:
    """Join each of ``others`` onto ``base`` as of the base rows' close time.

    Args:
        base: Stored candles of the base series (any extra label columns are dropped), sorted by ts.
        base_tf: The base timeframe.
        others: (timeframe, stored candles sorted by ts) for every other timeframe.

    Returns:
        ``ts``, ``close_time`` (when the base candle closed: the time the row describes), the base
        columns, then per other timeframe its columns suffixed ``_{name}`` (``ts_60`` is the open
        time of the 60-minute candle used; null where none had closed yet).
    """
    lf = base.select(
        "ts",
        close_time_expr(base_tf).alias("close_time"),
        *(c for c in CANDLE_COLUMNS if c != "ts"),
    )
    for tf, other in others:
        right = other.select(
            *(pl.col(c).alias(suffixed(c, tf)) for c in CANDLE_COLUMNS),
            close_time_expr(tf).alias("_close"),
        )
        # The stored order is by ts, and close time is monotone in ts: tell the join so it does
        # not sort or verify (check_sortedness=False is safe by construction).
        lf = lf.join_asof(
            right,
            left_on="close_time",
            right_on="_close",
            strategy="backward",
            allow_exact_matches=True,  # a candle closing exactly at the base close is usable
            check_sortedness=False,
        ).drop("_close")
    return lf
