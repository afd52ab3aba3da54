"""Perpetual-dataset kernels and computations against their plain-Python twins and brute force."""

from __future__ import annotations

import numpy as np
import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marketlake.core.funding import funding_gaps, funding_payments, grid_gaps, infer_funding_intervals
from marketlake.core.instruments import build_instrument_history, universe_at
from marketlake.core.kernels.gaps import spaced_gaps
from marketlake.core.reference_perp import ref_funding_payments, ref_spaced_gaps
from marketlake.core.schemas_perp import INSTRUMENT_ATTRIBUTES
from tests.property._kernel_compare import same_value

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
H = 3_600_000
T0 = 1_704_067_200_000


@st.composite
def spaced_series(draw: st.DrawFn) -> tuple[list[int], list[int]]:
    deltas = draw(st.lists(st.integers(1, 20), max_size=60))
    ts = list(np.cumsum([T0, *deltas]).tolist()) if draw(st.booleans()) or deltas else [T0]
    step = [draw(st.integers(1, 9)) for _ in ts]
    return ts, step


@SETTINGS
@given(spaced_series())
def test_spaced_gap_kernel_matches_reference(series: tuple[list[int], list[int]]) -> None:
    ts, step = series
    before, after, missing = spaced_gaps(np.array(ts, np.int64), np.array(step, np.int64))
    assert list(zip(before.tolist(), after.tolist(), missing.tolist())) == ref_spaced_gaps(ts, step)


@SETTINGS
@given(spaced_series())
def test_funding_and_grid_gap_wrappers_match_reference(series: tuple[list[int], list[int]]) -> None:
    ts, step = series
    ms = [t * 60_000 for t in ts]  # whole minutes, so interval_minutes are the steps
    got = funding_gaps(ms, step).with_columns(pl.col("before", "after").dt.epoch("ms")).rows()
    assert got == ref_spaced_gaps(ms, [s * 60_000 for s in step])
    got = grid_gaps(ms, step[0] * 60_000).with_columns(pl.col("before", "after").dt.epoch("ms")).rows()
    assert got == ref_spaced_gaps(ms, [step[0] * 60_000] * len(ms))


@st.composite
def regimes(draw: st.DrawFn) -> tuple[list[int], list[int], set[int]]:
    """Settlements under changing intervals (each regime >= 8 settlements, Bybit's grid), and
    isolated dropped settlements well inside regimes. Returns (all ts, their intervals, dropped)."""
    ts: list[int] = []
    ivs: list[int] = []
    dropped: set[int] = set()
    t = T0
    for _ in range(draw(st.integers(1, 4))):
        minutes = draw(st.sampled_from([60, 120, 240, 480]))
        step = minutes * 60_000
        t = (t // step + 1) * step  # the next point of the new grid
        n = draw(st.integers(8, 20))
        start = len(ts)
        for _k in range(n):
            ts.append(t)
            ivs.append(minutes)
            t += step
        t -= step
        candidates = draw(st.lists(st.integers(start + 3, start + n - 4), max_size=3, unique=True))
        for k in sorted(candidates):
            if all(abs(k - j) >= 3 for j in dropped):
                dropped.add(k)
    return ts, ivs, dropped


@SETTINGS
@given(regimes(), st.booleans())
def test_interval_changes_give_no_false_gap_and_drops_are_found(case: tuple[list[int], list[int], set[int]], observe: bool) -> None:
    ts, ivs, dropped = case
    kept = [i for i in range(len(ts)) if i not in dropped]
    t = [ts[i] for i in kept]
    observed = [(ts[i], ivs[i]) for i in kept[::5]] if observe else []
    inferred = infer_funding_intervals(t, observed)
    gaps = funding_gaps(t, inferred).with_columns(pl.col("before", "after").dt.epoch("ms"))
    want = sorted((ts[i - 1], ts[i + 1]) for i in dropped)
    assert gaps.select("before", "after").rows() == want
    assert gaps["missing"].to_list() == [1] * len(want)
    # Away from the first two rows of each regime (the step into it may be labelled with either
    # side), the inferred interval is the true one.
    starts = {i for i in range(1, len(ts)) if ivs[i] != ivs[i - 1]}
    for pos, i in enumerate(kept):
        if not any(0 <= i - s < 2 for s in starts) and i > 1:
            assert inferred[pos] == ivs[i], (pos, i)


@st.composite
def backtests(draw: st.DrawFn) -> tuple[list[tuple[int, float]], list[tuple[int, float]], list[tuple[int, float]], int, int]:
    n = draw(st.integers(0, 15))
    settle = sorted({T0 + draw(st.integers(0, 40)) * H for _ in range(n)})
    rates = [(t, draw(st.floats(-0.01, 0.01, allow_nan=False))) for t in settle]
    pos_t = sorted(T0 + draw(st.integers(-2, 41)) * H + draw(st.sampled_from([0, 0, 1, -1])) for _ in range(draw(st.integers(0, 8))))
    position = [(x, draw(st.floats(-5, 5, allow_nan=False))) for x in pos_t]
    price_t = sorted({T0 - 3 * H, *(T0 + draw(st.integers(-2, 41)) * H for _ in range(draw(st.integers(0, 10))))})
    prices = [(x, draw(st.floats(1, 1e5))) for x in price_t]
    a = T0 + draw(st.integers(-1, 40)) * H
    b = a + draw(st.integers(0, 40)) * H
    return rates, position, prices, a, b


@SETTINGS
@given(backtests(), st.booleans(), st.booleans())
def test_funding_payments_match_reference(case, priced: bool, inverse: bool) -> None:  # type: ignore[no-untyped-def]
    rates, position, prices, a, b = case
    funding = pl.DataFrame({"ts": [t for t, _ in rates], "rate": [r for _, r in rates]}, schema={"ts": pl.Int64, "rate": pl.Float64})
    col = "size" if priced else "notional"
    pos = pl.DataFrame({"ts": [t for t, _ in position], col: [v for _, v in position]}, schema={"ts": pl.Int64, col: pl.Float64})
    px = pl.DataFrame({"ts": [t for t, _ in prices], "price": [p for _, p in prices]}) if priced else None
    got = funding_payments(funding, pos, a, b, prices=px, inverse=inverse)
    want = ref_funding_payments(rates, position, prices if priced else None, a, b, inverse=inverse)
    assert got["ts"].dt.epoch("ms").to_list() == [t for t, _ in want]
    for g, (_, w) in zip(got["payment"].to_list(), want):
        assert same_value(g, w) or abs(g - w) < 1e-12


ATTRS = {"tick_size": [0.1, 0.01], "funding_interval_minutes": [60, 480], "status": ["Trading", "Delivering"]}


@st.composite
def snapshot_sequences(draw: st.DrawFn) -> list[tuple[int, dict[str, dict[str, object]]]]:
    symbols = ["AUSDT", "BUSDT", "CUSDT"]
    out = []
    t = T0
    for _ in range(draw(st.integers(1, 6))):
        t += draw(st.integers(1, 10)) * H
        present = {s for s in symbols if draw(st.booleans())}
        out.append((t, {s: {k: draw(st.sampled_from(v)) for k, v in ATTRS.items()} for s in sorted(present)}))
    return out


@SETTINGS
@given(snapshot_sequences())
def test_the_history_reproduces_every_snapshot_at_its_time(seq: list[tuple[int, dict[str, dict[str, object]]]]) -> None:
    def frame(contents: dict[str, dict[str, object]]) -> pl.DataFrame:
        rows = [{"symbol": s, "category": "linear", **attrs} for s, attrs in contents.items()]
        schema = {"symbol": pl.String, "category": pl.String, "tick_size": pl.Float64,
                  "funding_interval_minutes": pl.Int32, "status": pl.String}
        return pl.DataFrame(rows, schema=schema)

    history = build_instrument_history([(t, frame(c)) for t, c in seq], categories=("linear",))
    for t, contents in seq:
        got = universe_at(history, t, "linear", statuses=None)
        assert {r["symbol"]: {k: r[k] for k in ATTRS} for r in got.iter_rows(named=True)} == contents
    # A new row only where the attribute set changed or a symbol (re)appeared.
    expected_rows = 0
    prev: dict[str, dict[str, object]] = {}
    for _, contents in seq:
        expected_rows += sum(1 for s, a in contents.items() if prev.get(s) != a)
        prev = contents
    assert history.height == expected_rows
    assert set(INSTRUMENT_ATTRIBUTES) >= set(ATTRS)
