"""The last-resort classification of failures, Ctrl-C, and the ban-wait notice."""

from __future__ import annotations

import errno
import sqlite3
import time
from pathlib import Path

import pytest

from marketlake.cli import app as app_module
from marketlake.cli.app import main
from marketlake.cli.failures import MAX_MESSAGE_CHARS, classify, one_line
from marketlake.errors import CorruptLakeError, SinkError


@pytest.mark.parametrize(
    ("exc", "code", "text"),
    [
        (OSError(errno.ENOSPC, "No space left on device", "/lake/_meta/x"), 3, "No space left"),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), 3, "quota"),
        (OSError(errno.EIO, "Input/output error", "/lake/candles/x.parquet"), 3, "x.parquet"),
        (PermissionError(errno.EACCES, "Permission denied", "/out/x.csv"), 2, "/out/x.csv: Permission denied"),
        (NotADirectoryError(errno.ENOTDIR, "Not a directory", "/f/x"), 2, "Not a directory"),
        (IsADirectoryError(errno.EISDIR, "Is a directory", "/tmp"), 2, "Is a directory"),
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), 4, "network"),
        (sqlite3.OperationalError("database or disk is full"), 3, "disk is full"),
        (sqlite3.DatabaseError("file is not a database"), 3, "SQLite"),
        (RecursionError("maximum recursion depth exceeded"), 2, "nested too deeply"),
        (MemoryError(), 2, "out of memory"),
        (CorruptLakeError("/lake/p.parquet", "bad footer"), 3, "fsck"),
        (SinkError("postgres: down"), 5, "postgres"),
        (TimeoutError(), 4, "network"),
        (ZeroDivisionError("division by zero"), 1, "internal error (ZeroDivisionError)"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_every_failure_maps_to_one_line_and_its_code(exc: BaseException, code: int, text: str) -> None:
    got, message = classify(exc)
    assert got == code and text in message and "\n" not in message


def test_duckdb_errors_split_into_bad_sql_and_damaged_files() -> None:
    duckdb = pytest.importorskip("duckdb")
    con = duckdb.connect()
    with pytest.raises(duckdb.Error) as bad_sql:
        con.sql("selec 1")
    assert classify(bad_sql.value)[0] == 2
    with pytest.raises(duckdb.Error) as io:
        con.sql("select * from read_parquet('/nonexistent/x.parquet')")
    assert classify(io.value)[0] == 3


def test_one_line_folds_newlines_and_caps_length() -> None:
    assert one_line("a\n\n  b\tc\n") == "a b c"
    assert len(one_line("x" * 10_000)) == MAX_MESSAGE_CHARS


@pytest.mark.parametrize(
    ("raised", "code", "text"),
    [
        (sqlite3.OperationalError("database or disk is full"), 3, "error: lake metadata (SQLite): database or disk is full"),
        (OSError(errno.ENOSPC, "No space left on device", "/lake/_meta/ledger.sqlite"), 3, "No space left"),
    ],
    ids=["sqlite-full", "enospc"],
)
def test_main_turns_what_a_command_raises_into_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], raised: BaseException, code: int, text: str
) -> None:
    def boom(*_a: object, **_k: object) -> None:
        raise raised

    monkeypatch.setattr(app_module, "load_settings", boom)
    assert main(["info"]) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and text in err and "Traceback" not in err


def test_ctrl_c_exits_130_without_a_traceback(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted(*_a: object, **_k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(app_module, "load_settings", interrupted)
    assert main(["info"]) == 130
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err and captured.err.count("\n") <= 1


def test_a_run_after_a_ban_says_it_waits_and_until_when(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from marketlake.net.ratelimit import RateBudget
    from tests.integration.emulated import emulator_thread

    monkeypatch.delenv("MARKETLAKE_LAKE_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    lake = tmp_path / "lake"
    # What an earlier run's HTTP 403 leaves in the machine-wide budget: nothing sent until then.
    budget = RateBudget(500, state_dir=lake / "_meta")
    budget.block_until(int(time.time() * 1000) + 1500)
    budget.close()
    with emulator_thread(symbols=3) as emu:
        t0 = time.monotonic()
        code = main(["ingest", "--symbols", "BTCUSDT", "--days", "1", "--dry-run", "--base-url", emu.url,
                     "--lake", str(lake)])
        waited = time.monotonic() - t0
    err = capsys.readouterr().err
    assert code == 0, err
    assert "waiting for Bybit's ban / rate limit to lift: no requests until" in err and " UTC (" in err
    assert waited >= 1.0  # and it did wait
