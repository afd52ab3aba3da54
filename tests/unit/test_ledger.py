import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marketlake.store.layout import SeriesId
from marketlake.store.ledger import Ledger, Status

BTC1 = SeriesId.of("candles", exchange="bybit", category="linear", symbol="BTCUSDT", timeframe="1")
ETH1 = SeriesId.of("candles", exchange="bybit", category="linear", symbol="ETHUSDT", timeframe="1")


@pytest.fixture
def ledger(tmp_path):
    with Ledger(tmp_path) as led:
        yield led


def test_missing_is_the_request_minus_present_and_empty(ledger):
    ledger.record(BTC1, 100, 200, Status.PRESENT)
    ledger.record(BTC1, 300, 400, Status.EMPTY, detail="outage")
    ledger.record(BTC1, 400, 450, Status.FAILED)
    assert ledger.missing(BTC1, 0, 500) == [(0, 100), (200, 300), (400, 500)]
    assert ledger.missing(ETH1, 0, 500) == [(0, 500)]


def test_touching_ranges_of_one_status_coalesce(ledger):
    ledger.record(BTC1, 0, 100, Status.PRESENT, run_id="a")
    ledger.record(BTC1, 100, 200, Status.PRESENT, run_id="b")
    ledger.record(BTC1, 150, 250, Status.PRESENT, run_id="c")
    got = ledger.ranges(BTC1)
    assert [(c.start_ms, c.end_ms, c.status) for c in got] == [(0, 250, Status.PRESENT)]


def test_newer_knowledge_overrides_but_failure_never_erases_data(ledger):
    ledger.record(BTC1, 0, 300, Status.FAILED)
    ledger.record(BTC1, 100, 200, Status.PRESENT)
    assert [(c.start_ms, c.end_ms, c.status.value) for c in ledger.ranges(BTC1)] == [
        (0, 100, "failed"), (100, 200, "present"), (200, 300, "failed")
    ]
    ledger.record(BTC1, 0, 300, Status.FAILED)  # a failed re-fetch over everything
    assert ledger.covered(BTC1, 0, 300, Status.PRESENT) == [(100, 200)]
    ledger.record(BTC1, 50, 150, Status.EMPTY)  # verified empty overrides present
    assert ledger.covered(BTC1, 0, 300, "empty") == [(50, 150)]
    assert ledger.covered(BTC1, 0, 300, "present") == [(150, 200)]


def test_forget_reopens_a_range(ledger):
    ledger.record(BTC1, 0, 300, Status.PRESENT)
    ledger.forget(BTC1, 100, 120)
    assert ledger.missing(BTC1, 0, 300) == [(100, 120)]


def test_the_ledger_is_shared_by_connections_and_survives_reopening(tmp_path):
    with Ledger(tmp_path) as a, Ledger(tmp_path) as b:
        a.record(BTC1, 0, 10, Status.PRESENT)
        b.record(BTC1, 10, 20, Status.PRESENT)
    with Ledger(tmp_path) as c:
        assert c.missing(BTC1, 0, 20) == []


def test_runs_and_events_are_logged(ledger):
    run = ledger.start_run("ingest", {"symbols": ["BTCUSDT"]})
    ledger.event("disconnect", sid=BTC1, start_ms=5, end_ms=9, detail="1006", run_id=run)
    ledger.finish_run(run, "ok", {"rows": 10})
    runs = ledger.runs()
    assert runs.row(0, named=True)["status"] == "ok"
    ev = ledger.events("disconnect")
    assert ev.height == 1 and ev["symbol"][0] == "BTCUSDT" and ev["timeframe"][0] == "1"


def test_table_lists_every_range_with_datetimes(ledger):
    ledger.record(BTC1, 1_704_067_200_000, 1_704_067_260_000, Status.PRESENT)
    t = ledger.table()
    assert t.height == 1 and t["start"].dtype == pl.Datetime("ms", "UTC")


def test_duckdb_offers_a_coverage_view_once_a_ledger_exists(lake):
    assert not lake.has_ledger
    lake.ledger.record(BTC1, 1_704_067_200_000, 1_704_070_800_000, Status.PRESENT)
    lake.ledger.record(BTC1, 1_704_070_800_000, 1_704_074_400_000, Status.EMPTY, detail="outage")
    out = lake.sql("select symbol, timeframe, status, (end_ms - start_ms) / 60000 as minutes from coverage order by start_ms")
    assert out.rows() == [("BTCUSDT", "1", "present", 60), ("BTCUSDT", "1", "empty", 60)]


def test_lake_sql_sees_ledger_changes_made_after_the_first_query(lake):
    lake.ledger.record(BTC1, 0 + 1_704_067_200_000, 1_704_067_260_000, Status.PRESENT)
    assert lake.sql("select count(*) from coverage").item() == 1
    lake.ledger.record(ETH1, 1_704_067_200_000, 1_704_067_260_000, Status.FAILED)
    assert lake.sql("select count(*) from coverage").item() == 2


_OPS = st.lists(
    st.tuples(
        st.sampled_from(["present", "empty", "failed"]),
        st.lists(st.tuples(st.integers(0, 60), st.integers(1, 15)), min_size=1, max_size=6),
        st.booleans(),
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_OPS)
def test_record_and_record_many_match_a_point_by_point_model(tmp_path_factory, ops):
    """Every unit of time holds the newest status recorded over it, except that failed never
    replaces present/empty; ranges stay disjoint and touching equal statuses coalesce."""
    model: dict[int, str] = {}
    with Ledger(tmp_path_factory.mktemp("ledger")) as led:
        for status, spans, batched in ops:
            ranges = [(a, a + n) for a, n in spans]
            if batched:
                led.record_many(BTC1, ranges, status)
            else:
                for a, b in ranges:
                    led.record(BTC1, a, b, status)
            for a, b in ranges:
                for t in range(a, b):
                    if not (status == "failed" and model.get(t) in ("present", "empty")):
                        model[t] = status
        got = led.ranges(BTC1)
    points = {t: c.status.value for c in got for t in range(c.start_ms, c.end_ms)}
    assert points == model
    for prev, cur in zip(got, got[1:]):
        assert prev.end_ms <= cur.start_ms
        assert not (prev.end_ms == cur.start_ms and prev.status == cur.status)


# ----------------------------------------------------------------- run bookkeeping


def _dead_pid() -> int:
    """The pid of a process that has exited (and was reaped): nothing answers on it now."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    return int(proc.stdout)


def test_a_run_records_its_process_and_heartbeat(ledger):
    import os
    import socket

    from marketlake.clock import ManualClock, use_clock

    with use_clock(ManualClock(1_000_000)) as clock:
        run = ledger.start_run("ingest", {})
        clock.advance(42)
        ledger.heartbeat(run)
    row = ledger.runs().row(0, named=True)
    assert (row["pid"], row["host"], row["heartbeat_ms"]) == (os.getpid(), socket.gethostname(), 1_042_000)
    assert row["status"] == "running"


def test_a_run_whose_process_died_is_marked_killed_when_the_next_run_starts(tmp_path):
    import subprocess
    import sys

    # A real process opens a run and dies without closing it (os._exit: no finally, like SIGKILL).
    code = (
        "import os, sys; from marketlake.store.ledger import Ledger; "
        f"r = Ledger({str(tmp_path)!r}).start_run('archive', {{}}); print(r, flush=True); os._exit(9)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    dead = done.stdout.strip()
    with Ledger(tmp_path) as led:
        assert led.runs().row(0, named=True)["status"] == "running"
        beat = led.runs().row(0, named=True)["heartbeat_ms"]
        mine = led.start_run("ingest", {})
        runs = {r["run_id"]: r for r in led.runs().iter_rows(named=True)}
        assert runs[dead]["status"] == "killed" and runs[dead]["finished_ms"] == beat
        assert runs[mine]["status"] == "running"  # this process is alive: never reaped


def test_dead_and_recycled_pids_on_this_host_are_killed_live_ones_are_not(ledger):
    import os

    alive, dead, recycled = (ledger.start_run("stream", {}) for _ in range(3))
    ledger._db.execute("UPDATE run_procs SET pid = ? WHERE run_id = ?", (_dead_pid(), dead))
    if ledger._db.execute("SELECT proc_token FROM run_procs WHERE run_id = ?", (recycled,)).fetchone()[0]:
        # Our own pid, but the record says another process held it: a recycled pid.
        ledger._db.execute("UPDATE run_procs SET proc_token = 'other-boot:1' WHERE run_id = ?", (recycled,))
        expected = {dead, recycled}
    else:  # pragma: no cover  (no /proc: the pid check alone)
        expected = {dead}
    assert set(ledger.reap_dead_runs()) == expected
    status = dict(ledger.runs().select("run_id", "status").iter_rows())
    assert status[alive] == "running" and all(status[r] == "killed" for r in expected)
    assert os.getpid() in ledger.runs()["pid"].to_list()
    assert ledger.reap_dead_runs() == []  # a killed run stays killed; nothing else changes


def test_runs_of_other_hosts_and_runs_without_an_owner_die_by_their_heartbeat(ledger):
    from marketlake.clock import ManualClock, use_clock
    from marketlake.store.ledger import RUN_STALE_MS

    with use_clock(ManualClock(10_000_000)) as clock:
        remote = ledger.start_run("ingest", {})
        ledger._db.execute("UPDATE run_procs SET host = 'elsewhere', pid = 1 WHERE run_id = ?", (remote,))
        # A run an older marketlake opened: no owner recorded, only its start.
        ledger._db.execute("INSERT INTO runs VALUES ('legacy', 'ingest', ?, NULL, 'running', '{}', NULL)", (10_000_000,))
        clock.advance(RUN_STALE_MS / 1000 - 1)
        ledger.heartbeat(remote)  # the other host still beats
        assert ledger.reap_dead_runs() == []
        clock.advance(2)
        assert ledger.reap_dead_runs() == ["legacy"]
        clock.advance(RUN_STALE_MS / 1000 + 1)
        assert ledger.reap_dead_runs() == [remote]
    status = dict(ledger.runs().select("run_id", "status").iter_rows())
    assert status == {remote: "killed", "legacy": "killed"}
