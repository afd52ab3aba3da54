"""Batch work on a Dask cluster (real ``LocalCluster``, 2 worker processes) equals the same work in
one process: archive ingest, candles from stored trades, check; a worker SIGKILLed mid-run changes
nothing of the result; bad cluster flags are one line and exit status 2."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from marketlake.cli.app import main
from marketlake.cluster import (
    ClusterSpec,
    archive_on_cluster,
    build_candles_on_cluster,
    check_on_cluster,
    day_major,
    open_client,
    parse_cluster,
)
from marketlake.core.candles import candles_from_trades
from marketlake.errors import ConfigError
from marketlake.ingest.archive import candle_timeframes, day_bounds, run_archive_ingest
from marketlake.ingest.build import build_candles
from marketlake.ingest.service import IngestRequest, run_ingest
from marketlake.quality.check import check_lake
from marketlake.settings import Settings
from marketlake.store import Lake
from marketlake.store.layout import TRADES, SeriesId
from marketlake.store.ledger import Status
from marketlake_emulator import BybitEmulator
from tests.integration.emulated import client_for, emulator_thread

SYMBOLS = ["BTCUSDT", "ETHUSDT"]
# [start, end): the emulator's clock stands at 2024-07-03 09:46, so 07-03 is not published yet.
START, END = dt.date(2024, 6, 30), dt.date(2024, 7, 4)
TODAY = dt.date(2024, 7, 5)
TRADE_KEYS = ["ts", "price", "size", "side", "trade_id", "tick_direction", "is_block_trade"]
LEDGER_KEYS = ["dataset", "exchange", "category", "symbol", "timeframe", "start_ms", "end_ms", "status", "detail"]
COUNTS = ("symbols", "days_planned", "days_fetched", "days_empty", "days_unpublished", "days_failed", "days_rebuilt",
          "trades_new", "trades_replaced", "trades_unchanged", "trades_deleted", "candles_written",
          "bytes_downloaded", "requests", "retries")


@pytest.fixture(scope="module")
def emu() -> Iterator[BybitEmulator]:
    with emulator_thread() as emulator:
        yield emulator


@pytest.fixture(scope="module")
def client() -> Iterator[object]:
    with open_client(ClusterSpec(workers=2)) as c:
        c.wait_for_workers(2, timeout=60)
        yield c


def settings_for(root: Path, emu: BybitEmulator) -> Settings:
    return Settings.load(overrides={"lake_root": str(root), "archive_url": emu.url, "base_url": emu.url}, environ={})


def lake_content(lake: Lake) -> dict[str, pl.DataFrame]:
    """Every stored row (trades and candles of every series) and the ledger's coverage."""
    out = {}
    for row in lake.series().iter_rows(named=True):
        key = "/".join(str(row[k]) for k in ("dataset", "category", "symbol", "timeframe") if row.get(k) is not None)
        if row["dataset"] == "trades":
            out[key] = lake.read_trades(row["symbol"], category=row["category"]).select(TRADE_KEYS)
        elif row["dataset"] == "candles":
            out[key] = lake.read_candles(row["symbol"], row["timeframe"], category=row["category"])
    out["ledger"] = lake.ledger.table().select(LEDGER_KEYS)
    return out


def assert_same_lake(a: Lake, b: Lake) -> None:
    want, got = lake_content(a), lake_content(b)
    assert sorted(got) == sorted(want)
    for key, frame in want.items():
        assert got[key].equals(frame), key


def truth_trades(emu: BybitEmulator, symbol: str, start: dt.date, end: dt.date) -> pl.DataFrame:
    a, b = day_bounds(start)[0], day_bounds(end)[0]
    return emu.market.trades(symbol, a, b, category="linear").select(["ts", "price", "size", "side", "trade_id"])


def archive_alone(root: Path, emu: BybitEmulator, candles: str = "1s,5s", end: dt.date = END):
    lake = Lake(root, settings=settings_for(root, emu))
    plans, st = asyncio.run(run_archive_ingest(
        lake, SYMBOLS, category="linear", start=START, end=end, today=TODAY, base_url=emu.url,
        candles=candle_timeframes(candles),
    ))
    return lake, plans, st


@pytest.fixture(scope="module")
def trades_lake(tmp_path_factory: pytest.TempPathFactory, emu: BybitEmulator) -> Path:
    """A lake holding the archive days (trades only), made once; tests copy it."""
    root = tmp_path_factory.mktemp("trades") / "lake"
    archive_alone(root, emu, candles="")
    return root


def test_cluster_flags_parse_to_a_spec_or_one_config_error() -> None:
    assert parse_cluster(None, None) is None
    assert parse_cluster("local:3", None) == ClusterSpec(workers=3)
    assert parse_cluster(None, "tcp://10.0.0.5:8786") == ClusterSpec(address="tcp://10.0.0.5:8786")
    assert parse_cluster(None, "tcp://[::1]:8786").address == "tcp://[::1]:8786"  # type: ignore[union-attr]
    for spec, scheduler in [("local:0", None), ("local:65", None), ("local:x", None), ("foo", None), ("local:", None),
                            (None, "http://h:1"), (None, "tcp://h"), (None, "tcp://h:0"), (None, "tcp://h:99999"),
                            (None, "tcp://h:1/path"), ("local:2", "tcp://h:1")]:
        with pytest.raises(ConfigError) as err:
            parse_cluster(spec, scheduler)
        assert err.value.exit_code == 2 and "\n" not in str(err.value)


def test_tasks_go_out_day_by_day_across_symbols_and_stored_days_first() -> None:
    d1, d2 = dt.date(2024, 7, 1), dt.date(2024, 7, 2)
    # plan order: symbol A's days, then symbol B's; the workers get A d1, B d1, A d2, B d2
    assert day_major([d1, d2, d1, d2]) == [0, -2, -1, -3]
    assert day_major([d2, d1, d1], first=[False, False, True]) == [-2, -1, 0]


def test_help_and_bad_cluster_flags_never_import_dask() -> None:
    import subprocess
    import sys

    probe = (
        "import sys\nfrom marketlake.cli.app import main\n"
        "for args in (['--help'], ['archive', '--help'], ['check', '--help'], ['build-candles', '--help'],"
        " ['check', '--cluster', 'local:0']):\n"
        "    try:\n        main(args)\n    except SystemExit:\n        pass\n"
        "print('LOADED=' + ','.join(m for m in ('dask', 'distributed') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.rstrip().splitlines()[-1] == "LOADED="


def test_archive_on_the_cluster_equals_the_single_process_run(tmp_path, emu, client) -> None:
    alone, plans_alone, st_alone = archive_alone(tmp_path / "alone", emu)
    root = tmp_path / "cluster"
    seen: list[tuple[int, int]] = []
    plans, st = archive_on_cluster(
        client, str(root), settings_for(root, emu), SYMBOLS, category="linear", start=START, end=END, today=TODAY,
        candles=candle_timeframes("1s,5s"), progress=lambda done, total: seen.append((done, total)),
    )
    assert plans == plans_alone
    assert st_alone is not None and st_alone.days_fetched == 6 and st_alone.days_unpublished == 2
    assert {k: getattr(st, k) for k in COUNTS} == {k: getattr(st_alone, k) for k in COUNTS}
    assert sorted(st.notices) == sorted(st_alone.notices) and st.failures == st_alone.failures == []
    assert seen == [(i, 6) for i in range(7)]  # the 6 published days were the tasks
    on_cluster = Lake(root)
    assert_same_lake(alone, on_cluster)
    for symbol in SYMBOLS:  # and both are the exchange's trades
        got = on_cluster.read_trades(symbol).select(["ts", "price", "size", "side", "trade_id"])
        assert got.equals(truth_trades(emu, symbol, START, dt.date(2024, 7, 3)))
    runs = on_cluster.ledger.runs()
    assert runs.get_column("kind").to_list() == ["archive"] and runs.get_column("status").to_list() == ["ok"]
    # A second run finds nothing to do: no task, no download.
    _, again = archive_on_cluster(client, str(root), settings_for(root, emu), SYMBOLS, category="linear",
                                  start=START, end=dt.date(2024, 7, 3), today=TODAY, candles=candle_timeframes("1s,5s"))
    assert (again.days_planned, again.requests) == (0, 0)


def test_build_candles_on_the_cluster_equals_the_single_process_build(tmp_path, trades_lake, emu, client) -> None:
    roots = [tmp_path / "alone", tmp_path / "cluster"]
    for root in roots:
        shutil.copytree(trades_lake, root)
        # One day's trades are no longer known complete: skipped (and named) by both.
        sid = SeriesId.of(TRADES, exchange="bybit", category="linear", symbol="ETHUSDT")
        Lake(root).ledger.forget(sid, *day_bounds(dt.date(2024, 7, 1)))
    kw = {"start": START, "end": END, "category": "linear", "today": TODAY}
    alone = Lake(roots[0], settings=settings_for(roots[0], emu))
    plans_alone, st_alone = build_candles(alone, SYMBOLS, "1s,15s", **kw)  # type: ignore[arg-type]
    seen: list[tuple[int, int]] = []
    plans, st = build_candles_on_cluster(client, str(roots[1]), settings_for(roots[1], emu), SYMBOLS, "1s,15s",
                                         progress=lambda d, t: seen.append((d, t)), **kw)  # type: ignore[arg-type]
    assert plans == plans_alone
    assert (st_alone.days_planned, st_alone.days_built, st_alone.days_incomplete) == (5, 5, 3)
    skip = {k: v for k, v in st.to_dict().items() if k != "elapsed"}
    assert skip == {k: v for k, v in st_alone.to_dict().items() if k != "elapsed"}
    assert any("ETHUSDT: 2 day(s) skipped" in n and "marketlake archive" in n for n in st.notices)
    assert seen[0] == (0, 5) and seen[-1] == (5, 5) and len(seen) == 6
    built = Lake(roots[1])
    assert_same_lake(alone, built)
    day_trades = built.read_trades("BTCUSDT", *day_bounds(START))
    want = candles_from_trades(day_trades, "15s")
    got = built.read_candles("BTCUSDT", "15s", *day_bounds(START)).drop("symbol", "timeframe", "filled")
    assert got.equals(want.select(got.columns))
    runs = built.ledger.runs().filter(pl.col("kind") == "build-candles")
    assert runs.get_column("status").to_list() == ["ok"]


def damaged_lake(root: Path, emu: BybitEmulator, trades_lake: Path) -> Lake:
    """Klines (1m, 5m) from REST, 5s candles from archive trades, then gaps, invalid and
    misaligned candles and trades lost while streaming planted."""
    shutil.copytree(trades_lake, root)
    lake = Lake(root, settings=settings_for(root, emu))
    build_candles(lake, SYMBOLS, "5s", start=START, end=END, category="linear", today=TODAY)

    async def klines() -> None:
        async with client_for(emu.url, lake) as rest:
            await run_ingest(lake, rest, IngestRequest.of(symbols=",".join(SYMBOLS), timeframes="1,5", days=2))

    asyncio.run(klines())
    minute = 60_000
    t = day_bounds(dt.date(2024, 7, 2))[0] + 3 * 3_600_000
    lake.delete_candles(symbol="BTCUSDT", timeframe="1", start=t, end=t + 7 * minute)
    row = lake.read_candles("BTCUSDT", "1", t + 3_600_000, t + 3_600_000 + 2 * minute).drop("symbol", "timeframe")
    lake.write_candles(row.with_columns(pl.col("low") + 1e6), symbol="BTCUSDT", timeframe="1")
    lake.write_candles(row.head(1).with_columns(pl.col("ts") + pl.duration(seconds=30)), symbol="BTCUSDT", timeframe="1")
    s1 = day_bounds(START)[0] + 5_000_000
    lake.delete_candles(symbol="ETHUSDT", timeframe="5s", start=s1, end=s1 + 300_000)
    sid = SeriesId.of(TRADES, exchange="bybit", category="linear", symbol="ETHUSDT")
    lost = day_bounds(dt.date(2024, 7, 3))[0]  # (a failed range never overrides a present one)
    lake.ledger.record(sid, lost, lost + 7_200_000, Status.FAILED, detail="test: lost while streaming")
    return lake


def comparable(report: dict) -> dict:
    return {k: v for k, v in report.items() if k != "seconds"}


def test_check_on_the_cluster_gives_the_same_report_as_check_alone(tmp_path, trades_lake, emu, client) -> None:
    lake = damaged_lake(tmp_path / "lake", emu, trades_lake)
    alone = check_lake(lake)
    assert alone.has_issues and alone.trade_gaps
    btc1 = next(s for s in alone.series if s.sid.label() == "bybit/linear/BTCUSDT/1")
    assert [g.missing_candles for g in btc1.unexplained] == [7] and btc1.result.invalid_count == 2
    assert any(s.unexplained for s in alone.series if s.sid.label() == "bybit/linear/ETHUSDT/5s")
    assert any(s.consistency is not None for s in alone.series)  # 5m compared with the 1m resample
    seen: list[tuple[int, int]] = []
    on_cluster = check_on_cluster(client, str(lake.root), lake.settings, progress=lambda d, t: seen.append((d, t)))
    assert comparable(on_cluster.to_dict()) == comparable(alone.to_dict())
    assert on_cluster.report() == alone.report()
    assert seen == [(i, len(alone.series)) for i in range(len(alone.series) + 1)]
    filtered = check_on_cluster(client, str(lake.root), lake.settings, "ETHUSDT", "1,5s", consistency=False)
    assert comparable(filtered.to_dict()) == comparable(check_lake(lake, "ETHUSDT", "1,5s", consistency=False).to_dict())


def test_a_worker_killed_mid_run_changes_nothing_of_the_lake(tmp_path, emu, client) -> None:
    root = tmp_path / "lake"
    pids_before = set(client.run(os.getpid).values())  # type: ignore[attr-defined]
    killed: list[int] = []

    def kill_a_busy_worker(done: int, total: int) -> None:
        if done != 1 or killed:
            return
        busy = [addr for addr, keys in client.processing().items() if keys]  # type: ignore[attr-defined]
        pid = client.run(os.getpid, workers=busy[:1])[busy[0]]  # type: ignore[attr-defined]
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    end = dt.date(2024, 7, 3)
    emu.control.configure(p_slow=1.0, slow_seconds=0.4, paths=["/archive"])  # every download takes a while
    try:
        plans, st = archive_on_cluster(
            client, str(root), settings_for(root, emu), SYMBOLS, category="linear", start=START, end=end,
            today=TODAY, candles=candle_timeframes("1s"), progress=kill_a_busy_worker,
        )
    finally:
        emu.control.configure(p_slow=0.0)
    assert killed and killed[0] in pids_before
    client.wait_for_workers(2, timeout=60)  # type: ignore[attr-defined]
    assert killed[0] not in set(client.run(os.getpid).values())  # type: ignore[attr-defined]  (restarted)
    assert (st.days_fetched, st.days_failed, st.failures) == (6, 0, [])
    lake = Lake(root)
    for symbol in SYMBOLS:
        want = truth_trades(emu, symbol, START, end)
        assert lake.read_trades(symbol).select(want.columns).equals(want)
        got = lake.read_candles(symbol, "1s").drop("symbol", "timeframe", "filled")
        assert got.equals(candles_from_trades(want, "1s").select(got.columns))
    # A day the killed worker had committed was re-written by its re-run: nothing new to commit.
    assert st.trades_new + st.trades_unchanged == sum(truth_trades(emu, s, START, end).height for s in SYMBOLS)
    assert all(i.kind == "orphan" for i in lake.fsck().issues)
    assert not check_lake(lake, timeframes="1s").has_issues


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["--cluster", "local:0"], "--cluster must be local:N"),
        (["--cluster", "local:x"], "--cluster must be local:N"),
        (["--cluster", "foo"], "--cluster must be local:N"),
        (["--cluster", "local:2", "--scheduler", "tcp://127.0.0.1:8786"], "not both"),
        (["--scheduler", "tcp://127.0.0.1:1"], "no Dask scheduler answers at tcp://127.0.0.1:1"),
    ],
)
@pytest.mark.parametrize("command", ["archive", "build-candles", "check"])
def test_bad_cluster_flags_are_one_line_and_exit_status_2(capsys, tmp_path, command, args, text) -> None:
    days = ["--symbols", "BTCUSDT", "--start", "2024-06-30", "--end", "2024-07-01"]
    extra = {"archive": [*days, "--archive-url", "http://127.0.0.1:9", "--base-url", "http://127.0.0.1:9"],
             "build-candles": [*days, "--timeframes", "1s"], "check": []}[command]
    code = main([command, *extra, *args, "--lake", str(tmp_path / "lake")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert text in err and err.count("\n") == 1 and "Traceback" not in err


def test_the_commands_on_a_scheduler_print_what_they_print_alone(capsys, tmp_path, emu, client) -> None:
    import json

    def run(*args: str) -> tuple[int, dict]:
        code = main(list(args))
        out = capsys.readouterr().out
        return code, json.loads(out)

    address = client.scheduler.address  # type: ignore[attr-defined]
    days = ["--symbols", ",".join(SYMBOLS), "--start", "2024-06-30", "--end", "2024-07-02"]
    urls = ["--archive-url", emu.url, "--base-url", emu.url]
    results = []
    for root, flags in [(tmp_path / "alone", []), (tmp_path / "cluster", ["--scheduler", address])]:
        lake = ["--lake", str(root)]
        code, archived = run("archive", *days, *urls, *lake, *flags, "--json")
        assert code == 0 and archived["days_fetched"] == 4
        code, built = run("build-candles", *days, "--timeframes", "5s", *lake, *flags, "--json")
        assert code == 0 and built["days_built"] == 4
        code, checked = run("check", *lake, *flags, "--json")
        assert code == 0 and checked["series_checked"] == 2
        results.append((
            {k: archived[k] for k in COUNTS},
            {k: v for k, v in built.items() if k != "elapsed"},
            comparable(checked),
        ))
    assert results[0] == results[1]
    code, local = run("check", "--lake", str(tmp_path / "cluster"), "--cluster", "local:1", "--json")
    assert code == 0 and comparable(local) == results[1][2]
