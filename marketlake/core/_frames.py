"""Frame → numpy conversion for the kernels (zero-copy where the stored types allow it).

Kept apart from the public functions so the rules for what a kernel accepts live in one place:
which ``ts`` types are read and in which unit, how nulls are treated, how ``side`` is encoded.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar

import numpy as np
import polars as pl
import pyarrow as pa

from marketlake.core.kernels.trades import SIDE_BUY, SIDE_SELL
from marketlake.errors import SchemaMismatchError

__all__ = [
    "FrameLike",
    "as_frame",
    "float_column",
    "float_mask_column",
    "int_mask_column",
    "pick_threads",
    "run_parallel",
    "side_codes",
    "side_codes_slow",
    "ts_column",
]

#: What the kernel functions accept as input.
FrameLike = pl.DataFrame | pa.Table

_UNITS_PER_MS: Final = {"ms": 1, "us": 1_000, "ns": 1_000_000}
# Below this many rows per thread, starting threads costs more than it saves.
_MIN_ROWS_PER_THREAD: Final = 500_000
_pool: ThreadPoolExecutor | None = None
T = TypeVar("T")


def as_frame(frame: object, what: str) -> pl.DataFrame:
    """Return ``frame`` as a polars DataFrame (a pyarrow Table is converted, zero-copy mostly).

    Raises:
        SchemaMismatchError: ``frame`` is neither a polars DataFrame nor a pyarrow Table.
    """
    if isinstance(frame, pl.DataFrame):
        return frame
    if isinstance(frame, pa.Table):
        out = pl.from_arrow(frame)
        assert isinstance(out, pl.DataFrame)
        return out
    raise SchemaMismatchError(
        f"{what}: expected a polars DataFrame or a pyarrow Table, got {type(frame).__name__}"
    )


def _require(df: pl.DataFrame, name: str, what: str) -> pl.Series:
    if name not in df.columns:
        raise SchemaMismatchError(
            f"{what}: missing column {name!r} (columns are {', '.join(df.columns[:12])})"
        )
    return df.get_column(name)


def ts_column(df: pl.DataFrame, what: str) -> tuple[np.ndarray, int]:
    """The ``ts`` column as int64 in its native unit, and that unit's count per millisecond.

    Integers are epoch milliseconds; a Datetime of any unit and time zone is read as its physical
    UTC epoch value (so ``Datetime("us", "UTC")`` trades need no converted copy).

    Raises:
        SchemaMismatchError: ``ts`` is missing, has nulls, or is neither integer nor datetime.
    """
    col = _require(df, "ts", what)
    dtype = col.dtype
    if isinstance(dtype, pl.Datetime):
        scale = _UNITS_PER_MS[dtype.time_unit]
        phys = col.to_physical()
    elif dtype.is_integer() or dtype == pl.Null:  # Null: an untyped (all-null or empty) column
        scale = 1
        phys = col.cast(pl.Int64)
    else:
        raise SchemaMismatchError(
            f"{what}: column 'ts' must be int64 epoch milliseconds or a datetime, got {dtype}"
        )
    if phys.null_count():
        row = int(phys.is_null().arg_true()[0])
        raise SchemaMismatchError(f"{what}: column 'ts' is null at row {row}")
    return np.ascontiguousarray(phys.to_numpy(), dtype=np.int64), scale


def _as_float(col: pl.Series, what: str) -> pl.Series:
    if col.dtype == pl.Float64:
        return col
    if not (col.dtype.is_numeric() or col.dtype == pl.Null):
        raise SchemaMismatchError(f"{what}: column {col.name!r} must be numeric, got {col.dtype}")
    return col.cast(pl.Float64)


def float_column(df: pl.DataFrame, name: str, what: str, *, nulls_as_nan: bool) -> np.ndarray:
    """A required float column as float64 numpy (zero-copy when stored as Float64 without nulls).

    Args:
        df: The frame.
        name: Column name.
        what: Names the input in error messages.
        nulls_as_nan: Read nulls as NaN (the checker reports them as invalid candles); when
            False a null is a schema error.

    Raises:
        SchemaMismatchError: the column is missing, not numeric, or null where nulls are refused.
    """
    col = _as_float(_require(df, name, what), what)
    if col.null_count():
        if not nulls_as_nan:
            row = int(col.is_null().arg_true()[0])
            raise SchemaMismatchError(f"{what}: column {name!r} is null at row {row}")
        col = col.fill_null(float("nan"))
    return np.ascontiguousarray(col.to_numpy(), dtype=np.float64)


def float_mask_column(df: pl.DataFrame, name: str, what: str) -> tuple[np.ndarray, np.ndarray]:
    """An optional float column: ``(values, valid)``; ``valid`` is empty when nothing is null.

    A missing column reads as all null.
    """
    n = df.height
    if name not in df.columns or df.get_column(name).null_count() == n:
        return np.zeros(n, np.float64), np.zeros(n, np.bool_)
    col = _as_float(df.get_column(name), what)
    if col.null_count() == 0:
        return np.ascontiguousarray(col.to_numpy(), dtype=np.float64), np.zeros(0, np.bool_)
    valid = col.is_not_null().to_numpy()
    return np.ascontiguousarray(col.fill_null(0.0).to_numpy(), dtype=np.float64), valid


def int_mask_column(df: pl.DataFrame, name: str, what: str) -> tuple[np.ndarray, np.ndarray]:
    """An optional integer column as int64: ``(values, valid)`` as :func:`float_mask_column`.

    Raises:
        SchemaMismatchError: the column holds non-integer values.
    """
    n = df.height
    if name not in df.columns:
        return np.zeros(n, np.int64), np.zeros(n, np.bool_)
    col = df.get_column(name)
    if col.null_count() == n:  # Bybit candles carry no trade count: skip converting nulls
        return np.zeros(n, np.int64), np.zeros(n, np.bool_)
    if col.dtype.is_float():
        # Counts read from CSV may arrive as floats; only whole numbers are accepted.
        whole = col.is_null() | (col == col.round(0))
        if not bool(whole.all()):
            row = int((~whole).arg_true()[0])
            raise SchemaMismatchError(f"{what}: column {name!r} is not a whole number at row {row}")
    elif not (col.dtype.is_integer() or col.dtype == pl.Null):
        raise SchemaMismatchError(f"{what}: column {name!r} must be integer, got {col.dtype}")
    col = col.cast(pl.Int64)
    if col.null_count() == 0:
        return np.ascontiguousarray(col.to_numpy(), dtype=np.int64), np.zeros(0, np.bool_)
    valid = col.is_not_null().to_numpy()
    return np.ascontiguousarray(col.fill_null(0).to_numpy(), dtype=np.int64), valid


def side_codes(col: pl.Series) -> np.ndarray:
    """The ``side`` column as int64 codes read straight from the Arrow string views, zero-copy.

    The kernel compares each 8-byte (length, prefix) word with the codes of ``Buy``/``Sell`` and
    reports any other value; :func:`side_codes_slow` then handles other spellings. Non-string
    columns (Categorical, Enum) are cast to strings first.

    Raises:
        SchemaMismatchError: the column has nulls or is not a string column.
    """
    if col.null_count():
        row = int(col.is_null().arg_true()[0])
        raise SchemaMismatchError(f"trades: column 'side' is null at row {row}; expected Buy or Sell")
    if isinstance(col.dtype, (pl.Categorical, pl.Enum)):
        col = col.cast(pl.String)
    if col.dtype != pl.String:
        raise SchemaMismatchError(f"trades: column 'side' must be Buy/Sell strings, got {col.dtype}")
    if sys.byteorder != "little":
        return side_codes_slow(col)
    arr: Any = col.to_arrow(compat_level=pl.CompatLevel.newest())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not pa.types.is_string_view(arr.type):
        return side_codes_slow(col)
    words = np.frombuffer(arr.buffers()[1], dtype=np.int64)
    # Each view is 16 bytes = two int64 words; the first is length | prefix << 32.
    return words[2 * arr.offset : 2 * (arr.offset + len(arr)) : 2]


def side_codes_slow(col: pl.Series) -> np.ndarray:
    """``side`` codes via string comparison, accepting any letter case (``buy``, ``SELL``).

    Raises:
        SchemaMismatchError: a value is neither buy nor sell (the message names the row).
    """
    low = col.cast(pl.String).str.to_lowercase()
    codes = (
        pl.select(
            pl.when(low == "buy").then(pl.lit(SIDE_BUY, pl.Int64))
            .when(low == "sell").then(pl.lit(SIDE_SELL, pl.Int64))
            .otherwise(pl.lit(0, pl.Int64))
        )
        .to_series()
        .to_numpy()
    )
    bad = np.flatnonzero(codes == 0)
    if bad.size:
        row = int(bad[0])
        raise SchemaMismatchError(
            f"trades: column 'side' is {str(col[row])[:20]!r} at row {row}; expected Buy or Sell"
        )
    return codes


def pick_threads(n: int, threads: int | None) -> int:
    """How many chunks to run: ``threads`` if given, else one per ~0.5 M rows up to the cores.

    Raises:
        ValueError: ``threads`` < 1.
    """
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        return threads
    return max(1, min(os.cpu_count() or 1, n // _MIN_ROWS_PER_THREAD))


def run_parallel(fn: Callable[..., T], arg_sets: Sequence[tuple[Any, ...]]) -> list[T]:
    """Run ``fn(*args)`` for each argument tuple; on threads when there are several.

    ``fn`` must be a ``nogil`` numba kernel: the threads then really run at the same time.
    """
    global _pool
    if len(arg_sets) == 1:
        return [fn(*arg_sets[0])]
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="ml-kernel")
    futures = [_pool.submit(fn, *args) for args in arg_sets]
    return [f.result() for f in futures]
