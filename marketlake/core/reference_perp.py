"""Slow, obviously-right twins of the perpetual-futures kernels and computations, in plain Python.

Compared with :mod:`marketlake.core.kernels.gaps` and :mod:`marketlake.core.funding` in
``tests/property/test_perp_match_reference.py``. Python ints and lists only; no numpy.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["ref_funding_payments", "ref_spaced_gaps"]


def ref_spaced_gaps(ts: Sequence[int], step: Sequence[int]) -> list[tuple[int, int, int]]:
    """Gaps of an ascending series where row ``i`` is the end of a period of length ``step[i]``.

    Walks back from each row one period at a time and lists every expected time that lies
    strictly after the previous row: each such time is a missing row.

    Returns:
        ``(previous ts, ts, missing count)`` for every row preceded by at least one missing time.
    """
    out = []
    for i in range(1, len(ts)):
        missing = 0
        expected = ts[i] - step[i]
        while expected > ts[i - 1]:
            missing += 1
            expected -= step[i]
        if missing:
            out.append((ts[i - 1], ts[i], missing))
    return out


def ref_funding_payments(
    settlements: Sequence[tuple[int, float]],
    position: Sequence[tuple[int, float]],
    prices: Sequence[tuple[int, float]] | None,
    start_ms: int,
    end_ms: int,
    *,
    inverse: bool = False,
) -> list[tuple[int, float]]:
    """Funding paid at each settlement ``t`` with ``start_ms < t <= end_ms``.

    ``position`` rows ``(ts, value)`` set the position from ``ts`` on, but a change at the
    settlement instant itself counts only after it: the value in force at ``t`` is that of the
    last row with ``ts < t`` (0 before the first). ``value`` is a signed notional when ``prices``
    is None, else a signed size priced at the last price with ``ts <= t``. Linear notional =
    size × price; inverse notional (in coin) = size / price. Payment = notional × rate: positive
    means the holder paid (a long pays a positive rate).
    """
    out = []
    for t, rate in settlements:
        if not start_ms < t <= end_ms:
            continue
        value = 0.0
        for pt, pv in position:
            if pt < t:
                value = pv
        if prices is None:
            notional = value
        else:
            price = None
            for qt, qv in prices:
                if qt <= t:
                    price = qv
            if price is None:
                raise ValueError(f"no price at or before settlement {t}")
            notional = value / price if inverse else value * price
        out.append((t, notional * rate))
    return out
