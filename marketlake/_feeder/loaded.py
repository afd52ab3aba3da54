"""What ``load_data`` holds: one series' rows over a window, and zero-copy slices of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from marketlake._feeder.parts import ts_array
from marketlake._feeder.rules import candle_dict
from marketlake.core.timeframes import Timeframe

__all__ = ["Loaded", "frame_dicts", "slice_window"]


@dataclass(slots=True)
class Loaded:
    """One series held in memory by ``load_data``: rows with open time in ``[lo, hi)``."""

    tf: Timeframe
    lo: int | None
    hi: int | None
    frame: pl.DataFrame
    _ts: np.ndarray | None = field(default=None, repr=False)

    @property
    def ts(self) -> np.ndarray:
        """Open times as int64 epoch ms (for binary search)."""
        # Built on the first point lookup, not at load time: a plain load pays nothing for it.
        if self._ts is None:
            self._ts = ts_array(self.frame)
        return self._ts

    @property
    def nbytes(self) -> int:
        """Memory held: the frame, plus the ts array once built."""
        return int(self.frame.estimated_size()) + (0 if self._ts is None else int(self._ts.nbytes))

    def contains(self, t: int) -> bool:
        """True when open time ``t`` lies in the loaded window."""
        return (self.lo is None or t >= self.lo) and (self.hi is None or t < self.hi)

    def covers(self, lo: int | None, hi: int | None) -> bool:
        """True when ``[lo, hi)`` lies inside the loaded window."""
        lo_ok = self.lo is None or (lo is not None and lo >= self.lo)
        hi_ok = self.hi is None or (hi is not None and hi <= self.hi)
        return lo_ok and hi_ok

    def window(self, lo: int | None, hi: int | None) -> pl.DataFrame:
        """The loaded rows with open time in ``[lo, hi)`` (a zero-copy slice)."""
        return slice_window(self.frame, lo, hi, self.ts)


def slice_window(frame: pl.DataFrame, lo: int | None, hi: int | None, ts: np.ndarray | None = None) -> pl.DataFrame:
    """Rows of a ts-sorted frame with open time in ``[lo, hi)``, as a zero-copy slice."""
    if lo is None and hi is None:
        return frame
    if ts is None:
        phys = frame.get_column("ts").to_physical()
        a = 0 if lo is None else int(phys.search_sorted(lo, "left"))
        b = frame.height if hi is None else int(phys.search_sorted(hi, "left"))
    else:
        a = 0 if lo is None else int(np.searchsorted(ts, lo, "left"))
        b = ts.size if hi is None else int(np.searchsorted(ts, hi, "left"))
    return frame.slice(a, max(0, b - a))


def frame_dicts(frame: pl.DataFrame, tf: Timeframe) -> list[dict[str, Any]]:
    """Every row of a stored-candle frame as a candle dict, in order."""
    ts = ts_array(frame)
    return [candle_dict(frame, i, int(ts[i]), tf) for i in range(frame.height)]
