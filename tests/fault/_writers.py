"""Child-process bodies for the fault tests (importable under the spawn start method)."""

from __future__ import annotations

import random
import sys

import numpy as np
import polars as pl

T0 = 1_704_067_200_000
MIN = 60_000


def frame(minutes: np.ndarray, value: float) -> pl.DataFrame:
    ts = T0 + minutes.astype(np.int64) * MIN
    v = np.full(minutes.size, value)
    return pl.DataFrame({"ts": ts, "open": v, "high": v, "low": v, "close": v, "volume": v})


def overlapping_writer(root: str, parity: int, rounds: int, seed: int, compact_after: int) -> list[int]:
    """Write random batches of minutes of one parity (plus shared keys) into the same partitions."""
    from marketlake.settings import Settings
    from marketlake.store import Lake

    lake = Lake(root, settings=Settings.load(overrides={"compact_after_deltas": compact_after}, environ={}))
    rng = random.Random(seed)
    written: set[int] = set()
    span = 3 * 1440  # three days, all in January: one partition, maximal contention
    for r in range(rounds):
        if rng.random() < 0.5:
            # a rewrite of scattered keys (merge path)
            keys = np.array(sorted({rng.randrange(span // 2) * 2 + parity for _ in range(200)}))
        else:
            # newer keys only (append/delta path), or the shared keys both processes write
            base = span + r * 40
            keys = np.arange(base + parity, base + 40, 2) if rng.random() < 0.7 else np.arange(0, 20)
        lake.write_candles(frame(keys, float(parity)), symbol="BTCUSDT", timeframe="1")
        written.update(int(k) for k in keys)
    return sorted(written)


def acking_rewriter(root: str) -> None:
    """Rewrite the same 3 months with version k = 1, 2, ... and print ``ack k`` after each write."""
    from marketlake.settings import Settings
    from marketlake.store import Lake

    lake = Lake(root, settings=Settings.load(environ={}))
    minutes = np.arange(0, 90 * 1440)
    k = 0
    while True:
        k += 1
        lake.write_candles(frame(minutes, float(k)), symbol="BTCUSDT", timeframe="1")
        sys.stdout.write(f"ack {k}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    acking_rewriter(sys.argv[1])
