"""Property tests: what goes into the lake comes back out, through Parquet and through CSV."""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marketlake.interop.csv import export_csv, import_csv
from marketlake.settings import Settings
from marketlake.store import Lake

T0 = 1_704_067_200_000
MIN = 60_000

finite = st.floats(min_value=1e-8, max_value=1e9, allow_nan=False, allow_infinity=False)
any_float = st.one_of(finite, st.just(float("nan")), st.just(0.0), st.floats(allow_nan=False, width=64))
# Minutes spread over ~100 days so rows land in several monthly partitions.
minute = st.integers(min_value=-3 * 1440, max_value=100 * 1440)


@st.composite
def candle_batches(draw, values=finite):
    n = draw(st.integers(0, 40))
    rows = [
        {
            "ts": T0 + draw(minute) * MIN,
            "open": draw(values), "high": draw(values), "low": draw(values), "close": draw(values),
            "volume": draw(values),
            "turnover": draw(st.one_of(st.none(), values)),
        }
        for _ in range(n)
    ]
    return pl.DataFrame(rows, schema={"ts": pl.Int64, **{c: pl.Float64 for c in ("open", "high", "low", "close", "volume", "turnover")}})


def _fresh_lake() -> tuple[Lake, Path]:
    d = Path(tempfile.mkdtemp(prefix="ml-prop-"))
    return Lake(d / "lake", settings=Settings.load(overrides={"compact_after_deltas": 3}, environ={})), d


def _expected(batches: list[pl.DataFrame]) -> pl.DataFrame:
    """Brute force: the last row written for each ts, in ts order."""
    latest: dict[int, dict] = {}
    for b in batches:
        for row in b.iter_rows(named=True):
            latest[row["ts"]] = row
    rows = [latest[k] for k in sorted(latest)]
    return pl.DataFrame(rows, schema=batches[0].schema) if batches else pl.DataFrame()


def _same(a: pl.DataFrame, b: pl.DataFrame) -> bool:
    if a.height != b.height:
        return False
    for x, y in zip(a.iter_rows(), b.iter_rows(), strict=True):
        for u, v in zip(x, y, strict=True):
            if isinstance(u, float) and isinstance(v, float) and math.isnan(u) and math.isnan(v):
                continue
            if u != v:
                return False
    return True


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(candle_batches(values=any_float), min_size=1, max_size=5))
def test_write_then_read_equals_the_inputs_after_key_dedupe(batches):
    lake, d = _fresh_lake()
    try:
        for b in batches:
            lake.write_candles(b, symbol="BTCUSDT", timeframe="1")
        expected = _expected(batches)
        got = lake.read_candles("BTCUSDT", "1")
        if expected.is_empty():
            assert got.is_empty()
            return
        got = got.select(pl.col("ts").dt.epoch("ms"), "open", "high", "low", "close", "volume", "turnover")
        assert _same(got, expected)
        # Counting is exact: a second write of the final state changes nothing.
        again = lake.write_candles(expected, symbol="BTCUSDT", timeframe="1")
        assert (again.rows_new, again.rows_replaced, again.rows_unchanged) == (0, 0, expected.height)
    finally:
        shutil.rmtree(d)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(candle_batches(), st.sampled_from(["1", "5", "60", "D"]))
def test_csv_export_then_import_equals_the_lake(batch, timeframe):
    lake, d = _fresh_lake()
    try:
        step = {"1": MIN, "5": 5 * MIN, "60": 60 * MIN, "D": 1440 * MIN}[timeframe]
        # Keep every timeframe within a few years of T0 (the lake refuses times past 2200).
        batch = batch.with_columns((T0 + ((pl.col("ts") - T0) // MIN) % 2000 * step).alias("ts"))
        lake.write_candles(batch, symbol="ETHUSDT", timeframe=timeframe)
        export_csv(lake, d / "csv")
        other = Lake(d / "other", settings=Settings.load(environ={}))
        report = import_csv(other, [d / "csv"])
        assert report.ok, report.rejected
        assert other.read_candles().equals(lake.read_candles())
    finally:
        shutil.rmtree(d)
