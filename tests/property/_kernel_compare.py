"""Helpers comparing kernel output frames with the reference twins' rows."""

from __future__ import annotations

import math
from typing import Any

import polars as pl

REL = 1e-12


def same_value(a: Any, b: Any) -> bool:
    """Equal, NaN equal to NaN, floats within 1e-12 relative."""
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        a, b = float(a), float(b)
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b or abs(a - b) <= REL * max(abs(a), abs(b))
    return a == b


def frame_rows(df: pl.DataFrame) -> list[dict[str, Any]]:
    """Rows of a kernel output frame with ``ts`` as epoch ms."""
    return df.with_columns(pl.col("ts").dt.epoch("ms")).to_dicts()


def assert_rows_match(got: list[dict[str, Any]], want: list[dict[str, Any]], keys: tuple[str, ...]) -> None:
    """Assert the two row lists agree on ``keys`` row by row."""
    assert len(got) == len(want), f"{len(got)} rows, reference has {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        for k in keys:
            assert same_value(g[k], w[k]), f"row {i} column {k}: kernel {g[k]!r} reference {w[k]!r}"
