"""A market that replays a lake: the emulator serves stored candles and trades instead of a walk.

``marketlake serve --lake DIR`` builds a :class:`LakeMarket` and hands it to the emulator, so a bot
(or a second marketlake) can be pointed at recorded data over Bybit's own wire format, REST and
WebSocket, at any speed. Every stored (category, symbol) becomes an instrument listed at its first
candle; Bybit intervals that are not stored are resampled from the stored 1-minute series; a
replayed market has no forming candle (only closed candles were ever stored), and serves the
stored trades where the lake has them.

A null turnover (CSV imports without one) is served as 0: the wire format has no null.

Prices and sizes travel as exact integers in the emulator; each instrument's decimal scales are
inferred from its data (the fewest decimals, up to 10, at which every value survives the wire
exactly; float noise beyond 2**53 units is rounded, within 1e-15 relative).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from marketlake.core.candles import resample
from marketlake.core.timeframes import Timeframe, parse_timeframe
from marketlake.errors import DataValidationError
from marketlake_emulator.market import SyntheticMarket
from marketlake_emulator.market_types import (
    InstrumentSpec,
    RawCandles,
    concat_candles,
    format_decimal,
    stable_hash,
)
from marketlake.store import Lake

__all__ = ["LakeMarket"]

_MAX_SCALE = 10
_QUOTES = ("USDT", "USDC", "USD", "BTC", "ETH")


def _scale_of(values: np.ndarray) -> int:
    """The fewest decimals ``k`` at which every value survives the trip through the wire exactly:
    ``rint(v * 10**k) / 10**k == v`` is what a client parsing the decimal string gets back, as
    long as the integer units stay below 2**53. Values that need more digits than that (float
    noise from arithmetic) are served at the largest scale that still fits."""
    vals = np.abs(values[np.isfinite(values)])
    if vals.size == 0:
        return 0
    top = float(vals.max())
    for k in range(_MAX_SCALE + 1):
        if top * 10.0 ** (k + 1) >= 2.0**53:
            return k
        if np.array_equal(np.rint(vals * 10.0**k) / 10.0**k, vals):
            return k
    return _MAX_SCALE


def _units(values: np.ndarray, scale: int) -> np.ndarray:
    return np.rint(np.nan_to_num(values) * 10.0**scale).astype(np.int64)


class LakeMarket(SyntheticMarket):
    """The instruments and data of a lake, behind the emulator's market interface.

    Args:
        lake: The lake to replay.
        exchange: Which exchange's series to serve.

    Raises:
        DataValidationError: the lake holds no candle series of ``exchange``.
    """

    def __init__(self, lake: Lake, exchange: str = "bybit") -> None:
        self.lake = lake
        self.exchange = exchange
        series = lake.series("candles")
        series = series.filter(pl.col("exchange") == exchange)
        if series.is_empty():
            raise DataValidationError(f"the lake at {lake.root} holds no {exchange} candles to replay")
        self._stored: dict[tuple[str, str], set[str]] = {}
        specs = []
        for (category, symbol), rows in series.group_by(["category", "symbol"], maintain_order=True):
            self._stored[(category, symbol)] = set(rows.get_column("timeframe").to_list())
            specs.append(self._spec(category, symbol, rows))
        super().__init__(0, specs, ())
        self.last_ms = int(series.get_column("last_ts").dt.epoch("ms").max())  # type: ignore[arg-type]

    def _spec(self, category: str, symbol: str, rows: pl.DataFrame) -> InstrumentSpec:
        # The finest stored series tells the scales and the listing time.
        finest = rows.sort(pl.col("timeframe").map_elements(lambda t: parse_timeframe(t).duration_ms, return_dtype=pl.Int64))
        tf = finest.get_column("timeframe")[0]
        # Every row: one value with more decimals than the rest would otherwise be served rounded.
        sample = self.lake.read_candles(symbol, tf, exchange=self.exchange, category=category)
        prices = sample.select("open", "high", "low", "close").to_numpy().ravel()
        price_scale = _scale_of(prices)
        qty_scale = _scale_of(sample.get_column("volume").to_numpy())
        turnover = sample.get_column("turnover").drop_nulls().to_numpy()
        quote = next((q for q in _QUOTES if symbol.endswith(q) and len(symbol) > len(q)), "USDT")
        return InstrumentSpec(
            symbol=symbol,
            category=category,
            base_coin=symbol[: -len(quote)] if symbol.endswith(quote) else symbol,
            quote_coin=quote,
            launch_ms=int(rows.get_column("first_ts").dt.epoch("ms").min()),  # type: ignore[arg-type]
            base_price=float(sample.get_column("close")[-1]) if sample.height else 1.0,
            price_scale=price_scale,
            tick_units=1,
            qty_scale=qty_scale,
            lot_units=1,
            turnover_scale=_scale_of(turnover) if turnover.size else price_scale + qty_scale,
            key=stable_hash("replay", category, symbol),
        )

    # ------------------------------------------------------------------ the market interface

    def raw_candles(self, spec: InstrumentSpec, tf: Timeframe, start_ms: int, end_ms: int) -> RawCandles:
        """Stored (or resampled from 1m) closed candles opening in ``[start_ms, end_ms]``."""
        stored = self._stored.get((spec.category, spec.symbol), set())
        where = dict(exchange=self.exchange, category=spec.category)
        if tf.name in stored:
            frame = self.lake.read_candles(spec.symbol, tf, start_ms, end_ms + 1, **where)
        elif "1" in stored and tf.duration_ms >= 60_000:
            lo, hi = tf.floor(start_ms), tf.next_open(tf.floor(end_ms))
            minutes = self.lake.read_candles(spec.symbol, "1", lo, hi, **where)
            frame = resample(minutes.drop("symbol", "timeframe", "filled"), tf, complete_only=False)
            frame = frame.filter(pl.col("ts").dt.epoch("ms").is_between(start_ms, end_ms))
        else:
            return concat_candles(spec, [])
        if frame.is_empty():
            return concat_candles(spec, [])
        ps, qs, ts_ = spec.price_scale, spec.qty_scale, spec.turnover_scale
        return RawCandles(
            spec,
            frame.get_column("ts").dt.epoch("ms").to_numpy(),
            *(_units(frame.get_column(c).to_numpy(), ps) for c in ("open", "high", "low", "close")),
            _units(frame.get_column("volume").to_numpy(), qs),
            _units(frame.get_column("turnover").fill_null(0.0).to_numpy(), ts_),
        )

    def forming_candle(self, spec: InstrumentSpec, tf: Timeframe, now_ms: int) -> RawCandles:
        """None: a replay holds closed candles only."""
        return concat_candles(spec, [])

    def trades_between(self, spec: InstrumentSpec, start_ms: int, end_ms: int) -> list[dict[str, object]]:
        """Stored trades with ``start_ms <= time < end_ms``, oldest first, as REST wire objects."""
        frame = self.lake.read_trades(spec.symbol, start_ms, end_ms, exchange=self.exchange, category=spec.category)
        if frame.is_empty():
            return []
        times = frame.get_column("ts").dt.epoch("ms").to_list()
        prices = _units(frame.get_column("price").to_numpy(), spec.price_scale).tolist()
        sizes = _units(frame.get_column("size").to_numpy(), spec.qty_scale).tolist()
        blocks = frame.get_column("is_block_trade").fill_null(False).to_list()
        return [
            {
                "execId": tid,
                "symbol": spec.symbol,
                "price": format_decimal(p, spec.price_scale),
                "size": format_decimal(q, spec.qty_scale),
                "side": side,
                "time": str(t),
                "isBlockTrade": bool(b),
                "isRPITrade": False,
                "seq": str(t * 16 + i % 16),
            }
            for i, (tid, p, q, side, t, b) in enumerate(
                zip(frame.get_column("trade_id").to_list(), prices, sizes,
                    frame.get_column("side").to_list(), times, blocks, strict=True)
            )
        ]

    def minute_trades(self, spec: InstrumentSpec, minute_ms: int) -> list[dict[str, object]]:
        """Stored trades of one minute."""
        minute = (minute_ms // 60_000) * 60_000
        return self.trades_between(spec, minute, minute + 60_000)

    def recent_trades(self, spec: InstrumentSpec, now_ms: int, limit: int) -> list[dict[str, object]]:
        """The newest ``limit`` stored trades at or before ``now_ms``, newest first (7 days back)."""
        out: list[dict[str, object]] = []
        hi = now_ms + 1
        while len(out) < limit and hi > now_ms - 7 * 86_400_000:
            lo = hi - 3_600_000
            out.extend(reversed(self.trades_between(spec, lo, hi)))
            hi = lo
        return out[:limit]

