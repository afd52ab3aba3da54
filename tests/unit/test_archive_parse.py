"""Bybit daily trade archives: decoding the two real formats, the index, and hostile files."""

from __future__ import annotations

import datetime as dt
import gzip
import zlib
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from marketlake.errors import ExchangeProtocolError
from marketlake.exchanges.bybit.parse_archive import (
    archive_file_name,
    gunzip_bounded,
    parse_archive_index,
    parse_trade_dump,
    parse_trading_dump,
)

SPOT_FIXTURE = (
    Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "bybit" / "fordicus_bybit_spot_dump_1INCHUSDT_2025-05-19_head200.csv"
)
HEADER = "timestamp,symbol,side,size,price,tickDirection,trdMatchID,grossValue,homeNotional,foreignNotional"
DAY = dt.date(2024, 1, 1)


def _trading(*rows: str, header: str = HEADER + ",RPI") -> bytes:
    return ("\n".join([header, *rows]) + "\n").encode()


ROWS = (
    "1704067260.001,BTCUSDT,Buy,1,42283.6,PlusTick,id-c,4.2283600e+12,1,42283.6,0",
    "1704067200.5,BTCUSDT,Sell,0.500,42283.50,MinusTick,id-b,2.1141750e+12,0.5,21141.75,0",
    "1585180700.0647,BTCUSDT,Buy,0.012,42283.60,ZeroPlusTick,id-a,5.0740320e+10,0.012,507.40320,0",
)


def test_derivative_times_in_seconds_become_exact_microseconds_without_float_rounding():
    frame = parse_trading_dump(_trading(*ROWS), symbol="BTCUSDT")
    micros = frame["ts"].dt.epoch("us").to_list()
    assert micros == [1585180700_064700, 1704067200_500000, 1704067260_001000]
    assert frame["trade_id"].to_list() == ["id-a", "id-b", "id-c"]
    assert frame["tick_direction"].to_list() == ["ZeroPlusTick", "MinusTick", "PlusTick"]
    assert frame.schema["ts"] == pl.Datetime("us", "UTC")


def test_a_newest_first_file_is_reversed_so_equal_times_keep_execution_order():
    rows = [
        "1704067201,BTCUSDT,Buy,1,2,PlusTick,third,0,0,0,0",
        "1704067200.5,BTCUSDT,Buy,1,2,ZeroPlusTick,second,0,0,0,0",
        "1704067200.5,BTCUSDT,Buy,1,2,PlusTick,first,0,0,0,0",
    ]
    frame = parse_trading_dump(_trading(*rows))
    assert frame["trade_id"].to_list() == ["first", "second", "third"]


def test_files_without_the_rpi_column_and_with_crlf_line_ends_parse_the_same():
    plain = parse_trading_dump(_trading(*ROWS))
    no_rpi = _trading(*(r.rsplit(",", 1)[0] for r in ROWS), header=HEADER).replace(b"\n", b"\r\n")
    assert parse_trading_dump(no_rpi).equals(plain)


@given(
    seconds=st.integers(1, 99_999_999_999),
    frac=st.text(alphabet="0123456789", min_size=0, max_size=9),
)
def test_any_decimal_seconds_text_parses_to_its_exact_microsecond(seconds, frac):
    text = f"{seconds}.{frac}" if frac else str(seconds)
    frame = parse_trading_dump(_trading(f"{text},X,Buy,1,1,PlusTick,t,0,0,0,0"))
    # Real files carry at most 4 decimals; finer digits round half to even.
    expected = int((Decimal(text) * 1_000_000).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
    assert frame["ts"].dt.epoch("us")[0] == expected


def test_the_real_spot_dump_gzipped_parses_and_its_per_file_ids_become_unique_per_day():
    data = SPOT_FIXTURE.read_bytes()
    frame = parse_trade_dump(gzip.compress(data), symbol="1INCHUSDT", category="spot", day=dt.date(2025, 5, 19))
    assert frame.height == 200
    assert frame["trade_id"][0] == "20250519-1"
    assert frame["trade_id"].is_unique().all()
    assert frame["ts"].is_sorted()
    assert frame["ts"].dt.date().unique().to_list() == [dt.date(2025, 5, 19)]


def test_spot_ids_that_are_not_a_per_file_counter_are_kept_as_the_exchange_gave_them():
    data = b"id,timestamp,price,volume,side,rpi\n2100000000007764263,1672052955758,16618.49,0.00012,buy,1\n"
    frame = parse_trade_dump(data, symbol="BTCUSDT", category="spot", day=dt.date(2022, 12, 26))
    assert frame["trade_id"].to_list() == ["2100000000007764263"]


def test_a_header_only_file_is_a_day_without_trades():
    assert parse_trading_dump(_trading()).height == 0
    assert parse_trade_dump(b"id,timestamp,price,volume,side,rpi\n", symbol="X", category="spot", day=DAY).height == 0


def test_the_index_lists_only_this_symbols_day_files_in_order():
    page = """<html><body><a href="../">../</a>
    <a href="BTCUSDT2024-01-02.csv.gz">x</a> <a href='BTCUSDT2024-01-01.csv.gz'>x</a>
    <a href="BTCUSDT2024-01-01.csv.gz">dup</a><a href="BTCUSDTM2024-01-03.csv.gz">other</a>
    <a href="/trading/BTCUSDT/BTCUSDT2024-01-04.csv.gz">abs</a><a href="BTCUSDT2024-01-05.csv.gz.md5">md5</a>
    </body></html>"""
    assert parse_archive_index(page, "BTCUSDT", "linear") == [
        dt.date(2024, 1, 1), dt.date(2024, 1, 2), dt.date(2024, 1, 4)
    ]
    assert parse_archive_index(page, "BTCUSD", "inverse") == []
    assert parse_archive_index('<a href="BTCUSDT_2024-01-01.csv.gz">', "BTCUSDT", "spot") == [dt.date(2024, 1, 1)]
    assert archive_file_name("BTCUSDT", "spot", DAY) == "BTCUSDT_2024-01-01.csv.gz"
    assert archive_file_name("BTCUSD", "inverse", DAY) == "BTCUSD2024-01-01.csv.gz"


def test_an_index_naming_an_impossible_date_is_a_protocol_error():
    with pytest.raises(ExchangeProtocolError, match="impossible date"):
        parse_archive_index('<a href="BTCUSDT2024-02-30.csv.gz">', "BTCUSDT", "linear")


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"<html>503 Service Unavailable</html>", "not a gzip file"),
        (gzip.compress(b"x" * 10_000)[:-20], "truncated"),
        (gzip.compress(b"abc") + b"trailing junk", "garbage"),
        (b"\x1f\x8b" + b"\x00" * 30, "corrupt"),
        (gzip.compress(b"\x00" * 5_000_000, compresslevel=9), "more than"),
    ],
    ids=["html-error-page", "truncated", "trailing-garbage", "corrupt", "gzip-bomb"],
)
def test_a_bad_gzip_body_is_a_typed_error_naming_the_file(body, match):
    with pytest.raises(ExchangeProtocolError, match=match) as info:
        gunzip_bounded(body, what="bybit trade archive BTCUSDT2024-01-01.csv.gz", max_bytes=1_000_000)
    assert "BTCUSDT2024-01-01.csv.gz" in str(info.value)


def test_multi_member_gzip_and_zero_padding_decompress_whole():
    body = gzip.compress(b"ab") + gzip.compress(b"cd") + b"\x00" * 8
    assert gunzip_bounded(body, what="f") == b"abcd"
    raw = zlib.compress(b"x")
    with pytest.raises(ExchangeProtocolError):
        gunzip_bounded(raw, what="f")  # zlib, not gzip


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ("17040672OO.5,BTCUSDT,Buy,1,2,PlusTick,t,0,0,0,0", "line 2: bad timestamp"),
        ("1704067200.5.3,BTCUSDT,Buy,1,2,PlusTick,t,0,0,0,0", "line 2: bad timestamp"),
        ("9e99,BTCUSDT,Buy,1,2,PlusTick,t,0,0,0,0", "line 2: bad timestamp"),
        ("-1704067200,BTCUSDT,Buy,1,2,PlusTick,t,0,0,0,0", "line 2: bad timestamp"),
        ("1704067200,BTCUSDT,buy,1,2,PlusTick,t,0,0,0,0", "line 2: bad side"),
        ("1704067200,BTCUSDT,Buy,-1,2,PlusTick,t,0,0,0,0", "line 2: bad size"),
        ("1704067200,BTCUSDT,Buy,1,nan,PlusTick,t,0,0,0,0", "line 2: bad price"),
        ("1704067200,BTCUSDT,Buy,1,1e999,PlusTick,t,0,0,0,0", "line 2: bad price"),
        ("1704067200,BTCUSDT,Buy,1,2,PlusTick,,0,0,0,0", "line 2: bad trdMatchID"),
        ("1704067200,ETHUSDT,Buy,1,2,PlusTick,t,0,0,0,0", "line 2: bad symbol"),
    ],
)
def test_a_bad_value_names_its_line_and_column(row, match):
    good = "1704067199,BTCUSDT,Buy,1,2,PlusTick,ok,0,0,0,0"
    with pytest.raises(ExchangeProtocolError, match=match.replace("line 2", "line 3")):
        parse_trading_dump(_trading(good, row), symbol="BTCUSDT", what="f.csv.gz")


def test_a_header_missing_columns_or_rows_shifted_by_a_stray_field_are_rejected():
    with pytest.raises(ExchangeProtocolError, match="lacks trdMatchID"):
        parse_trading_dump(b"timestamp,symbol,side,size,price,tickDirection\n1,X,Buy,1,1,PlusTick\n")
    with pytest.raises(ExchangeProtocolError, match="line 2: bad size 'Buy'"):
        parse_trading_dump(_trading("1704067200,BTC,USDT,Buy,1,2,PlusTick,t,0,0,0,0"))
    with pytest.raises(ExchangeProtocolError, match="bad price"):
        parse_trading_dump(_trading("1704067200,BTCUSDT,Buy,1"))  # a short row: the rest is missing
    with pytest.raises(ExchangeProtocolError, match="is not id,timestamp"):
        parse_trade_dump(_trading(*ROWS), symbol="BTCUSDT", category="spot", day=DAY)
    with pytest.raises(ExchangeProtocolError, match="no trade archive"):
        parse_trade_dump(b"", symbol="BTCUSDT", category="option", day=DAY)
