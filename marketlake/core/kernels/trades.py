"""Numba kernels: trades → OHLCV candles, and flat fill candles for empty buckets.

The main kernel makes one pass over trades sorted by time. It never divides per trade: it keeps the
current bucket's exclusive end and only computes a new bucket when a trade reaches it, so the
inner loop is a handful of compares and adds and runs at memory speed.

It also *verifies* the order as it goes (one compare per trade) and stops with :data:`UNSORTED` at
the first step backwards, so callers can hand it data without a separate sortedness pass and sort
only when needed.

Several threads can run the kernel on chunks split at bucket boundaries (see
:func:`split_at_buckets`): every bucket is then summed by exactly one thread in input order, so the
parallel result is bit-identical to the sequential one and no merge of partial buckets is needed.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numba import njit

from marketlake.core.kernels.calendar import buckets_between, floor_ts, next_open

__all__ = [
    "BAD_SIDE",
    "OK",
    "SIDE_BUY",
    "SIDE_SELL",
    "UNSORTED",
    "fill_empty_buckets",
    "split_at_buckets",
    "trades_to_candles",
]

#: Status codes returned by :func:`trades_to_candles`.
OK: Final = 0
UNSORTED: Final = 1
BAD_SIDE: Final = 2

# A side is passed as the first 8 bytes of an Arrow string *view* (little endian): the 4-byte
# length and the 4-byte inline prefix. "Buy" and "Sell" are shorter than 5 bytes, so these 8 bytes
# determine the whole string and one integer compare decodes (and validates) a side without
# touching string data. Callers with other encodings build the same two codes.
SIDE_BUY: Final = 3 | (int.from_bytes(b"Buy\x00", "little") << 32)
SIDE_SELL: Final = 4 | (int.from_bytes(b"Sell", "little") << 32)


@njit(cache=True, nogil=True)
def trades_to_candles(ts, price, size, side, has_side, kind, dur, off, lo, hi):  # type: ignore[no-untyped-def]
    """Aggregate trades ``lo <= i < hi`` (sorted by ``ts``) into candles.

    Args:
        ts: int64 timestamps (any unit; ``dur``/``off`` must be in the same unit).
        price: float64 prices.
        size: float64 sizes.
        side: int64 side codes (:data:`SIDE_BUY` / :data:`SIDE_SELL`); ignored unless ``has_side``.
        has_side: Whether ``side`` is given (else ``buy_volume`` is returned as zeros).
        kind, dur, off: Timeframe parameters from :func:`~marketlake.core.kernels.calendar.tf_params`.
        lo, hi: The row range to aggregate.

    Returns:
        ``(status, bad_row, n, opens, open, high, low, close, volume, turnover, count, buy)`` where
        the arrays hold ``n`` valid leading entries. ``status`` is :data:`OK`, :data:`UNSORTED`
        (some row is earlier than its predecessor) or :data:`BAD_SIDE` (some side is neither Buy
        nor Sell). ``bad_row`` is always -1: the caller sorts, or finds and names the bad side.
    """
    cap = 0
    if hi > lo:
        cap = min(hi - lo, buckets_between(ts[lo], ts[hi - 1], kind, dur, off))
    opens = np.empty(cap, np.int64)
    o = np.empty(cap, np.float64)
    h = np.empty(cap, np.float64)
    lw = np.empty(cap, np.float64)
    c = np.empty(cap, np.float64)
    vol = np.empty(cap, np.float64)
    turn = np.empty(cap, np.float64)
    cnt = np.empty(cap, np.int64)
    buy = np.empty(cap, np.float64)
    if hi <= lo:
        return OK, -1, 0, opens, o, h, lw, c, vol, turn, cnt, buy

    nb = -1
    b_end = ts[lo]  # forces a new bucket at the first trade
    prev = ts[lo]
    bo = bh = bl = bc = bv = bt = bb = 0.0
    bn = 0
    nan_seen = False
    bad_side = False
    unsorted = False
    for i in range(lo, hi):
        t = ts[i]
        # Order and side are verified without branching in the hot loop and acted on only at
        # bucket changes and at the end: an early exit here would keep LLVM from optimising it.
        unsorted |= t < prev
        prev = t
        p = price[i]
        s = size[i]
        if t >= b_end:
            if unsorted:
                return UNSORTED, -1, 0, opens, o, h, lw, c, vol, turn, cnt, buy
            if nb >= 0:
                o[nb] = bo
                h[nb] = np.nan if nan_seen else bh
                lw[nb] = np.nan if nan_seen else bl
                c[nb] = bc
                vol[nb] = bv
                turn[nb] = bt
                cnt[nb] = bn
                buy[nb] = bb
            nb += 1
            if nb >= cap:  # more buckets than the span allows: the input went backwards earlier
                return UNSORTED, -1, 0, opens, o, h, lw, c, vol, turn, cnt, buy
            b_open = floor_ts(t, kind, dur, off)
            b_end = next_open(b_open, kind, dur, off)
            opens[nb] = b_open
            bo = bh = bl = p
            bv = bt = bb = 0.0
            bn = 0
            nan_seen = False
        # NaN never wins a compare, so it is tracked apart: any NaN price makes high/low NaN,
        # independent of where in the bucket it occurs (the reference twin does the same).
        nan_seen |= p != p  # noqa: PLR0124 (x != x is the NaN test)
        bh = p if p > bh else bh  # noqa: FURB136 (a select, no call: measured faster)
        bl = p if p < bl else bl  # noqa: FURB136
        bc = p
        bv += s
        bt += p * s
        bn += 1
        if has_side:
            # Branch-free: sides are random, a branch on them would mispredict half the time.
            sv = side[i]
            is_buy = sv == SIDE_BUY
            bb += s * is_buy
            bad_side |= (sv != SIDE_SELL) & (not is_buy)
    if unsorted:
        return UNSORTED, -1, 0, opens, o, h, lw, c, vol, turn, cnt, buy
    if bad_side:
        return BAD_SIDE, -1, 0, opens, o, h, lw, c, vol, turn, cnt, buy
    o[nb] = bo
    h[nb] = np.nan if nan_seen else bh
    lw[nb] = np.nan if nan_seen else bl
    c[nb] = bc
    vol[nb] = bv
    turn[nb] = bt
    cnt[nb] = bn
    buy[nb] = bb
    nb += 1
    return OK, -1, nb, opens, o, h, lw, c, vol, turn, cnt, buy


@njit(cache=True, nogil=True)
def split_at_buckets(ts, parts, kind, dur, off):  # type: ignore[no-untyped-def]
    """Cut points ``0 = c0 <= c1 <= ... <= c_parts = n`` that never split a bucket.

    Each inner cut is moved back to the first row of the bucket holding row ``j * n / parts``
    (binary search), so with sorted ``ts`` no bucket spans two chunks. On unsorted input the cuts
    are still a valid partition; the kernels then report :data:`UNSORTED`.
    """
    n = ts.shape[0]
    cuts = np.empty(parts + 1, np.int64)
    cuts[0] = 0
    cuts[parts] = n
    if n == 0:
        cuts[:] = 0
        return cuts
    for j in range(1, parts):
        i = (n * j) // parts
        b = floor_ts(ts[i], kind, dur, off)
        lo_ = cuts[j - 1]
        hi_ = i
        while lo_ < hi_:  # first index in [cuts[j-1], i] with ts >= b
            mid = (lo_ + hi_) // 2
            if ts[mid] < b:
                lo_ = mid + 1
            else:
                hi_ = mid
        cuts[j] = lo_
    return cuts


@njit(cache=True, nogil=True)
def fill_empty_buckets(opens, o, h, lw, c, vol, turn, cnt, buy, kind, dur, off):  # type: ignore[no-untyped-def]
    """Insert flat candles for every empty bucket between the first and the last one.

    A flat candle has open = high = low = close = the previous close, zero volume, turnover,
    trade count and buy volume. Input is the sorted output of :func:`trades_to_candles`.

    Returns:
        ``(opens, open, high, low, close, volume, turnover, count, buy, filled)``; ``filled`` is a
        bool array marking the inserted rows.
    """
    n = opens.shape[0]
    total = 0
    if n:
        total = buckets_between(opens[0], opens[n - 1], kind, dur, off)
    ro = np.empty(total, np.int64)
    fo = np.empty(total, np.float64)
    fh = np.empty(total, np.float64)
    fl = np.empty(total, np.float64)
    fc = np.empty(total, np.float64)
    fv = np.empty(total, np.float64)
    ft = np.empty(total, np.float64)
    fn = np.empty(total, np.int64)
    fb = np.empty(total, np.float64)
    filled = np.zeros(total, np.bool_)
    if n == 0:
        return ro, fo, fh, fl, fc, fv, ft, fn, fb, filled
    k = 0
    b = opens[0]
    for i in range(n):
        while b < opens[i]:
            last = fc[k - 1]
            ro[k] = b
            fo[k] = last
            fh[k] = last
            fl[k] = last
            fc[k] = last
            fv[k] = 0.0
            ft[k] = 0.0
            fn[k] = 0
            fb[k] = 0.0
            filled[k] = True
            k += 1
            b = next_open(b, kind, dur, off)
        ro[k] = opens[i]
        fo[k] = o[i]
        fh[k] = h[i]
        fl[k] = lw[i]
        fc[k] = c[i]
        fv[k] = vol[i]
        ft[k] = turn[i]
        fn[k] = cnt[i]
        fb[k] = buy[i]
        k += 1
        b = next_open(opens[i], kind, dur, off)
    return ro, fo, fh, fl, fc, fv, ft, fn, fb, filled
