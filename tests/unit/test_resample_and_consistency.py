"""resample (exact aggregation, completeness, nulls) and check_consistency."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from marketlake import check_consistency, resample
from marketlake.errors import DataValidationError

MIN = 60_000
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC (a Monday)


def one_minute(n: int, seed: int = 1) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    close = np.round(100 + np.cumsum(rng.standard_normal(n)), 2)
    open_ = np.r_[100.0, close[:-1]]
    vol = rng.integers(1, 1000, n) * 0.001
    return pl.DataFrame({
        "ts": T0 + np.arange(n) * MIN, "open": open_, "high": np.maximum(open_, close) + 0.5,
        "low": np.minimum(open_, close) - 0.5, "close": close, "volume": vol,
        "turnover": vol * close, "trades": rng.integers(1, 50, n),
    })


def test_five_minute_candle_is_first_open_max_high_min_low_last_close_and_sums() -> None:
    base = one_minute(10)
    out = resample(base, "5")
    first = base.head(5)
    row = out.row(0, named=True)
    assert row["open"] == first["open"][0] and row["close"] == first["close"][4]
    assert row["high"] == first["high"].max() and row["low"] == first["low"].min()
    assert row["volume"] == pytest.approx(first["volume"].sum(), rel=1e-12)
    assert row["trades"] == first["trades"].sum()
    assert out.height == 2


def test_complete_only_drops_buckets_with_missing_minutes() -> None:
    base = one_minute(12).filter(pl.int_range(pl.len()) != 7)
    assert resample(base, "5", complete_only=True)["ts"].dt.epoch("ms").to_list() == [T0]
    assert resample(base, "5").height == 3


def test_a_null_in_a_bucket_makes_its_sum_null() -> None:
    base = one_minute(10).with_columns(
        pl.when(pl.int_range(pl.len()) == 2).then(None).otherwise(pl.col("trades")).alias("trades")
    )
    assert resample(base, "5")["trades"].to_list()[0] is None
    assert resample(base, "5")["trades"].to_list()[1] is not None


def test_daily_weekly_and_monthly_from_minutes() -> None:
    base = one_minute(3 * 1440)
    assert resample(base, "D").height == 3
    assert resample(base, "W")["ts"].dt.epoch("ms").to_list() == [T0]
    assert resample(base, "M", complete_only=True).height == 0


@pytest.mark.parametrize(("source", "target"), [("3", "5"), ("W", "M"), ("60", "15")])
def test_buckets_that_are_not_unions_of_source_buckets_are_refused(source: str, target: str) -> None:
    with pytest.raises(DataValidationError):
        resample(one_minute(3), target, source=source)


def test_unsorted_candles_resample_like_sorted_ones() -> None:
    base = one_minute(30)
    assert resample(base.reverse(), "15").equals(resample(base, "15"))


def test_consistent_series_have_no_mismatch() -> None:
    base = one_minute(1440)
    for tf in ("5", "15", "60", "D"):
        result = check_consistency(base, resample(base, tf), tf)
        assert result.ok, result.to_dict()
        assert result.compared > 0


def test_changed_volume_and_missing_bucket_are_reported() -> None:
    base = one_minute(120)
    higher = resample(base, "15")
    higher = higher.with_columns(
        pl.when(pl.int_range(pl.len()) == 1).then(pl.col("volume") * (1 + 1e-6)).otherwise(pl.col("volume")).alias("volume")
    ).filter(pl.int_range(pl.len()) != 3)
    result = check_consistency(base, higher, "15")
    kinds = [(m.ts, m.kind, m.columns) for m in result.mismatches]
    assert kinds == [(T0 + 15 * MIN, "values_differ", ("volume",)), (T0 + 45 * MIN, "missing_in_higher", ())]


def test_volume_within_relative_tolerance_is_not_a_mismatch() -> None:
    base = one_minute(60)
    higher = resample(base, "60").with_columns(pl.col("volume") * (1 + 1e-12))
    assert check_consistency(base, higher, "60").ok


def test_gap_in_base_is_reported_with_row_counts() -> None:
    base = one_minute(60)
    gapped = base.filter(pl.int_range(pl.len()) != 20)
    result = check_consistency(gapped, resample(base, "15"), "15")
    [m] = result.mismatches
    assert (m.kind, m.base_rows, m.expected_rows) == ("values_differ", 14, 15)


def test_buckets_outside_the_base_span_are_not_compared() -> None:
    base = one_minute(90).filter(pl.int_range(pl.len()) >= 10)  # first hour only partly covered
    higher = resample(one_minute(90), "60")
    result = check_consistency(base, higher, "60")
    assert result.ok and result.compared == 0
