"""The live bookkeeping alone: every closed candle accepted once, in order, whatever the delivery."""

from __future__ import annotations

import random

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from marketlake.core.candles import candles_from_trades
from marketlake.core.intervals import merge
from marketlake.core.timeframes import parse_timeframe
from marketlake.ingest.live_tracks import KlineTrack, TradeCandles, TradeTrack, absent_runs
from marketlake.ingest.live_types import LiveCandle, LiveTrade, trades_frame

M = 60_000
TF = parse_timeframe("1")


def candle(i: int, *, confirm: bool = True, source: str = "ws", close: float | None = None) -> LiveCandle:
    c = 100.0 + i if close is None else close
    return LiveCandle(
        symbol="X",
        timeframe="1",
        ts_ms=i * M,
        open=c,
        high=c + 1,
        low=c - 1,
        close=c,
        volume=1.0,
        confirm=confirm,
        source=source,
    )


def test_in_order_pushes_are_accepted_and_forming_ones_never() -> None:
    tr = KlineTrack("X", TF, None)
    assert tr.on_push(candle(5, confirm=False), 0) == []
    assert tr.frontier == 5 * M and tr.latest().confirm is False
    assert [c.ts_ms for c in tr.on_push(candle(5), 0)] == [5 * M]
    assert tr.on_push(candle(6, confirm=False), 0) == []
    assert [c.ts_ms for c in tr.on_push(candle(6), 0)] == [6 * M]
    assert tr.on_push(candle(6), 0) == [] and tr.duplicates == 1
    batch = tr.take()
    assert (
        batch is not None and batch.span == (5 * M, 7 * M) and [c.ts_ms for c in batch.rows] == [5 * M, 6 * M]
    )
    assert batch.present == [(5 * M, 7 * M)] and tr.take() is None


def test_a_reordered_push_waits_for_the_one_before_it() -> None:
    tr = KlineTrack("X", TF, 10 * M)
    tr.resync = False
    assert tr.on_push(candle(11), 1.0) == []
    assert tr.hole() == (10 * M, 11 * M)
    assert not tr.hole_due(1.5, grace_s=1.0) and tr.hole_due(2.0, grace_s=1.0)
    assert [c.ts_ms for c in tr.on_push(candle(10), 1.2)] == [10 * M, 11 * M]
    assert tr.hole() is None and tr.frontier == 12 * M


def test_a_forming_candle_past_the_frontier_reveals_a_hole_rest_fills_it_then_pending_follow() -> None:
    tr = KlineTrack("X", TF, 10 * M)  # resumes after a restart: resync, filled at once
    tr.on_push(candle(14), 0)
    tr.on_push(candle(15, confirm=False), 0)
    assert tr.hole() == (10 * M, 14 * M) and tr.hole_due(0, grace_s=100)
    # REST knows 10, 11 and 13; 12 was an exchange outage.
    got = tr.fill(
        10 * M, 14 * M, [candle(10, source="rest"), candle(11, source="rest"), candle(13, source="rest")]
    )
    assert [c.ts_ms // M for c in got] == [10, 11, 13, 14]
    batch = tr.take()
    assert batch.empty == [(12 * M, 13 * M)] and batch.present == [(10 * M, 12 * M), (13 * M, 15 * M)]


def test_a_refused_range_is_recorded_as_failed_and_the_stream_goes_on() -> None:
    tr = KlineTrack("X", TF, 10 * M)
    tr.on_push(candle(12), 0)
    assert [c.ts_ms // M for c in tr.fail(10 * M, 12 * M)] == [12]
    batch = tr.take()
    assert batch.failed == [(10 * M, 12 * M)] and batch.present == [(12 * M, 13 * M)]


def test_inconsistent_candles_are_named() -> None:
    tr = KlineTrack("X", TF, None)
    assert tr.check(60_000, 119_999, "1") is None
    assert "grid" in tr.check(60_001, 120_000, "1")
    assert "grid" in tr.check(60_000, 120_000, "1")
    assert "interval" in tr.check(60_000, 119_999, "5")


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[int], list[tuple[str, int]], int]:
    n = draw(st.integers(3, 60))
    absent = set(draw(st.lists(st.integers(0, n - 1), max_size=n // 3)))
    present = [i for i in range(n) if i not in absent]
    events: list[tuple[str, int]] = []
    for i in range(n):
        if draw(st.booleans()):
            events.append(("forming", i))
        if i in present:
            events.append(("closed", i))
            if draw(st.integers(0, 9)) == 0:
                events.append(("closed", i))  # duplicate push
    # Reorder some neighbours, drop runs (socket down: followed by a resync), keep the rest.
    for _ in range(draw(st.integers(0, 6))):
        if len(events) > 1:
            k = draw(st.integers(0, len(events) - 2))
            events[k], events[k + 1] = events[k + 1], events[k]
    out: list[tuple[str, int]] = []
    k = 0
    while k < len(events):
        if draw(st.integers(0, 14)) == 0:
            k += draw(st.integers(1, 8))
            out.append(("disconnect", -1))
            continue
        out.append(events[k])
        k += 1
    out.append(("forming", n))  # the stream goes on: the last candles close
    start = draw(st.integers(0, 2))
    return present, out, start


@settings(max_examples=300, deadline=None)
@given(deliveries(), st.randoms(use_true_random=False))
def test_any_delivery_gives_every_closed_candle_exactly_once_in_order(case, rnd: random.Random) -> None:
    present, events, start = case
    tr = KlineTrack("X", TF, start * M)
    truth = {i: candle(i, source="rest") for i in present}
    accepted: list[LiveCandle] = []
    spans = []

    def heal(force: bool) -> None:
        hole = tr.hole()
        if hole is not None and (force or tr.resync or rnd.random() < 0.5):
            lo, hi = hole
            accepted.extend(tr.fill(lo, hi, [truth[i] for i in range(lo // M, hi // M) if i in truth]))

    for kind, i in events:
        if kind == "disconnect":
            tr.resync = True
            continue
        accepted.extend(tr.on_push(candle(i, confirm=kind == "closed"), 0))
        heal(False)
        if rnd.random() < 0.3 and (b := tr.take()) is not None:
            spans.append(b)
    while tr.hole() is not None:  # the stream goes on: every hole is filled in the end
        heal(True)
    if (b := tr.take()) is not None:
        spans.append(b)
    opens = [c.ts_ms // M for c in accepted]
    assert opens == [i for i in present if i >= start]
    assert all(c.confirm for c in accepted)
    # Flush spans tile the stream without overlap; their empty runs are exactly the absent opens.
    tiles = [b.span for b in spans]
    assert (
        merge(tiles) == [(start * M, tr.frontier)] and sum(b - a for a, b in tiles) == tr.frontier - start * M
    )
    assert [c.ts_ms // M for b in spans for c in b.rows] == opens
    empty = merge(e for b in spans for e in b.empty)
    assert empty == absent_runs(TF, start * M, tr.frontier, [i * M for i in present])


def trade(t: int, i: int, price: float = 10.0) -> LiveTrade:
    return LiveTrade(t, price, 1.0, "Buy" if i % 2 else "Sell", f"id{i}", None, False, i)


def test_trades_are_deduplicated_and_written_only_once_final() -> None:
    tt = TradeTrack("X", None, lateness_ms=1_000)
    new, gap = tt.on_rest([trade(1_000, 1), trade(2_000, 2)], full=False)
    assert [t.trade_id for t in new] == ["id1", "id2"] and gap is None and tt.frontier == 2_000
    assert [t.trade_id for t in tt.on_push([trade(2_000, 2), trade(3_000, 3), trade(5_000, 4)])] == [
        "id3",
        "id4",
    ]
    assert tt.duplicates == 1 and tt.frontier == 5_000
    batch = tt.take()
    assert batch.span == (1_000, 4_000) and [t.trade_id for t in batch.rows] == ["id1", "id2", "id3"]
    final = tt.take(final=True)
    assert final.span == (4_000, 5_000) and [t.trade_id for t in final.rows] == ["id4"]


def test_a_full_rest_list_that_does_not_reach_back_is_a_recorded_gap() -> None:
    tt = TradeTrack("X", None, lateness_ms=0)
    tt.on_rest([trade(1_000, 1), trade(2_000, 2)], full=True)
    assert tt.committed == 1_001  # trades sharing the oldest ms of a full list may be cut off
    tt.desync()
    assert tt.on_push([trade(9_000, 9)]) and tt.frontier == 2_000  # unsynced: frontier waits
    _, gap = tt.on_rest([trade(6_000, 6), trade(7_000, 7)], full=True)
    assert gap == (2_000, 6_001) and tt.frontier == 9_000
    batch = tt.take()
    assert batch.failed == [(2_000, 6_001)] and batch.present == [(1_001, 2_000), (6_001, 9_000)]


def test_an_overlapping_rest_list_closes_the_disconnect_without_a_gap() -> None:
    tt = TradeTrack("X", None, lateness_ms=0)
    tt.on_rest([trade(1_000, 1), trade(2_000, 2)], full=False)
    tt.desync()
    new, gap = tt.on_rest([trade(1_500, 15), trade(2_000, 2), trade(3_000, 3)], full=True)
    assert gap is None and [t.trade_id for t in new] == ["id3"] and tt.frontier == 3_000


def test_after_a_restart_trades_before_the_resume_point_are_not_taken_again() -> None:
    tt = TradeTrack("X", 5_000, lateness_ms=1_000)
    new, gap = tt.on_rest([trade(4_000, 4), trade(4_999, 5), trade(5_000, 6), trade(6_000, 7)], full=True)
    assert gap is None and [t.trade_id for t in new] == ["id6", "id7"]


def test_trade_candles_equal_the_kernel_over_all_trades_and_skip_gaps() -> None:
    rnd = random.Random(3)
    trades = sorted(
        (trade(rnd.randrange(0, 60_000), i, rnd.choice([9.5, 10.0, 10.5])) for i in range(400)),
        key=lambda t: (t.ts_ms, t.seq),
    )
    tf = parse_timeframe("5s")
    tc = TradeCandles("X", tf, None)
    tc.start_at(1)
    assert tc.frontier == 5_000
    made = []
    for lo, cut in ((0, 17_000), (17_000, 31_000), (31_000, 60_000)):
        tc.feed([t for t in trades if lo <= t.ts_ms < cut], [(40_000, 41_000)] if cut == 60_000 else [])
        made.append(tc.build(cut))
    rows = [c for b in made for c in b.rows]
    want = candles_from_trades(trades_frame([t for t in trades if t.ts_ms >= 5_000]), tf)
    want = want.filter(~pl.col("ts").dt.epoch("ms").is_between(40_000, 44_999))
    assert [c.ts_ms for c in rows] == want["ts"].dt.epoch("ms").to_list()
    assert [c.close for c in rows] == want["close"].to_list() and [c.trades for c in rows] == want[
        "trades"
    ].to_list()
    assert made[-1].failed == [(40_000, 45_000)]
    assert [b.span for b in made] == [(5_000, 15_000), (15_000, 30_000), (30_000, 60_000)]
