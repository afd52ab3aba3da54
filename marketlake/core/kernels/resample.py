"""Numba kernel: candles → candles of a larger timeframe, exactly.

First open, max high, min low, last close; volume, turnover, trade count and buy volume summed.
The nullable columns (turnover, trades, buy_volume) come with a validity mask: a bucket's sum is
null when any of its rows is null there, because a partial sum would look like a real value and
be wrong. Like the trades kernel it runs in one pass over rows sorted by ``ts``, computes a new
bucket only when a row reaches the current one's end, and stops with ``UNSORTED`` when the input
steps backwards.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from marketlake.core.kernels.calendar import buckets_between, floor_ts, next_open
from marketlake.core.kernels.trades import OK, UNSORTED

__all__ = ["resample_candles"]


@njit(cache=True, nogil=True)
def resample_candles(ts, o, h, lw, c, v, tv, tv_ok, tr, tr_ok, bv, bv_ok, kind, dur, off):  # type: ignore[no-untyped-def]
    """Aggregate candles sorted by ``ts`` (int64 ms) into buckets of the timeframe ``(kind, dur, off)``.

    Args:
        ts: int64 candle open times.
        o, h, lw, c, v: float64 open, high, low, close, volume.
        tv, tr, bv: turnover (float64), trades (int64), buy volume (float64); values under a false
            mask entry are ignored.
        tv_ok, tr_ok, bv_ok: bool validity masks of the three nullable columns.
        kind, dur, off: Target timeframe parameters (ms).

    Returns:
        ``(status, bad_row, n, opens, open, high, low, close, volume, turnover, turnover_ok,
        trades, trades_ok, buy, buy_ok, rows)`` with ``n`` leading valid entries; ``rows`` counts
        the input rows of each bucket (used to tell complete buckets).
    """
    n_in = ts.shape[0]
    cap = 0
    if n_in:
        cap = min(n_in, buckets_between(ts[0], ts[n_in - 1], kind, dur, off))
    opens = np.empty(cap, np.int64)
    ro = np.empty(cap, np.float64)
    rh = np.empty(cap, np.float64)
    rl = np.empty(cap, np.float64)
    rc = np.empty(cap, np.float64)
    rv = np.empty(cap, np.float64)
    rt = np.empty(cap, np.float64)
    rt_ok = np.empty(cap, np.bool_)
    rn = np.empty(cap, np.int64)
    rn_ok = np.empty(cap, np.bool_)
    rb = np.empty(cap, np.float64)
    rb_ok = np.empty(cap, np.bool_)
    rows = np.empty(cap, np.int64)
    if n_in == 0:
        return OK, -1, 0, opens, ro, rh, rl, rc, rv, rt, rt_ok, rn, rn_ok, rb, rb_ok, rows

    nb = -1
    b_end = ts[0]
    prev = ts[0]
    bo = bh = bl = bc = bvol = bt = bbuy = 0.0
    bn = 0
    brows = 0
    bt_ok = bn_ok = bb_ok = True
    nan_h = nan_l = False
    for i in range(n_in):
        t = ts[i]
        if t < prev:
            return UNSORTED, i, 0, opens, ro, rh, rl, rc, rv, rt, rt_ok, rn, rn_ok, rb, rb_ok, rows
        prev = t
        if t >= b_end:
            if nb >= 0:
                ro[nb] = bo
                rh[nb] = np.nan if nan_h else bh
                rl[nb] = np.nan if nan_l else bl
                rc[nb] = bc
                rv[nb] = bvol
                rt[nb] = bt
                rt_ok[nb] = bt_ok
                rn[nb] = bn
                rn_ok[nb] = bn_ok
                rb[nb] = bbuy
                rb_ok[nb] = bb_ok
                rows[nb] = brows
            nb += 1
            if nb >= cap:
                return UNSORTED, i, 0, opens, ro, rh, rl, rc, rv, rt, rt_ok, rn, rn_ok, rb, rb_ok, rows
            b_open = floor_ts(t, kind, dur, off)
            b_end = next_open(b_open, kind, dur, off)
            opens[nb] = b_open
            bo = o[i]
            bh = h[i]
            bl = lw[i]
            bvol = bt = bbuy = 0.0
            bn = 0
            brows = 0
            bt_ok = bn_ok = bb_ok = True
            nan_h = nan_l = False
        x = h[i]
        # NaN propagates to the bucket regardless of its position (see the trades kernel).
        nan_h |= x != x  # noqa: PLR0124
        bh = max(bh, x)
        x = lw[i]
        nan_l |= x != x  # noqa: PLR0124
        bl = min(bl, x)
        bc = c[i]
        bvol += v[i]
        if tv_ok[i]:
            bt += tv[i]
        else:
            bt_ok = False
        if tr_ok[i]:
            bn += tr[i]
        else:
            bn_ok = False
        if bv_ok[i]:
            bbuy += bv[i]
        else:
            bb_ok = False
        brows += 1
    ro[nb] = bo
    rh[nb] = np.nan if nan_h else bh
    rl[nb] = np.nan if nan_l else bl
    rc[nb] = bc
    rv[nb] = bvol
    rt[nb] = bt
    rt_ok[nb] = bt_ok
    rn[nb] = bn
    rn_ok[nb] = bn_ok
    rb[nb] = bbuy
    rb_ok[nb] = bb_ok
    rows[nb] = brows
    nb += 1
    return OK, -1, nb, opens, ro, rh, rl, rc, rv, rt, rt_ok, rn, rn_ok, rb, rb_ok, rows
