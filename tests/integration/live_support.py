"""Helpers for the live-stream tests: a runner against the emulator, and exact checks of the lake
against the emulator's ground truth over what the ledger says is covered."""

from __future__ import annotations

import polars as pl

from marketlake.core.candles import candles_from_trades
from marketlake.core.intervals import merge
from marketlake_emulator import BybitEmulator
from marketlake.ingest.live import LiveRunner
from marketlake.ingest.live_types import LiveConfig
from marketlake.net.backoff import Backoff
from marketlake.store import Lake
from marketlake.store.layout import SeriesId
from marketlake.store.ledger import Status
from tests.integration.emulated import client_for

SPEED = 300.0  # a market minute every 0.2 s
WS_FAST = {
    "ping_interval_s": 0.3,
    "pong_timeout_s": 0.3,
    "backoff": Backoff(base=0.01, cap=0.05, max_attempts=10**9),
    "stable_after_s": 0.5,
}


def live_config(symbols: str = "BTCUSDT,ETHUSDT", timeframes: str = "1,3", **kw: object) -> LiveConfig:
    """A configuration for compressed time (lateness in market ms covers a loaded machine)."""
    kw.setdefault("flush_interval_s", 0.2)
    kw.setdefault("hole_grace_s", 0.3)
    kw.setdefault("trade_lateness_ms", 120_000)
    kw.setdefault("status_interval_s", 0.5)
    return LiveConfig.of(symbols, timeframes, **kw)  # type: ignore[arg-type]


def runner_for(emu: BybitEmulator, lake: Lake, rest: object, cfg: LiveConfig, **kw: object) -> LiveRunner:
    """A runner on the emulator's socket with quick keep-alive and reconnects."""
    return LiveRunner(lake, rest, cfg, ws_url=emu.ws_url(cfg.category), ws_options=dict(WS_FAST), **kw)  # type: ignore[arg-type]


def rest_for(emu: BybitEmulator, lake: Lake) -> object:
    """A REST client with quick retries."""
    return client_for(emu.url, lake)


def coverage(lake: Lake, sid: SeriesId) -> tuple[int, int]:
    """The one contiguous covered span of ``sid``; fails on a gap or a failed range."""
    ranges = lake.ledger.ranges(sid)
    assert ranges, f"{sid.label()}: nothing covered"
    assert all(r.status in (Status.PRESENT, Status.EMPTY) for r in ranges), f"{sid.label()}: a failed range"
    spans = merge((r.start_ms, r.end_ms) for r in ranges)
    assert len(spans) == 1, f"{sid.label()}: coverage has gaps {spans[:5]}"
    return spans[0]


def sid_of(symbol: str, tf: str | None = None, category: str = "linear") -> SeriesId:
    """A series id of the default exchange."""
    ds = "trades" if tf is None else "candles"
    return SeriesId.of(ds, exchange="bybit", category=category, symbol=symbol, timeframe=tf)


def assert_klines_exact(
    lake: Lake, emu: BybitEmulator, symbol: str, tf: str, category: str = "linear"
) -> int:
    """Every candle of the covered span equals the ground truth, nothing more, nothing less."""
    lo, hi = coverage(lake, sid_of(symbol, tf, category))
    want = emu.market.candles(symbol, tf, lo, hi - 1, category=category)
    got = lake.read_candles(symbol, tf, lo, hi, category=category).select(want.columns)
    assert got.height == want.height, f"{symbol}/{tf}: {got.height} stored, truth {want.height}"
    assert got.equals(want), f"{symbol}/{tf}: stored values differ from the ground truth"
    later = lake.read_candles(symbol, tf, hi, None, category=category)
    assert later.is_empty(), f"{symbol}/{tf}: rows stored past the covered span"
    return got.height


def assert_trades_exact(lake: Lake, emu: BybitEmulator, symbol: str) -> int:
    """Every trade of the covered span is stored once with the truth's values."""
    lo, hi = coverage(lake, sid_of(symbol))
    want = emu.market.trades(symbol, lo, hi)
    got = lake.read_trades(symbol, lo, hi).sort("ts", "trade_id")
    assert got["trade_id"].n_unique() == got.height
    key = ["trade_id", "ts", "price", "size", "side"]
    assert got.select(key).sort("trade_id").equals(want.select(key).sort("trade_id")), (
        f"{symbol}: trades differ"
    )
    return got.height


def assert_trade_candles_exact(lake: Lake, emu: BybitEmulator, symbol: str, tf: str) -> int:
    """Candles built live from trades equal the kernel over the ground truth's trades."""
    lo, hi = coverage(lake, sid_of(symbol, tf))
    trades = emu.market.trades(symbol, lo, hi).sort("ts", "seq")
    want = candles_from_trades(trades, tf)
    cols = ["ts", "open", "high", "low", "close", "volume", "turnover", "trades", "buy_volume"]
    got = lake.read_candles(symbol, tf, lo, hi).select(cols)
    assert got.height == want.height, f"{symbol}/{tf}: {got.height} built, truth {want.height}"
    assert got.equals(want.select(cols)), f"{symbol}/{tf}: candles from trades differ"
    return got.height


def stored_opens(lake: Lake, symbol: str, tf: str) -> list[int]:
    """Open times stored for a series, ascending."""
    return lake.read_candles(symbol, tf).select(pl.col("ts").dt.epoch("ms")).to_series().to_list()
