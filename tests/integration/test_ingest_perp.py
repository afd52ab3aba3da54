"""Ingest of the perpetual datasets (issue 13 section 2) against the emulator on 127.0.0.1:
funding, mark / index / premium-index candles and open interest equal the emulator's truth; a
re-run sends no data request; SIGKILLs resume to the exact lake; an 8 h -> 1 h funding interval
change gives the right ``interval_minutes`` and no false gap; a delisted symbol is in the universe
before its delivery time and not after; REST faults lose nothing; instruments are recorded.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from marketlake.core.funding import funding_gaps, funding_interval_history
from marketlake.core.timeframes import parse_timeframe
from marketlake.ingest.service import IngestRequest, run_ingest
from marketlake.settings import Settings
from marketlake.store import Lake
from marketlake.store.ledger import Status
from marketlake_emulator import BybitEmulator
from tests.integration.emulated import NOW, client_for, emulator_thread, run_with_emulator

ROOT = Path(__file__).resolve().parents[2]
DAY = 86_400_000
HOUR = 3_600_000
DATA_PATHS = (
    "/v5/market/kline",
    "/v5/market/funding/history",
    "/v5/market/mark-price-kline",
    "/v5/market/index-price-kline",
    "/v5/market/premium-index-price-kline",
    "/v5/market/open-interest",
)
OI_STEPS = {"5min": ("5", 300_000), "15min": ("15", 900_000), "1h": ("60", HOUR)}
PRICE = {"mark": "mark_candles", "index": "index_candles", "premium": "premium_candles"}
# BTCUSDT: 8 h funding throughout. SYM026USDT: 8 h -> 1 h 52 days before NOW. SYM040USDT:
# 8 h -> 1 h on 2022-06-18, delisted on 2022-11-23 (make_instrument and the derivatives model
# draw them from the seed and the name, whatever else the market lists).
CHANGING = "SYM026USDT"
DELISTED = "SYM040USDT"
SYMBOLS = ["BTCUSDT", "ETHUSDT", CHANGING, DELISTED]


def new_lake(path: Path) -> Lake:
    return Lake(path, settings=Settings.load(environ={}))


def data_requests(emu: BybitEmulator) -> list:
    return [r for r in emu.control.log.select() if r.path in DATA_PATHS]


# --------------------------------------------------------------------------- the emulator's truth


def funding_truth(emu: BybitEmulator, symbol: str, start: int, end: int, category: str = "linear") -> pl.DataFrame:
    """Settlements with ``start <= ts < end``: ts, rate, interval_minutes (of the period ending at ts)."""
    spec = emu.market.instrument(symbol, category)
    model = emu.derivatives
    ts = [t for t in model.settlements(spec, start, end - 1) if t < end]
    return pl.DataFrame(
        {
            "ts": pl.Series(ts, dtype=pl.Int64).cast(pl.Datetime("ms", "UTC")),
            "rate": [model.funding_rate(spec, t) / 1e6 for t in ts],
            "interval_minutes": pl.Series([model.interval_minutes(spec, t - 1) for t in ts], dtype=pl.Int32),
        }
    )


def price_truth(emu: BybitEmulator, kind: str, symbol: str, tf: str, start: int, end: int, category: str = "linear") -> pl.DataFrame:
    spec = emu.market.instrument(symbol, category)
    c = emu.derivatives.price_candles(spec, kind, parse_timeframe(tf), start, end - 1, now_ms=emu.control.clock.now_ms())
    scale = 10.0 ** c.scale
    keep = c.ts < end
    return pl.DataFrame(
        {
            "ts": pl.Series(c.ts[keep], dtype=pl.Int64).cast(pl.Datetime("ms", "UTC")),
            **{k: getattr(c, k)[keep] / scale for k in ("open", "high", "low", "close")},
        }
    )


def oi_truth(emu: BybitEmulator, symbol: str, interval: str, start: int, end: int, category: str = "linear") -> pl.DataFrame:
    spec = emu.market.instrument(symbol, category)
    pts = emu.derivatives.oi_points(spec, OI_STEPS[interval][1], start, end - 1)
    units = emu.derivatives.open_interest(spec, pts)
    return pl.DataFrame(
        {
            "ts": pl.Series(pts, dtype=pl.Int64).cast(pl.Datetime("ms", "UTC")),
            "open_interest": units / 10.0 ** spec.qty_scale,
        }
    )


def assert_equal(got: pl.DataFrame, want: pl.DataFrame, what: str) -> None:
    got = got.select(want.columns)
    assert got.height == want.height, f"{what}: {got.height} rows, truth {want.height}"
    assert got.equals(want), f"{what}: values differ from the emulator's truth"


def assert_lake_equals_truth(lake: Lake, emu: BybitEmulator, outcome, category: str = "linear") -> int:
    """Every planned series of the outcome equals the truth over its planned range; rows compared."""
    rows = 0
    for sp in outcome.plan.series:
        sid, a, b = sp.sid, sp.start_ms, sp.end_ms
        where = {"exchange": sid.exchange, "category": sid.category}
        if sid.dataset == "funding":
            want = funding_truth(emu, sid.symbol, a, b, category)
            got = lake.read_funding(sid.symbol, a, b, **where)
        elif sid.dataset == "open_interest":
            interval = next(k for k, (tf, _) in OI_STEPS.items() if tf == sid.timeframe.name)
            want = oi_truth(emu, sid.symbol, interval, a, b, category)
            got = lake.read_open_interest(sid.symbol, interval, a, b, **where)
        elif sid.dataset == "candles":
            continue  # klines: tests/integration/test_ingest.py
        else:
            kind = next(k for k, v in PRICE.items() if v == sid.dataset)
            want = price_truth(emu, kind, sid.symbol, sid.timeframe.name, a, b, category)
            got = lake.read_price_candles(kind, sid.symbol, sid.timeframe.name, a, b, **where)
        assert_equal(got, want, f"{sid.dataset} {sid.label()}")
        rows += want.height
    return rows


# --------------------------------------------------------------------------- tests


def test_every_perp_dataset_equals_the_truth_and_a_rerun_sends_no_data_request(tmp_path):
    lake = new_lake(tmp_path / "lake")

    async def t(emu: BybitEmulator) -> None:
        req = IngestRequest.of(symbols=f"BTCUSDT,{CHANGING}", timeframes="60,D", days=70, data="all",
                               oi_intervals="5min,1h")
        async with client_for(emu.url, lake) as client:
            out = await run_ingest(lake, client, req)
            assert out.ok, (out.stats.failures, out.unexplained_gaps)
            datasets = {sp.sid.dataset for sp in out.plan.series}
            assert datasets == {"candles", "funding", "mark_candles", "index_candles", "premium_candles", "open_interest"}
            assert out.stats.series_done == out.stats.series == 2 * (2 + 1 + 3 * 2 + 2)
            rows = assert_lake_equals_truth(lake, emu, out)
            assert rows > 2 * (70 * 288)  # open interest alone: 288 points a day
            # Each window was requested once: no request repeats.
            sent = [(r.path, tuple(sorted(r.params.items()))) for r in data_requests(emu)]
            assert len(sent) == len(set(sent))
            # The funding interval change: 8 h before, 1 h after, no false gap.
            got = lake.read_funding(CHANGING)
            assert funding_gaps(got["ts"], got["interval_minutes"]).height == 0
            assert got["interval_minutes"].unique().sort().to_list() == [60, 480]
            # A re-run plans nothing and sends no data request (only the time and the instrument
            # snapshot, which every ingest records), and commits nothing.
            versions = lake.versions()
            emu.control.log.clear()
            again = await run_ingest(lake, client, req)
            assert again.plan.requests == 0 and again.stats.rows_fetched == 0 and again.ok
            assert data_requests(emu) == []
            assert {r.path for r in emu.control.log.select()} <= {"/v5/market/time", "/v5/market/instruments-info"}
            assert lake.versions() == versions
        # The instruments snapshot went into the history: the universe now lists the market.
        now = lake.universe(NOW, "linear")
        assert set(emu.market.symbols("linear")) - {DELISTED} <= set(now["symbol"])

    run_with_emulator(t, symbols=SYMBOLS)


def test_an_interval_change_from_8h_to_1h_gives_the_right_intervals_across_runs_and_no_false_gap(tmp_path):
    lake = new_lake(tmp_path / "lake")

    async def t(emu: BybitEmulator) -> None:
        change = emu.derivatives.interval_change(emu.market.instrument(CHANGING))
        assert change is not None and NOW - 60 * DAY < change < NOW - 30 * DAY
        async with client_for(emu.url, lake) as client:
            # First only the newest 20 days (all 1 h), then back over the change: the rows of
            # the first run keep their interval, the new ones get theirs, the seam is no gap.
            first = await run_ingest(lake, client, IngestRequest.of(symbols=CHANGING, days=20, data="funding"))
            assert first.ok
            assert lake.read_funding(CHANGING)["interval_minutes"].unique().to_list() == [60]
            out = await run_ingest(lake, client, IngestRequest.of(symbols=CHANGING, days=120, data="funding"))
            assert out.ok
            # Days 20..52 at 1 h and 52..120 at 8 h (972 settlements): 5 pages of 200, newest first.
            assert out.stats.pages == 5
        sp = out.plan.series[0]
        got = lake.read_funding(CHANGING)
        want = funding_truth(emu, CHANGING, NOW - 120 * DAY, sp.end_ms)
        assert_equal(got, want, "funding")
        assert funding_gaps(got["ts"], got["interval_minutes"]).height == 0
        history = funding_interval_history(got["ts"], got["interval_minutes"])
        assert history["interval_minutes"].to_list() == [480, 60]
        # The 1 h regime governs from the last 8 h settlement (the change itself) on.
        assert history["valid_from"].dt.epoch("ms").to_list()[1] == change
        # A settlement deleted from the lake would be a gap (the check is not blind).
        holed = got.filter(pl.col("ts").dt.epoch("ms") != change + 5 * HOUR)
        assert funding_gaps(holed["ts"], holed["interval_minutes"]).height == 1
        # The ledger covers the range precisely: nothing left to fetch.
        assert lake.ledger.missing(sp.sid, sp.start_ms, sp.end_ms) == []

    run_with_emulator(t, symbols=SYMBOLS)


def test_a_delisted_symbol_is_in_the_universe_before_its_delivery_and_not_after(tmp_path):
    lake = new_lake(tmp_path / "lake")

    async def t(emu: BybitEmulator) -> None:
        spec = emu.market.instrument(DELISTED)
        delivery = spec.delist_ms
        assert delivery is not None
        req = IngestRequest.of(symbols=DELISTED, timeframes="D", days=30, data="funding,mark,oi", oi_intervals="1h")
        async with client_for(emu.url, lake) as client:
            emu.control.set_clock(time_ms=delivery - 10 * DAY)  # still trading
            assert (await run_ingest(lake, client, req)).ok
            emu.control.set_clock(time_ms=delivery + 20 * DAY)  # delisted 20 days ago
            emu.control.log.clear()
            out = await run_ingest(lake, client, req)
            assert out.ok, (out.stats.failures, out.unexplained_gaps)
            # Nothing is asked after the delivery: it is verified empty without a request.
            for r in data_requests(emu):
                start = int(r.params.get("startTime") or r.params.get("start"))
                assert start < delivery, r.params
            for sp in out.plan.series:
                assert sp.after_delivery is not None, sp.sid
                assert lake.ledger.covered(sp.sid, *sp.after_delivery, Status.EMPTY) == [sp.after_delivery]
            assert_lake_equals_truth(lake, emu, out)
        before = lake.universe(delivery - DAY, "linear")
        after = lake.universe(delivery + 1, "linear")
        assert DELISTED in before["symbol"].to_list()
        assert DELISTED not in after["symbol"].to_list()
        assert "BTCUSDT" in after["symbol"].to_list()
        # The delisted symbol stays in the history (and its data in the lake).
        hist = lake.instrument_history("bybit").filter(pl.col("symbol") == DELISTED)
        assert hist["status"].to_list() == ["Trading", "Closed"]
        assert lake.read_funding(DELISTED)["ts"].dt.epoch("ms").max() <= delivery

    run_with_emulator(t, symbols=SYMBOLS)


@pytest.mark.parametrize("fault", ["p_10006", "p_429", "p_5xx", "p_truncated", "p_10016", "p_disconnect"])
def test_rest_faults_lose_nothing(tmp_path, fault):
    lake = new_lake(tmp_path / "lake")

    async def t(emu: BybitEmulator) -> None:
        emu.control.configure(**{fault: 0.25}, window_seconds=0.5)
        req = IngestRequest.of(symbols=f"BTCUSDT,{CHANGING}", timeframes="60", days=60, data="funding,mark,premium,oi")
        async with client_for(emu.url, lake) as client:
            out = await run_ingest(lake, client, req)
            assert client.stats.retries > 0  # the faults really happened
        assert out.ok, out.stats.failures
        assert_lake_equals_truth(lake, emu, out)
        got = lake.read_funding(CHANGING)
        assert funding_gaps(got["ts"], got["interval_minutes"]).height == 0

    run_with_emulator(t, symbols=SYMBOLS)


def test_premium_candles_are_skipped_with_a_note_for_inverse_and_the_rest_is_ingested(tmp_path):
    lake = new_lake(tmp_path / "lake")

    async def t(emu: BybitEmulator) -> None:
        req = IngestRequest.of(symbols="BTCUSD", timeframes="240", days=15, data="funding,mark,premium,oi",
                               category="inverse")
        async with client_for(emu.url, lake) as client:
            out = await run_ingest(lake, client, req)
        assert out.ok
        assert any("premium" in n and "inverse" in n for n in out.notes), out.notes
        assert {sp.sid.dataset for sp in out.plan.series} == {"funding", "mark_candles", "open_interest"}
        assert not [r for r in emu.control.log.select() if "premium" in r.path]
        assert_lake_equals_truth(lake, emu, out, category="inverse")
        assert lake.universe(NOW, "inverse")["symbol"].to_list() == ["BTCUSD", "ETHUSD"]

    run_with_emulator(t, symbols=SYMBOLS)


KILL_ROUNDS = int(os.environ.get("MARKETLAKE_TEST_PERP_KILL_ROUNDS", "3"))


def test_a_perp_ingest_killed_with_sigkill_resumes_to_the_exact_lake(tmp_path):
    root = tmp_path / "lake"
    rng = random.Random(13)
    args = [
        sys.executable, "-m", "marketlake", "ingest", "--symbols", f"BTCUSDT,{CHANGING}", "--timeframes", "5",
        "--data", "funding,mark,index,oi", "--days", "180", "--lake", str(root),
    ]
    with emulator_thread(symbols=SYMBOLS) as emu:
        # About 740 requests at <= 100/s, some slow; each kill comes after a commit of its round.
        emu.control.configure(p_slow=0.3, slow_seconds=0.05, paths=list(DATA_PATHS))
        args += ["--base-url", emu.url]
        env = {**os.environ, "MARKETLAKE_RATE_LIMIT_PER_5S": "500"}
        mid_run = 0
        for _ in range(KILL_ROUNDS):
            before = _ledger_rows(root)
            proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 60
            while _ledger_rows(root) <= before and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)  # until this round committed something ...
            time.sleep(rng.uniform(0.0, 1.0))  # ... then at a random moment after
            mid_run += proc.poll() is None
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        assert mid_run >= min(KILL_ROUNDS, 2), "the kills came after the work was done"
        killed = new_lake(root)
        assert killed.has_ledger and killed.ledger.table().height > 0, "no kill came after a commit"
        covered = _covered(killed)
        emu.control.configure(p_slow=0.0)
        emu.control.log.clear()
        done = subprocess.run([*args, "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout)
        assert summary["ok"] and summary["stats"]["series_done"] == summary["stats"]["series"] == 2 * 4
        # Nothing that the ledger claimed before the last run was fetched again.
        for r in data_requests(emu):
            if r.path.endswith("open-interest"):
                a, b = int(r.params["startTime"]), int(r.params["endTime"])
                key = ("open_interest", r.params["symbol"])
            elif r.path.endswith("kline"):
                a, b = int(r.params["start"]), int(r.params["end"])
                key = ("mark_candles" if "mark" in r.path else "index_candles", r.params["symbol"])
            else:
                continue  # a funding walk re-asks up to the first covered settlement by design
            assert not any(s <= a and b < e for s, e in covered.get(key, [])), r.params
        lake = new_lake(root)
        for sym in ("BTCUSDT", CHANGING):
            f = lake.read_funding(sym)
            a, b = f["ts"].dt.epoch("ms").min(), f["ts"].dt.epoch("ms").max() + 1
            assert_equal(f, funding_truth(emu, sym, NOW - 180 * DAY, b), f"funding {sym}")
            assert a >= NOW - 180 * DAY
            for kind in ("mark", "index"):
                got = lake.read_price_candles(kind, sym, "5")
                lo, hi = got["ts"].dt.epoch("ms").min(), got["ts"].dt.epoch("ms").max() + 1
                assert_equal(got, price_truth(emu, kind, sym, "5", lo, hi), f"{kind} {sym}")
                assert lo <= NOW - 180 * DAY + 300_000 and got["ts"].is_unique().all()
            oi = lake.read_open_interest(sym, "5min")
            lo, hi = oi["ts"].dt.epoch("ms").min(), oi["ts"].dt.epoch("ms").max() + 1
            assert_equal(oi, oi_truth(emu, sym, "5min", lo, hi), f"oi {sym}")
        # A write killed before its commit leaves files no version lists: orphans vacuum removes.
        assert all(i.kind in ("temp", "orphan") for i in lake.fsck().issues)


def _ledger_rows(root: Path) -> int:
    """Rows of the coverage ledger, read without creating anything (0 before it exists)."""
    path = root / "_meta" / "ledger.sqlite"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            return db.execute("SELECT count(*) FROM coverage").fetchone()[0]
    except sqlite3.Error:
        return 0


def _covered(lake: Lake) -> dict[tuple[str, str], list[tuple[int, int]]]:
    out: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for row in lake.ledger.table().filter(pl.col("status").is_in(["present", "empty"])).iter_rows(named=True):
        out.setdefault((row["dataset"], row["symbol"]), []).append((row["start_ms"], row["end_ms"]))
    return out


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "marketlake", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_the_instruments_command_records_a_snapshot_and_prints_the_universe(tmp_path):
    root = str(tmp_path / "lake")
    with emulator_thread(symbols=SYMBOLS) as emu:
        done = _cli("instruments", "--base-url", emu.url, "--lake", root, "--json")
        assert done.returncode == 0, done.stderr
        got = json.loads(done.stdout)
        assert got["recorded"] and got["taken_ms"] == NOW
        rows = {r["symbol"]: r for r in got["instruments"]}
        assert set(rows) == {"BTCUSDT", "ETHUSDT", CHANGING}  # trading now; the delisted one is not
        assert rows[CHANGING]["funding_interval_minutes"] == 60 and rows["BTCUSDT"]["funding_interval_minutes"] == 480
        assert rows["BTCUSDT"]["tick_size"] == 0.1
        both = _cli("instruments", "--category", "linear,inverse", "--all", "--base-url", emu.url, "--lake", root)
        assert both.returncode == 0, both.stderr
        assert "BTCUSD " in both.stdout and DELISTED in both.stdout and "Closed" in both.stdout
        lake = new_lake(Path(root))
        assert set(lake.instrument_history("bybit")["category"]) == {"linear", "inverse"}
        # Every ingest records one too; a bad --data is one line and exit 2.
        bad = _cli("ingest", "--symbols", "BTCUSDT", "--days", "1", "--data", "klines,funding,bogus",
                   "--base-url", emu.url, "--lake", root)
        assert bad.returncode == 2 and "bogus" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
        dry = _cli("ingest", "--symbols", "BTCUSD", "--category", "inverse", "--days", "2", "--data", "all",
                   "--base-url", emu.url, "--lake", root, "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert "premium_candles" not in dry.stdout and "no premium-index candles for inverse" in dry.stderr


def test_archive_and_stream_starts_record_the_instruments(tmp_path):
    a_root, s_root = tmp_path / "a", tmp_path / "s"
    with emulator_thread(symbols=SYMBOLS) as emu:
        done = _cli("archive", "--symbols", "BTCUSDT", "--start", "2024-07-01", "--end", "2024-07-02",
                    "--archive-url", emu.url, "--base-url", emu.url, "--lake", str(a_root))
        assert done.returncode == 0, done.stderr
        assert "note:" not in done.stderr
        assert set(new_lake(a_root).instrument_history("bybit")["symbol"]) == set(SYMBOLS)
        proc = subprocess.Popen(
            [sys.executable, "-m", "marketlake", "stream", "--symbols", "BTCUSDT", "--base-url", emu.url,
             "--lake", str(s_root)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + 60
        while not (s_root / "instruments" / "_delta_log").is_dir():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.1)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert set(new_lake(s_root).instrument_history("bybit")["symbol"]) == set(SYMBOLS)
    # Without a reachable REST host the archive still works; the snapshot is a note.
    with emulator_thread(symbols=SYMBOLS) as emu:
        done = _cli("archive", "--symbols", "BTCUSDT", "--start", "2024-07-01", "--end", "2024-07-02",
                    "--archive-url", emu.url, "--base-url", "http://127.0.0.1:9", "--lake", str(tmp_path / "c"))
        assert done.returncode == 0, done.stderr
        assert "note: instrument snapshot not recorded" in done.stderr


def test_repair_refetches_what_the_perpetual_datasets_lost(tmp_path):
    from marketlake.quality import check_lake, repair_lake
    from marketlake.store.layout import SeriesId

    lake = new_lake(tmp_path / "lake")

    async def t(emu: BybitEmulator) -> None:
        req = IngestRequest.of(symbols="BTCUSDT", timeframes="1", days=3, data="funding,mark,oi")
        async with client_for(emu.url, lake) as client:
            await run_ingest(lake, client, req)
        before = {ds: lake.read(ds) for ds in ("funding", "mark_candles", "open_interest")}
        # Lose a stretch of each dataset (as a damaged or deleted file would): rows gone, the
        # ledger still claiming them.
        cut_lo, cut_hi = NOW - 2 * DAY, NOW - DAY
        for ds, tf in (("funding", None), ("mark_candles", "1"), ("open_interest", "5")):
            sid = SeriesId.of(ds, exchange="bybit", category="linear", symbol="BTCUSDT", timeframe=tf)
            lake._rewrite(sid, cut_lo, cut_hi, lambda f: f.filter(
                (pl.col("ts").dt.epoch("ms") < cut_lo) | (pl.col("ts").dt.epoch("ms") >= cut_hi)), "test_damage")
        assert check_lake(lake, data=["funding", "mark", "oi"]).has_issues
        async with client_for(emu.url, lake) as client:
            rep = await repair_lake(lake, client=client, data=["funding", "mark", "oi"])
        assert rep.perp == [] and not rep.refetch_failures
        assert not check_lake(lake, data=["funding", "mark", "oi"]).has_issues
        for ds, frame in before.items():
            assert lake.read(ds).equals(frame), ds

    run_with_emulator(t, symbols=48)
