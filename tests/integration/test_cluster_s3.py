"""A Dask cluster working on a lake on S3: workers (separate processes) commit into the bucket
of a real S3 server (moto on 127.0.0.1); one of them is SIGKILLed mid-run; the lake ends equal
to the exchange's truth, the ledger (kept in the lake) complete, fsck clean of all but the killed
writer's uncommitted files. Then the cluster's check and candle building agree with one process.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
from pathlib import Path

import pytest

from marketlake.cluster import ClusterSpec, archive_on_cluster, build_candles_on_cluster, check_on_cluster, open_client
from marketlake.core.candles import candles_from_trades
from marketlake.ingest.archive import candle_timeframes, day_bounds
from marketlake.quality.check import check_lake
from marketlake.store import Lake
from tests.integration.emulated import emulator_thread

SYMBOLS = ["BTCUSDT", "ETHUSDT"]
START, END = dt.date(2024, 6, 30), dt.date(2024, 7, 3)
TODAY = dt.date(2024, 7, 5)
KEYS = ["ts", "price", "size", "side", "trade_id"]

pytestmark = pytest.mark.timeout(600)


def test_a_cluster_archives_into_an_s3_lake_with_a_worker_killed_and_the_lake_is_exact(s3_server, tmp_path: Path) -> None:
    root = f"s3://{s3_server.new_bucket()}/lake"
    with emulator_thread() as emu, open_client(ClusterSpec(workers=2)) as client:
        client.wait_for_workers(2, timeout=60)
        settings = s3_server.settings(tmp_path / "client", archive_url=emu.url, base_url=emu.url)
        pids = set(client.run(os.getpid).values())
        killed: list[int] = []

        def kill_a_busy_worker(done: int, total: int) -> None:
            if done != 1 or killed:
                return
            busy = [addr for addr, keys in client.processing().items() if keys]
            if busy:
                pid = client.run(os.getpid, workers=busy[:1])[busy[0]]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

        emu.control.configure(p_slow=1.0, slow_seconds=0.4, paths=["/archive"])
        try:
            _, st = archive_on_cluster(client, root, settings, SYMBOLS, category="linear", start=START, end=END,
                                       today=TODAY, candles=candle_timeframes("5s"), progress=kill_a_busy_worker)
        finally:
            emu.control.configure(p_slow=0.0)
        assert killed and killed[0] in pids
        assert (st.days_fetched, st.days_failed, st.failures) == (6, 0, [])

        lake = Lake(root, settings=s3_server.settings(tmp_path / "auditor"))
        for symbol in SYMBOLS:
            want = emu.market.trades(symbol, day_bounds(START)[0], day_bounds(END)[0], category="linear").select(KEYS)
            assert lake.read_trades(symbol).select(KEYS).equals(want), symbol
            got = lake.read_candles(symbol, "5s").drop("symbol", "timeframe", "filled")
            assert got.equals(candles_from_trades(want, "5s").select(got.columns)), symbol
        # The ledger lives in the lake: the auditor (another machine) sees every day covered.
        covered = lake.ledger.table().filter(lake.ledger.table()["dataset"] == "trades")
        assert covered.height == len(SYMBOLS) and set(covered["status"].to_list()) == {"present"}
        assert all(i.kind == "orphan" for i in lake.fsck().issues)

        # Candles built and the lake checked on the cluster: the same as in one process.
        build_candles_on_cluster(client, root, settings, SYMBOLS, "1s", category="linear", start=START, end=END,
                                 today=TODAY)
        for symbol in SYMBOLS:
            want = emu.market.trades(symbol, day_bounds(START)[0], day_bounds(END)[0], category="linear")
            got = lake.read_candles(symbol, "1s").drop("symbol", "timeframe", "filled")
            assert got.equals(candles_from_trades(want, "1s").select(got.columns)), symbol
        alone = check_lake(Lake(root, settings=settings), timeframes="5s,1s")
        spread = check_on_cluster(client, root, settings, None, "5s,1s")
        assert not alone.has_issues and not spread.has_issues
        assert [c.sid for c in spread.series] == [c.sid for c in alone.series] and len(alone.series) == 4
