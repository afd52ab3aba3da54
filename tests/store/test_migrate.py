"""``migrate`` turns a lake written by the previous (pre-Delta) release into Delta tables, row for
row, resumably after a SIGKILL, and is a no-op on a migrated lake.

The old lake is written by the previous release's own code (``git archive`` of the last commit
before the Delta store), run in a subprocess, so the test migrates exactly what users have.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from marketlake.errors import LakeError
from marketlake.settings import Settings
from marketlake.store import Lake
from marketlake.store.migrate import is_legacy_lake, migrate_lake

REPO = Path(__file__).resolve().parents[2]
PRE_DELTA_COMMIT = "833164a"  # the last release with the part-N/delta-N format

_PRELUDE = r'''
import sys
# Use the previous release's package, not the installed (editable) one.
sys.meta_path = [f for f in sys.meta_path if "editable" not in (getattr(f, "__module__", "") or "").lower()]
sys.path.insert(0, sys.argv.pop(1))
for name in [m for m in sys.modules if m == "marketlake" or m.startswith("marketlake.")]:
    del sys.modules[name]
'''

_WRITE_OLD_LAKE = _PRELUDE + r'''
import numpy as np, polars as pl
from marketlake.settings import Settings
from marketlake.store import Lake
root, truth = sys.argv[1], sys.argv[2]
lake = Lake(root, settings=Settings.load(overrides={"compact_after_deltas": 50}, environ={}))
T0 = 1_704_067_200_000
def candles(n, start, seed):
    rng = np.random.default_rng(seed)
    close = np.round(30000 + np.cumsum(rng.normal(0, 15, n)), 1)
    return pl.DataFrame({"ts": start + 60_000 * np.arange(n), "open": close, "high": close + 5,
                         "low": close - 5, "close": close, "volume": np.round(rng.gamma(1, 2, n), 3)})
for i, sym in enumerate(["BTCUSDT", "ETHUSDT", "SOLUSDT"]):
    df = candles(1440 * 45, T0, i)
    lake.write_candles(df.head(1440 * 30), symbol=sym, timeframe="1")
    for k in range(5):   # live-flush style appends: delta files
        lake.write_candles(df.slice(1440 * 30 + k * 1440, 1440), symbol=sym, timeframe="1")
    lake.write_candles(df.slice(100, 50).with_columns(pl.col("close") + 1), symbol=sym, timeframe="1")  # a rewrite
    lake.write_candles(candles(200, T0, 10 + i), symbol=sym, timeframe="60")
t = pl.DataFrame({"ts": [T0 + j * 1000 for j in range(500)], "price": [1.0 + j for j in range(500)],
                  "size": [0.5] * 500, "side": ["Buy", "Sell"] * 250, "trade_id": [f"id{j}" for j in range(500)]})
lake.write_trades(t, symbol="BTCUSDT")
lake.read_candles(exchange="bybit", category="linear").sort("symbol", "timeframe", "ts").write_parquet(truth + "/candles.parquet")
lake.read_trades().sort("symbol", "ts").write_parquet(truth + "/trades.parquet")
import marketlake.store.layout as layout
assert hasattr(layout, "live_files"), "not the previous release's code"
'''


@pytest.fixture(scope="module")
def old_code(tmp_path_factory) -> Path:
    """The previous release's ``marketlake`` package, extracted from git history."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("git history is needed to get the previous release's code")
    dest = tmp_path_factory.mktemp("old_code")
    archive = subprocess.run(["git", "-C", str(REPO), "archive", PRE_DELTA_COMMIT, "marketlake"],
                             capture_output=True, check=False)
    if archive.returncode != 0:
        pytest.skip(f"commit {PRE_DELTA_COMMIT} is not in this clone's history (shallow clone?)")
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


@pytest.fixture(scope="module")
def old_lake(old_code, tmp_path_factory) -> tuple[Path, Path]:
    """A lake written by the previous release, and what that release read back from it."""
    base = tmp_path_factory.mktemp("old_lake")
    root, truth = base / "lake", base / "truth"
    truth.mkdir()
    subprocess.run([sys.executable, "-c", _WRITE_OLD_LAKE, str(old_code), str(root), str(truth)], check=True, timeout=300)
    return root, truth


def _read_all(root: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    lake = Lake(root, settings=Settings.load(environ={}))
    c = lake.read_candles().sort("symbol", "timeframe", "ts")
    t = lake.read_trades().sort("symbol", "ts")
    return c, t


def _equal_to_truth(root: Path, truth: Path) -> None:
    c, t = _read_all(root)
    want_c = pl.read_parquet(truth / "candles.parquet")
    want_t = pl.read_parquet(truth / "trades.parquet")
    assert c.select(want_c.columns).equals(want_c)
    assert t.select(want_t.columns).equals(want_t)


def test_a_lake_of_the_previous_format_is_refused_with_the_command_that_converts_it(old_lake, tmp_path):
    root = tmp_path / "lake"
    shutil.copytree(old_lake[0], root)
    assert is_legacy_lake(root)
    with pytest.raises(LakeError, match="marketlake migrate"):
        Lake(root, settings=Settings.load(environ={})).read_candles()


def test_migration_keeps_every_row_and_removes_the_old_bookkeeping(old_lake, tmp_path):
    root = tmp_path / "lake"
    shutil.copytree(old_lake[0], root)
    assert (root / "_meta" / "trash").is_dir()
    report = migrate_lake(root)
    assert report.datasets == ["candles", "trades"] and report.files_folded == 3  # the 3 1m partitions with deltas
    assert not is_legacy_lake(root)
    _equal_to_truth(root, old_lake[1])
    assert not (root / "_meta" / "trash").exists() and not (root / "_meta" / "filestats.sqlite").exists()
    names = {p.name for p in (root / "candles").rglob("*.parquet") if "_delta_log" not in p.parts}
    assert not [n for n in names if n.startswith("delta-")]  # folded deltas are gone
    lake = Lake(root, settings=Settings.load(environ={}))
    assert lake.fsck().ok
    before = lake.versions()
    again = migrate_lake(root)
    assert not again.changed and Lake(root, settings=Settings.load(environ={})).versions() == before


def test_migration_resumes_after_a_sigkill_at_any_moment(old_lake, tmp_path):
    rng = random.Random(7)
    root = tmp_path / "lake"
    shutil.copytree(old_lake[0], root)
    code = "import sys; from pathlib import Path; from marketlake.store.migrate import migrate_lake; migrate_lake(Path(sys.argv[1]))"
    rounds = int(os.environ.get("MARKETLAKE_TEST_MIGRATE_KILL_ROUNDS", "3"))
    for _ in range(rounds):
        proc = subprocess.Popen([sys.executable, "-c", code, str(root)])
        time.sleep(rng.uniform(0.5, 3.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # Whatever the moment, the lake is either still the old lake or already the new one.
        if is_legacy_lake(root):
            assert not (root / "candles" / "_delta_log").exists() or not (root / "trades" / "_delta_log").exists()
    migrate_lake(root)
    _equal_to_truth(root, old_lake[1])
    assert Lake(root, settings=Settings.load(environ={})).fsck().ok
