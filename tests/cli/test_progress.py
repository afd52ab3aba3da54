"""Progress of ``check`` and ``fsck``: the library's ``progress(done, total)`` callback, and the
bar the CLI draws on stderr only on a terminal or with ``--progress``, never in ``--json``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from marketlake.cli.app import main
from marketlake.quality.check import check_lake
from marketlake.store import Lake
from tests.helpers import T0, candles

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    lake = Lake(tmp_path / "lake")
    for i, symbol in enumerate(SYMBOLS):
        lake.write_candles(candles(120, seed=i), symbol=symbol, timeframe="1")
    lake.write_candles(candles(24, step=300_000, start=T0), symbol="BTCUSDT", timeframe="5")
    return lake


def test_check_lake_reports_progress_once_per_series(lake: Lake) -> None:
    calls: list[tuple[int, int]] = []
    result = check_lake(lake, progress=lambda done, total: calls.append((done, total)))
    assert len(result.series) == 4
    assert calls == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]


def test_check_and_fsck_draw_a_bar_on_stderr_only_when_asked_off_a_terminal(
    lake: Lake, capsys: pytest.CaptureFixture[str]
) -> None:
    root = str(lake.root)
    for argv, unit, total in ((["check", "--no-consistency"], "series", 4), (["fsck"], "files", None)):
        assert main([*argv, "--lake", root]) in (0, 1)
        quiet = capsys.readouterr()
        assert unit not in quiet.err and "\x1b[" not in quiet.err  # not a terminal: no bar

        assert main([*argv, "--progress", "--lake", root]) in (0, 1)
        shown = capsys.readouterr()
        assert unit in shown.err and "\x1b[" in shown.err
        if total is not None:
            assert f"{total}/{total}" in shown.err
        # stdout unchanged (but for the time taken, which differs run to run)
        untimed = lambda text: re.sub(r"in [0-9.]+ s \([0-9.]+ M/s\)", "", text.splitlines()[-1])  # noqa: E731
        assert untimed(shown.out) == untimed(quiet.out)

        # --json: stdout is the JSON alone; a bar only on request, and then on stderr.
        assert main([*argv, "--json", "--lake", root]) in (0, 1)
        plain = capsys.readouterr()
        json.loads(plain.out)
        assert plain.err == ""
        assert main([*argv, "--json", "--progress", "--lake", root]) in (0, 1)
        both = capsys.readouterr()
        json.loads(both.out)
        assert unit in both.err


def test_fsck_progress_counts_every_referenced_file(lake: Lake, capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[tuple[int, int]] = []
    report = lake.fsck(progress=lambda done, total: calls.append((done, total)))
    assert calls and calls[-1][0] == calls[-1][1] == report.files_checked
