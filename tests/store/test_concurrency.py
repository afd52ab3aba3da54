"""Readers of every kind see one whole version while writers commit; threads lose nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

from marketlake.settings import Settings
from marketlake.store import Lake
from tests.fault._writers import MIN, T0, frame

ROOT = Path(__file__).resolve().parents[2]
REWRITES = int(os.environ.get("MARKETLAKE_TEST_RACE_REWRITES", "600"))
ROWS = 120

_REWRITER = r'''
import sys, numpy as np
from marketlake.settings import Settings
from marketlake.store import Lake
from tests.fault._writers import frame
lake = Lake(sys.argv[1], settings=Settings.load(environ={}))
minutes = np.arange(0, int(sys.argv[3]))
for k in range(1, int(sys.argv[2]) + 1):
    r = lake.write_candles(frame(minutes, float(k)), symbol="BTCUSDT", timeframe="1")
    assert r.rows_replaced == minutes.size
print("done", flush=True)
'''


def _check(df: pl.DataFrame, what: str, errors: list[str]) -> None:
    """One version: every row once, every row of the same rewrite (one value of close)."""
    if df.height != ROWS:
        errors.append(f"{what}: {df.height} rows")
    elif df["ts"].n_unique() != ROWS:
        errors.append(f"{what}: duplicated rows")
    elif df["close"].n_unique() != 1:
        errors.append(f"{what}: rows of two versions mixed")


def test_polars_duckdb_and_pyarrow_readers_racing_600_rewrites_see_whole_versions(tmp_path):
    from deltalake import DeltaTable

    root = tmp_path / "lake"
    lake = Lake(root, settings=Settings.load(environ={}))
    lake.write_candles(frame(np.arange(ROWS), 0.0), symbol="BTCUSDT", timeframe="1")
    writer = subprocess.Popen(
        [sys.executable, "-c", _REWRITER, str(root), str(REWRITES), str(ROWS)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    path = str(root / "candles")
    errors: list[str] = []
    reads = {"polars scan_delta": 0, "duckdb views": 0, "pyarrow dataset": 0, "Lake.read_candles": 0}
    con = lake.connect()
    try:
        while writer.poll() is None:
            try:
                _check(pl.scan_delta(path).filter(pl.col("symbol") == "BTCUSDT").collect(), "polars", errors)
                reads["polars scan_delta"] += 1
                lake.refresh(con)
                _check(con.sql("select ts, close from candles").pl(), "duckdb", errors)
                reads["duckdb views"] += 1
                _check(pl.from_arrow(DeltaTable(path).to_pyarrow_dataset().to_table()), "pyarrow", errors)  # type: ignore[arg-type]
                reads["pyarrow dataset"] += 1
                _check(lake.read_candles("BTCUSDT", "1"), "lake", errors)
                reads["Lake.read_candles"] += 1
            except (FileNotFoundError, OSError, duckdb.IOException, pl.exceptions.ComputeError) as exc:
                errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    finally:
        out, err = writer.communicate(timeout=600)
    assert writer.returncode == 0 and "done" in out, err[-2000:]
    assert errors == [], errors[:5]
    assert min(reads.values()) >= 5, reads
    final = lake.read_candles("BTCUSDT", "1")
    assert final.height == ROWS and final["close"].unique().to_list() == [float(REWRITES)]


def test_threads_with_their_own_lakes_writing_one_partition_lose_nothing(tmp_path):
    root = tmp_path / "lake"
    n_threads, batches = 6, 8
    errors: list[BaseException] = []

    def work(t: int) -> None:
        lake = Lake(root, settings=Settings.load(overrides={"compact_after_deltas": 3}, environ={}))
        try:
            for b in range(batches):
                minutes = np.arange(b * 100 + t, b * 100 + 100, n_threads)  # disjoint keys per thread
                lake.write_candles(frame(minutes, float(t)), symbol="BTCUSDT", timeframe="1")
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    got = Lake(root, settings=Settings.load(environ={})).read_candles("BTCUSDT", "1")
    minutes = ((got["ts"].dt.epoch("ms") - T0) // MIN).to_numpy()
    assert sorted(minutes.tolist()) == list(range(batches * 100))
    assert all(c == float(m % 100 % n_threads) for m, c in zip(minutes, got["close"].to_list()))


def test_threads_sharing_one_lake_object_lose_nothing(tmp_path):
    lake = Lake(tmp_path / "lake", settings=Settings.load(environ={}))
    syms = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]

    def work(i: int) -> None:
        for b in range(5):
            lake.write_candles(frame(np.arange(b * 50, b * 50 + 50), float(i)), symbol=syms[i], timeframe="1")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(syms))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    got = lake.read_candles(syms, "1")
    assert got.group_by("symbol").len().sort("symbol")["len"].to_list() == [250] * 4
