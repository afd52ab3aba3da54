"""Half-open integer intervals ``[start, end)``: union, subtraction, overlay. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeAlias

__all__ = ["Interval", "clip", "merge", "subtract", "total"]

Interval: TypeAlias = tuple[int, int]


def merge(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted union of ``intervals``; touching intervals are joined, empty ones dropped."""
    out: list[Interval] = []
    for s, e in sorted(i for i in intervals if i[0] < i[1]):
        if out and s <= out[-1][1]:
            if e > out[-1][1]:
                out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


def subtract(base: Iterable[Interval], minus: Iterable[Interval]) -> list[Interval]:
    """The parts of ``base`` not covered by ``minus`` (both may be unsorted/overlapping)."""
    cut = merge(minus)
    out: list[Interval] = []
    for s, e in merge(base):
        cur = s
        for cs, ce in cut:
            if ce <= cur:
                continue
            if cs >= e:
                break
            if cs > cur:
                out.append((cur, cs))
            cur = max(cur, ce)
            if cur >= e:
                break
        if cur < e:
            out.append((cur, e))
    return out


def clip(intervals: Iterable[Interval], lo: int, hi: int) -> list[Interval]:
    """``intervals`` restricted to ``[lo, hi)``."""
    return [(max(s, lo), min(e, hi)) for s, e in intervals if s < hi and e > lo]


def total(intervals: Iterable[Interval]) -> int:
    """Total length of the union of ``intervals``."""
    return sum(e - s for s, e in merge(intervals))
