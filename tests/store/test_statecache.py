"""The table-state cache gives exactly delta-rs's file list, or no answer."""

from __future__ import annotations

import polars as pl
from deltalake import DeltaTable

from marketlake.settings import Settings
from marketlake.store import Lake
from marketlake.store import statecache
from marketlake.store.table import _SNAPSHOT_SCHEMA, files_frame_from_actions
from tests.helpers import MINUTE, T0, candles


def _truth(lake: Lake, version: int) -> pl.DataFrame:
    return files_frame_from_actions(DeltaTable(str(lake.root / "candles"), version=version).get_add_actions(flatten=True))


def _fresh(lake: Lake) -> tuple[int, pl.DataFrame]:
    """What a new process gets: the cache plus the log entries after it."""
    hit = statecache.load(lake.storage, lake.storage.state_dir, "candles", _SNAPSHOT_SCHEMA)
    assert hit is not None
    return hit


def test_the_cached_file_list_equals_delta_rs_at_every_version(tmp_path):
    lake = Lake(tmp_path / "lake", settings=Settings.load(overrides={"compact_after_deltas": 3}, environ={}))
    df = candles(1440 * 70)
    lake.write_candles(df.head(1440 * 20), symbol="BTCUSDT", timeframe="1")
    lake.table("candles").snapshot()
    statecache.save(lake.storage, lake.storage.state_dir, "candles", lake.versions()["candles"], lake.snapshot("candles").files)
    steps = [
        lambda: lake.write_candles(df.slice(1440 * 20, 1440 * 30), symbol="BTCUSDT", timeframe="1"),
        lambda: lake.write_candles(df.slice(1440 * 50, 10), symbol="BTCUSDT", timeframe="1"),   # an appended file
        lambda: lake.write_candles(df.slice(1440 * 50 + 10, 10), symbol="BTCUSDT", timeframe="1"),  # folded
        lambda: lake.write_candles(df.slice(5, 5).with_columns(pl.col("close") + 1), symbol="BTCUSDT", timeframe="1"),
        lambda: lake.write_candles(candles(300, seed=2), symbol="ETHUSDT", timeframe="5"),
        lambda: lake.delete_candles(symbol="BTCUSDT", timeframe="1", ts=[T0 + MINUTE]),
        lambda: lake.compact(purge=False),
    ]
    for step in steps:
        step()
        v, files = _fresh(lake)
        assert v == lake.versions()["candles"]
        assert files.equals(_truth(lake, v)), f"differs at version {v}"


def test_a_commit_by_another_engine_is_replayed_too(tmp_path):
    import deltalake

    lake = Lake(tmp_path / "lake", settings=Settings.load(environ={}))
    lake.write_candles(candles(100), symbol="BTCUSDT", timeframe="1")
    statecache.save(lake.storage, lake.storage.state_dir, "candles", lake.versions()["candles"], lake.snapshot("candles").files)
    foreign = Lake(tmp_path / "other", settings=Settings.load(environ={}))
    foreign.write_candles(candles(50, start=T0 + 10**9), symbol="XRPUSDT", timeframe="1")
    data = pl.scan_delta(str(foreign.root / "candles")).collect().to_arrow()
    deltalake.write_deltalake(str(lake.root / "candles"), data, mode="append")  # delta-rs's own writer
    v, files = _fresh(lake)
    assert files.equals(_truth(lake, v)) and files.height == 2


def test_no_cache_or_a_damaged_one_gives_no_answer_and_readers_fall_back(tmp_path):
    lake = Lake(tmp_path / "lake", settings=Settings.load(environ={}))
    lake.write_candles(candles(100), symbol="BTCUSDT", timeframe="1")
    path = lake.root / "_meta" / "tablestate" / "candles.arrow"
    path.unlink(missing_ok=True)
    assert statecache.load(lake.storage, lake.storage.state_dir, "candles", _SNAPSHOT_SCHEMA) is None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not arrow at all")
    assert statecache.load(lake.storage, lake.storage.state_dir, "candles", _SNAPSHOT_SCHEMA) is None
    assert Lake(lake.root, settings=lake.settings).read_candles().height == 100


def test_a_cache_newer_than_the_log_is_not_trusted(tmp_path):
    lake = Lake(tmp_path / "lake", settings=Settings.load(environ={}))
    lake.write_candles(candles(100), symbol="BTCUSDT", timeframe="1")
    statecache.save(lake.storage, lake.storage.state_dir, "candles", 10**6, lake.snapshot("candles").files.head(0))
    assert statecache.load(lake.storage, lake.storage.state_dir, "candles", _SNAPSHOT_SCHEMA) is None
    assert Lake(lake.root, settings=lake.settings).read_candles().height == 100


def test_a_cache_of_a_table_deleted_and_created_again_is_not_trusted(tmp_path):
    import shutil

    lake = Lake(tmp_path / "lake", settings=Settings.load(environ={}))
    for i in range(3):
        lake.write_candles(candles(100, seed=i).with_columns(pl.col("close") + i), symbol="BTCUSDT", timeframe="1")
    statecache.save(lake.storage, lake.storage.state_dir, "candles", lake.versions()["candles"], lake.snapshot("candles").files)
    shutil.rmtree(lake.root / "candles")
    again = Lake(lake.root, settings=lake.settings)
    for i in range(5):
        again.write_candles(candles(10, seed=i), symbol="ETHUSDT", timeframe="1")
    fresh = Lake(lake.root, settings=lake.settings)
    assert fresh.read_candles("BTCUSDT").is_empty() and fresh.read_candles("ETHUSDT").height == 10


def test_vacuum_by_a_process_that_read_through_the_cache_deletes_no_referenced_file(tmp_path):
    settings = Settings.load(overrides={"gc_grace_seconds": 0}, environ={})
    lake = Lake(tmp_path / "lake", settings=settings)
    lake.write_candles(candles(100), symbol="BTCUSDT", timeframe="1")
    reader = Lake(lake.root, settings=settings)
    assert reader.read_candles().height == 100  # its delta-rs handle (if any) is at this version
    for i in range(3):
        lake.write_candles(candles(100, seed=i).with_columns(pl.col("close") + i), symbol="ETHUSDT", timeframe="1")
    assert reader.read_candles().height == 200  # through the cache and the log, not delta-rs
    reader.vacuum()
    assert Lake(lake.root, settings=settings).read_candles().height == 200
    assert Lake(lake.root, settings=settings).fsck().ok


def test_marketlake_writes_the_log_delta_rs_reads_and_checkpoints_every_100_versions(tmp_path):
    import threading

    from marketlake.store import logwriter

    lake = Lake(tmp_path / "lake", settings=Settings.load(overrides={"compact_after_deltas": 1000}, environ={}))
    for i in range(105):
        lake.write_candles(candles(1, start=T0 + i * MINUTE), symbol="BTCUSDT", timeframe="1")
    for t in threading.enumerate():
        if t.name.startswith("marketlake-checkpoint"):
            t.join(60)
    assert logwriter.last_checkpoint(lake.storage, "candles") >= 100
    table = DeltaTable(str(lake.root / "candles"))
    assert table.version() == lake.versions()["candles"] == 105
    assert table.history(1)[0]["marketlake.operation"] == "write_candles"
    assert pl.scan_delta(str(lake.root / "candles")).collect().height == 105
    assert _truth(lake, 105).equals(Lake(lake.root, settings=lake.settings).snapshot("candles").files)


def test_the_newest_version_is_found_by_galloping_probes_not_one_per_version(tmp_path):
    from marketlake.store.storage import LocalStorage

    storage = LocalStorage(tmp_path / "lake")
    for v in range(137):
        storage.put(f"candles/_delta_log/{v:020d}.json", b"{}\n")
    probes: list[str] = []
    real = storage.exists

    def counting(key: str) -> bool:
        probes.append(key)
        return real(key)

    storage.exists = counting  # type: ignore[method-assign]
    for known in (0, 1, 35, 100, 135, 136):
        probes.clear()
        assert statecache.latest_version(storage, "candles", known) == 136
        assert len(probes) <= 2 * (136 - known).bit_length() + 2, (known, len(probes))
