"""Candles from trades, and candles of larger timeframes from smaller ones (pure, no I/O).

Both functions take a polars DataFrame (or a pyarrow Table), run one numba pass over it and return
a polars DataFrame with the stored candle columns::

    ts (Datetime("ms", "UTC"), bucket open), open, high, low, close (Float64),
    volume, turnover (Float64), trades (Int64), buy_volume (Float64)

Rows are sorted by ``ts``; only non-empty buckets appear unless ``fill=True``.

NaN handling is deliberate and the same in the kernels and their reference twins: a NaN price in a
bucket makes that bucket's high and low NaN (and its open/close when it is the first/last price),
NaN sizes make the sums NaN. Nothing is dropped silently; :func:`~marketlake.check_candles` then
reports the bucket as invalid.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from marketlake.core._frames import (
    FrameLike,
    as_frame,
    float_column,
    float_mask_column,
    int_mask_column,
    pick_threads,
    run_parallel,
    side_codes,
    side_codes_slow,
    ts_column,
)
from marketlake.core.kernels.calendar import tf_params
from marketlake.core.kernels.resample import resample_candles
from marketlake.core.kernels.trades import (
    BAD_SIDE,
    UNSORTED,
    fill_empty_buckets,
    split_at_buckets,
    trades_to_candles,
)
from marketlake.core.schemas import CANDLE_SCHEMA
from marketlake.core.timeframes import DAY_MS, Timeframe, parse_timeframe
from marketlake.errors import DataValidationError

__all__ = [
    "candles_from_trades",
    "check_resample_pair",
    "expected_rows",
    "resample",
    "resample_with_counts",
]

_TS_TYPE = pl.Datetime("ms", "UTC")


def _frame(
    opens_ms: np.ndarray,
    o: np.ndarray,
    h: np.ndarray,
    lw: np.ndarray,
    c: np.ndarray,
    vol: np.ndarray,
    turn: pl.Series,
    cnt: pl.Series,
    buy: pl.Series,
) -> pl.DataFrame:
    return pl.DataFrame(
        [
            pl.Series("ts", opens_ms, pl.Int64).cast(_TS_TYPE),
            pl.Series("open", o, pl.Float64),
            pl.Series("high", h, pl.Float64),
            pl.Series("low", lw, pl.Float64),
            pl.Series("close", c, pl.Float64),
            pl.Series("volume", vol, pl.Float64),
            turn.alias("turnover").cast(pl.Float64),
            cnt.alias("trades").cast(pl.Int64),
            buy.alias("buy_volume").cast(pl.Float64),
        ]
    )


def _masked(values: np.ndarray, ok: np.ndarray, dtype: pl.DataType) -> pl.Series:
    s = pl.Series("", values, dtype)
    if ok.all():
        return s
    return pl.select(pl.when(pl.Series(ok)).then(s)).to_series()


def candles_from_trades(
    trades: FrameLike,
    timeframe: str | int | Timeframe,
    *,
    fill: bool = False,
    threads: int | None = None,
) -> pl.DataFrame:
    """Aggregate trades into candles of ``timeframe``.

    Args:
        trades: Columns ``ts`` (int64 epoch ms, or a Datetime of any unit, as stored:
            ``Datetime("us", "UTC")``), ``price``, ``size`` and optionally ``side``
            (``Buy``/``Sell``, any case; String, Categorical or Enum). Other columns are ignored.
            Sorted input is aggregated in one pass; unsorted input is stably sorted first, so
            open/close follow (ts, input order).
        timeframe: Any timeframe :func:`~marketlake.parse_timeframe` knows, including ``1s``,
            ``5s``, ``15s`` and the calendar ``W`` (Monday 00:00 UTC) and ``M`` (1st of month).
        fill: Also emit a flat candle for each empty bucket between the first and the last
            trade: open = high = low = close = previous close, volume, turnover, trades and
            buy volume 0.
        threads: Chunks to aggregate in parallel (split at bucket boundaries, so the result is
            bit-identical to one thread). Default: one per 0.5 M trades, up to the core count.

    Returns:
        Columns ``ts`` (Datetime("ms", "UTC"), bucket open), ``open``, ``high``, ``low``,
        ``close``, ``volume`` (sum of size), ``turnover`` (sum of price * size), ``trades``
        (Int64 count), ``buy_volume`` (sum of size of taker-buy trades; null without ``side``).

    Raises:
        SchemaMismatchError: ``ts``, ``price`` or ``size`` is missing, null or of a wrong type, or
            a side is neither buy nor sell.
        InvalidTimeframeError: ``timeframe`` is unknown.
    """
    tf = parse_timeframe(timeframe)
    df = as_frame(trades, "trades")
    ts, scale = ts_column(df, "trades")
    price = float_column(df, "price", "trades", nulls_as_nan=False)
    size = float_column(df, "size", "trades", nulls_as_nan=False)
    has_side = "side" in df.columns
    side = side_codes(df.get_column("side")) if has_side else np.zeros(0, np.int64)
    kind, dur, off = tf_params(tf, scale)
    parts = pick_threads(ts.shape[0], threads)

    def run() -> tuple[int, int, list[tuple]]:  # type: ignore[type-arg]
        cuts = split_at_buckets(ts, parts, kind, dur, off) if parts > 1 else [0, ts.shape[0]]
        args = [
            (ts, price, size, side, has_side, kind, dur, off, int(cuts[j]), int(cuts[j + 1]))
            for j in range(len(cuts) - 1)
        ]
        outs = run_parallel(trades_to_candles, args)
        for out in outs:
            if out[0] != 0:
                return int(out[0]), int(out[1]), outs
        # Chunks are sorted inside; the whole is sorted iff each cut steps forwards too.
        for j in range(1, len(cuts) - 1):
            if 0 < cuts[j] < ts.shape[0] and ts[cuts[j]] < ts[cuts[j] - 1]:
                return UNSORTED, int(cuts[j]), outs
        return 0, -1, outs

    status, bad_row, outs = run()
    if status == BAD_SIDE:
        side = side_codes_slow(df.get_column("side"))  # raises naming the row, or accepts 'buy'
        status, bad_row, outs = run()
    if status == UNSORTED:
        order = np.argsort(ts, kind="stable")
        ts, price, size = ts[order], price[order], size[order]
        if has_side:
            side = np.ascontiguousarray(side[order])
        status, bad_row, outs = run()
        if status == BAD_SIDE:
            side = side_codes_slow(df.get_column("side"))[order]
            status, bad_row, outs = run()
    if status != 0:  # pragma: no cover - the retries above leave only OK
        raise AssertionError(f"trades kernel failed with status {status} at row {bad_row}")

    cols = [np.concatenate([out[3 + k][: out[2]] for out in outs]) for k in range(9)]
    opens, o, h, lw, c, vol, turn, cnt, buy = cols
    if fill:
        opens, o, h, lw, c, vol, turn, cnt, buy, _ = fill_empty_buckets(
            opens, o, h, lw, c, vol, turn, cnt, buy, kind, dur, off
        )
    buy_s = pl.Series("", buy, pl.Float64) if has_side else pl.Series("", [None] * len(opens), pl.Float64)
    return _frame(
        opens // scale, o, h, lw, c, vol,
        pl.Series("", turn, pl.Float64), pl.Series("", cnt, pl.Int64), buy_s,
    )


def check_resample_pair(source: Timeframe, target: Timeframe) -> None:
    """Check that every ``target`` bucket is an exact union of ``source`` buckets.

    Raises:
        DataValidationError: it is not (e.g. 3 → 5, or W → M: weeks straddle months).
    """
    src_dur, src_off = source.duration_ms, source.offset_ms
    if source.kind == "month":
        ok = target.kind == "month"
    elif target.kind == "month":
        ok = DAY_MS % src_dur == 0 and src_off % src_dur == 0
    else:
        ok = (
            target.duration_ms % src_dur == 0
            and (target.offset_ms - src_off) % src_dur == 0
        )
    if not ok:
        raise DataValidationError(
            f"cannot resample {source.name} candles to {target.name}: a {target.name} bucket "
            f"is not a whole number of {source.name} buckets"
        )


def resample(
    candles: FrameLike,
    timeframe: str | int | Timeframe,
    *,
    source: str | int | Timeframe = "1",
    complete_only: bool = False,
) -> pl.DataFrame:
    """Aggregate candles into a larger timeframe, exactly.

    First open, max high, min low, last close; volume, turnover, trades and buy_volume summed.
    A bucket's turnover / trades / buy_volume is null when any of its candles has a null there
    (a partial sum would pass for a real one). Unsorted input is stably sorted by ``ts`` first.
    Duplicated timestamps are not removed: run :func:`~marketlake.check_candles` first.

    Args:
        candles: Columns ``ts`` (int epoch ms or Datetime), ``open``, ``high``, ``low``,
            ``close``, ``volume``; optional ``turnover``, ``trades``, ``buy_volume``.
        timeframe: The target timeframe.
        source: The timeframe of ``candles`` (default 1 minute); used to validate the pair and
            to tell complete buckets.
        complete_only: Keep only buckets holding every source candle they span (so the forming
            last bucket, and buckets over a gap, are left out).

    Returns:
        The stored candle columns (see the module docstring), sorted by ``ts``.

    Raises:
        SchemaMismatchError: a required column is missing, null or not numeric.
        InvalidTimeframeError: a timeframe is unknown.
        DataValidationError: ``timeframe`` buckets are not unions of ``source`` buckets.
    """
    tf = parse_timeframe(timeframe)
    src = parse_timeframe(source)
    frame, rows = resample_with_counts(candles, tf, src)
    if complete_only and frame.height:
        keep = rows == expected_rows(frame.get_column("ts").dt.epoch("ms").to_numpy(), tf, src)
        frame = frame.filter(pl.Series(keep))
    return frame


def expected_rows(opens: np.ndarray, tf: Timeframe, src: Timeframe) -> np.ndarray:
    """How many ``src`` candles a complete ``tf`` bucket opening at each of ``opens`` holds."""
    if tf.kind == "month":
        ends = np.array([tf.next_open(int(b)) for b in opens], dtype=np.int64)
        return (ends - opens) // src.duration_ms
    return np.full(opens.shape[0], tf.duration_ms // src.duration_ms, np.int64)


def resample_with_counts(
    candles: FrameLike, tf: Timeframe, src: Timeframe
) -> tuple[pl.DataFrame, np.ndarray]:
    """:func:`resample` without the completeness filter, plus the input row count of each bucket.

    Raises:
        As :func:`resample`.
    """
    check_resample_pair(src, tf)
    df = as_frame(candles, "candles")
    ts, scale = ts_column(df, "candles")
    if scale != 1:
        ts = ts // scale
    o, h, lw, c, v = (
        float_column(df, n, "candles", nulls_as_nan=False)
        for n in ("open", "high", "low", "close", "volume")
    )
    tv, tv_ok = float_mask_column(df, "turnover", "candles")
    tr, tr_ok = int_mask_column(df, "trades", "candles")
    bv, bv_ok = float_mask_column(df, "buy_volume", "candles")
    n = ts.shape[0]
    # The resample kernel always takes masks (it is not the hot path of anything).
    tv_ok = tv_ok if tv_ok.shape[0] else np.ones(n, np.bool_)
    tr_ok = tr_ok if tr_ok.shape[0] else np.ones(n, np.bool_)
    bv_ok = bv_ok if bv_ok.shape[0] else np.ones(n, np.bool_)
    kind, dur, off = tf_params(tf)
    arrays = [ts, o, h, lw, c, v, tv, tv_ok, tr, tr_ok, bv, bv_ok]
    out = resample_candles(*arrays, kind, dur, off)
    if out[0] == UNSORTED:
        order = np.argsort(ts, kind="stable")
        out = resample_candles(*(a[order] for a in arrays), kind, dur, off)
    nb = out[2]
    opens, ro, rh, rl, rc, rv, rt, rt_ok, rn, rn_ok, rb, rb_ok, rows = (a[:nb] for a in out[3:])
    frame = _frame(
        opens, ro, rh, rl, rc, rv,
        _masked(rt, rt_ok, pl.Float64), _masked(rn, rn_ok, pl.Int64), _masked(rb, rb_ok, pl.Float64),
    )
    return frame, rows


# The candle columns every function here returns, in stored order (the schema's, less the
# ``filled`` mark, which only repair --fill sets and writes default to false).
assert tuple(c for c in CANDLE_SCHEMA if c != "filled") == (
    "ts", "open", "high", "low", "close", "volume", "turnover", "trades", "buy_volume"
)
