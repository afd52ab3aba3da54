"""A realistic, deterministic 1-minute candle data set for the benchmarks, plus shared bench helpers.

What it generates (per symbol, seeded, independent of how many other symbols are asked for):

* prices: a random walk of log returns with the symbol's annual volatility, Student-t (df 4) tails,
  volatility clustering (an hourly AR(1) log-volatility regime), an intraday activity profile
  (Asia / Europe / US opens, quieter weekends), every price on the symbol's tick grid
  (BTCUSDT 0.1, ETHUSDT 0.01, XRPUSDT 0.0001 ...);
* OHLC consistent: ``open`` = previous ``close`` (with an occasional one-tick gap),
  ``high >= max(open, close)``, ``low <= min(open, close)``, the extra range drawn from the
  minute's volatility; a minute without trades (illiquid symbols, now and then) is flat at the
  previous close with zero volume;
* volumes on the symbol's lot step (0.001 BTC, 1 XRP, 100 1000PEPE ...), log-normal and
  Pareto-spiked (heavy tails), following the same intraday profile and the volatility regime;
* turnover = volume x a price inside the minute's range, rounded to 4 decimals (quote currency).

It writes the set, cached under ``bench-data/<key>/`` (key = the parameters):

* ``csv/{SYMBOL}_1.csv``: the old CSVManager files (timestamp,datetime,open,high,low,close,
  volume,turnover; floats as Python's ``str(float)``, checked on a sample);
* ``lake/``: a marketlake lake (``Lake.write_candles`` per symbol, timeframe ``1``);
* ``single.parquet``: every row in one unpartitioned Parquet file (symbol column, sorted by
  symbol and ts, Polars' default ``write_parquet`` settings) — the "single-file Parquet" baseline.

Usage::

    python -m benchmarks.datagen --symbols 20 --days 365          # build csv, lake and single file
    python -m benchmarks.datagen --symbols 3 --days 30 --what csv

The second half of this module holds small helpers the bench scripts share: timing (median of
runs after an untimed warm-up), peak RSS in a fresh subprocess, table printing.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import fcntl
import hashlib
import io
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Final

import numpy as np
import polars as pl

GEN_VERSION: Final = 1  # bump when the generator's output changes (invalidates the cache)
REPO: Final = Path(__file__).resolve().parents[1]
BENCH_DATA: Final = Path(os.environ.get("MARKETLAKE_BENCH_DATA", REPO / "bench-data"))
MINUTE_MS: Final = 60_000
CSV_COLUMNS: Final = ("timestamp", "datetime", "open", "high", "low", "close", "volume", "turnover")
PRICE_COLUMNS: Final = ("open", "high", "low", "close", "volume", "turnover")


@dataclass(frozen=True, slots=True)
class SymbolSpec:
    """How one symbol trades: start price, tick, lot, annual volatility, liquidity."""

    symbol: str
    price: float  # start price (quote currency)
    tick: str  # tick size, as the exchange writes it
    lot: str  # quantity step
    vol: float  # annualised volatility of log returns
    quote_per_min: float  # median quote volume of one minute (USDT)


# A Bybit-linear-like universe, most liquid first (prices around early 2023-2024 levels).
UNIVERSE: Final[tuple[SymbolSpec, ...]] = (
    SymbolSpec("BTCUSDT", 42000.0, "0.1", "0.001", 0.50, 3.0e6),
    SymbolSpec("ETHUSDT", 2300.0, "0.01", "0.01", 0.55, 1.5e6),
    SymbolSpec("SOLUSDT", 100.0, "0.01", "0.1", 0.85, 6.0e5),
    SymbolSpec("XRPUSDT", 0.62, "0.0001", "1", 0.70, 2.0e5),
    SymbolSpec("DOGEUSDT", 0.09, "0.00001", "1", 0.80, 2.0e5),
    SymbolSpec("BNBUSDT", 310.0, "0.05", "0.01", 0.55, 8.0e4),
    SymbolSpec("ADAUSDT", 0.60, "0.0001", "1", 0.75, 1.0e5),
    SymbolSpec("AVAXUSDT", 38.0, "0.001", "0.1", 0.85, 1.0e5),
    SymbolSpec("LINKUSDT", 15.0, "0.001", "0.1", 0.80, 8.0e4),
    SymbolSpec("DOTUSDT", 8.2, "0.001", "0.1", 0.75, 5.0e4),
    SymbolSpec("LTCUSDT", 72.0, "0.01", "0.1", 0.65, 5.0e4),
    SymbolSpec("MATICUSDT", 0.98, "0.0001", "1", 0.80, 6.0e4),
    SymbolSpec("TRXUSDT", 0.108, "0.00001", "1", 0.45, 2.0e4),
    SymbolSpec("ATOMUSDT", 10.5, "0.001", "0.1", 0.75, 3.0e4),
    SymbolSpec("NEARUSDT", 3.6, "0.001", "0.1", 0.90, 5.0e4),
    SymbolSpec("APTUSDT", 9.5, "0.0001", "0.01", 0.95, 4.0e4),
    SymbolSpec("ARBUSDT", 1.6, "0.0001", "0.1", 0.90, 5.0e4),
    SymbolSpec("OPUSDT", 3.5, "0.0001", "0.1", 0.90, 4.0e4),
    SymbolSpec("SUIUSDT", 0.75, "0.0001", "10", 1.00, 5.0e4),
    SymbolSpec("1000PEPEUSDT", 0.012, "0.0000001", "100", 1.20, 6.0e4),
    SymbolSpec("WIFUSDT", 2.0, "0.0001", "1", 1.30, 5.0e4),
    SymbolSpec("FILUSDT", 5.5, "0.001", "0.1", 0.85, 2.0e4),
    SymbolSpec("ETCUSDT", 20.0, "0.001", "0.1", 0.75, 2.0e4),
    SymbolSpec("BCHUSDT", 230.0, "0.05", "0.01", 0.70, 2.0e4),
    SymbolSpec("INJUSDT", 30.0, "0.001", "0.1", 1.00, 2.0e4),
    SymbolSpec("AAVEUSDT", 100.0, "0.01", "0.01", 0.85, 1.5e4),
    SymbolSpec("UNIUSDT", 6.0, "0.001", "0.1", 0.80, 1.5e4),
    SymbolSpec("TIAUSDT", 12.0, "0.001", "0.1", 1.10, 2.0e4),
    SymbolSpec("SEIUSDT", 0.50, "0.0001", "1", 1.10, 1.5e4),
    SymbolSpec("RUNEUSDT", 5.0, "0.001", "0.1", 1.00, 1.0e4),
    SymbolSpec("LDOUSDT", 2.5, "0.0001", "0.1", 0.95, 1.0e4),
    SymbolSpec("FTMUSDT", 0.40, "0.0001", "1", 1.00, 1.0e4),
    SymbolSpec("ORDIUSDT", 50.0, "0.001", "0.01", 1.20, 2.0e4),
    SymbolSpec("STXUSDT", 1.5, "0.0001", "0.1", 1.00, 8.0e3),
    SymbolSpec("IMXUSDT", 2.0, "0.0001", "0.1", 0.95, 8.0e3),
    SymbolSpec("ICPUSDT", 10.0, "0.001", "0.1", 0.90, 8.0e3),
    SymbolSpec("HBARUSDT", 0.08, "0.00001", "1", 0.85, 8.0e3),
    SymbolSpec("XLMUSDT", 0.12, "0.00001", "1", 0.70, 6.0e3),
    SymbolSpec("VETUSDT", 0.03, "0.000001", "1", 0.80, 4.0e3),
    SymbolSpec("ALGOUSDT", 0.18, "0.0001", "1", 0.80, 4.0e3),
    SymbolSpec("GALAUSDT", 0.03, "0.00001", "1", 1.00, 4.0e3),
    SymbolSpec("SANDUSDT", 0.45, "0.0001", "1", 0.90, 4.0e3),
    SymbolSpec("MANAUSDT", 0.45, "0.0001", "1", 0.90, 3.0e3),
    SymbolSpec("AXSUSDT", 7.0, "0.001", "0.1", 0.90, 3.0e3),
    SymbolSpec("EOSUSDT", 0.80, "0.0001", "0.1", 0.70, 3.0e3),
    SymbolSpec("KASUSDT", 0.12, "0.00001", "1", 1.10, 5.0e3),
    SymbolSpec("JUPUSDT", 0.90, "0.0001", "1", 1.20, 1.0e4),
    SymbolSpec("ENAUSDT", 0.60, "0.0001", "1", 1.30, 1.0e4),
    SymbolSpec("WLDUSDT", 2.5, "0.0001", "0.1", 1.20, 1.0e4),
    SymbolSpec("PYTHUSDT", 0.40, "0.0001", "1", 1.10, 5.0e3),
)
# The old CSV writer used str(float), which switches to exponent notation below 1e-4; keep every
# generated price above that so Polars' CSV writer produces byte-identical text.
_MIN_PRICE: Final = 2e-4


def _steps(text: str) -> tuple[int, int]:
    """A step ``num/den`` as integers (0.05 -> 1/20, 10 -> 10/1): ``k * num / den`` is then the
    correctly rounded float of the decimal, exactly what parsing the exchange's string gives."""
    f = Fraction(text)
    return f.numerator, f.denominator


def _on_grid(units: np.ndarray, step: str) -> np.ndarray:
    num, den = _steps(step)
    return (units * num).astype(np.float64) / den


def _activity(minute_of_day: np.ndarray, weekday: np.ndarray) -> np.ndarray:
    """Relative trading activity by time of day (UTC) and weekday; mean about 1."""
    h = minute_of_day / 60.0
    a = (
        0.55
        + 0.15 * np.cos(2 * np.pi * (h - 15.0) / 24.0)
        + 0.20 * np.exp(-(((h - 1.0) / 1.2) ** 2))  # Asia open
        + 0.25 * np.exp(-(((h - 8.0) / 1.2) ** 2))  # Europe open
        + 0.60 * np.exp(-(((h - 14.5) / 1.0) ** 2))  # US open (13:30-16:00 UTC)
    )
    a = a * np.where(minute_of_day % 60 == 0, 1.35, 1.0)  # on-the-hour bursts
    a = a * np.where(weekday >= 5, 0.6, 1.0)
    return a / a.mean()


def generate_symbol(spec: SymbolSpec, *, days: int, start: dt.date, seed: int) -> pl.DataFrame:
    """One symbol's 1-minute candles: ts (int64 epoch ms), open, high, low, close, volume, turnover."""
    index = [s.symbol for s in UNIVERSE].index(spec.symbol)
    rng = np.random.default_rng([seed, index, GEN_VERSION])
    n = days * 1440
    start_ms = int(dt.datetime(start.year, start.month, start.day, tzinfo=dt.UTC).timestamp()) * 1000
    minute = np.arange(n, dtype=np.int64)
    ts = start_ms + minute * MINUTE_MS
    weekday = (start.weekday() + minute // 1440) % 7
    act = _activity(minute % 1440, weekday)

    # Volatility regime: hourly AR(1) in log space (clustering), std ~0.45 around 0.
    hours = (n + 59) // 60
    shocks = rng.normal(0.0, 0.09, hours)
    regime = np.empty(hours)
    x = 0.0
    for i in range(hours):
        x = 0.98 * x + shocks[i]
        regime[i] = x
    vol_mult = np.exp(np.repeat(regime, 60)[:n] - 0.1)

    sigma = spec.vol / math.sqrt(365 * 1440) * np.sqrt(act) * vol_mult
    df_t = 4.0
    shocks = rng.standard_t(df_t, n) / math.sqrt(df_t / (df_t - 2.0))
    log_ret = sigma * shocks
    tick_num, tick_den = _steps(spec.tick)
    tick = tick_num / tick_den
    floor_price = max(20 * tick, _MIN_PRICE)
    log_path = np.log(spec.price) + np.cumsum(log_ret)
    price = np.maximum(np.exp(log_path), floor_price)
    close_t = np.rint(price / tick).astype(np.int64)

    # Volume: base liquidity x activity x regime x heavy-tailed size, more when the price moves.
    move = np.abs(shocks)
    quote = (
        spec.quote_per_min
        * act
        * vol_mult**0.8
        * rng.lognormal(0.0, 0.8, n)
        * (0.6 + 0.4 * np.minimum(move, 8.0))
    )
    spikes = rng.random(n) < 0.002  # block trades, liquidations
    quote[spikes] *= np.minimum(2.0 + 3.0 * rng.pareto(2.0, int(spikes.sum())), 60.0)
    lot_num, lot_den = _steps(spec.lot)
    lot = lot_num / lot_den
    lots = np.floor(quote / price / lot + rng.random(n)).astype(np.int64)
    # Quiet minutes of illiquid symbols trade nothing at all.
    p_empty = min(0.05, 60.0 / spec.quote_per_min) / act
    lots[rng.random(n) < p_empty] = 0
    empty = lots == 0

    # A minute without trades keeps the previous close.
    last_traded = np.where(empty, 0, minute)
    np.maximum.accumulate(last_traded, out=last_traded)
    close_t = close_t[last_traded]
    open_t = np.empty_like(close_t)
    open_t[0] = close_t[0]
    open_t[1:] = close_t[:-1]
    gap = (rng.random(n) < 0.03) & ~empty
    open_t[gap] += rng.choice(np.array([-1, 1]), int(gap.sum()))
    open_t = np.maximum(open_t, 1)

    # Intra-minute range beyond open/close, from the minute's volatility (in ticks).
    scale = 0.6 * sigma * close_t
    extra_hi = np.floor(np.abs(rng.normal(0.0, 1.0, n)) * scale).astype(np.int64)
    extra_lo = np.floor(np.abs(rng.normal(0.0, 1.0, n)) * scale).astype(np.int64)
    high_t = np.maximum(open_t, close_t) + extra_hi
    low_t = np.maximum(np.minimum(open_t, close_t) - extra_lo, 1)
    flat = empty
    open_t[flat] = close_t[flat]
    high_t[flat] = close_t[flat]
    low_t[flat] = close_t[flat]

    open_ = _on_grid(open_t, spec.tick)
    high = _on_grid(high_t, spec.tick)
    low = _on_grid(low_t, spec.tick)
    close = _on_grid(close_t, spec.tick)
    volume = _on_grid(lots, spec.lot)
    vwap = low + (high - low) * rng.beta(2.0, 2.0, n)
    turnover = np.rint(volume * vwap * 1e4) / 1e4
    return pl.DataFrame(
        {
            "ts": ts,
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": volume,
            "turnover": turnover,
        }
    )


# --------------------------------------------------------------------------------------- the set


@dataclass(frozen=True)
class DataSet:
    """A generated data set: parameters, where it is cached, and how to build each form of it."""

    n_symbols: int = 20
    days: int = 365
    start: dt.date = dt.date(2023, 1, 1)
    seed: int = 7
    root: Path = BENCH_DATA

    def __post_init__(self) -> None:
        if not 1 <= self.n_symbols <= len(UNIVERSE):
            raise ValueError(f"--symbols must be 1..{len(UNIVERSE)}")
        if self.days < 1:
            raise ValueError("--days must be >= 1")

    @property
    def key(self) -> str:
        return f"1m-s{self.n_symbols}-d{self.days}-{self.start.isoformat()}-seed{self.seed}-v{GEN_VERSION}"

    @property
    def dir(self) -> Path:
        return self.root / self.key

    @property
    def specs(self) -> tuple[SymbolSpec, ...]:
        return UNIVERSE[: self.n_symbols]

    @property
    def symbols(self) -> list[str]:
        return [s.symbol for s in self.specs]

    @property
    def rows_per_symbol(self) -> int:
        return self.days * 1440

    @property
    def rows(self) -> int:
        return self.n_symbols * self.rows_per_symbol

    @property
    def start_ms(self) -> int:
        return int(dt.datetime(self.start.year, self.start.month, self.start.day, tzinfo=dt.UTC).timestamp()) * 1000

    @property
    def end_ms(self) -> int:
        """Exclusive end of the data."""
        return self.start_ms + self.days * 86_400_000

    @property
    def csv_dir(self) -> Path:
        return self.dir / "csv"

    @property
    def lake_dir(self) -> Path:
        """The cached lake, keyed by what decides its files: the candle schema, the Parquet write
        options and the partition table (a lake written by older code is never reused)."""
        return self.dir / f"lake-{store_tag()}"

    @property
    def single_file(self) -> Path:
        return self.dir / "single.parquet"

    def csv_path(self, symbol: str) -> Path:
        return self.csv_dir / f"{symbol}_1.csv"

    def describe(self) -> str:
        return (
            f"{self.n_symbols} symbols x {self.days} days of 1m from {self.start} "
            f"({self.rows:,} candles, seed {self.seed})"
        )

    # ---------------------------------------------------------------- frames

    def frame(self, symbol: str) -> pl.DataFrame:
        """One symbol's candles (generated; deterministic)."""
        spec = next(s for s in self.specs if s.symbol == symbol)
        return generate_symbol(spec, days=self.days, start=self.start, seed=self.seed)

    def frames(self) -> Iterator[tuple[str, pl.DataFrame]]:
        """(symbol, frame) for every symbol, generated one at a time."""
        for spec in self.specs:
            yield spec.symbol, generate_symbol(spec, days=self.days, start=self.start, seed=self.seed)

    def all_frame(self) -> pl.DataFrame:
        """Every row with a ``symbol`` column and ``ts`` as Datetime(ms, UTC), sorted by symbol, ts."""
        parts = [f.with_columns(pl.lit(s).alias("symbol")) for s, f in self.frames()]
        return (
            pl.concat(parts)
            .select(
                "symbol",
                pl.from_epoch("ts", time_unit="ms").dt.replace_time_zone("UTC").alias("ts"),
                *PRICE_COLUMNS,
            )
            .sort("symbol", "ts")
        )

    # ---------------------------------------------------------------- cached forms

    def ensure_csv(self) -> Path:
        """The old CSV files (one per symbol), built once."""
        return self._ensure(self.csv_dir, self._build_csv)

    def ensure_lake(self) -> Path:
        """A marketlake lake holding the set, built once."""
        return self._ensure(self.lake_dir, self._build_lake)

    def ensure_single(self) -> Path:
        """The single unpartitioned Parquet file, built once."""
        return self._ensure(self.single_file, self._build_single)

    def ensure(self, what: Sequence[str] = ("csv", "lake", "single")) -> None:
        for w in what:
            {"csv": self.ensure_csv, "lake": self.ensure_lake, "single": self.ensure_single}[w]()

    def lake(self):  # -> marketlake.store.Lake
        """A :class:`Lake` over the cached lake (environment-independent settings)."""
        return open_lake(self.ensure_lake())

    def _ensure(self, target: Path, build: Callable[[Path], None]) -> Path:
        if target.exists():
            return target
        self.dir.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.dir / ".lock"):
            if target.exists():  # built by a concurrent run while we waited
                return target
            tmp = target.with_name(f".tmp-{target.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
            t0 = time.perf_counter()
            print(f"[datagen] building {target} ({self.describe()}) ...", file=sys.stderr, flush=True)
            try:
                build(tmp)
                os.rename(tmp, target)
            finally:
                if tmp.is_dir():
                    shutil.rmtree(tmp, ignore_errors=True)
                elif tmp.exists():
                    tmp.unlink()
            print(f"[datagen] built {target.name} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            (self.dir / "params.json").write_text(
                json.dumps(
                    {"symbols": self.symbols, "days": self.days, "start": self.start.isoformat(),
                     "seed": self.seed, "rows": self.rows, "gen_version": GEN_VERSION},
                    indent=1,
                )
            )
        return target

    def _build_csv(self, out: Path) -> None:
        out.mkdir(parents=True)
        for symbol, frame in self.frames():
            text = old_csv_frame(frame)
            path = out / f"{symbol}_1.csv"
            text.write_csv(path, float_scientific=None)
            _check_old_format(path, frame)

    def _build_lake(self, out: Path) -> None:
        lake = open_lake(out)
        for symbol, frame in self.frames():
            lake.write_candles(frame, symbol=symbol, timeframe="1")

    def _build_single(self, out: Path) -> None:
        write_single_parquet(self.all_frame(), out)


def store_tag() -> str:
    """A short fingerprint of the store's candle schema, ``_WRITE_OPTIONS`` and ``_CANDLE_PERIODS``."""
    from marketlake.core.schemas import CANDLE_ARROW_SCHEMA
    from marketlake.store import files, layout

    text = "|".join(
        [
            ",".join(f"{f.name}:{f.type}:{f.nullable}" for f in CANDLE_ARROW_SCHEMA),
            repr(sorted(files._WRITE_OPTIONS.items(), key=lambda kv: kv[0])),
            repr(sorted((k, v.value) for k, v in layout._CANDLE_PERIODS.items())),
        ]
    )
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def write_single_parquet(frame: pl.DataFrame, path: Path) -> None:
    """The baseline as a user would write it: one file, Polars' default ``write_parquet``
    (zstd, statistics, its default row-group size), rows sorted by (symbol, ts)."""
    frame.write_parquet(path)


def old_csv_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """A candle frame in the old CSV layout: timestamp,datetime,open,high,low,close,volume,turnover."""
    return frame.select(
        pl.col("ts").alias("timestamp"),
        pl.from_epoch("ts", time_unit="ms").dt.strftime("%Y-%m-%d %H:%M:%S").alias("datetime"),
        *PRICE_COLUMNS,
    )


def _check_old_format(path: Path, frame: pl.DataFrame, sample: int = 3000) -> None:
    """The file's lines equal what the old writer (``csv.DictWriter``, ``str(float)``) produces."""
    rows = old_csv_frame(frame.head(sample)).rows(named=True)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    with open(path) as fh:
        head = "".join(next(fh) for _ in range(len(rows) + 1))
    if head != buf.getvalue():
        raise AssertionError(f"{path}: CSV text differs from the old writer's format")


def open_lake(root: Path):
    """``Lake(root)`` with settings independent of the environment and of any marketlake.toml."""
    from marketlake.settings import Settings
    from marketlake.store import Lake

    return Lake(root, settings=Settings.load(environ={}))


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def dir_bytes(path: Path, suffix: str = "") -> tuple[int, int]:
    """(total bytes, files) of the files under ``path`` whose names end in ``suffix``
    (hidden files and marketlake's ``_meta`` excluded)."""
    total = files = 0
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = [d for d in dirnames if d != "_meta" and not d.startswith(".")]
        for name in filenames:
            if name.endswith(suffix) and not name.startswith("."):
                total += os.path.getsize(os.path.join(dirpath, name))
                files += 1
    return total, files


# --------------------------------------------------------------------------- bench helpers


def add_dataset_args(parser: argparse.ArgumentParser, symbols: int = 20, days: int = 365) -> None:
    """--symbols --days --start --seed --repeat (shared by every bench script)."""
    parser.add_argument("--symbols", type=int, default=symbols, help=f"symbols in the set (default {symbols})")
    parser.add_argument("--days", type=int, default=days, help=f"days of 1m candles (default {days})")
    parser.add_argument("--start", type=dt.date.fromisoformat, default=dt.date(2023, 1, 1),
                        help="first day (default 2023-01-01)")
    parser.add_argument("--seed", type=int, default=7, help="generator seed (default 7)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per variant (median; default 5)")
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-RSS subprocess runs")


def dataset_from_args(args: argparse.Namespace) -> DataSet:
    return DataSet(n_symbols=args.symbols, days=args.days, start=args.start, seed=args.seed)


@dataclass
class Timing:
    """Wall times of the timed runs of one variant (seconds)."""

    runs: list[float] = field(default_factory=list)
    result: Any = None

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def best(self) -> float:
        return min(self.runs)


def measure(fn: Callable[[], Any], repeat: int = 5, warmup: int = 1, setup: Callable[[], Any] | None = None) -> Timing:
    """Run ``fn`` ``warmup`` times untimed (warm page cache, imports, JIT), then ``repeat`` timed
    runs with ``time.perf_counter``; ``setup`` (untimed) runs before each call. The last result is
    kept (so the caller can check what was read)."""
    t = Timing()
    for i in range(warmup + repeat):
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        out = fn()
        dt_s = time.perf_counter() - t0
        if i >= warmup:
            t.runs.append(dt_s)
        t.result = out
        del out
    return t


def measure_many(
    fns: dict[str, Callable[[], Any]],
    repeat: int = 5,
    warmup: int = 1,
    setups: dict[str, Callable[[], Any]] | None = None,
) -> dict[str, Timing]:
    """:func:`measure` for several variants in interleaved rounds: round ``i`` runs every variant
    once, so a burst of load from other processes hits all of them alike instead of one."""
    out = {name: Timing() for name in fns}
    for i in range(warmup + repeat):
        for name, fn in fns.items():
            if setups and name in setups:
                setups[name]()
            t0 = time.perf_counter()
            res = fn()
            elapsed = time.perf_counter() - t0
            if i >= warmup:
                out[name].runs.append(elapsed)
            out[name].result = res
            del res
    return out


def peak_rss_self() -> int:
    """Peak RSS of this process image so far, bytes.

    ``VmHWM`` of /proc/self/status, which starts afresh at exec; ``ru_maxrss`` would not do for a
    child: Linux carries the parent's peak over fork + exec.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child_rss(module: str, argv: Sequence[str]) -> dict:
    """Run ``python -m module --child ...`` once in a fresh process; it prints one JSON line with
    ``base`` (peak RSS after imports and setup) and ``peak`` (peak RSS after the variant ran)."""
    cmd = [sys.executable, "-m", module, *argv]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child_report(run: Callable[[], Any]) -> None:
    """In a ``--child`` process: measure the peak RSS around one call of ``run`` and print it."""
    base = peak_rss_self()
    out = run()
    print(json.dumps({"base": base, "peak": peak_rss_self(), "rows": _rows_of(out)}))


def _rows_of(out: Any) -> int | None:
    if hasattr(out, "height"):
        return int(out.height)
    if isinstance(out, (list, tuple)):
        return len(out)
    if isinstance(out, int):
        return out
    return None


def fmt_s(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1.0:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def fmt_rate(per_s: float) -> str:
    if per_s >= 1e6:
        return f"{per_s / 1e6:.2f} M/s"
    if per_s >= 1e3:
        return f"{per_s / 1e3:.0f} k/s"
    return f"{per_s:.0f}/s"


def fmt_mib(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**20:,.0f} MiB"


def fmt_x(ratio: float) -> str:
    return f"{ratio:.1f}x" if ratio >= 10 else f"{ratio:.2f}x"


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain aligned text table (first column left-aligned, the rest right-aligned)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

    print(f"\n{title}")
    print(line(cells[0]))
    print("  ".join("-" * w for w in widths))
    for r in cells[1:]:
        print(line(r))
    sys.stdout.flush()


def goal(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def header(name: str, ds: DataSet, args: argparse.Namespace, timed: bool = True) -> None:
    import platform

    import duckdb
    import pyarrow

    print(f"# {name} — {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC")
    print(f"data: {ds.describe()}  [{ds.dir}]")
    print(
        f"python {platform.python_version()}, polars {pl.__version__}, pyarrow {pyarrow.__version__}, "
        f"duckdb {duckdb.__version__}, numpy {np.__version__}; {os.cpu_count()} cpus; "
        + (f"median of {args.repeat} runs after 1 untimed warm-up round (warm page cache), variants "
           "interleaved round by round; " if timed else "")
        + f"load average at start {os.getloadavg()[0]:.2f}"
    )
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_dataset_args(p)
    p.add_argument("--what", default="csv,lake,single", help="forms to build: csv,lake,single")
    args = p.parse_args(argv)
    ds = dataset_from_args(args)
    t0 = time.perf_counter()
    what = [w.strip() for w in args.what.split(",") if w.strip()]
    ds.ensure(what)
    print(f"{ds.describe()} in {ds.dir} ({time.perf_counter() - t0:.1f} s)")
    for w in what:
        path = {"csv": ds.csv_dir, "lake": ds.lake_dir / "candles", "single": ds.single_file}[w]
        size = path.stat().st_size if path.is_file() else dir_bytes(path)[0]
        print(f"  {w:<7} {path}  {size / 2**20:,.1f} MiB  {size / ds.rows:.1f} B/candle")


if __name__ == "__main__":
    main()
