"""check_candles finds exactly the faults injected into a clean series: precision and recall 1.0.

Every fault kind is injected at random, well separated rows of a clean 1m series; the reported
set of each kind must equal the injected set (no miss, no false alarm).
"""

from __future__ import annotations

import math
import random
from typing import Any

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from marketlake import check_candles, integrity_report

MINUTE = 60_000
START = 1_704_067_200_000  # 2024-01-01 00:00 UTC
INVALID_KINDS = (
    "nan_or_inf", "price_not_positive", "high_below_open_or_close", "low_above_open_or_close",
    "high_below_low", "negative_volume", "negative_turnover", "negative_trades",
)
KINDS = ("gap", "duplicate", "conflicting_duplicate", "swap", "misalign", *INVALID_KINDS)


def clean_series(n: int, rng: random.Random) -> list[dict[str, Any]]:
    rows = []
    close = 30_000.0
    for i in range(n):
        o = close
        close = round(o + rng.choice([-1, 1]) * rng.randint(1, 50) * 0.1, 1)
        hi, lo = max(o, close) + 0.5, min(o, close) - 0.5  # strictly outside the body
        v = rng.randint(1, 10_000) * 0.001
        rows.append({"ts": START + i * MINUTE, "open": o, "high": hi, "low": lo, "close": close,
                     "volume": v, "turnover": v * close, "trades": rng.randint(1, 99)})
    return rows


def make_invalid(row: dict[str, Any], kind: str) -> None:
    body_hi, body_lo = max(row["open"], row["close"]), min(row["open"], row["close"])
    if kind == "nan_or_inf":
        row["close"] = math.nan
    elif kind == "price_not_positive":
        row["low"] = 0.0
    elif kind == "high_below_open_or_close":
        row["high"] = (body_hi + body_lo) / 2 if body_hi > body_lo else body_lo - 0.1
        row["low"] = min(row["low"], row["high"])
    elif kind == "low_above_open_or_close":
        row["low"] = (body_hi + body_lo) / 2 if body_hi > body_lo else body_hi + 0.1
        row["high"] = max(row["high"], row["low"])
    elif kind == "high_below_low":
        row["high"] = row["low"] - 1.0
    elif kind == "negative_volume":
        row["volume"] = -row["volume"]
    elif kind == "negative_turnover":
        row["turnover"] = -1.0
    elif kind == "negative_trades":
        row["trades"] = -1


def inject(rows: list[dict[str, Any]], plan: dict[int, str], gap_len: dict[int, int]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Apply ``plan`` {original row: fault kind}; return the series and the expected findings."""
    out: list[dict[str, Any]] = []
    want: dict[str, Any] = {"gaps": [], "duplicates": {}, "out_of_order": [], "misaligned": [],
                            "invalid": {}}
    i = 0
    pending_gap: tuple[int, int] | None = None  # (previous ts, missing)
    while i < len(rows):
        kind = plan.get(i)
        row = dict(rows[i])
        if kind == "gap":
            k = gap_len[i]
            pending_gap = (out[-1]["ts"], k)
            i += k
            continue
        if pending_gap:
            want["gaps"].append((len(out), pending_gap[0], row["ts"], pending_gap[1]))
            pending_gap = None
        if kind in ("duplicate", "conflicting_duplicate"):
            out.append(row)
            copy = dict(row)
            if kind == "conflicting_duplicate":
                copy["volume"] = row["volume"] + 1.0
            want["duplicates"][len(out)] = (len(out) - 1, kind == "conflicting_duplicate")
            out.append(copy)
        elif kind == "swap":
            out.append(dict(rows[i + 1]))
            want["out_of_order"].append(len(out))
            out.append(row)
            i += 1
        elif kind == "misalign":
            row["ts"] += 30_000  # stays inside its own bucket
            want["misaligned"].append(len(out))
            out.append(row)
        elif kind is not None:
            make_invalid(row, kind)
            want["invalid"][len(out)] = kind
            out.append(row)
        else:
            out.append(row)
        i += 1
    return out, want


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([1, 2, 3]))
def test_every_injected_fault_is_found_and_nothing_else(seed: int, threads: int) -> None:
    rng = random.Random(seed)
    n = 3_000
    rows = clean_series(n, rng)
    # Well separated slots (>= 8 rows apart) so that no two faults touch each other.
    slots = rng.sample(range(2, n // 8 - 2), k=3 * len(KINDS))
    plan = {8 * s: KINDS[j % len(KINDS)] for j, s in enumerate(slots)}
    gap_len = {i: rng.randint(1, 5) for i, kind in plan.items() if kind == "gap"}
    series, want = inject(rows, plan, gap_len)

    got = check_candles(pl.DataFrame(series), "1", threads=threads)

    assert [(g.position, g.previous_ts, g.current_ts, g.missing_candles) for g in got.gaps] == sorted(want["gaps"])
    assert {d.position: (d.first_position, d.differs) for d in got.duplicates} == want["duplicates"]
    assert got.out_of_order_rows.tolist() == sorted(want["out_of_order"])
    assert got.misaligned_rows.tolist() == sorted(want["misaligned"])
    reported = {c.position: c.reasons for c in got.invalid}
    assert set(reported) == set(want["invalid"])
    for pos, kind in want["invalid"].items():
        assert kind in reported[pos], (pos, kind, reported[pos])
    report = integrity_report({"BTCUSDT_1.csv": got})
    assert report["total_gaps"] == len(want["gaps"])
    assert report["total_duplicates"] == len(want["duplicates"])
    assert report["total_invalid_candles"] == len(want["invalid"])
    assert report["files_with_issues"] == 1
