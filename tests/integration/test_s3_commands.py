"""Every command works unchanged on a lake on S3: the same commands against a local lake and an
``s3://`` lake (moto's server on 127.0.0.1) give the same answers.

The S3 process reaches the store through the standard ``AWS_*`` variables only, as a user's
shell would; its own state (rate budget, ledger replica, table-state cache) lives in a state
directory of its own.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from marketlake.store import Lake
from tests.integration.emulated import emulator_thread
from tests.integration.live_support import SPEED

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(600)


def _run(env: dict[str, str], *args: str, ok: tuple[int, ...] = (0,)) -> str:
    p = subprocess.run([sys.executable, "-m", "marketlake", *args], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode in ok, f"marketlake {' '.join(args)} -> {p.returncode}\n{p.stderr[-2000:]}"
    assert "Traceback" not in p.stderr
    return p.stdout


def _session(env: dict[str, str], lake: str, url: str, out: Path) -> dict[str, object]:
    """One user's session; returns what each command answered (made comparable)."""
    got: dict[str, object] = {}
    _run(env, "ingest", "--symbols", "BTCUSDT,ETHUSDT", "--timeframes", "1,60", "--days", "5", "--base-url", url,
         "--lake", lake)
    _run(env, "archive", "--symbols", "BTCUSDT", "--start", "2024-06-25", "--end", "2024-06-27",
         "--candles", "5s", "--archive-url", url, "--base-url", url, "--lake", lake)
    _run(env, "ingest", "--symbols", "BTCUSDT", "--data", "funding,mark,oi", "--timeframes", "60", "--days", "5",
         "--base-url", url, "--lake", lake)
    info = json.loads(_run(env, "info", "--json", "--lake", lake))
    got["series"] = sorted((s["dataset"], s["symbol"], s["timeframe"], s["rows"]) for s in info["series"])
    got["info_table"] = _run(env, "info", "--lake", lake).replace(lake, "LAKE").count("\n")
    _run(env, "coverage", "--output", str(out.parent / f"{out.name}.png"), "--lake", lake)
    got["coverage_png"] = (out.parent / f"{out.name}.png").read_bytes()[:8]
    checked = json.loads(_run(env, "check", "--json", "--no-progress", "--lake", lake, ok=(0, 1)))
    checked.pop("seconds", None)  # (how long it took differs, of course)
    got["check"] = json.dumps(checked, sort_keys=True, default=str)
    _run(env, "repair", "--base-url", url, "--archive-url", url, "--lake", lake, ok=(0, 1))
    got["fsck"] = json.loads(_run(env, "fsck", "--json", "--no-progress", "--lake", lake))["issues"]
    _run(env, "compact", "--lake", lake)
    _run(env, "snapshot", "create", "before-more", "--note", "pinned", "--lake", lake)
    got["snapshots"] = [s["name"] for s in json.loads(_run(env, "snapshot", "list", "--json", "--lake", lake))]
    _run(env, "ingest", "--symbols", "ETHUSDT", "--timeframes", "5", "--days", "2", "--base-url", url, "--lake", lake)
    query = "select symbol, timeframe, count(*) n, sum(volume)::DECIMAL(38,4) v from candles group by all order by all"
    got["sql"] = _run(env, "sql", query, "--format", "csv", "--lake", lake)
    got["sql_as_of"] = _run(env, "sql", query, "--format", "csv", "--as-of", "before-more", "--lake", lake)
    got["funding_sql"] = _run(env, "sql", "select count(*) from funding", "--format", "csv", "--lake", lake)
    _run(env, "export-csv", str(out), "--symbols", "BTCUSDT", "--timeframes", "60", "--lake", lake)
    got["export"] = sorted((p.name, p.read_bytes()) for p in out.iterdir())
    got["runs"] = len(json.loads(_run(env, "runs", "--json", "--lake", lake)))
    return got


def test_every_command_answers_the_same_on_s3_as_on_a_local_lake(s3_server, tmp_path: Path) -> None:
    s3_lake = f"s3://{s3_server.new_bucket()}/lake"
    s3_env = {**s3_server.env(tmp_path / "state"), "MARKETLAKE_RATE_LIMIT_PER_5S": "500"}
    local_env = {**{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MARKETLAKE_"))},
                 "MARKETLAKE_RATE_LIMIT_PER_5S": "500"}
    with emulator_thread() as emu:
        (tmp_path / "out-local").mkdir()
        (tmp_path / "out-s3").mkdir()
        # The two sessions side by side (each command is a process of its own; the emulator
        # serves both the same market).
        with ThreadPoolExecutor(2) as pool:
            local_run = pool.submit(_session, local_env, str(tmp_path / "lake"), emu.url, tmp_path / "out-local")
            remote_run = pool.submit(_session, s3_env, s3_lake, emu.url, tmp_path / "out-s3")
            local, remote = local_run.result(), remote_run.result()
    assert remote == local
    assert local["fsck"] == [] and local["snapshots"] == ["before-more"] and local["export"]
    assert "ETHUSDT,5" not in local["sql_as_of"] and "ETHUSDT,5" in local["sql"]
    # Nothing of the S3 lake is on this machine but its own state.
    lake = Lake(s3_lake, settings=s3_server.settings(tmp_path / "state"))
    assert not any(p.suffix == ".parquet" and "candles" in p.parts for p in (tmp_path / "state").rglob("*"))
    assert lake.versions()["candles"] >= 3


def test_stream_writes_into_a_lake_on_s3_and_stops_cleanly(s3_server, tmp_path: Path) -> None:
    lake_url = f"s3://{s3_server.new_bucket()}/lake"
    env = {**s3_server.env(tmp_path / "state"), "MARKETLAKE_RATE_LIMIT_PER_5S": "500"}
    with emulator_thread(speed=SPEED) as emu:
        proc = subprocess.Popen(
            [sys.executable, "-m", "marketlake", "stream", "--symbols", "BTCUSDT", "--timeframes", "1,5s", "--trades",
             "--base-url", emu.url, "--lake", lake_url, "--flush-interval", "0.3", "--status-interval", "0.5"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        lake = Lake(lake_url, settings=s3_server.settings(tmp_path / "reader"))
        deadline = time.monotonic() + 60
        while lake.versions()["candles"] < 3 or lake.versions()["trades"] < 2:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "slow"
            time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "stream stopped" in out
        got = lake.read_candles("BTCUSDT", "1")
        want = emu.market.candles("BTCUSDT", "1", int(got["ts"].dt.epoch("ms").min()), int(got["ts"].dt.epoch("ms").max()))
        assert got.height >= 1 and got.select(want.columns).equals(want)
        assert lake.read_trades("BTCUSDT").get_column("trade_id").is_unique().all()
        assert lake.fsck().ok
        assert isinstance(lake.read_candles("BTCUSDT", "5s"), pl.DataFrame)
