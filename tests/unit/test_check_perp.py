"""check and repair over the perpetual datasets: funding gaps at the interval in force (an
interval change is none), price candles with the candle checks (a negative premium is valid),
open-interest grid gaps, the ledger's empty ranges explaining gaps, --data, the CLI."""

from __future__ import annotations

import asyncio
import json

import polars as pl
import pytest

from marketlake.cli.app import main
from marketlake.quality import check_lake, repair_lake
from marketlake.quality.perp import parse_data
from marketlake.errors import DataValidationError
from marketlake.store.layout import SeriesId
from marketlake.store.ledger import Status
from tests.feeder_support import new_lake

T0 = 1_704_067_200_000
M = 60_000
H = 60 * M
DAY = 24 * H


def funding_frame(drop: tuple[int, ...] = ()) -> pl.DataFrame:
    """8 h settlements for two days, then 1 h ones (an interval change), minus ``drop``."""
    ts = [T0 + i * 8 * H for i in range(7)] + [T0 + 2 * DAY + k * H for k in range(1, 13)]
    iv = [480] * 7 + [60] * 12
    keep = [i for i in range(len(ts)) if ts[i] not in drop]
    return pl.DataFrame({"ts": [ts[i] for i in keep], "rate": [1e-4] * len(keep), "interval_minutes": [iv[i] for i in keep]})


def price_frame(n: int = 120, drop: tuple[int, ...] = (), low: float = 99.0) -> pl.DataFrame:
    opens = [T0 + i * M for i in range(n) if i not in drop]
    return pl.DataFrame({"ts": opens, "open": 100.0, "high": 101.0, "low": low, "close": 100.0})


def oi_frame(n: int = 100, drop: tuple[int, ...] = ()) -> pl.DataFrame:
    opens = [T0 + i * 5 * M for i in range(n) if i not in drop]
    return pl.DataFrame({"ts": opens, "open_interest": [1e6] * len(opens)})


@pytest.fixture
def lake(tmp_path):
    return new_lake(tmp_path / "lake")


def test_an_interval_change_is_not_a_gap_a_missing_settlement_is(lake):
    lake.write_funding(funding_frame(), symbol="BTCUSDT")
    (clean,) = check_lake(lake).funding
    assert not clean.has_issues and clean.unexplained == []
    assert [i["interval_minutes"] for i in clean.intervals] == [480, 60]
    lake.write_funding(funding_frame(drop=(T0 + 8 * H, T0 + 2 * DAY + 5 * H)), symbol="ETHUSDT")
    result = check_lake(lake, "ETHUSDT")
    (f,) = result.funding
    assert result.has_issues and f.has_issues
    assert [(g.before, g.after, g.missing) for g in f.unexplained] == [
        (T0, T0 + 16 * H, 1), (T0 + 2 * DAY + 4 * H, T0 + 2 * DAY + 6 * H, 1)]
    assert f.unexplained[0].hole == (T0 + 8 * H, T0 + 16 * H)


def test_the_ledgers_empty_ranges_explain_gaps(lake):
    lake.write_funding(funding_frame(drop=(T0 + 8 * H,)), symbol="BTCUSDT")
    lake.write_open_interest(oi_frame(drop=(10, 11)), symbol="BTCUSDT", interval="5min")
    lake.write_price_candles("mark", price_frame(drop=(50,)), symbol="BTCUSDT", timeframe="1")
    assert len(check_lake(lake).perp_series) == 3 and check_lake(lake).has_issues
    lake.ledger.record(SeriesId.of("funding", exchange="bybit", category="linear", symbol="BTCUSDT"),
                       T0 + 1, T0 + 16 * H, Status.EMPTY)
    lake.ledger.record(SeriesId.of("open_interest", exchange="bybit", category="linear", symbol="BTCUSDT", timeframe="5"),
                       T0 + 50 * M, T0 + 60 * M, Status.EMPTY)
    lake.ledger.record(SeriesId.of("mark_candles", exchange="bybit", category="linear", symbol="BTCUSDT", timeframe="1"),
                       T0 + 50 * M, T0 + 51 * M, Status.EMPTY)
    result = check_lake(lake)
    assert not result.has_issues
    assert [len(s.explained) for s in result.perp_series] == [1, 1, 1]


def test_price_candles_get_the_candle_checks_and_a_negative_premium_is_valid(lake):
    negative = price_frame().with_columns(pl.lit(-0.002).alias("open"), pl.lit(0.0).alias("high"),
                                         pl.lit(-0.003).alias("low"), pl.lit(-0.001).alias("close"))
    lake.write_price_candles("premium", negative, symbol="BTCUSDT", timeframe="1")
    lake.write_price_candles("mark", negative, symbol="BTCUSDT", timeframe="1")
    bad_index = price_frame(drop=(7,)).with_columns(
        pl.when(pl.col("ts") == T0 + 3 * M).then(200.0).otherwise(pl.col("low")).alias("low"))
    lake.write_price_candles("index", bad_index, symbol="BTCUSDT", timeframe="1")
    by_kind = {s.sid.dataset: s for s in check_lake(lake).price_series}
    assert not by_kind["premium_candles"].has_issues
    assert by_kind["mark_candles"].result.invalid_count == 120  # mark prices must be positive
    idx = by_kind["index_candles"]
    assert idx.result.invalid_count == 1 and [g.missing_candles for g in idx.unexplained] == [1]


def test_open_interest_gaps_per_interval(lake):
    lake.write_open_interest(oi_frame(drop=(3, 4, 5)), symbol="BTCUSDT", interval="5min")
    hourly = pl.DataFrame({"ts": [T0 + i * H for i in range(10)], "open_interest": [1.0] * 10})
    lake.write_open_interest(hourly, symbol="BTCUSDT", interval="1h")
    five, hour = check_lake(lake).open_interest
    assert [(g.missing, g.hole) for g in five.unexplained] == [(3, (T0 + 15 * M, T0 + 30 * M))]
    assert five.name == "oi:bybit/linear/BTCUSDT/5" and not hour.has_issues


def test_data_filter_and_candles_unchanged(lake):
    lake.write_funding(funding_frame(drop=(T0 + 8 * H,)), symbol="BTCUSDT")
    lake.write_candles(price_frame().with_columns(pl.lit(1.0).alias("volume")), symbol="BTCUSDT", timeframe="1")
    assert [s.sid.label() for s in check_lake(lake).series] == ["bybit/linear/BTCUSDT/1"]
    only_klines = check_lake(lake, data="klines")
    assert not only_klines.has_issues and only_klines.funding == []
    assert check_lake(lake, data="funding").series == []
    assert check_lake(lake, timeframes="1").funding == []  # --timeframes alone: datasets with timeframes
    assert parse_data("all") == ("klines", "trades", "funding", "mark", "index", "premium", "oi")
    assert parse_data("open_interest,mark_candles") == ("mark", "oi")
    with pytest.raises(DataValidationError):
        parse_data("klines,bogus")


def test_check_cli_json_table_and_exit_codes(lake, capsys):
    lake.write_funding(funding_frame(drop=(T0 + 8 * H,)), symbol="BTCUSDT")
    lake.write_price_candles("premium", price_frame(), symbol="BTCUSDT", timeframe="1")
    lake.write_open_interest(oi_frame(), symbol="BTCUSDT", interval="5min")
    root = str(lake.root)
    assert main(["check", "--lake", root, "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["has_issues"] and [f["series"] for f in out["funding"]] == ["funding:bybit/linear/BTCUSDT"]
    assert out["funding"][0]["gaps"][0]["missing"] == 1
    assert [p["data"] for p in out["price_candles"]] == ["premium"] and out["open_interest"][0]["has_issues"] is False
    assert main(["check", "--lake", root, "--data", "premium,oi"]) == 0
    text = capsys.readouterr().out
    assert "premium:bybit/linear/BTCUSDT/1" in text and "oi:bybit/linear/BTCUSDT/5" in text
    assert main(["check", "--lake", root, "--data", "funding"]) == 1
    assert "1 settlement(s) missing" in capsys.readouterr().out
    assert main(["check", "--lake", root, "--data", "nope"]) == 2


def test_repair_forgets_the_missing_ranges_and_names_the_ingest_command(lake, capsys):
    fsid = SeriesId.of("funding", exchange="bybit", category="linear", symbol="BTCUSDT")
    osid = SeriesId.of("open_interest", exchange="bybit", category="linear", symbol="BTCUSDT", timeframe="5")
    lake.write_funding(funding_frame(drop=(T0 + 8 * H,)), symbol="BTCUSDT")
    lake.write_open_interest(oi_frame(drop=(10,)), symbol="BTCUSDT", interval="5min")
    lake.ledger.record(fsid, T0, T0 + 2 * DAY + 12 * H + 30 * M, Status.PRESENT)
    lake.ledger.record(osid, T0, T0 + 100 * 5 * M, Status.PRESENT)
    rep = asyncio.run(repair_lake(lake, data="funding,oi"))
    assert [(p.series, p.ranges) for p in rep.perp] == [
        ("funding:bybit/linear/BTCUSDT", [(T0 + 8 * H, T0 + 16 * H)]),
        ("oi:bybit/linear/BTCUSDT/5", [(T0 + 50 * M, T0 + 55 * M)]),
    ]
    assert rep.perp[0].command == ("marketlake ingest --data funding --symbols BTCUSDT --category linear "
                                   "--start 2024-01-01 --end 2024-01-02")
    assert rep.perp[1].command.startswith("marketlake ingest --data oi --symbols BTCUSDT --oi-intervals 5min")
    assert lake.ledger.missing(fsid, T0, T0 + 2 * DAY) == [(T0 + 8 * H, T0 + 16 * H)]
    assert lake.ledger.missing(osid, T0, T0 + 500 * M) == [(T0 + 50 * M, T0 + 55 * M)]
    assert rep.perp_gaps_left == 2 and rep.series == []  # no klines asked for
    assert main(["repair", "--lake", str(lake.root), "--no-refetch", "--data", "funding"]) == 1
    assert "fetch them with `marketlake ingest --data funding" in capsys.readouterr().out


def test_unstored_present_ranges_of_funding_are_issues(lake):
    fsid = SeriesId.of("funding", exchange="bybit", category="linear", symbol="BTCUSDT")
    lake.write_funding(funding_frame().filter(pl.col("ts") >= T0 + DAY), symbol="BTCUSDT")
    lake.ledger.record(fsid, T0, T0 + 2 * DAY + 12 * H, Status.PRESENT)
    (f,) = check_lake(lake).funding
    assert f.has_issues and f.unstored == [(T0, T0 + DAY)]
