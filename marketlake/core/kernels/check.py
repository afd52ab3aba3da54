"""Numba kernels: one pass over a candle series finding every integrity fault.

Faults found (positions are 0-based row indices of the input as given):

* invalid candles, as a bit set per row (see the ``INV_*`` flags);
* misaligned rows: ``ts`` is not a bucket open;
* out-of-order rows: ``ts`` smaller than the previous row's;
* duplicates: rows whose ``ts`` equals an earlier row's, with the row of the first occurrence and
  whether their values differ from it;
* gaps: between consecutive distinct timestamps (in time order), the number of bucket opens
  strictly between their buckets. Misaligned rows count for the bucket they fall in, so a
  misaligned row is reported once (as misaligned) and does not also invent a gap.

Sorted input (the normal case) is scanned once. Runs of valid, consecutive aligned candles take a
store-free fast path with no division at all (each row's ``ts`` equals the expected next bucket
open); the rare other rows are classified one by one. When a row steps
backwards, duplicates and gaps can no longer be found by looking at neighbours, so the caller
reruns :func:`dups_gaps_in_order` over a stable argsort; invalid, misaligned and out-of-order
results of the first pass stay valid.

Masks of the nullable columns (turnover, trades) are bool arrays, or empty when all are valid.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numba import njit

from marketlake.core.kernels.calendar import buckets_between, floor_ts, next_open

__all__ = [
    "INV_HIGH_BELOW_BODY",
    "INV_HIGH_BELOW_LOW",
    "INV_LOW_ABOVE_BODY",
    "INV_NEGATIVE_TRADES",
    "INV_NEGATIVE_TURNOVER",
    "INV_NEGATIVE_VOLUME",
    "INV_NONFINITE",
    "INV_NONPOSITIVE_PRICE",
    "check_chunk",
    "dups_gaps_in_order",
    "flags_of",
    "split_between_runs",
]

#: A value (price, volume or non-null turnover) is NaN or infinite.
INV_NONFINITE: Final = 1
#: open, high, low or close <= 0.
INV_NONPOSITIVE_PRICE: Final = 2
#: high < max(open, close).
INV_HIGH_BELOW_BODY: Final = 4
#: low > min(open, close).
INV_LOW_ABOVE_BODY: Final = 8
#: high < low.
INV_HIGH_BELOW_LOW: Final = 16
#: volume < 0.
INV_NEGATIVE_VOLUME: Final = 32
#: turnover < 0.
INV_NEGATIVE_TURNOVER: Final = 64
#: trades < 0.
INV_NEGATIVE_TRADES: Final = 128


@njit(cache=True, nogil=True)
def _push(buf, n, x):  # type: ignore[no-untyped-def]
    # Faults are rare: start small and double, instead of reserving a row-sized buffer per kind.
    if n == buf.shape[0]:
        new = np.empty(max(16, 2 * n), buf.dtype)
        new[:n] = buf
        buf = new
    buf[n] = x
    return buf


@njit(cache=True, nogil=True)
def flags_of(fo, fh, fl, fc, fv, ftv, ftr):  # type: ignore[no-untyped-def]
    """The ``INV_*`` bit set of one candle (0 when valid; pass 0.0 / 0 for a null turnover / trades)."""
    finite = ((fo - fo) == 0.0) & ((fh - fh) == 0.0) & ((fl - fl) == 0.0) & ((fc - fc) == 0.0)
    finite = finite & ((fv - fv) == 0.0) & ((ftv - ftv) == 0.0)
    f = 0 if finite else INV_NONFINITE
    if (fo <= 0.0) | (fh <= 0.0) | (fl <= 0.0) | (fc <= 0.0):
        f |= INV_NONPOSITIVE_PRICE
    if fh < max(fo, fc):
        f |= INV_HIGH_BELOW_BODY
    if fl > min(fo, fc):
        f |= INV_LOW_ABOVE_BODY
    if fh < fl:
        f |= INV_HIGH_BELOW_LOW
    if fv < 0.0:
        f |= INV_NEGATIVE_VOLUME
    if ftv < 0.0:
        f |= INV_NEGATIVE_TURNOVER
    if ftr < 0:
        f |= INV_NEGATIVE_TRADES
    return f


@njit(cache=True, nogil=True)
def _same(a, b):  # type: ignore[no-untyped-def]
    # Two NaNs are the same value here: a duplicate of a NaN row does not *disagree* with it.
    return a == b or (a != a and b != b)  # noqa: PLR0124 (NaN test numba compiles to one compare)


@njit(cache=True, nogil=True)
def rows_differ(o, h, lw, c, v, tv, tv_ok, tr, tr_ok, i, j):  # type: ignore[no-untyped-def]
    """True when rows ``i`` and ``j`` differ in any value column (nulls compare equal to nulls)."""
    if not (_same(o[i], o[j]) and _same(h[i], h[j]) and _same(lw[i], lw[j])):
        return True
    if not (_same(c[i], c[j]) and _same(v[i], v[j])):
        return True
    vi = tv_ok.shape[0] == 0 or tv_ok[i]
    vj = tv_ok.shape[0] == 0 or tv_ok[j]
    if vi != vj or (vi and not _same(tv[i], tv[j])):
        return True
    vi = tr_ok.shape[0] == 0 or tr_ok[i]
    vj = tr_ok.shape[0] == 0 or tr_ok[j]
    return vi != vj or (vi and tr[i] != tr[j])


@njit(cache=True, nogil=True)
def _clean_run(ts, o, h, lw, c, v, tv, tv_ok, tr, tr_ok, kind, dur, off, i, hi, nxt):  # type: ignore[no-untyped-def]
    """First row ``>= i`` that is not a valid candle opening exactly at the expected ``nxt``.

    This is the hot loop. It stores nothing: with even one conditional store in it LLVM reloads
    array pointers every row (measured 1.5-2x slower), so faults are recorded by the caller,
    which handles the row this returns and then calls again. Faults are rare, calls are few.
    """
    fixed = kind == 0
    tv_all = tv_ok.shape[0] == 0
    tr_all = tr_ok.shape[0] == 0
    while i < hi:
        t = ts[i]
        fo = o[i]
        fh = h[i]
        fl = lw[i]
        fc = c[i]
        fv = v[i]
        ftv = tv[i] if (tv_all or tv_ok[i]) else 0.0
        ftr = tr[i] if (tr_all or tr_ok[i]) else 0
        mx = fo if fo > fc else fc  # noqa: FURB136 (kept as selects in the hot loop)
        mn = fo if fo < fc else fc  # noqa: FURB136
        # x - x is 0.0 for finite x and NaN for NaN/inf, and every compare with NaN is false;
        # this is flags_of(...) == 0 in branch-free form (low > 0 and high >= low cover the rest).
        fin = ((fo - fo) + (fh - fh) + (fl - fl) + (fc - fc) + (fv - fv) + (ftv - ftv)) == 0.0
        ok = fin & (fl > 0.0) & (fh >= mx) & (fl <= mn) & (fv >= 0.0) & (ftv >= 0.0) & (ftr >= 0)
        if not (ok & (t == nxt)):
            return i
        nxt = t + dur if fixed else next_open(t, kind, dur, off)
        i += 1
    return hi


@njit(cache=True, nogil=True)
def check_chunk(ts, o, h, lw, c, v, tv, tv_ok, tr, tr_ok, kind, dur, off, lo, hi):  # type: ignore[no-untyped-def]
    """Scan rows ``lo <= i < hi`` (looking back at row ``lo - 1``) for every fault.

    Returns:
        A tuple of ``(count, arrays...)`` groups, each array holding ``count`` leading entries:
        ``n_inv, inv_pos, inv_flags``; ``n_mis, mis_pos``; ``n_ooo, ooo_pos``;
        ``n_dup, dup_pos, dup_first, dup_differ``; ``n_gap, gap_pos, gap_prev, gap_missing``.
        Duplicates and gaps are only meaningful when ``n_ooo == 0``.
    """
    inv_pos = np.empty(0, np.int64)
    inv_flags = np.empty(0, np.int64)
    mis_pos = np.empty(0, np.int64)
    ooo_pos = np.empty(0, np.int64)
    dup_pos = np.empty(0, np.int64)
    dup_first = np.empty(0, np.int64)
    dup_differ = np.empty(0, np.bool_)
    gap_pos = np.empty(0, np.int64)
    gap_prev = np.empty(0, np.int64)
    gap_missing = np.empty(0, np.int64)
    n_inv = n_mis = n_ooo = n_dup = n_gap = 0
    tv_all = tv_ok.shape[0] == 0
    tr_all = tr_ok.shape[0] == 0
    # State about the previous row: its ts, its bucket, the bucket after it, and the first row
    # of the run of equal timestamps it belongs to.
    prev_t = prev_b = nxt = 0
    run_start = lo
    if lo > 0:
        prev_t = ts[lo - 1]
        prev_b = floor_ts(prev_t, kind, dur, off)
        nxt = next_open(prev_b, kind, dur, off)
    i = lo
    while i < hi:
        if i > 0:
            j = _clean_run(ts, o, h, lw, c, v, tv, tv_ok, tr, tr_ok, kind, dur, off, i, hi, nxt)
            if j > i:
                # Rows i..j-1 each opened the bucket right after the one before: all aligned.
                prev_t = prev_b = ts[j - 1]
                run_start = j - 1
                nxt = next_open(prev_t, kind, dur, off)
                i = j
                if i >= hi:
                    break
        # Row i has some fault, or breaks the expected sequence: classify it fully.
        ftv = tv[i] if (tv_all or tv_ok[i]) else 0.0
        ftr = tr[i] if (tr_all or tr_ok[i]) else 0
        f = flags_of(o[i], h[i], lw[i], c[i], v[i], ftv, ftr)
        if f != 0:
            inv_pos = _push(inv_pos, n_inv, i)
            inv_flags = _push(inv_flags, n_inv, f)
            n_inv += 1
        t = ts[i]
        if i > 0 and t == nxt:
            b = t
            run_start = i
        else:
            b = floor_ts(t, kind, dur, off)
            if b != t:
                mis_pos = _push(mis_pos, n_mis, i)
                n_mis += 1
            if i == 0:
                run_start = 0
            elif t < prev_t:
                ooo_pos = _push(ooo_pos, n_ooo, i)
                n_ooo += 1
            elif t == prev_t:
                dup_pos = _push(dup_pos, n_dup, i)
                dup_first = _push(dup_first, n_dup, run_start)
                dup_differ = _push(
                    dup_differ, n_dup, rows_differ(o, h, lw, c, v, tv, tv_ok, tr, tr_ok, i, run_start)
                )
                n_dup += 1
            else:
                run_start = i
                if b > prev_b:
                    missing = buckets_between(prev_b, b, kind, dur, off) - 2
                    if missing > 0:
                        gap_pos = _push(gap_pos, n_gap, i)
                        gap_prev = _push(gap_prev, n_gap, i - 1)
                        gap_missing = _push(gap_missing, n_gap, missing)
                        n_gap += 1
        prev_t = t
        prev_b = b
        nxt = next_open(b, kind, dur, off)
        i += 1
    return (
        n_inv, inv_pos, inv_flags, n_mis, mis_pos, n_ooo, ooo_pos,
        n_dup, dup_pos, dup_first, dup_differ, n_gap, gap_pos, gap_prev, gap_missing,
    )


@njit(cache=True, nogil=True)
def _clean_sorted_run(ts, order, kind, dur, off, k, n, nxt):  # type: ignore[no-untyped-def]
    """First ``m >= k`` where ``ts[order[m]]`` is not the expected next bucket open."""
    fixed = kind == 0
    while k < n:
        t = ts[order[k]]
        if t != nxt:
            return k
        nxt = t + dur if fixed else next_open(t, kind, dur, off)
        k += 1
    return n


@njit(cache=True, nogil=True)
def dups_gaps_in_order(ts, order, o, h, lw, c, v, tv, tv_ok, tr, tr_ok, kind, dur, off):  # type: ignore[no-untyped-def]
    """Duplicates and gaps of rows visited in ``order`` (a stable argsort of ``ts``).

    Positions and first occurrences are reported as input row indices; with a stable sort the
    first occurrence of a timestamp is its earliest row in the input.

    Returns:
        ``(n_dup, dup_pos, dup_first, dup_differ, n_gap, gap_pos, gap_prev, gap_missing)``.
    """
    dup_pos = np.empty(0, np.int64)
    dup_first = np.empty(0, np.int64)
    dup_differ = np.empty(0, np.bool_)
    gap_pos = np.empty(0, np.int64)
    gap_prev = np.empty(0, np.int64)
    gap_missing = np.empty(0, np.int64)
    n_dup = n_gap = 0
    n = order.shape[0]
    run_start = 0
    prev_b = 0
    nxt = 0
    k = 0
    while k < n:
        if k > 0:
            # Store-free scan over rows opening exactly the next bucket (see _clean_run).
            m = _clean_sorted_run(ts, order, kind, dur, off, k, n, nxt)
            if m > k:
                run_start = order[m - 1]
                prev_b = ts[run_start]
                nxt = next_open(prev_b, kind, dur, off)
                k = m
                if k >= n:
                    break
        i = order[k]
        t = ts[i]
        b = floor_ts(t, kind, dur, off)
        k += 1
        if k > 1:
            j = order[k - 2]
            if t == ts[j]:
                dup_pos = _push(dup_pos, n_dup, i)
                dup_first = _push(dup_first, n_dup, run_start)
                dup_differ = _push(
                    dup_differ, n_dup, rows_differ(o, h, lw, c, v, tv, tv_ok, tr, tr_ok, i, run_start)
                )
                n_dup += 1
                continue  # same ts: prev_b and nxt stay
            if b > prev_b:
                missing = buckets_between(prev_b, b, kind, dur, off) - 2
                if missing > 0:
                    gap_pos = _push(gap_pos, n_gap, i)
                    gap_prev = _push(gap_prev, n_gap, j)
                    gap_missing = _push(gap_missing, n_gap, missing)
                    n_gap += 1
        run_start = i
        prev_b = b
        nxt = next_open(b, kind, dur, off)
    return n_dup, dup_pos, dup_first, dup_differ, n_gap, gap_pos, gap_prev, gap_missing


@njit(cache=True, nogil=True)
def split_between_runs(ts, parts):  # type: ignore[no-untyped-def]
    """Cut points for ``parts`` chunks, each moved forward off a run of equal timestamps.

    A chunk then never starts inside a run of duplicates, so every duplicate's first occurrence
    lies in its own chunk and the chunks' results concatenate to the sequential result.
    """
    n = ts.shape[0]
    cuts = np.empty(parts + 1, np.int64)
    cuts[0] = 0
    cuts[parts] = n
    for j in range(1, parts):
        i = max((n * j) // parts, cuts[j - 1])
        while 0 < i < n and ts[i] == ts[i - 1]:
            i += 1
        cuts[j] = i
    return cuts
