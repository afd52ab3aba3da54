"""``CSVManager``: the old per-symbol CSV files (``{DATA_DIR}/{SYMBOL}_{TF}.csv``), read and
written with marketlake's CSV parser and format (:mod:`marketlake.interop.csv`).

Files are read with the strict parser of ``import-csv`` (a malformed file raises
:class:`~marketlake.errors.ImportRejectedError`, a ``ValueError``, naming the line) and written
chronologically, one row per timestamp (the last one given wins), atomically (temp file +
rename: a reader never sees half a file). With ``LIMIT_TO_50_ENTRIES`` only the 50 most recent
candles are kept. File names use the timeframe's canonical name (``"1m"`` → ``BTCUSDT_1.csv``);
symbols and timeframes are validated before any path is built.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import polars as pl

from marketlake.compat._candles import candle_dicts, frame_from_dicts
from marketlake.compat.config import DataCollectionConfig
from marketlake.core.symbols import validate_symbol
from marketlake.core.timeframes import parse_timeframe
from marketlake.errors import MarketlakeError
from marketlake.interop.csv import _format, parse_old_csv

__all__ = ["LIMIT_ENTRIES", "CSVManager", "write_candle_file"]

log = logging.getLogger(__name__)

#: Rows kept per file with ``LIMIT_TO_50_ENTRIES``.
LIMIT_ENTRIES: Final = 50


def write_candle_file(path: Path, frame: pl.DataFrame, limit: int | None = None) -> int:
    """Write candles (``ts`` int ms or Datetime) to ``path`` in the old format: one row per
    ``ts`` (the last wins), chronological, the newest ``limit`` rows only when given; atomically.
    Returns the rows written."""
    if frame.schema["ts"] == pl.Int64:
        frame = frame.with_columns(pl.from_epoch("ts", time_unit="ms").dt.replace_time_zone("UTC"))
    frame = frame.unique("ts", keep="last", maintain_order=True).sort("ts")
    if limit is not None:
        frame = frame.tail(limit)
    with_turnover = "turnover" in frame.columns and frame.get_column("turnover").null_count() < frame.height
    if "turnover" not in frame.columns:
        frame = frame.with_columns(turnover=pl.lit(None, dtype=pl.Float64))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        _format(frame, with_turnover).write_csv(tmp, float_scientific=None)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return frame.height


class CSVManager:
    """Reads and writes the CSV files of ``config.DATA_DIR``.

    Args:
        config: The configuration (``DATA_DIR``, ``LIMIT_TO_50_ENTRIES``).
    """

    def __init__(self, config: DataCollectionConfig) -> None:
        self.config = config

    @property
    def data_dir(self) -> Path:
        """The directory of the CSV files."""
        return Path(self.config.DATA_DIR)

    def file_path(self, symbol: str, timeframe: str) -> Path:
        """``{DATA_DIR}/{SYMBOL}_{TF}.csv`` (validated names, canonical timeframe)."""
        return self.data_dir / f"{validate_symbol(symbol)}_{parse_timeframe(timeframe).name}.csv"

    def _limit(self) -> int | None:
        return LIMIT_ENTRIES if self.config.LIMIT_TO_50_ENTRIES else None

    def read_frame(self, symbol: str, timeframe: str) -> pl.DataFrame:
        """The file as a frame (``ts`` int ms, chronological, as stored); empty when absent.

        Raises:
            ImportRejectedError: the file is malformed (a ``ValueError``).
        """
        path = self.file_path(symbol, timeframe)
        if not path.exists():
            return pl.DataFrame(schema={"ts": pl.Int64, **{c: pl.Float64 for c in ("open", "high", "low", "close", "volume")}})
        return parse_old_csv(path).sort("ts", maintain_order=True)

    def read_csv_data(self, symbol: str, timeframe: str) -> list[dict[str, Any]]:
        """Candles of the file, oldest first (``[]`` when there is no file).

        Raises:
            ImportRejectedError: the file is malformed (a ``ValueError``).
        """
        return candle_dicts(self.read_frame(symbol, timeframe))

    def write_frame(self, symbol: str, timeframe: str, frame: pl.DataFrame, *, merge: bool) -> int:
        """Write ``frame`` (merged over the file's rows when ``merge``; new rows win)."""
        if merge:
            old = self.read_frame(symbol, timeframe)
            if old.height:
                frame = pl.concat([old, frame.select(frame.columns)], how="diagonal_relaxed")
        return write_candle_file(self.file_path(symbol, timeframe), frame, self._limit())

    def write_csv_data(self, symbol: str, timeframe: str, data: Sequence[Mapping[str, Any]]) -> bool:
        """Replace the file with ``data``: chronological, one row per timestamp, the newest 50
        only with ``LIMIT_TO_50_ENTRIES``. Returns False (and logs why) on bad data or I/O errors."""
        try:
            self.write_frame(symbol, timeframe, frame_from_dicts(data), merge=False)
        except (MarketlakeError, OSError) as exc:
            log.error("write_csv_data %s %s: %s", symbol, timeframe, exc)
            return False
        return True

    def append_new_data(self, symbol: str, timeframe: str, new_candles: Sequence[Mapping[str, Any]]) -> bool:
        """Merge ``new_candles`` into the file (a repeated timestamp takes the new values), keep it
        chronological (and at 50 rows with the limit). Returns False on bad data or a bad file."""
        try:
            self.write_frame(symbol, timeframe, frame_from_dicts(new_candles), merge=True)
        except (MarketlakeError, OSError) as exc:
            log.error("append_new_data %s %s: %s", symbol, timeframe, exc)
            return False
        return True

    def get_latest_timestamp(self, symbol: str, timeframe: str) -> int:
        """The newest ``timestamp`` in the file (epoch ms), 0 when there is no file or no row.

        Raises:
            ImportRejectedError: the file is malformed.
        """
        frame = self.read_frame(symbol, timeframe)
        return 0 if frame.is_empty() else int(frame.get_column("ts").max())  # type: ignore[arg-type]

    def update_candle(self, symbol: str, timeframe: str, candle_data: Mapping[str, Any]) -> bool:
        """Replace the candle with the same ``timestamp``, or add it in time order."""
        return self.append_new_data(symbol, timeframe, [candle_data])
