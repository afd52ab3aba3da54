"""The numba calendar arithmetic agrees with numpy's datetime64 and with Timeframe.floor."""

from __future__ import annotations

import numpy as np

from marketlake.core.kernels.calendar import (
    KIND_MONTH,
    buckets_between,
    civil_from_days,
    days_from_civil,
    floor_ts,
    next_open,
    tf_params,
)
from marketlake.core.timeframes import TIMEFRAMES


def test_civil_dates_round_trip_over_four_centuries() -> None:
    for z in range(-200_000, 200_000, 37):
        y, m, d = civil_from_days(z)
        assert days_from_civil(y, m, d) == z
        assert str(np.datetime64(z, "D")) == f"{y:04d}-{m:02d}-{d:02d}"


def test_month_floor_matches_numpy_datetime64_for_ms_and_us() -> None:
    rng = np.random.default_rng(3)
    for t in rng.integers(0, 4_102_444_800_000, 5_000):  # 1970..2100
        want = int(np.datetime64(int(t), "ms").astype("datetime64[M]").astype("datetime64[ms]").astype(np.int64))
        kind, dur, off = tf_params(TIMEFRAMES["M"])
        assert kind == KIND_MONTH
        assert floor_ts(int(t), kind, dur, off) == want
        kind, dur, off = tf_params(TIMEFRAMES["M"], 1000)
        assert floor_ts(int(t) * 1000 + 999, kind, dur, off) == want * 1000


def test_fixed_floors_and_next_opens_match_the_timeframe_objects() -> None:
    rng = np.random.default_rng(4)
    for tf in TIMEFRAMES.values():
        kind, dur, off = tf_params(tf)
        for t in rng.integers(1_500_000_000_000, 1_900_000_000_000, 200):
            b = floor_ts(int(t), kind, dur, off)
            assert b == tf.floor(int(t))
            assert next_open(b, kind, dur, off) == tf.next_open(b)


def test_buckets_between_counts_both_ends_and_nothing_when_reversed() -> None:
    kind, dur, off = tf_params(TIMEFRAMES["M"])
    jan, dec = 1_704_067_200_000, 1_733_011_200_000  # 2024-01-01, 2024-12-01
    assert buckets_between(jan, dec, kind, dur, off) == 12
    assert buckets_between(dec, jan, kind, dur, off) == 0
