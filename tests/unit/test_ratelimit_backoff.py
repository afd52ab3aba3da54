"""The rate budget (in process and shared through SQLite by several processes), the ban latch,
and the backoff policy."""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing as mp
import random
import time
from pathlib import Path

import pytest

from marketlake.clock import ManualClock, use_clock
from marketlake.errors import ConfigError
from marketlake.net.backoff import Backoff
from marketlake.net.ratelimit import BanLatch, RateBudget, process_ban_latch


def max_in_window(times_ms: list[int], window_ms: int) -> int:
    """Most grants in any window ``(t - window, t]``."""
    times = sorted(times_ms)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - window_ms:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def acquire_many(budget: RateBudget, n: int) -> list[int]:
    async def go() -> list[int]:
        return [await budget.acquire() for _ in range(n)]

    return asyncio.run(go())


def test_no_window_ever_holds_more_than_the_limit_and_a_steady_client_uses_the_whole_budget() -> None:
    clock = ManualClock(start_ms=1_700_000_000_000)
    with use_clock(clock):
        grants = acquire_many(RateBudget(500, 5.0), 3000)
    assert max_in_window(grants, 5000) == 500
    elapsed_s = (grants[-1] - grants[0]) / 1000
    assert elapsed_s <= (3000 / 500) * 5.0 + 5.0  # ~100 requests/s sustained: nothing wasted


def test_grants_are_paced_after_the_initial_burst() -> None:
    clock = ManualClock(start_ms=1_700_000_000_000)
    with use_clock(clock):
        grants = acquire_many(RateBudget(100, 1.0, burst=5), 30)
    assert grants[:5] == [grants[0]] * 5
    gaps = [b - a for a, b in itertools.pairwise(grants[5:])]
    assert all(9 <= g <= 11 for g in gaps)  # 100 per second: one every 10 ms


def test_block_until_holds_every_grant_back() -> None:
    clock = ManualClock(start_ms=1_700_000_000_000)
    with use_clock(clock):
        budget = RateBudget(10, 1.0)
        budget.block_until(clock.now_ms() + 2500)
        assert budget.try_acquire() == pytest.approx(2.5)
        assert acquire_many(budget, 1)[0] >= 1_700_000_002_500


def test_the_budget_pauses_when_the_server_says_nothing_remains() -> None:
    clock = ManualClock(start_ms=1_700_000_000_000)
    with use_clock(clock):
        budget = RateBudget(10, 1.0)
        budget.observe(remaining=3, reset_ms=5_000, server_time_ms=1_000)
        assert budget.try_acquire() == 0.0
        # Server timestamps are only used as a difference: 4 s to the reset on the server's clock.
        budget.observe(remaining=0, reset_ms=5_000, server_time_ms=1_000)
        assert budget.try_acquire() == pytest.approx(4.0)
        budget.observe(remaining=0, reset_ms=None, server_time_ms=1_000)  # nothing to go by
        assert budget.blocked_until_ms == 1_700_000_004_000


def test_two_budgets_on_the_same_directory_share_one_limit(tmp_path: Path) -> None:
    clock = ManualClock(start_ms=1_700_000_000_000)
    with use_clock(clock):
        a = RateBudget(10, 1.0, state_dir=tmp_path, burst=10)
        b = RateBudget(10, 1.0, state_dir=tmp_path, burst=10)
        got = [x.try_acquire() == 0.0 for x in (a, b) * 8]
        assert got.count(True) == 10
        b.block_until(clock.now_ms() + 60_000)
        clock.advance(5)
        assert a.try_acquire() == pytest.approx(60.0 - 5, abs=0.01)
        a.close()
        b.close()
    assert (tmp_path / "ratelimit-bybit-rest.sqlite").exists()


def _worker(
    state_dir: str, limit: int, window_s: float, duration_s: float, barrier: object, out: object
) -> None:
    budget = RateBudget(limit, window_s, state_dir=state_dir)
    barrier.wait()  # type: ignore[attr-defined]
    stop = time.monotonic() + duration_s

    async def go() -> list[int]:
        grants = []
        while time.monotonic() < stop:
            grants.append(await budget.acquire())
        return grants

    out.put(asyncio.run(go()))  # type: ignore[attr-defined]


def test_two_processes_sharing_the_budget_never_exceed_it_in_any_window(tmp_path: Path) -> None:
    limit, window_s = 20, 0.25  # Bybit's 5 s window scaled down 20 times
    ctx = mp.get_context("fork")  # the child needs only sqlite and asyncio: fork is safe and fast
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(str(tmp_path), limit, window_s, 1.2, barrier, out))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert all(results), "both processes were granted requests"
    merged = results[0] + results[1]
    assert max_in_window(merged, int(window_s * 1000)) <= limit
    assert len(merged) > 2 * limit  # the budget was used across several windows, not starved


def test_bad_budget_settings_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        RateBudget(0)
    with pytest.raises(ConfigError):
        RateBudget(10, 0)
    with pytest.raises(ConfigError):
        RateBudget(10, state_dir=tmp_path, name="../escape")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError):
        RateBudget(10, state_dir=tmp_path / "file" / "sub")


def test_the_ban_latch_trips_once_and_waits_until_the_ban_lifts() -> None:
    clock = ManualClock(start_ms=1_700_000_000_000)
    latch = BanLatch(clock)
    assert latch.trip(1_700_000_600_000) is True
    assert latch.trip(1_700_000_900_000) is False  # a late 403 does not surface again
    assert latch.is_banned() and latch.banned_until_ms == 1_700_000_600_000
    asyncio.run(latch.wait())
    assert clock.now_ms() == 1_700_000_600_000 and not latch.is_banned()
    assert latch.trip(1_700_001_000_000) is True  # a new ban after the first lifted
    latch.lift()
    assert not latch.is_banned()
    assert process_ban_latch() is process_ban_latch()


def test_backoff_is_full_jitter_capped_exponential_and_reproducible() -> None:
    policy = Backoff(base=0.5, cap=8.0, max_attempts=6, rng=random.Random(42))
    assert [policy.ceiling(a) for a in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    delays = [policy.delay(a) for a in range(1, 200)]
    assert all(0.0 <= d <= min(8.0, 0.5 * 2 ** (a - 1)) for a, d in zip(range(1, 200), delays))
    assert len(set(delays)) == len(delays)  # jittered, not fixed steps
    again = Backoff(base=0.5, cap=8.0, max_attempts=6, rng=random.Random(42))
    assert [again.delay(a) for a in range(1, 200)] == delays
    assert policy.delay(1, not_before_s=30.0) == 30.0  # a server reset beats the cap
    assert not policy.gives_up_after(5) and policy.gives_up_after(6)
    assert policy.ceiling(10_000) == 8.0


def test_bad_backoff_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        Backoff(base=0)
    with pytest.raises(ValueError):
        Backoff(max_attempts=0)
    with pytest.raises(ValueError):
        Backoff().delay(0)
