"""``marketlake serve``: every kind of bad option is one line and the documented exit code, with
nothing bound and nothing created; ``--lake`` serves a lake of another exchange (``--exchange``)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from marketlake.cli.app import main
from marketlake.interop.csv import import_csv
from marketlake.settings import Settings
from marketlake.store import Lake

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def busy_port() -> object:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield s.getsockname()[1]


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["--port", "-1"], 2, "--port"),
        (["--port", "70000"], 2, "--port"),
        (["--host", "no.such.host.invalid"], 2, "--host"),
        (["--symbols", "0"], 2, "--symbols"),
        (["--symbols", "10000"], 2, "--symbols"),
        (["--symbols", "BTCUSDT,,ETHUSDT"], 2, "--symbols"),
        (["--symbols", "btc usdt"], 2, "symbol"),
        (["--speed", "-1"], 2, "--speed"),
        (["--speed", "nan"], 2, "--speed"),
        (["--speed", "inf"], 2, "--speed"),
        (["--speed", "1e300"], 2, "--speed"),
        (["--start", "yesterday-ish"], 2, "--start"),
        (["--exchange", "ftx"], 2, "--lake"),
        (["--lake", "{tmp}/no-such-lake"], 3, "no lake"),
        (["--port", "{busy}"], 2, "in use"),
    ],
)
def test_bad_serve_options_are_one_line_and_the_exit_code(
    args: list[str], code: int, needle: str, tmp_path: Path, busy_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["serve", "--port", "0", *[a.format(tmp=tmp_path, busy=busy_port) for a in args]]
    assert main(argv) == code
    out, err = capsys.readouterr()
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in out + err and "listening" not in out
    assert not (tmp_path / "no-such-lake").exists()  # serve never creates a lake


def _ftx_lake(tmp_path: Path, shared_dir: Path) -> Path:
    root = tmp_path / "lake"
    lake = Lake(root, settings=Settings.load(environ={}))
    real = shared_dir / "fixtures" / "real" / "btc-perp-20211231-20220201_1m.csv"
    assert import_csv(lake, [real], symbol="BTCPERP", timeframe="1", exchange="ftx").ok
    return root


def _serve(*args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "marketlake", "serve", "--port", "0", "--speed", "0", *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    line = proc.stdout.readline() if proc.stdout else ""
    return proc, line


def test_serve_lake_replays_a_lake_of_another_exchange(tmp_path: Path, shared_dir: Path) -> None:
    root = _ftx_lake(tmp_path, shared_dir)
    for extra in ((), ("--exchange", "ftx")):  # the only exchange stored is picked by default
        proc, line = _serve("--lake", str(root), *extra)
        try:
            assert "replaying ftx" in line and "listening on" in line, (line, proc.stderr.read() if proc.stderr else "")
            url = line.split("listening on ")[1].split()[0]
            q = "/v5/market/kline?category=linear&symbol=BTCPERP&interval=60&start=1641081600000&end=1641085200000"
            with urllib.request.urlopen(url + q, timeout=30) as resp:
                body = json.loads(resp.read())
            assert body["retCode"] == 0 and [r[0] for r in body["result"]["list"]] == ["1641085200000", "1641081600000"]
        finally:
            proc.terminate()
            proc.wait(30)
    assert main(["serve", "--port", "0", "--lake", str(root), "--exchange", "bybit"]) == 2
