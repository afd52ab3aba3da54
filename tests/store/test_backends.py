"""One behaviour suite, every backend: a local directory and a bucket of a real S3 server.

Every test here takes ``any_lake`` (tests/conftest.py), so it runs against the local lake and
against ``s3://bucket/lake`` on moto's S3 server (a separate process on 127.0.0.1). The lake
must behave the same on both: the same writes commit the same versions, readers see one
version, snapshots pin, fsck finds the same damage, the ledger is shared by every writer.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from marketlake.errors import LakeError
from marketlake.feeder import DataFeeder
from marketlake.store import Lake
from marketlake.store.layout import SeriesId
from marketlake.store.s3 import S3Storage
from tests.helpers import MINUTE, T0, candles, stored

DAY = 1440 * MINUTE


def _twin(lake: Lake, state: Path) -> Lake:
    """The same lake opened by another machine: its own state directory (no shared local file)."""
    settings = lake.settings.replace(state_dir=str(state))
    return Lake(lake.root if isinstance(lake.storage, S3Storage) else lake.storage.root, settings=settings)


def test_candles_written_read_back_identically_and_a_rewrite_commits_nothing(any_lake: Lake) -> None:
    df = candles(3 * 1440)
    first = any_lake.write_candles(df, symbol="BTCUSDT", timeframe="1")
    assert first.rows_new == df.height and first.version == 1
    want = stored(df)
    assert any_lake.read_candles("BTCUSDT", "1").select(want.columns).equals(want)
    again = any_lake.write_candles(df, symbol="BTCUSDT", timeframe="1")
    assert again.rows_unchanged == df.height and again.files_written == 0 and again.version is None
    assert any_lake.versions()["candles"] == 1


def test_a_scan_plans_its_files_from_the_log_and_filters_by_time(any_lake: Lake) -> None:
    any_lake.write_candles(candles(40 * 1440), symbol="BTCUSDT", timeframe="1")
    any_lake.write_candles(candles(10 * 1440, seed=2), symbol="ETHUSDT", timeframe="1")
    parts = any_lake.plan_files("candles", any_lake.find_series("candles", symbols=["BTCUSDT"]), T0, T0 + DAY)
    assert [p.key for p in parts] == ["2024-01"] and all(f.startswith(any_lake.storage.uri("candles")) for p in parts for f in p.files)
    got = any_lake.scan_candles("BTCUSDT", "1", start=T0 + 5 * MINUTE, end=T0 + 15 * MINUTE).collect()
    assert got.height == 10


def test_sql_views_read_the_lake_and_refuse_the_outside(any_lake: Lake) -> None:
    any_lake.write_candles(candles(1440), symbol="BTCUSDT", timeframe="1")
    any_lake.write_candles(candles(720, seed=1), symbol="ETHUSDT", timeframe="1")
    got = any_lake.sql("select symbol, count(*) n from candles group by 1 order by 1")
    assert got.to_dicts() == [{"symbol": "BTCUSDT", "n": 1440}, {"symbol": "ETHUSDT", "n": 720}]
    with pytest.raises(Exception, match="refused|not allowed|Permission"):
        any_lake.sql("select * from read_text('/etc/hostname')")


def test_a_named_snapshot_pins_the_inputs_after_later_writes(any_lake: Lake) -> None:
    any_lake.write_candles(candles(1440), symbol="BTCUSDT", timeframe="1")
    any_lake.create_snapshot("bt-1", note="before")
    any_lake.write_candles(candles(1440, seed=9), symbol="BTCUSDT", timeframe="1")  # every close changes
    pinned = Lake(any_lake.root, settings=any_lake.settings, as_of="bt-1")
    want = stored(candles(1440))
    assert pinned.read_candles("BTCUSDT", "1").select(want.columns).equals(want)
    assert [s.name for s in any_lake.snapshots()] == ["bt-1"]
    any_lake.vacuum(retention_s=0)
    assert pinned.read_candles("BTCUSDT", "1").height == 1440  # a snapshot's files are never vacuumed
    any_lake.delete_snapshot("bt-1")
    assert any_lake.snapshots() == []


def test_an_old_version_reads_as_it_was(any_lake: Lake) -> None:
    any_lake.write_candles(candles(100), symbol="BTCUSDT", timeframe="1")
    any_lake.write_candles(candles(100, start=T0 + 100 * MINUTE), symbol="BTCUSDT", timeframe="1")
    assert Lake(any_lake.root, settings=any_lake.settings, as_of=1).read_candles("BTCUSDT", "1").height == 100
    assert any_lake.read_candles("BTCUSDT", "1").height == 200


def test_fsck_finds_a_missing_file_and_an_orphan_and_fix_keeps_the_young_orphan(any_lake: Lake) -> None:
    any_lake.write_candles(candles(100), symbol="BTCUSDT", timeframe="1")
    any_lake.write_candles(candles(100), symbol="ETHUSDT", timeframe="1")
    assert any_lake.fsck().ok
    storage = any_lake.storage
    eth = [f for f in any_lake.snapshot("candles").files.get_column("path").to_list() if "ETHUSDT" in f][0]
    storage.delete(f"candles/{eth}")
    storage.put("candles/exchange=bybit/category=linear/symbol=XRPUSDT/timeframe=1/date=2024-01/part-x.parquet", b"junk")
    kinds = sorted(i.kind for i in any_lake.fsck().issues)
    assert kinds == ["missing", "orphan"]
    report = any_lake.fsck(fix=True)
    assert sorted((i.kind, i.fixed) for i in report.issues) == [("missing", True), ("orphan", False)]
    assert any_lake.read_candles("BTCUSDT", "1").height == 100 and any_lake.find_series("candles", symbols=["ETHUSDT"]) == []


def test_writers_racing_on_one_partition_lose_nothing(any_lake: Lake) -> None:
    any_lake.write_candles(candles(10), symbol="BTCUSDT", timeframe="1")
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            lake = Lake(any_lake.root, settings=any_lake.settings)  # a writer of its own
            lake.write_candles(candles(5, start=T0 + (10 + 5 * i) * MINUTE, seed=i), symbol="BTCUSDT", timeframe="1")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    got = any_lake.read_candles("BTCUSDT", "1")
    assert got.height == 40 and got.get_column("ts").is_unique().all()
    assert any_lake.versions()["candles"] == 7 and any_lake.fsck().ok


def test_the_ledger_is_shared_by_machines_with_their_own_state(any_lake: Lake, tmp_path: Path) -> None:
    sid = SeriesId.of("candles", exchange="bybit", category="linear", symbol="BTCUSDT", timeframe="1")
    any_lake.ledger.record(sid, T0, T0 + DAY, "present")
    other = _twin(any_lake, tmp_path / "machine-2")
    assert other.ledger.missing(sid, T0, T0 + 2 * DAY) == [(T0 + DAY, T0 + 2 * DAY)]
    other.ledger.record(sid, T0 + DAY, T0 + 2 * DAY, "empty")
    assert any_lake.ledger.missing(sid, T0, T0 + 2 * DAY) == []
    run = other.ledger.start_run("ingest", {"symbols": "BTCUSDT"})
    other.ledger.finish_run(run, "ok", {"rows": 1})
    assert any_lake.ledger.runs()["status"].to_list() == ["ok"]
    assert any_lake.ledger.table().height == other.ledger.table().height == 2


def test_the_data_feeder_answers_point_lookups_without_lookahead(any_lake: Lake) -> None:
    any_lake.write_candles(candles(600), symbol="BTCUSDT", timeframe="1")
    feeder = DataFeeder(any_lake)
    at = feeder.get_data_at_timestamp("BTCUSDT", "1", T0 + 100 * MINUTE)
    assert at is not None and at["timestamp_ms"] == T0 + 100 * MINUTE
    known = feeder.get_multi_timeframe_data("BTCUSDT", ["1"], T0 + 100 * MINUTE + 30_000)
    assert known is not None and known["1"]["timestamp_ms"] == T0 + 99 * MINUTE  # the last closed one


def test_a_read_only_lake_as_of_refuses_writes(any_lake: Lake) -> None:
    any_lake.write_candles(candles(10), symbol="BTCUSDT", timeframe="1")
    pinned = Lake(any_lake.root, settings=any_lake.settings, as_of=1)
    with pytest.raises(LakeError, match="read-only"):
        pinned.write_candles(candles(10), symbol="BTCUSDT", timeframe="1")


def test_a_fresh_reader_plans_from_the_log_and_never_lists_the_data(any_lake: Lake, monkeypatch) -> None:
    for i, sym in enumerate(("BTCUSDT", "ETHUSDT", "XRPUSDT")):
        any_lake.write_candles(candles(3 * 1440, seed=i), symbol=sym, timeframe="1")
    listed: list[str] = []
    kind = type(any_lake.storage)
    real_list = kind.list

    def spy(self, prefix: str):  # type: ignore[no-untyped-def]
        listed.append(prefix)
        return real_list(self, prefix)

    monkeypatch.setattr(kind, "list", spy)
    fresh = Lake(any_lake.root, settings=any_lake.settings)  # another reader, the cache on this machine
    got = fresh.scan_candles("ETHUSDT", "1", start=T0 + DAY, end=T0 + 2 * DAY).collect()
    assert got.height == 1440
    assert [p for p in listed if "_delta_log" not in p] == []  # no partition was ever listed
    assert listed == []  # and with the table-state cache, not even the log


def test_a_checkpoint_is_written_every_hundred_commits_and_readers_use_it(any_lake: Lake, tmp_path: Path) -> None:
    from marketlake.store import logwriter

    for i in range(101):
        any_lake.write_candles(candles(1, start=T0 + i * MINUTE, seed=i), symbol="BTCUSDT", timeframe="1")
    deadline = time.monotonic() + 60
    while logwriter.last_checkpoint(any_lake.storage, "candles") < 100:  # (written in the background)
        assert time.monotonic() < deadline, "no checkpoint"
        time.sleep(0.2)
    # A machine with no cached state opens the table from the checkpoint (delta-rs) and agrees.
    other = _twin(any_lake, tmp_path / "cold-machine")
    assert other.versions()["candles"] == 101 and other.read_candles("BTCUSDT", "1").height == 101
    assert Lake(any_lake.root, settings=any_lake.settings, as_of=50).read_candles("BTCUSDT", "1").height == 50


def test_a_table_another_engine_upgraded_is_written_through_delta_rs(any_lake: Lake) -> None:
    import deltalake
    from deltalake import TableFeatures

    any_lake.write_candles(candles(10), symbol="BTCUSDT", timeframe="1")
    foreign = deltalake.DeltaTable(str(any_lake.table("candles").path), storage_options=any_lake.storage.delta_options())
    foreign.alter.add_feature(TableFeatures.AppendOnly, allow_protocol_versions_increase=True)
    lake = Lake(any_lake.root, settings=any_lake.settings)  # a writer that finds the new protocol
    result = lake.write_candles(candles(10, start=T0 + 10 * MINUTE), symbol="BTCUSDT", timeframe="1")
    assert lake.table("candles")._plain is False  # not marketlake's own log writer: delta-rs's
    assert result.version == 3 and lake.read_candles("BTCUSDT", "1").height == 20 and lake.fsck().ok
    assert deltalake.DeltaTable(str(lake.table("candles").path),
                                storage_options=lake.storage.delta_options()).version() == 3


def test_an_unwritable_state_directory_is_one_clear_error_for_a_remote_lake(s3_server, tmp_path: Path) -> None:
    lake = Lake(f"s3://{s3_server.new_bucket()}/lake", settings=s3_server.settings(Path("/proc/no-such-dir")))
    lake.write_candles(candles(10), symbol="BTCUSDT", timeframe="1")  # (the table-state cache is optional)
    with pytest.raises(LakeError, match="replica of the ledger .* MARKETLAKE_STATE_DIR"):
        _ = lake.ledger
    assert lake.read_candles("BTCUSDT", "1").height == 10


def test_a_new_machine_starts_its_ledger_replica_from_the_shared_checkpoint(s3_server, tmp_path: Path, monkeypatch) -> None:
    from marketlake.store import sharedledger

    monkeypatch.setattr(sharedledger, "CHECKPOINT_EVERY", 5)
    lake = Lake(f"s3://{s3_server.new_bucket()}/lake", settings=s3_server.settings(tmp_path / "m1"))
    sid = SeriesId.of("candles", exchange="bybit", category="linear", symbol="BTCUSDT", timeframe="1")
    for i in range(7):  # versions 0..6: a checkpoint at 5
        lake.ledger.record(sid, T0 + i * DAY, T0 + (i + 1) * DAY, "present" if i % 2 == 0 else "empty")
    assert lake.storage.exists("_meta/ledger/checkpoints/00000000000000000005.sqlite")
    read: list[str] = []
    real_read = type(lake.storage).read

    def spy(self, key: str) -> bytes:  # type: ignore[no-untyped-def]
        read.append(key)
        return real_read(self, key)

    monkeypatch.setattr(type(lake.storage), "read", spy)
    other = _twin(lake, tmp_path / "m2")
    assert other.ledger.table().drop("updated_ms").equals(lake.ledger.table().drop("updated_ms"))
    entries = [k for k in read if k.startswith("_meta/ledger/0")]
    assert entries and all(int(k.rsplit("/", 1)[1][:20]) > 5 for k in entries)  # replayed only after it
    assert other.ledger.missing(sid, T0, T0 + 7 * DAY) == []
