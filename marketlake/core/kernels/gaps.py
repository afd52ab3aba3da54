"""Numba kernel: gaps in a strictly ascending series of event times with a per-row spacing.

One kernel serves two checks:

* funding: ``ts`` are settlement times and ``step[i]`` is the funding interval in force at
  settlement ``i`` (the length of the funding period ending at ``ts[i]``, in ms). A settlement is
  missing before ``ts[i]`` exactly when ``ts[i] - ts[i-1] > step[i]``: the period ending at
  ``ts[i]`` began after the previous settlement. An interval change is therefore never a gap:
  after 8 h → 1 h the first 1 h settlement follows the last 8 h one by at most 1 h, and after
  1 h → 8 h the first 8 h settlement follows the last 1 h one by at most 8 h;
* open interest (and any fixed grid): ``step`` is the interval length for every row.

The missing count is the number of times ``ts[i] - k * step[i]`` (k >= 1) strictly after
``ts[i-1]``: the settlements (or grid points) the period rule expects there.

The plain-Python twin is :func:`marketlake.core.reference_perp.ref_spaced_gaps`; the public
wrappers are :func:`marketlake.core.funding.funding_gaps` and
:func:`marketlake.core.funding.grid_gaps`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["spaced_gaps"]


@njit(cache=True, nogil=True)
def spaced_gaps(ts, step):  # type: ignore[no-untyped-def]
    """Gaps of a strictly ascending int64 ``ts`` where row ``i`` must follow row ``i-1`` within
    ``step[i]`` (int64, > 0).

    Returns:
        ``(before, after, missing)`` int64 arrays, one entry per gap: the times bounding it and
        the number of rows expected strictly between them.
    """
    n = ts.shape[0]
    count = 0
    for i in range(1, n):
        if ts[i] - ts[i - 1] > step[i]:
            count += 1
    before = np.empty(count, np.int64)
    after = np.empty(count, np.int64)
    missing = np.empty(count, np.int64)
    k = 0
    for i in range(1, n):
        d = ts[i] - ts[i - 1]
        if d > step[i]:
            before[k] = ts[i - 1]
            after[k] = ts[i]
            missing[k] = (d - 1) // step[i]
            k += 1
    return before, after, missing
