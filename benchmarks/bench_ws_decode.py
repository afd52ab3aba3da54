"""WebSocket frames → candle and trade records: msgspec typed decoding vs ``json.loads`` + dicts.

Frames are the emulator's own ``kline`` and ``publicTrade`` pushes (built with its frame code from
the seeded synthetic market), so they are byte-for-byte what the stream receives: half kline
pushes (mostly ``confirm: false``), half trade pushes of 1 to 20 trades. Every variant turns each
frame into the records the live runner keeps (:class:`LiveCandle` per candle, :class:`LiveTrade`
per trade), and the variants are checked to produce equal records. Figures are medians of
``--repeat`` interleaved rounds after a warm-up. Variants:

* ``marketlake`` — :func:`~marketlake.exchanges.bybit.ws_frames.decode_frame` (one envelope pass
  with ``data`` left raw, then a typed pass straight into structs; strings become floats in C);
* ``json.loads + dicts`` — the standard library, dict access and ``float()`` per field (what the
  old WebSocketHandler did);
* ``parse_ws (generic)`` — the two-stage decoder of :mod:`~marketlake.exchanges.bybit.parse_ws`
  (decode to ``Any``, then convert), for reference.

Goal (issue 5): ``marketlake`` >= 3x ``json.loads + dicts`` on decode + process.

Usage::

    python -m benchmarks.bench_ws_decode [--frames 100000 --repeat 5]
"""

from __future__ import annotations

import argparse
import json
import random
from typing import Any

from benchmarks.datagen import fmt_rate, fmt_s, goal, measure_many, print_table
from marketlake.core.timeframes import parse_timeframe
from marketlake_emulator import BybitEmulator
from marketlake_emulator.ws import _KlineTopic, _TradeTopic
from marketlake.exchanges.bybit.parse_ws import WsKlinePush, decode_ws_message
from marketlake.exchanges.bybit.ws_frames import KlinePush, decode_frame
from marketlake.ingest.live_types import LiveCandle, LiveTrade

T0 = 1_720_000_000_000


def make_frames(n: int, seed: int = 5) -> tuple[list[bytes], int]:
    """``n`` wire frames (half kline, half publicTrade) and how many trades they carry."""
    rnd = random.Random(seed)
    emu = BybitEmulator(symbols=4, seed=seed, start_ms=T0, speed=0)
    ws = emu.ws
    frames: list[bytes] = []
    trades = 0
    now = T0
    specs = [emu.market.instrument(s) for s in ("BTCUSDT", "ETHUSDT")]
    while len(frames) < n:
        spec = rnd.choice(specs)
        now += rnd.randrange(200, 3_000)
        if rnd.random() < 0.5:
            tf = parse_timeframe(rnd.choice(["1", "5", "60"]))
            topic = _KlineTopic(spec, tf, tf.floor(now) - (tf.duration_ms if rnd.random() < 0.05 else 0))
            frames += [f for f, _ in ws._kline_frames(f"kline.{tf.name}.{spec.symbol}", topic, now)]
        else:
            ws.faults.trade_batch_max = rnd.randint(1, 20)
            topic_t = _TradeTopic(spec, now - rnd.randrange(10_000, 180_000))
            got = ws._trade_frames(f"publicTrade.{spec.symbol}", topic_t, now)
            frames += [f for f, _ in got[:1]]
    frames = frames[:n]
    for f in frames:
        if b'"publicTrade.' in f[:30]:
            trades += len(json.loads(f)["data"])
    return frames, trades


def with_msgspec(frames: list[bytes]) -> list[Any]:
    out: list[Any] = []
    for f in frames:
        m = decode_frame(f)
        if isinstance(m, KlinePush):
            for k in m.candles:  # as the runner builds them
                out.append(
                    LiveCandle(
                        m.symbol,
                        m.interval,
                        k.start,
                        k.open,
                        k.high,
                        k.low,
                        k.close,
                        k.volume,
                        k.turnover,
                        None,
                        None,
                        k.confirm,
                    )
                )
        else:
            out += m.trades  # type: ignore[union-attr]  # already the runner's trade records
    return out


def with_json(frames: list[bytes]) -> list[Any]:
    out: list[Any] = []
    for f in frames:
        m = json.loads(f)
        topic = m["topic"]
        if topic.startswith("kline."):
            _, interval, symbol = topic.split(".")
            for k in m["data"]:
                out.append(
                    LiveCandle(
                        symbol,
                        interval,
                        int(k["start"]),
                        float(k["open"]),
                        float(k["high"]),
                        float(k["low"]),
                        float(k["close"]),
                        float(k["volume"]),
                        float(k["turnover"]),
                        None,
                        None,
                        bool(k["confirm"]),
                    )
                )
        else:
            out += [
                LiveTrade(
                    int(t["T"]),
                    float(t["p"]),
                    float(t["v"]),
                    t["S"],
                    t["i"],
                    t.get("L"),
                    bool(t.get("BT", False)),
                    t.get("seq"),
                )
                for t in m["data"]
            ]
    return out


def with_parse_ws(frames: list[bytes]) -> list[Any]:
    out: list[Any] = []
    for f in frames:
        m = decode_ws_message(f)
        if isinstance(m, WsKlinePush):
            for k in m.candles:
                out.append(
                    LiveCandle(
                        m.symbol,
                        m.interval,
                        k.start_ms,
                        k.open,
                        k.high,
                        k.low,
                        k.close,
                        k.volume,
                        k.turnover,
                        None,
                        None,
                        k.confirm,
                    )
                )
        else:
            out += [
                LiveTrade(
                    t.ts_ms, t.price, t.size, t.side, t.trade_id, t.tick_direction, t.is_block_trade, t.seq
                )
                for t in m.trades
            ]  # type: ignore[union-attr]
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    frames, trades = make_frames(args.frames)
    size = sum(map(len, frames))
    print(f"# bench_ws_decode: {len(frames):,} frames ({size / 2**20:.1f} MiB, {trades:,} trades)")
    variants = {
        "marketlake (msgspec typed)": lambda: with_msgspec(frames),
        "json.loads + dicts": lambda: with_json(frames),
        "parse_ws (generic)": lambda: with_parse_ws(frames),
    }
    a, b, c = (fn() for fn in variants.values())
    assert a == b == c, "the variants disagree"
    timings = measure_many(variants, repeat=args.repeat)
    base = timings["json.loads + dicts"].median
    rows = [
        [
            name,
            fmt_s(t.median),
            fmt_rate(len(frames) / t.median) + " frames",
            fmt_rate(size / t.median / 2**20).replace("/s", " MiB/s"),
            f"{base / t.median:.2f}x",
        ]
        for name, t in timings.items()
    ]
    print_table(
        "decode + process (frames → LiveCandle / LiveTrade records)",
        ["variant", "median", "frames/s", "MiB/s", "vs json"],
        rows,
    )
    kinds = []
    for kind, part in (
        ("kline pushes", [f for f in frames if b'"topic":"kline.' in f[:20]]),
        ("publicTrade pushes", [f for f in frames if b'"topic":"publicTrade.' in f[:30]]),
    ):
        t = measure_many(
            {"m": lambda part=part: with_msgspec(part), "j": lambda part=part: with_json(part)},
            repeat=args.repeat,
        )
        kinds.append(
            [
                kind,
                f"{len(part):,}",
                f"{t['m'].median / len(part) * 1e6:.2f} us",
                f"{t['j'].median / len(part) * 1e6:.2f} us",
                f"{t['j'].median / t['m'].median:.2f}x",
            ]
        )
    print_table(
        "by kind (per frame)", ["frames", "count", "marketlake", "json.loads + dicts", "speed-up"], kinds
    )
    ratio = base / timings["marketlake (msgspec typed)"].median
    print(f"\ngoal: marketlake >= 3x json.loads + dicts (the mix): {ratio:.2f}x {goal(ratio >= 3.0)}")


if __name__ == "__main__":
    main()
