import datetime as dt

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from marketlake.core.timeframes import BYBIT_TIMEFRAMES, TIMEFRAMES, parse_timeframe, parse_timeframes
from marketlake.core.timeutil import to_ms
from marketlake.errors import InvalidTimeframeError


def ms(text: str) -> int:
    return to_ms(text)


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [("1m", "1"), ("5m", "5"), ("1h", "60"), ("4h", "240"), ("1d", "D"), ("1w", "W"), ("1M", "M"), (15, "15")],
)
def test_aliases_resolve_to_bybit_names(alias, canonical):
    assert parse_timeframe(alias).name == canonical


def test_every_bybit_interval_is_known():
    for name in BYBIT_TIMEFRAMES:
        assert parse_timeframe(name).is_bybit
    assert not parse_timeframe("1s").is_bybit


@pytest.mark.parametrize("bad", ["2m", "1y", "", "../1", "1\x00", "M" * 300, None, 1.5, True])
def test_unknown_timeframes_are_rejected(bad):
    with pytest.raises(InvalidTimeframeError):
        parse_timeframe(bad)


def test_week_opens_on_monday_midnight_utc():
    w = parse_timeframe("W")
    # 2024-01-03 is a Wednesday; its week opened Monday 2024-01-01.
    assert w.floor(ms("2024-01-03 15:00")) == ms("2024-01-01")
    assert w.floor(ms("2024-01-07 23:59:59")) == ms("2024-01-01")
    assert w.floor(ms("2024-01-08")) == ms("2024-01-08")
    assert w.next_open(ms("2024-01-01")) == ms("2024-01-08")


def test_month_opens_on_the_first_and_has_calendar_length():
    m = parse_timeframe("M")
    assert m.floor(ms("2024-02-29 23:59")) == ms("2024-02-01")
    assert m.next_open(ms("2024-02-01")) == ms("2024-03-01")
    assert m.next_open(ms("2023-12-01")) == ms("2024-01-01")
    assert list(m.opens_between(ms("2024-01-15"), ms("2024-04-01"))) == [ms("2024-02-01"), ms("2024-03-01")]
    assert m.count_between(ms("2024-01-01"), ms("2025-01-01")) == 12


def test_count_between_counts_bucket_opens_in_half_open_range():
    h = parse_timeframe("60")
    assert h.count_between(ms("2024-01-01"), ms("2024-01-02")) == 24
    assert h.count_between(ms("2024-01-01 00:30"), ms("2024-01-01 02:00")) == 1
    assert h.count_between(ms("2024-01-01"), ms("2024-01-01")) == 0


@given(st.sampled_from(list(TIMEFRAMES)), st.integers(0, 4_000_000_000_000))
def test_floor_is_aligned_and_contains_the_time(name, t):
    tf = parse_timeframe(name)
    opened = tf.floor(t)
    assert opened <= t < tf.next_open(opened)
    assert tf.is_aligned(opened)
    assert tf.floor_array(np.array([t]))[0] == opened
    if name == "W":
        assert dt.datetime.fromtimestamp(opened / 1000, dt.timezone.utc).weekday() == 0


def test_parse_timeframes_splits_commas_and_drops_repeats():
    assert [t.name for t in parse_timeframes("1,5m,5,60")] == ["1", "5", "60"]
