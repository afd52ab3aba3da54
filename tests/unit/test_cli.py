"""The CLI parses flags, calls the library and renders; user errors are one line, no traceback."""

import json
import os
import subprocess
import sys

import polars as pl
import pytest

from marketlake.cli.app import main
from tests.helpers import candles


@pytest.fixture
def lake_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("MARKETLAKE_LAKE_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "lake"


def run(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_info_on_an_empty_lake_says_so(capsys, lake_dir):
    code, out, _ = run(capsys, "info", "--lake", str(lake_dir))
    assert code == 0 and "no series stored yet" in out


def test_import_then_info_json_then_sql_then_export(capsys, lake_dir, tmp_path):
    src = tmp_path / "BTCUSDT_1.csv"
    from tests.unit.test_csv_interop import HEADER, ROW1, ROW2

    src.write_text(f"{HEADER}\n{ROW1}\n{ROW2}\n")
    code, out, _ = run(capsys, "import-csv", str(src), "--lake", str(lake_dir))
    assert code == 0 and "2 new" in out

    code, out, _ = run(capsys, "info", "--lake", str(lake_dir), "--json")
    info = json.loads(out)
    assert code == 0 and info["series"][0]["symbol"] == "BTCUSDT" and info["series"][0]["rows"] == 2

    code, out, _ = run(capsys, "sql", "select symbol, count(*) n from candles group by 1", "--format", "csv", "--lake", str(lake_dir))
    assert code == 0 and out.splitlines() == ["symbol,n", "BTCUSDT,2"]

    code, out, _ = run(capsys, "sql", "select close from candles order by ts", "--format", "json", "--lake", str(lake_dir))
    assert json.loads(out) == [{"close": 47050.0}, {"close": 47010.0}]

    pq_out = tmp_path / "q.parquet"
    code, _, _ = run(capsys, "sql", "select * from candles", "--format", "parquet", "--output", str(pq_out), "--lake", str(lake_dir))
    assert code == 0 and pl.read_parquet(pq_out).height == 2

    code, out, _ = run(capsys, "export-csv", str(tmp_path / "out"), "--lake", str(lake_dir))
    assert code == 0 and (tmp_path / "out" / "BTCUSDT_1.csv").read_text().splitlines()[1] == ROW1


def test_rejected_imports_exit_non_zero_and_name_the_line(capsys, lake_dir, tmp_path):
    bad = tmp_path / "BTCUSDT_1.csv"
    bad.write_text("timestamp,datetime,open,high,low,close,volume\n1640995200000,2022-01-01 00:00:00,x,1,1,1,1\n")
    code, _, err = run(capsys, "import-csv", str(bad), "--lake", str(lake_dir))
    assert code == 2 and f"{bad}:2" in err and "'x' is not a number" in err


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (["sql", "select nope from candles"], 2, "error: SQL error"),
        (["sql", "select 1", "--format", "xml"], 2, "--format must be"),
        (["sql", "select 1", "--format", "parquet"], 2, "needs --output"),
        (["export-csv", "out", "--symbols", "../etc"], 2, "invalid symbol"),
        (["export-csv", "out", "--timeframes", "7"], 2, "unknown timeframe"),
        (["export-csv", "out", "--start", "yesterday"], 2, "cannot read 'yesterday'"),
        (["import-csv", "x.csv", "--symbol", "BTCUSDT"], 2, "go together"),
    ],
)
def test_user_errors_print_one_line_and_exit_with_the_error_code(capsys, lake_dir, args, code, text):
    got, out, err = run(capsys, *args, "--lake", str(lake_dir))
    assert got == code
    assert text in err
    assert "Traceback" not in err + out
    assert len(err.strip().splitlines()) == 1


def test_a_bad_config_file_is_a_config_error(capsys, lake_dir, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("rate_limit_per_5s = 9999\n")
    code, _, err = run(capsys, "info", "--config", str(cfg))
    assert code == 2 and "rate_limit_per_5s" in err


def test_fsck_exit_status_reflects_what_it_found(capsys, lake_dir):
    from marketlake.settings import Settings
    from marketlake.store import Lake

    lake = Lake(lake_dir, settings=Settings.load(environ={}))
    lake.write_candles(candles(10), symbol="BTCUSDT", timeframe="1")
    assert run(capsys, "fsck", "--lake", str(lake_dir))[0] == 0
    pdir = next((lake_dir / "candles").rglob("date=*"))
    junk = pdir / "part-00000009.parquet"
    junk.write_bytes(b"x")
    os.utime(junk, (1, 1))  # older than any retention
    code, out, _ = run(capsys, "fsck", "--lake", str(lake_dir), "--json")
    assert code == 1 and json.loads(out)["issues"][0]["kind"] == "orphan"
    assert run(capsys, "fsck", "--fix", "--lake", str(lake_dir))[0] == 0
    assert run(capsys, "fsck", "--lake", str(lake_dir))[0] == 0


def test_the_console_script_is_installed_and_runs(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "marketlake", "info", "--lake", str(tmp_path / "l")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "no series stored yet" in proc.stdout
