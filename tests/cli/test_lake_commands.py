"""``snapshot``, ``sql --as-of``, ``sql --full-engine``, ``vacuum`` and ``info``'s versions, as a
user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from marketlake.cli.app import main
from marketlake.settings import Settings
from marketlake.store import Lake
from tests.helpers import candles


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def filled(tmp_path: Path) -> Lake:
    lake = Lake(tmp_path / "lake", settings=Settings.load(environ={}))
    lake.write_candles(candles(100), symbol="BTCUSDT", timeframe="1")
    return lake


def test_a_snapshot_taken_on_the_command_line_is_read_back_unchanged_after_a_rewrite(capsys, filled):
    root = str(filled.root)
    code, out, _ = run(capsys, "snapshot", "create", "bt-1", "--note", "first run", "--lake", root)
    assert code == 0 and "snapshot bt-1" in out
    filled.write_candles(candles(100).with_columns(pl.col("close") + 1), symbol="BTCUSDT", timeframe="1")
    q = "select round(sum(close), 2) s from candles"
    _, then, _ = run(capsys, "sql", q, "--format", "json", "--as-of", "bt-1", "--lake", root)
    _, now, _ = run(capsys, "sql", q, "--format", "json", "--lake", root)
    assert json.loads(then)[0]["s"] == round(candles(100)["close"].sum(), 2)
    assert json.loads(now)[0]["s"] == round(candles(100)["close"].sum() + 100, 2)
    code, out, _ = run(capsys, "snapshot", "list", "--json", "--lake", root)
    assert code == 0 and [s["name"] for s in json.loads(out)] == ["bt-1"] and json.loads(out)[0]["note"] == "first run"
    code, out, _ = run(capsys, "info", "--lake", root)
    assert "versions: candles v" in out and "snapshots: bt-1" in out
    assert run(capsys, "snapshot", "delete", "bt-1", "--lake", root)[0] == 0
    code, _, err = run(capsys, "snapshot", "delete", "bt-1", "--lake", root)
    assert code == 2 and err.count("\n") == 1 and "no snapshot named" in err


def test_sql_reaches_nothing_outside_the_lake_unless_the_full_engine_is_asked_for(capsys, filled, tmp_path):
    root = str(filled.root)
    target = tmp_path / "out.csv"
    code, _, err = run(capsys, "sql", f"COPY (select 1) TO '{target}'", "--lake", root)
    assert code == 2 and "--full-engine" in err and not target.exists()
    code, _, err = run(capsys, "sql", "select * from read_text('/etc/hostname')", "--lake", root)
    assert code == 2 and err.count("\n") == 1
    code, _, _ = run(capsys, "sql", f"COPY (select 1 as x) TO '{target}'", "--full-engine", "--lake", root)
    assert code == 0 and target.exists()


def test_vacuum_dry_run_lists_and_deletes_nothing(capsys, filled):
    root = str(filled.root)
    filled.write_candles(candles(100).with_columns(pl.col("close") + 1), symbol="BTCUSDT", timeframe="1")
    code, out, _ = run(capsys, "vacuum", "--retention", "0", "--dry-run", "--json", "--lake", root)
    listed = json.loads(out)["files"]
    assert code == 0 and len(listed) == 1 and (filled.root / listed[0]).exists()
    code, out, _ = run(capsys, "vacuum", "--retention", "0", "--lake", root)
    assert code == 0 and not (filled.root / listed[0]).exists()
    assert Lake(filled.root, settings=Settings.load(environ={})).read_candles().height == 100


@pytest.mark.parametrize("bad", ["nan", "-1", "inf"])
def test_a_bad_vacuum_retention_is_one_line(capsys, filled, bad):
    code, _, err = run(capsys, "vacuum", "--retention", bad, "--lake", str(filled.root))
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err


def test_migrate_on_a_current_lake_is_a_no_op(capsys, filled):
    code, out, _ = run(capsys, "migrate", "--lake", str(filled.root))
    assert code == 0 and "nothing to do" in out
