"""Archive ingest against the emulator's ``public.bybit.com`` routes (and a hostile server)."""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from aiohttp import web

from marketlake.exchanges.bybit.archive import BybitArchiveClient
from marketlake_emulator import BybitEmulator
from marketlake.ingest.archive import day_bounds, run_archive_ingest
from marketlake.net.backoff import Backoff
from marketlake.quality.check import check_lake
from marketlake.store import Lake
from marketlake.store.layout import TRADES, SeriesId
from marketlake.store.ledger import Status
from tests.integration.emulated import emulator_thread, run_with_emulator

ROOT = Path(__file__).resolve().parents[2]
DAYS = (dt.date(2024, 6, 29), dt.date(2024, 7, 2))  # [start, end): the emulator's NOW is 2024-07-03 09:46
KEYS = ["ts", "price", "size", "side", "trade_id"]
KILL_ROUNDS = int(os.environ.get("MARKETLAKE_TEST_ARCHIVE_KILL_ROUNDS", "2"))


def quick_client(url: str) -> BybitArchiveClient:
    return BybitArchiveClient(url, backoff=Backoff(base=0.01, cap=0.05, max_attempts=12))


def truth(emu: BybitEmulator, symbol: str, category: str, start: dt.date, end: dt.date) -> pl.DataFrame:
    """What REST/WebSocket serve for those days, with spot ids as the spot archive numbers them."""
    frames = []
    for i in range((end - start).days):
        day = start + dt.timedelta(days=i)
        a, b = day_bounds(day)
        f = emu.market.trades(symbol, a, b, category=category).select(KEYS)
        if category == "spot":
            ids = [f"{day:%Y%m%d}-{n}" for n in range(1, f.height + 1)]
            f = f.with_columns(pl.Series("trade_id", ids, dtype=pl.String))
        frames.append(f)
    return pl.concat(frames)


def stored(lake: Lake, symbol: str, category: str) -> pl.DataFrame:
    return lake.read_trades(symbol, category=category).select(KEYS)


def tree(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*.parquet")
        if "_meta" not in p.parts
    }


@pytest.mark.parametrize(("symbol", "category"), [("BTCUSDT", "linear"), ("BTCUSD", "inverse"), ("ETHUSDT", "spot")])
def test_archive_days_equal_the_trades_rest_and_websocket_serve(tmp_path, symbol, category):
    async def scenario(emu: BybitEmulator) -> None:
        lake = Lake(tmp_path / "lake")
        async with quick_client(emu.url) as client:
            _, st = await run_archive_ingest(
                lake, [symbol], category=category, start=DAYS[0], end=DAYS[1], client=client
            )
        assert st is not None and st.days_fetched == 3 and not st.failures
        want = truth(emu, symbol, category, *DAYS)
        assert stored(lake, symbol, category).equals(want)
        assert st.trades_new == want.height
        sid = SeriesId.of(TRADES, exchange="bybit", category=category, symbol=symbol)
        a, b = day_bounds(DAYS[0])[0], day_bounds(DAYS[1])[0]
        assert lake.ledger.missing(sid, a, b) == []

    run_with_emulator(scenario)


def test_a_second_run_downloads_nothing_and_leaves_every_file_untouched(tmp_path):
    async def scenario(emu: BybitEmulator) -> None:
        lake = Lake(tmp_path / "lake")
        kw = {"category": "linear", "start": DAYS[0], "end": DAYS[1]}
        async with quick_client(emu.url) as client:
            await run_archive_ingest(lake, ["BTCUSDT", "ETHUSDT"], client=client, **kw)
        before = tree(lake.root)
        emu.control.log.clear()
        async with quick_client(emu.url) as client:
            plans, st = await run_archive_ingest(lake, ["BTCUSDT", "ETHUSDT"], client=client, **kw)
        assert [p.days for p in plans] == [(), ()]
        assert st is not None and st.requests == 0
        assert len(emu.control.log) == 0
        assert tree(lake.root) == before

    run_with_emulator(scenario)


def test_days_before_listing_are_verified_empty_and_unpublished_days_wait_for_the_next_run(tmp_path):
    # SYM002USDT lists on 2024-07-14 in this market; the clock is first moved past it.
    async def scenario(emu: BybitEmulator) -> None:
        listing = emu.market.instrument("SYM002USDT").launch_ms
        lake = Lake(tmp_path / "lake")
        first = dt.datetime.fromtimestamp(listing / 1000, dt.UTC).date()
        emu.clock.set_time(day_bounds(first)[1] + 3_600_000)  # the day after the listing day, 01:00
        start, end = first - dt.timedelta(days=3), first + dt.timedelta(days=4)
        async with quick_client(emu.url) as client:
            _, st = await run_archive_ingest(
                lake, ["SYM002USDT"], category="linear", start=start, end=end, today=end, client=client
            )
        assert st is not None
        assert (st.days_empty, st.days_fetched, st.days_unpublished) == (3, 1, 3)
        assert any("not published yet" in n for n in st.notices)
        sid = SeriesId.of(TRADES, exchange="bybit", category="linear", symbol="SYM002USDT")
        a, b = day_bounds(start)[0], day_bounds(end)[0]
        assert lake.ledger.covered(sid, a, b, Status.EMPTY) == [(a, day_bounds(first)[0])]
        assert lake.ledger.missing(sid, a, b) == [(day_bounds(first)[1], b)]
        got = lake.read_trades("SYM002USDT")
        assert got.height > 0 and got["ts"].min().date() == first  # type: ignore[union-attr]

    run_with_emulator(scenario, symbols=6)


def test_an_unknown_symbol_fails_alone_with_a_clear_error_and_the_others_complete(tmp_path):
    async def scenario(emu: BybitEmulator) -> None:
        lake = Lake(tmp_path / "lake")
        async with quick_client(emu.url) as client:
            _, st = await run_archive_ingest(
                lake, ["NOPEUSDT", "ETHUSDT"], category="linear", start=DAYS[0], end=DAYS[1], client=client
            )
        assert st is not None and st.days_fetched == 3
        assert len(st.failures) == 1 and "HTTP 404: the archive has no trades of NOPEUSDT" in st.failures[0]
        assert stored(lake, "ETHUSDT", "linear").equals(truth(emu, "ETHUSDT", "linear", *DAYS))

    run_with_emulator(scenario)


@pytest.mark.parametrize("fault", ["p_disconnect", "p_5xx", "p_429", "p_truncated"])
def test_transport_faults_are_retried_to_the_exact_days(tmp_path, fault):
    async def scenario(emu: BybitEmulator) -> None:
        emu.control.configure(**{fault: 0.4, "paths": ["/archive"]})
        lake = Lake(tmp_path / "lake")
        async with quick_client(emu.url) as client:
            _, st = await run_archive_ingest(
                lake, ["BTCUSDT"], category="linear", start=DAYS[0], end=DAYS[1], client=client
            )
        assert st is not None and not st.failures, st.failures
        assert st.retries > 0
        assert stored(lake, "BTCUSDT", "linear").equals(truth(emu, "BTCUSDT", "linear", *DAYS))

    run_with_emulator(scenario)


def test_an_archive_day_replaces_streamed_trades_of_that_day_and_nothing_else(tmp_path):
    async def scenario(emu: BybitEmulator) -> None:
        lake = Lake(tmp_path / "lake")
        day = DAYS[0]
        a, b = day_bounds(day)
        # Streamed spot trades carry exchange ids the spot archive does not: the day's file
        # must replace them, not sit beside them. A streamed trade of the next day stays.
        streamed = emu.market.trades("ETHUSDT", a + 3_600_000, a + 7_200_000, category="spot").select(KEYS)
        next_day = emu.market.trades("ETHUSDT", b, b + 60_000, category="spot").select(KEYS)
        lake.write_trades(pl.concat([streamed, next_day]), symbol="ETHUSDT", category="spot")
        async with quick_client(emu.url) as client:
            _, st = await run_archive_ingest(
                lake, ["ETHUSDT"], category="spot", start=day, end=day + dt.timedelta(days=1), client=client
            )
        assert st is not None and st.trades_deleted == streamed.height
        want = pl.concat([truth(emu, "ETHUSDT", "spot", day, day + dt.timedelta(days=1)), next_day])
        assert stored(lake, "ETHUSDT", "spot").equals(want)

    run_with_emulator(scenario)


def stream_with_a_lost_span(
    emu: BybitEmulator, lake: Lake, symbol: str, hole: tuple[int, int]
) -> tuple[SeriesId, pl.DataFrame]:
    """Store DAYS[0]'s trades of ``symbol`` but ``hole`` and record the ledger as the live runner
    does for a stream whose hole REST could not fill; return the series and the whole day."""
    a, b = day_bounds(DAYS[0])
    sid = SeriesId.of(TRADES, exchange="bybit", category="linear", symbol=symbol)
    have = emu.market.trades(symbol, a, b).select(KEYS)
    t = pl.col("ts").dt.epoch("ms")
    lake.write_trades(have.filter((t < hole[0]) | (t >= hole[1])), symbol=symbol)
    lake.ledger.record(sid, a, hole[0], Status.PRESENT)
    lake.ledger.record(sid, hole[1], b, Status.PRESENT)
    lake.ledger.record(sid, *hole, Status.FAILED, detail="not recoverable from REST")
    return sid, have


def test_a_trade_gap_the_live_runner_recorded_as_failed_is_recovered_from_the_archive(tmp_path):
    async def scenario(emu: BybitEmulator) -> None:
        lake = Lake(tmp_path / "lake")
        a, b = day_bounds(DAYS[0])
        hole = (a + 5 * 3_600_000, a + 6 * 3_600_000)
        sid, have = stream_with_a_lost_span(emu, lake, "BTCUSDT", hole)
        t = pl.col("ts").dt.epoch("ms")
        # check reports the lost range, with the command that recovers it.
        assert check_lake(lake).trade_gaps == {"bybit/linear/BTCUSDT": [hole]}
        # The ledger's failed range is the only reason to fetch: other days are not planned.
        async with quick_client(emu.url) as client:
            plans, st = await run_archive_ingest(
                lake, ["BTCUSDT"], category="linear", start=DAYS[0], end=DAYS[0] + dt.timedelta(days=1), client=client
            )
        assert plans[0].days == (DAYS[0],)
        assert st is not None and st.trades_new == have.filter((t >= hole[0]) & (t < hole[1])).height
        assert stored(lake, "BTCUSDT", "linear").equals(have)
        assert lake.ledger.missing(sid, a, b) == []
        assert check_lake(lake).trade_gaps == {}

    run_with_emulator(scenario)


# ---------------------------------------------------------------------------- hostile archive host

def _hostile_app(files: dict[str, bytes]) -> web.Application:
    async def index(request: web.Request) -> web.Response:
        links = "".join(f'<a href="{name}">{name}</a>' for name in files)
        return web.Response(text=f"<html><body>{links}</body></html>", content_type="text/html")

    async def file(request: web.Request) -> web.Response:
        return web.Response(body=files[request.match_info["name"]], content_type="application/gzip")

    app = web.Application()
    app.router.add_get("/trading/BTCUSDT/", index)
    app.router.add_get("/trading/BTCUSDT/{name}", file)
    return app


def test_hostile_archive_files_fail_their_day_with_a_named_error_and_lose_nothing_stored(tmp_path):
    good = (
        b"timestamp,symbol,side,size,price,tickDirection,trdMatchID,grossValue,homeNotional,foreignNotional\n"
        b"1719619200.25,BTCUSDT,Buy,1,60000,PlusTick,good-1,0,0,0\n"
    )
    files = {
        "BTCUSDT2024-06-29.csv.gz": gzip.compress(good),
        "BTCUSDT2024-06-30.csv.gz": b"<html><body>AccessDenied</body></html>",
        "BTCUSDT2024-07-01.csv.gz": gzip.compress(good.replace(b"BTCUSDT,Buy", b"ETHUSDT,Buy")),
    }

    async def scenario() -> None:
        runner = web.AppRunner(_hostile_app(files))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        lake = Lake(tmp_path / "lake")
        before = pl.DataFrame(
            {"ts": [day_bounds(dt.date(2024, 6, 30))[0] * 1000 + 5], "price": [1.0], "size": [1.0],
             "side": ["Buy"], "trade_id": ["kept"]},
        ).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))
        lake.write_trades(before, symbol="BTCUSDT")
        try:
            async with quick_client(f"http://127.0.0.1:{port}") as client:
                _, st = await run_archive_ingest(
                    lake, ["BTCUSDT"], category="linear", start=DAYS[0], end=DAYS[1], client=client
                )
        finally:
            await runner.cleanup()
        assert st is not None and st.days_fetched == 1 and st.days_failed == 2
        text = "\n".join(st.failures)
        assert "BTCUSDT2024-06-30.csv.gz: not a gzip file" in text
        assert "BTCUSDT2024-07-01.csv.gz: line 2: bad symbol (expected BTCUSDT) 'ETHUSDT'" in text
        assert sorted(lake.read_trades("BTCUSDT")["trade_id"].to_list()) == ["good-1", "kept"]
        sid = SeriesId.of(TRADES, exchange="bybit", category="linear", symbol="BTCUSDT")
        failed = lake.ledger.covered(sid, *day_bounds(DAYS[0]), Status.FAILED)
        assert failed == []  # the good day is present
        assert len(lake.ledger.covered(sid, day_bounds(DAYS[0])[0], day_bounds(DAYS[1])[0], Status.FAILED)) == 1

    asyncio.run(scenario())


# ---------------------------------------------------------------------------- the CLI

def _cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "marketlake", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


def test_the_archive_command_plans_fetches_and_reports_in_json(tmp_path):
    root = tmp_path / "lake"
    with emulator_thread() as emu:
        common = ["--symbols", "BTCUSDT", "--start", "2024-07-01", "--end", "2024-07-05",
                  "--archive-url", emu.url, "--lake", str(root)]
        plan = json.loads(_cli("archive", *common, "--dry-run", "--json").stdout)
        assert plan == {"BTCUSDT": ["2024-07-01", "2024-07-02", "2024-07-03", "2024-07-04"]}
        stats = json.loads(_cli("archive", *common, "--json").stdout)
        assert (stats["days_fetched"], stats["days_unpublished"]) == (2, 2)
        assert stats["trades_new"] == truth(emu, "BTCUSDT", "linear", dt.date(2024, 7, 1), dt.date(2024, 7, 3)).height
        text = _cli("archive", *common).stdout
        assert "0 day(s) stored" in text and "2 not published yet" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--symbols", "BTCUSDT", "--days", "0"], "'--days': 0 is out of range"),
        (["--symbols", "BTCUSDT", "--start", "2024-13-01"], "--start must be a date YYYY-MM-DD"),
        (["--symbols", "BTCUSDT"], "say which days"),
        (["--symbols", "../etc", "--days", "2"], "invalid symbol"),
        (["--symbols", "BTCUSDT", "--days", "2", "--category", "option"], "not 'option'"),
        (["--symbols", "BTCUSDT", "--start", "2024-07-02", "--end", "2024-07-01"], "range is empty"),
    ],
)
def test_bad_archive_flags_exit_2_with_one_line_naming_the_problem(tmp_path, args, message):
    done = _cli("archive", *args, "--lake", str(tmp_path / "lake"), "--archive-url", "http://127.0.0.1:9", check=False)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_an_archive_run_killed_with_sigkill_resumes_to_the_exact_lake(tmp_path):
    root = tmp_path / "lake"
    rng = random.Random(5)
    start, end = dt.date(2024, 6, 24), dt.date(2024, 7, 2)
    args = [sys.executable, "-m", "marketlake", "archive", "--symbols", "BTCUSDT,ETHUSDT", "--start", start.isoformat(),
            "--end", end.isoformat(), "--concurrency", "2", "--lake", str(root)]
    with emulator_thread() as emu:
        emu.control.configure(p_slow=0.5, slow_seconds=0.3, paths=["/archive"])
        args += ["--archive-url", emu.url]
        for _ in range(KILL_ROUNDS):
            proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(1.5, 3.0))
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        emu.control.configure(p_slow=0.0)
        done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        lake = Lake(root)
        for sym in ("BTCUSDT", "ETHUSDT"):
            assert stored(lake, sym, "linear").equals(truth(emu, sym, "linear", start, end))
        # A kill between writing a data file and committing it leaves an orphan (invisible to
        # readers, kept until older than the retention), nothing else.
        assert all(i.kind == "orphan" and not i.fixed for i in lake.fsck().issues)
        # The killed runs could not close their records; the run after them marked them killed
        # (a kill that came before the run was recorded leaves no record at all).
        listed = json.loads(_cli("runs", "--json", "--lake", str(root)).stdout)
        statuses = [r["status"] for r in listed]
        assert statuses[0] == "ok" and set(statuses[1:]) <= {"killed"}
        assert all(r["pid"] and r["host"] for r in listed)
        if len(statuses) > 1:
            assert "killed" in _cli("runs", "--lake", str(root)).stdout


def test_sub_minute_candles_built_from_archive_days_equal_the_kernel_on_the_truth_and_leave_no_gap(tmp_path):
    from marketlake.core.candles import candles_from_trades
    from marketlake.ingest.archive import candle_timeframes
    from marketlake.quality.check import check_lake

    async def scenario(emu: BybitEmulator) -> None:
        lake = Lake(tmp_path / "lake")
        tfs = candle_timeframes("1s,15s")
        async with quick_client(emu.url) as client:
            _, st = await run_archive_ingest(
                lake, ["ETHUSDT"], category="linear", start=DAYS[0], end=DAYS[0] + dt.timedelta(days=1),
                client=client, candles=tfs,
            )
        assert st is not None and st.candles_written > 0
        want = truth(emu, "ETHUSDT", "linear", DAYS[0], DAYS[0] + dt.timedelta(days=1))
        for tf in ("1s", "15s"):
            got = lake.read_candles("ETHUSDT", tf).drop("symbol", "timeframe", "filled")
            assert got.equals(candles_from_trades(want, tf).select(got.columns))
        # A second without a trade is no gap: the trades there are complete and none is inside.
        report = check_lake(lake, symbols=["ETHUSDT"], timeframes=["1s", "15s"], consistency=False)
        assert len(report.series) == 2
        assert not report.has_issues, report.report()
        assert sum(len(s.explained) for s in report.series) > 0  # there are trade-less seconds
        # A second run plans nothing: trades and both candle series are covered.
        async with quick_client(emu.url) as client:
            plans, _ = await run_archive_ingest(
                lake, ["ETHUSDT"], category="linear", start=DAYS[0], end=DAYS[0] + dt.timedelta(days=1),
                client=client, candles=tfs,
            )
        assert plans[0].days == ()
        # A candle lost where trades exist is a gap; so is one where the trades are not complete.
        built = lake.read_candles("ETHUSDT", "15s")
        lost = built["ts"][500]
        lake.delete_candles(symbol="ETHUSDT", timeframe="15s", ts=[lost])
        gaps = check_lake(lake, symbols=["ETHUSDT"], timeframes=["15s"], consistency=False).series[0].unexplained
        assert [g.previous_ts for g in gaps] == [built["ts"][499].timestamp() * 1000]
        trades_sid = SeriesId.of(TRADES, exchange="bybit", category="linear", symbol="ETHUSDT")
        lake.ledger.forget(trades_sid, *day_bounds(DAYS[0]))
        report = check_lake(lake, symbols=["ETHUSDT"], timeframes=["15s"], consistency=False)
        assert len(report.series[0].unexplained) > len(gaps)  # trade-less buckets no longer explained

    run_with_emulator(scenario)


def test_candles_bybit_serves_as_klines_are_refused_for_archive_building():
    from marketlake.errors import DataValidationError
    from marketlake.ingest.archive import candle_timeframes

    with pytest.raises(DataValidationError, match="1, 60 come from Bybit's klines"):
        candle_timeframes("1s,1,60")


def test_repair_recovers_trades_lost_while_streaming_from_the_archive(tmp_path):
    from marketlake.quality.repair import repair_lake

    async def scenario(emu: BybitEmulator) -> None:
        lake = Lake(tmp_path / "lake")
        a = day_bounds(DAYS[0])[0]
        _, have = stream_with_a_lost_span(emu, lake, "ETHUSDT", (a + 3_600_000, a + 3 * 3_600_000))
        without = await repair_lake(lake)  # no archive client: reported, not fetched
        assert (without.trade_days_fetched, without.trade_gaps_left) == (0, 1)
        async with quick_client(emu.url) as archive:
            report = await repair_lake(lake, archive=archive)
        assert (report.trade_days_fetched, report.trade_gaps_left, report.refetch_failures) == (1, 0, [])
        assert stored(lake, "ETHUSDT", "linear").equals(have)

    run_with_emulator(scenario)


def test_an_oversized_index_page_is_refused_with_a_typed_error_and_nothing_is_written(tmp_path):
    from marketlake.exchanges.bybit import archive as archive_mod

    async def index(request: web.Request) -> web.Response:
        return web.Response(body=b"<a href='x'>" * 200_000, content_type="text/html")

    async def scenario() -> None:
        app = web.Application()
        app.router.add_get("/trading/BTCUSDT/", index)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        lake = Lake(tmp_path / "lake")
        old = archive_mod._INDEX_MAX_BYTES
        archive_mod._INDEX_MAX_BYTES = 1_000_000
        try:
            async with quick_client(f"http://127.0.0.1:{port}") as client:
                _, st = await run_archive_ingest(
                    lake, ["BTCUSDT"], category="linear", start=DAYS[0], end=DAYS[1], client=client
                )
        finally:
            archive_mod._INDEX_MAX_BYTES = old
            await runner.cleanup()
        assert st is not None and st.days_fetched == 0
        assert "over the 1,000,000-byte limit" in st.failures[0] or "over the 1,000,000 limit" in st.failures[0]
        assert not (tmp_path / "lake" / "trades").exists()

    asyncio.run(scenario())


def test_candles_of_days_whose_trades_are_stored_are_built_from_the_lake_without_a_download(tmp_path):
    from marketlake.core.candles import candles_from_trades
    from marketlake.ingest.archive import candle_timeframes
    from marketlake.store.layout import CANDLES

    async def scenario(emu: BybitEmulator) -> None:
        lake = Lake(tmp_path / "lake")
        day, next_day = DAYS[0], DAYS[0] + dt.timedelta(days=1)
        kw = {"category": "linear", "start": day, "end": next_day + dt.timedelta(days=1)}
        async with quick_client(emu.url) as client:  # the first day's trades only
            await run_archive_ingest(lake, ["ETHUSDT"], client=client, **{**kw, "end": next_day})
        # The second day's trades are verified empty (as before a listing): no candle to build.
        sid = SeriesId.of(TRADES, exchange="bybit", category="linear", symbol="ETHUSDT")
        lake.ledger.record(sid, *day_bounds(next_day), Status.EMPTY, detail="test: no trading")
        emu.control.log.clear()
        tfs = candle_timeframes("1s,15s")
        async with quick_client(emu.url) as client:
            plans, st = await run_archive_ingest(lake, ["ETHUSDT"], client=client, candles=tfs, **kw)
        assert (plans[0].days, plans[0].rebuild) == ((), (day, next_day))
        assert st is not None and st.requests == 0 and len(emu.control.log) == 0  # nothing downloaded
        assert (st.days_rebuilt, st.days_fetched, st.days_failed) == (2, 0, 0) and st.candles_written > 0
        want = truth(emu, "ETHUSDT", "linear", day, next_day)
        for tf in ("1s", "15s"):
            got = lake.read_candles("ETHUSDT", tf).drop("symbol", "timeframe", "filled")
            assert got.equals(candles_from_trades(want, tf).select(got.columns))
            csid = SeriesId.of(CANDLES, exchange="bybit", category="linear", symbol="ETHUSDT", timeframe=tf)
            assert [c.status for c in lake.ledger.ranges(csid)] == [Status.PRESENT, Status.EMPTY]
        report = check_lake(lake, symbols=["ETHUSDT"], timeframes=["1s", "15s"], consistency=False)
        assert not report.has_issues, report.report()
        async with quick_client(emu.url) as client:  # and then there is nothing left to do
            plans, _ = await run_archive_ingest(lake, ["ETHUSDT"], client=client, candles=tfs, **kw)
        assert (plans[0].days, plans[0].rebuild) == ((), ())

    run_with_emulator(scenario)
