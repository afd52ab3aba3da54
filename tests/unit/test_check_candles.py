"""check_candles: each fault kind, the old report structure and its text formats."""

from __future__ import annotations

import datetime as dt
import math

import polars as pl
import pytest

from marketlake import CheckResult, check_candles, integrity_report
from marketlake.errors import InvalidTimeframeError, SchemaMismatchError

MIN = 60_000
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC


def series(ts: list[int], **overrides: list[object]) -> pl.DataFrame:
    n = len(ts)
    cols: dict[str, object] = {
        "ts": ts, "open": [100.0] * n, "high": [101.0] * n, "low": [99.0] * n,
        "close": [100.5] * n, "volume": [1.0] * n, "turnover": [100.0] * n,
    }
    cols.update(overrides)
    return pl.DataFrame(cols)


def minutes(*k: int) -> list[int]:
    return [T0 + i * MIN for i in k]


def test_clean_series_has_no_issues() -> None:
    r = check_candles(series(minutes(*range(100))), "1")
    assert not r.has_issues
    assert r.file_report()["gaps"] == []


def test_gap_of_three_missing_minutes_is_reported_once() -> None:
    r = check_candles(series(minutes(0, 1, 5, 6)), "1")
    assert r.gap_count == 1
    gap = r.file_report()["gaps"][0]
    assert gap == {
        "position": 2,
        "previous_timestamp": "2024-01-01 00:01:00",
        "current_timestamp": "2024-01-01 00:05:00",
        "expected_interval": "0:01:00",
        "actual_interval": "0:04:00",
        "gap_duration": "0:03:00",
        "missing_candles": 3,
        "gap_minutes": 3.0,
    }


def test_duplicates_count_repeated_rows_and_tell_copies_from_conflicts() -> None:
    df = series(minutes(0, 1, 1, 1, 2), volume=[1.0, 1.0, 1.0, 2.0, 1.0])
    r = check_candles(df, "1")
    assert r.duplicate_count == 2
    assert [(d.position, d.first_position, d.differs) for d in r.duplicates] == [(2, 1, False), (3, 1, True)]
    assert r.conflicting_duplicate_count == 1
    assert r.gap_count == 0


def test_out_of_order_rows_are_reported_and_gaps_still_found_in_time_order() -> None:
    r = check_candles(series(minutes(0, 2, 1, 3, 7)), "1")
    assert r.out_of_order_rows.tolist() == [2]
    assert [(g.position, g.missing_candles) for g in r.gaps] == [(4, 3)]
    assert (r.first_ts, r.last_ts) == (T0, T0 + 7 * MIN)


def test_misaligned_timestamp_is_reported_without_inventing_a_gap() -> None:
    r = check_candles(series([T0, T0 + MIN + 1_500, T0 + 2 * MIN]), "1")
    assert r.misaligned_rows.tolist() == [1]
    assert r.gap_count == 0
    assert r.file_report()["has_issues"] is True


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("close", math.nan, "nan_or_inf"),
        ("high", math.inf, "nan_or_inf"),
        ("low", 0.0, "price_not_positive"),
        ("high", 100.2, "high_below_open_or_close"),
        ("low", 100.2, "low_above_open_or_close"),
        ("volume", -1.0, "negative_volume"),
        ("turnover", -1.0, "negative_turnover"),
        ("trades", -3, "negative_trades"),
    ],
)
def test_each_invalid_candle_kind_is_named(column: str, value: float, reason: str) -> None:
    df = series(minutes(0, 1, 2), trades=[1, 1, 1])
    df = df.with_columns(pl.when(pl.int_range(pl.len()) == 1).then(value).otherwise(pl.col(column)).alias(column))
    r = check_candles(df, "1")
    assert [c.position for c in r.invalid] == [1]
    assert reason in r.invalid[0].reasons


def test_high_below_low_is_named() -> None:
    r = check_candles(series(minutes(0), high=[98.0]), "1")
    assert "high_below_low" in r.invalid[0].reasons


def test_null_prices_count_as_invalid_candles_and_null_turnover_does_not() -> None:
    df = series(minutes(0, 1), close=[100.5, None], turnover=[None, None])
    r = check_candles(df, "1")
    assert [(c.position, c.reasons) for c in r.invalid] == [(1, ("nan_or_inf",))]


def test_month_gap_counts_calendar_months() -> None:
    jan, apr = T0, int(dt.datetime(2024, 4, 1, tzinfo=dt.UTC).timestamp() * 1000)
    r = check_candles(series([jan, apr]), "M")
    gap = r.file_report()["gaps"][0]
    assert gap["missing_candles"] == 2  # February and March
    assert gap["expected_interval"] == "31 days, 0:00:00"
    assert gap["gap_duration"] == "60 days, 0:00:00"  # 29 (leap February) + 31


def test_weekly_series_must_open_on_mondays() -> None:
    monday = int(dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)
    r = check_candles(series([monday, monday + 7 * 86_400_000, monday + 8 * 86_400_000]), "W")
    assert r.misaligned_rows.tolist() == [2]


def test_empty_series_reports_no_issues_and_null_timestamps() -> None:
    r = check_candles(series([]), "1")
    assert r.file_report() == {
        "has_issues": False, "gaps": [], "duplicate_count": 0, "invalid_candles": 0,
        "total_candles": 0, "first_timestamp": None, "last_timestamp": None,
    }


def test_report_for_many_files_has_exactly_the_old_keys_and_totals() -> None:
    clean = check_candles(series(minutes(0, 1)), "1")
    broken = check_candles(series(minutes(0, 0, 3), volume=[1.0, 1.0, -1.0]), "1")
    report = integrity_report({"BTCUSDT_1.csv": clean, "ETHUSDT_1.csv": broken})
    assert set(report) == {"files_checked", "files_with_issues", "total_gaps", "total_duplicates",
                           "total_invalid_candles", "issues"}
    assert (report["files_checked"], report["files_with_issues"]) == (2, 1)
    assert (report["total_gaps"], report["total_duplicates"], report["total_invalid_candles"]) == (1, 1, 1)
    assert set(report["issues"]["ETHUSDT_1.csv"]) == {
        "has_issues", "gaps", "duplicate_count", "invalid_candles", "total_candles",
        "first_timestamp", "last_timestamp",
    }
    assert report["issues"]["BTCUSDT_1.csv"]["first_timestamp"] == "2024-01-01 00:00:00"


def test_detailed_dict_lists_every_fault_kind() -> None:
    r = check_candles(series(minutes(0, 2, 1, 1)), "1")
    d = r.to_dict()
    assert d["out_of_order_rows"] == [2]
    assert d["duplicates"] == [{"position": 3, "first_position": 2, "ts": T0 + MIN, "differs": False}]
    assert isinstance(r, CheckResult)


def test_datetime_ts_and_parallel_chunks_give_the_same_result() -> None:
    ts = minutes(*[i for i in range(4000) if i % 97 != 5])
    df = series(ts).with_columns(pl.col("ts").cast(pl.Datetime("ms", "UTC")))
    one = check_candles(df, "1", threads=1)
    three = check_candles(df, "1", threads=3)
    assert one.to_dict() == three.to_dict()
    assert one.gap_count == 42  # i = 5, 102, ... 3982


def test_missing_volume_raises_schema_mismatch() -> None:
    with pytest.raises(SchemaMismatchError, match="volume"):
        check_candles(series(minutes(0)).drop("volume"), "1")


def test_unknown_timeframe_raises_invalid_timeframe() -> None:
    with pytest.raises(InvalidTimeframeError):
        check_candles(series(minutes(0)), "2m")
