"""``DataIntegrityChecker``: the old checker over ``config.DATA_DIR``'s CSV files, on marketlake's
kernels (:func:`~marketlake.check_candles`) and report builders (:func:`~marketlake.integrity_report`).

Reports have exactly the old structure (see the API reference): ``files_checked``,
``files_with_issues``, ``total_gaps``, ``total_duplicates``, ``total_invalid_candles`` and
``issues: {filename: {has_issues, gaps, duplicate_count, invalid_candles, total_candles,
first_timestamp, last_timestamp}}``, gaps as ``{position, previous_timestamp, current_timestamp,
expected_interval, actual_interval, gap_duration, missing_candles, gap_minutes}``.

Differences worth knowing: a file that cannot be parsed is left out of the report (there is no
field for it) and named in :attr:`DataIntegrityChecker.errors` and the log; ``has_issues`` is
also true for out-of-order or misaligned rows. Gap filling writes flat candles (open = high =
low = close = the previous close, volume 0), as marketlake's ``repair --fill`` does; duplicate
fixing keeps the last row of each timestamp, as ``repair`` does.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from marketlake.clock import get_clock
from marketlake.compat.config import DataCollectionConfig
from marketlake.compat.csv_manager import write_candle_file
from marketlake.core.integrity import CheckResult, check_candles, integrity_report
from marketlake.core.timeframes import Timeframe
from marketlake.errors import DataValidationError, ImportRejectedError
from marketlake.interop.csv import parse_old_csv, series_from_filename

__all__ = ["DataIntegrityChecker"]

log = logging.getLogger(__name__)


class DataIntegrityChecker:
    """Checks and repairs the CSV files of ``config.DATA_DIR``.

    Attributes:
        errors: Files the last :meth:`check_all_files` could not read, with the reason.
    """

    def __init__(self, config: DataCollectionConfig) -> None:
        self.config = config
        self.errors: dict[str, str] = {}

    @property
    def data_dir(self) -> Path:
        """The directory checked."""
        return Path(self.config.DATA_DIR)

    def _files(self) -> list[str]:
        if not self.data_dir.is_dir():
            return []
        return sorted(
            p.name for p in self.data_dir.iterdir()
            if p.is_file() and p.suffix.lower() == ".csv" and not p.name.startswith(".")
        )

    def _load(self, filename: str) -> tuple[Path, Timeframe, pl.DataFrame]:
        name = os.path.basename(filename)
        if name != filename or name in ("", ".", ".."):
            raise DataValidationError(f"{filename!r}: give a file name inside DATA_DIR, not a path")
        path = self.data_dir / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such data file")
        _, tf = series_from_filename(path)
        return path, tf, parse_old_csv(path)

    def _check(self, filename: str) -> CheckResult:
        _, tf, frame = self._load(filename)
        return check_candles(frame, tf)

    def check_single_file(self, filename: str) -> dict[str, Any]:
        """The old per-file report of ``DATA_DIR/filename``.

        Raises:
            FileNotFoundError: no such file.
            ImportRejectedError: the file is malformed (a ``ValueError``).
        """
        return self._check(filename).file_report()

    def check_all_files(self) -> dict[str, Any]:
        """The old multi-file report over every ``*.csv`` of ``DATA_DIR``."""
        results: dict[str, CheckResult] = {}
        self.errors = {}
        for name in self._files():
            try:
                results[name] = self._check(name)
            except ImportRejectedError as exc:
                self.errors[name] = exc.reason
                log.error("integrity check skipped %s: %s", name, exc)
        return integrity_report(results)

    def fix_duplicates(self, filename: str) -> bool:
        """Keep one row per timestamp (the last), chronological. True when rows were removed."""
        path, _, frame = self._load(filename)
        if frame.get_column("ts").n_unique() == frame.height:
            return False
        write_candle_file(path, frame)
        return True

    def fix_all_duplicates(self) -> None:
        """:meth:`fix_duplicates` on every readable file."""
        for name in self._files():
            try:
                self.fix_duplicates(name)
            except ImportRejectedError as exc:
                log.error("fix_duplicates skipped %s: %s", name, exc)

    def fill_gaps_in_file(self, filename: str) -> bool:
        """Insert a flat candle (previous close, volume 0) at every missing open between two
        candles. True when candles were added."""
        path, tf, frame = self._load(filename)
        frame = frame.unique("ts", keep="last", maintain_order=True).sort("ts")
        result = check_candles(frame, tf)
        if not result.gap_count:
            return False
        ts = frame.get_column("ts").to_numpy()
        close = frame.get_column("close").to_numpy()
        opens: list[np.ndarray] = []
        prices: list[np.ndarray] = []
        for cur, prev in zip(result.gap_rows, result.gap_previous_rows, strict=True):
            missing = tf.opens_between(tf.next_open(tf.floor(int(ts[prev]))), tf.floor(int(ts[cur])))
            opens.append(missing)
            prices.append(np.full(missing.size, close[prev]))
        o, p = np.concatenate(opens), np.concatenate(prices)
        fill = {"ts": o, "open": p, "high": p, "low": p, "close": p, "volume": np.zeros(o.size)}
        if "turnover" in frame.columns:
            fill["turnover"] = np.zeros(o.size)
        write_candle_file(path, pl.concat([frame, pl.DataFrame(fill)], how="diagonal_relaxed"))
        return True

    def fill_all_gaps(self) -> None:
        """:meth:`fill_gaps_in_file` on every readable file."""
        for name in self._files():
            try:
                self.fill_gaps_in_file(name)
            except ImportRejectedError as exc:
                log.error("fill_gaps skipped %s: %s", name, exc)

    def save_integrity_report(self, results: dict[str, Any]) -> str:
        """Write ``results`` as JSON to ``DATA_DIR/integrity_report_YYYYMMDD_HHMMSS.json`` (a
        suffix is added rather than overwrite an earlier report); returns the path."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.fromtimestamp(get_clock().now_ms() / 1000, dt.UTC).strftime("%Y%m%d_%H%M%S")
        path = self.data_dir / f"integrity_report_{stamp}.json"
        n = 1
        while path.exists():
            n += 1
            path = self.data_dir / f"integrity_report_{stamp}_{n}.json"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(results, indent=2, default=str))
        os.replace(tmp, path)
        return str(path)
