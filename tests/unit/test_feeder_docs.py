"""The example queries of docs/research.md run for real against a small lake, and their results
agree with Polars, the resample kernel and the DataFeeder."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from marketlake import DataFeeder, Lake, resample
from marketlake.store.layout import CANDLES, SeriesId
from tests.feeder_support import aligned_opens, candle_frame, ms

DOC = Path(__file__).resolve().parents[2] / "docs" / "research.md"
_BLOCK = re.compile(r"```sql\n-- name: (\w+)\n(.*?)```", re.DOTALL)
START, END = ms("2024-01-01"), ms("2024-01-04")
HOLE = ms("2024-01-02 13:37")  # a minute the ledger calls present but the lake lacks


def doc_queries() -> dict[str, str]:
    return dict(_BLOCK.findall(DOC.read_text()))


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    from tests.feeder_support import new_lake

    lake = new_lake(tmp_path_factory.mktemp("docs") / "lake")
    opens = aligned_opens("1", START, 0, (END - START) // 60_000)
    for seed, sym in enumerate(["BTCUSDT", "ETHUSDT"]):
        minutes = candle_frame(opens, seed)
        if sym == "ETHUSDT":  # unknown turnover for a while: VWAP falls back to typical price
            minutes = minutes.with_columns(
                pl.when(pl.col("ts") < ms("2024-01-01 06:00")).then(None).otherwise(pl.col("turnover")).alias("turnover")
            )
        lake.write_candles(minutes, symbol=sym, timeframe="1")
        hours = resample(minutes, "60").filter(pl.col("ts").dt.hour() != 5 if sym == "ETHUSDT" else True)
        lake.write_candles(hours, symbol=sym, timeframe="60")
        sid = SeriesId.of(CANDLES, exchange="bybit", category="linear", symbol=sym, timeframe="1")
        lake.ledger.record(sid, START, END, "present")
        lake.ledger.record(sid, START - 86_400_000, START, "empty")
    lake.delete_candles(symbol="BTCUSDT", timeframe="1", ts=[HOLE])
    return lake


def polars_returns(lake: Lake) -> pl.DataFrame:
    return (
        lake.read_candles(["BTCUSDT", "ETHUSDT"], "60")
        .sort("symbol", "ts")
        .with_columns(
            (pl.col("close") / pl.col("close").shift(1).over("symbol") - 1).alias("ret"),
        )
    )


def check_resample_1h(lake: Lake, out: pl.DataFrame) -> None:
    day = lake.read_candles("BTCUSDT", "1", "2024-01-01", "2024-01-02")
    expected = resample(day, "60")
    assert out.height == 24
    for col in ("open", "high", "low", "close"):
        assert out[col].to_list() == expected[col].to_list()
    assert np.allclose(out["volume"].to_numpy(), expected["volume"].to_numpy())
    assert out["ts"].to_list() == expected["ts"].to_list()
    assert out["candles"].to_list() == [60] * 24


def check_returns(lake: Lake, out: pl.DataFrame) -> None:
    expected = polars_returns(lake)
    assert out["ts"].to_list() == expected["ts"].to_list()
    assert np.allclose(out["ret"].to_numpy(), expected["ret"].to_numpy(), equal_nan=True)
    first = expected.filter(pl.col("ret").is_not_null()).row(0, named=True)
    assert math.isclose(out.filter(pl.col("ts") == first["ts"], pl.col("symbol") == first["symbol"])["log_ret"][0],
                        math.log(1 + first["ret"]))


def check_daily_vwap(lake: Lake, out: pl.DataFrame) -> None:
    minutes = lake.read_candles(["BTCUSDT", "ETHUSDT"], "1")
    quote = pl.coalesce("turnover", (pl.col("high") + pl.col("low") + pl.col("close")) / 3 * pl.col("volume"))
    expected = (
        minutes.group_by("symbol", pl.col("ts").dt.truncate("1d").alias("day"))
        .agg((quote.sum() / pl.col("volume").sum()).alias("vwap"))
        .sort("symbol", "day")
    )
    assert out.height == 6
    assert np.allclose(out["vwap"].to_numpy(), expected["vwap"].to_numpy(), rtol=1e-12)


def check_btc_eth_hourly(lake: Lake, out: pl.DataFrame) -> None:
    eth_hours = set(lake.read_candles("ETHUSDT", "60")["ts"].to_list())
    assert out.height == len(eth_hours) == 72 - 3  # ETH lacks the 05:00 hours
    assert set(out["ts"].to_list()) == eth_hours


def check_btc_eth_correlation(lake: Lake, out: pl.DataFrame) -> None:
    r = polars_returns(lake)
    joined = r.filter(pl.col("symbol") == "BTCUSDT").join(r.filter(pl.col("symbol") == "ETHUSDT"), on="ts")
    joined = joined.drop_nulls(["ret", "ret_right"])
    assert out["hours"][0] == joined.height + 1  # count(*) includes the first hour (null return)
    expected = np.corrcoef(joined["ret"].to_numpy(), joined["ret_right"].to_numpy())[0, 1]
    assert math.isclose(out["corr"][0], expected, rel_tol=1e-9)


def check_asof_hour_on_minutes(lake: Lake, out: pl.DataFrame) -> None:
    expected = DataFeeder(lake).aligned("BTCUSDT", "1", ["60"], "2024-01-02 09:55", "2024-01-02 10:05").collect()
    assert out.height == 10
    assert out["ts"].to_list() == expected["ts"].to_list()
    assert out["ts_60"].to_list() == expected["ts_60"].to_list()
    assert out["close_60"].to_list() == expected["close_60"].to_list()
    assert out["ts_60"].dt.hour().to_list() == [8] * 4 + [9] * 6  # 09:59 closes at 10:00


def check_coverage_summary(lake: Lake, out: pl.DataFrame) -> None:
    rows = {(r["symbol"], r["status"]): r for r in out.iter_rows(named=True)}
    assert set(rows) == {(s, st) for s in ("BTCUSDT", "ETHUSDT") for st in ("empty", "present")}
    assert rows[("BTCUSDT", "present")]["minutes"] == 3 * 1440
    assert rows[("ETHUSDT", "empty")]["minutes"] == 1440


def check_present_but_missing(lake: Lake, out: pl.DataFrame) -> None:
    assert out.rows() == [("BTCUSDT", pl.Series([HOLE]).cast(pl.Datetime("ms", "UTC"))[0])]


CHECKS: dict[str, Callable[[Lake, pl.DataFrame], None]] = {
    "resample_1h": check_resample_1h,
    "returns": check_returns,
    "daily_vwap": check_daily_vwap,
    "btc_eth_hourly": check_btc_eth_hourly,
    "btc_eth_correlation": check_btc_eth_correlation,
    "asof_hour_on_minutes": check_asof_hour_on_minutes,
    "coverage_summary": check_coverage_summary,
    "present_but_missing": check_present_but_missing,
}


def test_every_query_in_the_doc_is_checked() -> None:
    assert set(doc_queries()) == set(CHECKS)


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_doc_query_runs_and_gives_the_right_answer(lake: Lake, name: str) -> None:
    out = lake.sql(doc_queries()[name])
    CHECKS[name](lake, out)


def test_doc_queries_run_on_a_plain_connection_too(lake: Lake) -> None:
    con = lake.connect()  # what a notebook gets: the same views, the same answers
    for query in doc_queries().values():
        assert con.sql(query).pl().equals(lake.sql(query))
