"""CSV import/export in the old per-symbol format."""

from pathlib import Path

import polars as pl
import pytest

from marketlake.errors import ImportRejectedError
from marketlake.interop.csv import export_csv, import_csv, parse_old_csv, series_from_filename
from tests.helpers import T0, candles

HEADER = "timestamp,datetime,open,high,low,close,volume,turnover"
ROW1 = "1640995200000,2022-01-01 00:00:00,47000.0,47100.0,46900.0,47050.0,1000.0,47000000.0"
ROW2 = "1640995260000,2022-01-01 00:01:00,47050.0,47060.0,47000.0,47010.0,12.5,587625.0"


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_a_good_old_file_imports_and_reads_back(lake, tmp_path):
    f = write(tmp_path / "BTCUSDT_1.csv", f"{HEADER}\n{ROW1}\n{ROW2}\n")
    report = import_csv(lake, [f])
    assert report.ok and report.imported[0].rows == 2
    back = lake.read_candles("BTCUSDT", "1")
    assert back["close"].to_list() == [47050.0, 47010.0]
    assert back["turnover"].to_list() == [47000000.0, 587625.0]


def test_columns_in_any_order_without_turnover_import(lake, tmp_path):
    text = "close,volume,open,low,high,datetime,timestamp\n47050,1000,47000,46900,47100,2022-01-01 00:00:00,1640995200000\n"
    f = write(tmp_path / "ETHUSDT_5.csv", text)
    assert import_csv(lake, [f]).ok
    row = lake.read_candles("ETHUSDT", "5").row(0, named=True)
    assert (row["open"], row["high"], row["low"], row["close"], row["turnover"]) == (47000, 47100, 46900, 47050, None)


def test_spreadsheet_exports_with_bom_crlf_and_blank_lines_are_accepted(lake, tmp_path):
    text = "\ufeff" + f"{HEADER}\r\n{ROW1}\r\n\r\n{ROW2}\r\n\r\n"
    f = write(tmp_path / "BTCUSDT_1.csv", text.encode("utf-8"))
    report = import_csv(lake, [f])
    assert report.ok, report.rejected
    assert lake.read_candles("BTCUSDT", "1").height == 2


@pytest.mark.parametrize(
    ("body", "line", "reason"),
    [
        (f"{HEADER}\n{ROW1}\n1640995260000,2022-01-01 00:01:00,47050.0,abc,47000.0,47010.0,1,1\n", 3, "'abc' is not a number"),
        ("timestamp,datetime,open,high,low,volume\n1,x,1,1,1,1\n", 1, "missing column(s) close"),
        (f"{HEADER}\n1640995200000,2022-13-01 00:00:00,1,1,1,1,1,1\n", 2, "cannot read '2022-13-01 00:00:00'"),
        (f"{HEADER}\n{ROW1}\n1640995260,2022-01-01 00:01:00,1,1,1,1,1,1\n", 3, "mixed time units"),
        (f"{HEADER}\n1640995200,2022-01-01 00:00:00,1,1,1,1,1,1\n", 2, "in seconds"),
        (f"{HEADER}\n{ROW1}\n1640995260000,2022-01-01 01:01:00,1,1,1,1,1,1\n", 3, "disagrees with timestamp"),
        (f"{HEADER}\n{ROW1}\n1640995260000,2022-01-01 00:01:00,,1,1,1,1,1\n", 3, "'open' is empty"),
        (f"{HEADER}\n{ROW1}\n1640995260000.5,2022-01-01 00:01:00,1,1,1,1,1,1\n", 3, "integer milliseconds"),
        (f"{HEADER}\n{ROW1}\n1e300,2022-01-01 00:01:00,1,1,1,1,1,1\n", 3, "not epoch milliseconds"),
        (f"{ROW1}\n{ROW2}\n", 1, "header"),
        (f"{HEADER}\n{ROW1}\n{ROW2},extra,fields\n", None, "well-formed"),
        ("", None, "empty"),
        ("timestamp,open,open,high,low,close,volume\n1,1,1,1,1,1,1\n", None, "duplicate"),
    ],
)
def test_malformed_files_are_rejected_with_file_and_line(lake, tmp_path, body, line, reason):
    f = write(tmp_path / "BTCUSDT_1.csv", body)
    report = import_csv(lake, [f])
    assert not report.ok and not report.imported
    err = report.rejected[0]
    assert err.path == str(f)
    assert reason in err.reason
    if line is not None:
        assert err.line == line
    assert lake.read_candles().is_empty()  # nothing of the file stored


def test_hostile_bytes_are_rejected_cleanly(lake, tmp_path):
    huge = write(tmp_path / "BTCUSDT_1.csv", f"{HEADER}\n{ROW1}\n1640995260000,2022-01-01 00:01:00,{'9' * 100_000},1,1,1,1,1\n")
    nul = write(tmp_path / "ETHUSDT_1.csv", f"{HEADER}\n{ROW1}\n".encode() + b"16409\x0095260000,x,1,1,1,1,1,1\n")
    binary = write(tmp_path / "SOLUSDT_1.csv", bytes(range(256)) * 10)
    latin = write(tmp_path / "XRPUSDT_1.csv", f"{HEADER}\n".encode() + b"1640995200000,2022-01-01 00:00:00,\xe9,1,1,1,1,1\n")
    report = import_csv(lake, [huge, nul, binary, latin])
    assert [Path(r.path).name for r in report.rejected] == ["BTCUSDT_1.csv", "ETHUSDT_1.csv", "SOLUSDT_1.csv", "XRPUSDT_1.csv"]
    assert report.rejected[0].line == 3 and "bytes" in report.rejected[0].reason
    assert report.rejected[1].line == 3 and "NUL" in report.rejected[1].reason
    assert lake.read_candles().is_empty()


def test_a_bad_file_in_a_directory_does_not_stop_the_others(lake, tmp_path):
    write(tmp_path / "BTCUSDT_1.csv", f"{HEADER}\n{ROW1}\n")
    write(tmp_path / "ETHUSDT_1.csv", f"{HEADER}\nnot,a,row\n")
    write(tmp_path / "bad name.csv", f"{HEADER}\n{ROW1}\n")
    write(tmp_path / "notes.txt", "ignored")
    report = import_csv(lake, [tmp_path])
    assert [i.symbol for i in report.imported] == ["BTCUSDT"]
    assert sorted(Path(r.path).name for r in report.rejected) == ["ETHUSDT_1.csv", "bad name.csv"]


def test_repeated_timestamps_keep_the_last_row_and_are_counted(lake, tmp_path):
    again = ROW1.replace("47050.0,1000.0", "47055.0,1000.0")
    f = write(tmp_path / "BTCUSDT_1.csv", f"{HEADER}\n{ROW1}\n{ROW2}\n{again}\n")
    report = import_csv(lake, [f])
    assert report.imported[0].duplicates == 1
    assert lake.read_candles()["close"].to_list() == [47055.0, 47010.0]


def test_reimporting_changes_nothing(lake, tmp_path):
    f = write(tmp_path / "BTCUSDT_1.csv", f"{HEADER}\n{ROW1}\n{ROW2}\n")
    import_csv(lake, [f])
    r = import_csv(lake, [f]).imported[0].result
    assert (r.rows_new, r.rows_replaced, r.rows_unchanged) == (0, 0, 2)


@pytest.mark.parametrize("name", ["BTCUSDT.csv", "btcusdt_1.csv", "BTCUSDT_7.csv", "../x_1.csv", "BTCUSDT_1.txt"])
def test_file_names_must_be_symbol_underscore_timeframe(name):
    with pytest.raises(ImportRejectedError):
        series_from_filename(name)


def test_export_writes_the_old_format_chronologically(lake, tmp_path):
    lake.write_candles(candles(50).reverse(), symbol="BTCUSDT", timeframe="1")
    lake.write_candles(candles(5, step=300_000).drop("turnover"), symbol="ETHUSDT", timeframe="5")
    files = export_csv(lake, tmp_path / "out")
    assert sorted(f.name for f in files) == ["BTCUSDT_1.csv", "ETHUSDT_5.csv"]
    btc = (tmp_path / "out" / "BTCUSDT_1.csv").read_text().splitlines()
    assert btc[0] == HEADER
    assert btc[1].startswith(f"{T0},2024-01-01 00:00:00,")
    eth = (tmp_path / "out" / "ETHUSDT_5.csv").read_text().splitlines()
    assert eth[0] == "timestamp,datetime,open,high,low,close,volume"
    ts = [int(line.split(",")[0]) for line in btc[1:]]
    assert ts == sorted(ts)


def test_export_then_import_reproduces_the_lake(lake, tmp_path):
    df = candles(3000, seed=5).with_columns((pl.col("volume") / 7).alias("volume"))  # awkward floats
    lake.write_candles(df, symbol="BTCUSDT", timeframe="1")
    export_csv(lake, tmp_path / "out", start=T0 + 60_000 * 10)
    from marketlake.settings import Settings
    from marketlake.store import Lake

    other = Lake(tmp_path / "other", settings=Settings.load(environ={}))
    assert import_csv(other, [tmp_path / "out"]).ok
    expected = lake.read_candles(start=T0 + 60_000 * 10)
    assert other.read_candles().equals(expected)


def test_the_real_month_of_candles_imports_through_the_foreign_layout(lake, shared_dir):
    path = shared_dir / "fixtures" / "real" / "btc-perp-20211231-20220201_1m.csv"
    frame = parse_old_csv(path)
    assert frame.height == 45_031
    report = import_csv(lake, [path], symbol="BTCPERP", timeframe="1", exchange="ftx")
    assert report.ok
    back = lake.read_candles("BTCPERP", "1", exchange="ftx")
    assert back.height == 45_031 and back["ts"].is_unique().all()
    assert back["ts"].diff().drop_nulls().dt.total_minutes().unique().to_list() == [1]
    cols = ["open", "high", "low", "close", "volume"]
    assert back.select(cols).equals(frame.select(cols))
    assert back["ts"].dt.epoch("ms").equals(frame["ts"])


def test_the_fast_typed_read_and_the_checked_read_agree_on_valid_files(tmp_path, shared_dir):
    from marketlake.interop.csv import _parse_checked

    df = candles(5000, seed=3)
    good = tmp_path / "BTCUSDT_1.csv"
    text = df.with_columns(
        pl.from_epoch("ts", time_unit="ms").dt.strftime("%Y-%m-%d %H:%M:%S").alias("datetime")
    ).select(pl.col("ts").alias("timestamp"), "datetime", "open", "high", "low", "close", "volume", "turnover")
    good.write_text(text.write_csv())
    real = shared_dir / "fixtures" / "real" / "btc-perp-20211231-20220201_1m.csv"
    for path in (good, real):
        assert parse_old_csv(path).equals(_parse_checked(path, path.read_bytes()))
