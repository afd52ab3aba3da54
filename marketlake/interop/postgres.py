"""PostgreSQL sink: the old system's ``trades`` and ``candles`` tables, filled from the lake.

Driver: psycopg 3 (``pip install 'marketlake[postgres]'``). It speaks COPY from Python, binds
parameters on the server, and has both a sync API (the export, a CLI command) and an async one
(the live mirror, ``DatabaseManager``) in one package.

Tables (seed 004's columns, plus what a key needs; created if missing, extended if an old
system created them):

* ``candles``: id, symbol, timestamp, open, high, low, close, volume, created_at, and
  ``exchange``, ``category``, ``timeframe``, ``turnover``; unique key
  ``(exchange, category, symbol, timeframe, timestamp)``: the old table had no timeframe column,
  so it could not hold 1m and 5m candles of one symbol apart, nor spot and linear markets.
* ``trades``: id, symbol, price, size, timestamp, side, created_at, and ``exchange``,
  ``category``, ``trade_id``; unique key ``(exchange, category, symbol, trade_id)``: several
  trades share a time, price and size, only the exchange's id tells them apart.

Also changed from the seed: ``id`` is BIGSERIAL (an ``ON CONFLICT`` insert spends a sequence value
per skipped row, so re-runs over millions of rows would exhaust a 32-bit SERIAL) and ``symbol``
is VARCHAR(40) (marketlake accepts symbols up to 40 characters; dated options exceed 20).

How rows go in (:func:`export_postgres`): per batch, in one transaction, COPY into a session's
temporary staging table, then ``INSERT INTO ... SELECT ... ON CONFLICT (key) DO UPDATE ... WHERE
the values differ`` into the target. A re-run, or a batch holding rows already there, inserts what
is missing and updates what the lake changed since (``repair`` re-fetched a candle): nothing is
lost, nothing doubled, and unchanged rows are not rewritten (no dead tuples from re-runs). A broken connection (server restart, ``pg_terminate_backend``, network)
rolls the batch back; the batch is sent again on a new connection, up to ``retries`` times.
Other PostgreSQL errors, and exhausted retries, raise :class:`~marketlake.errors.SinkError`.
The lake is only read, so no PostgreSQL failure can affect it.

The lake wins: PostgreSQL mirrors it, so a later export corrects rows changed in the lake. Rows
deleted from the lake (quarantined by ``repair``) are not deleted from PostgreSQL.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import polars as pl

from marketlake.core.timeframes import parse_timeframe
from marketlake.core.timeutil import TimeLike, to_ms
from marketlake.errors import ConfigError, SinkError
from marketlake.store import Lake

__all__ = [
    "SCHEMA_SQL",
    "BatchInfo",
    "ExportReport",
    "SeriesExport",
    "connect",
    "ensure_schema",
    "export_postgres",
    "mask_dsn",
]

log = logging.getLogger(__name__)

DAY_MS: Final = 86_400_000
_SCHEMA_LOCK: Final = 7_310_420_117  # pg_advisory_xact_lock key: one schema change at a time

SCHEMA_SQL: Final = """
CREATE TABLE IF NOT EXISTS trades (
    id BIGSERIAL PRIMARY KEY,
    symbol VARCHAR(40) NOT NULL,
    price DECIMAL,
    size DECIMAL,
    timestamp TIMESTAMPTZ NOT NULL,
    side VARCHAR(10),
    created_at TIMESTAMPTZ DEFAULT NOW()
);
ALTER TABLE trades ADD COLUMN IF NOT EXISTS exchange VARCHAR(32) NOT NULL DEFAULT 'bybit';
ALTER TABLE trades ADD COLUMN IF NOT EXISTS category VARCHAR(16) NOT NULL DEFAULT 'linear';
ALTER TABLE trades ADD COLUMN IF NOT EXISTS trade_id VARCHAR(64);
CREATE INDEX IF NOT EXISTS idx_trades_symbol_timestamp ON trades(symbol, timestamp);
CREATE UNIQUE INDEX IF NOT EXISTS trades_series_trade_id_key ON trades(exchange, category, symbol, trade_id);

CREATE TABLE IF NOT EXISTS candles (
    id BIGSERIAL PRIMARY KEY,
    symbol VARCHAR(40) NOT NULL,
    timestamp TIMESTAMPTZ NOT NULL,
    open DECIMAL,
    high DECIMAL,
    low DECIMAL,
    close DECIMAL,
    volume DECIMAL,
    created_at TIMESTAMPTZ DEFAULT NOW()
);
ALTER TABLE candles ADD COLUMN IF NOT EXISTS exchange VARCHAR(32) NOT NULL DEFAULT 'bybit';
ALTER TABLE candles ADD COLUMN IF NOT EXISTS category VARCHAR(16) NOT NULL DEFAULT 'linear';
ALTER TABLE candles ADD COLUMN IF NOT EXISTS timeframe VARCHAR(8) NOT NULL DEFAULT '1';
ALTER TABLE candles ADD COLUMN IF NOT EXISTS turnover DECIMAL;
CREATE INDEX IF NOT EXISTS idx_candles_symbol_timestamp ON candles(symbol, timestamp);
CREATE UNIQUE INDEX IF NOT EXISTS candles_series_ts_key
    ON candles(exchange, category, symbol, timeframe, timestamp);
"""

#: Columns sent per dataset, in COPY order, and the unique key the INSERT skips on.
COLUMNS: Final = {
    "candles": ("exchange", "category", "symbol", "timeframe", "timestamp",
                "open", "high", "low", "close", "volume", "turnover"),
    "trades": ("exchange", "category", "symbol", "trade_id", "timestamp", "price", "size", "side"),
}
KEYS: Final = {
    "candles": ("exchange", "category", "symbol", "timeframe", "timestamp"),
    "trades": ("exchange", "category", "symbol", "trade_id"),
}
_STAGE_TYPES: Final = {
    "exchange": "text", "category": "text", "symbol": "text", "timeframe": "text", "trade_id": "text",
    "side": "text", "timestamp": "timestamptz",
}


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:  # an optional dependency
        raise ConfigError("the PostgreSQL sink needs psycopg: pip install 'marketlake[postgres]'") from None
    return psycopg


def mask_dsn(dsn: str) -> str:
    """``user@host:port/dbname`` of a libpq DSN or URL: safe for messages (no password)."""
    psycopg = _psycopg()
    try:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparseable DSN>"
    user = info.get("user", "")
    host = info.get("host", "") or "localhost"
    port = info.get("port", "")
    where = f"{host}:{port}" if port else str(host)
    return f"{user + '@' if user else ''}{where}/{info.get('dbname', '')}"


def _check_dsn(dsn: str) -> None:
    """Reject a DSN libpq cannot parse, before any data is read.

    Raises:
        ConfigError: the DSN is malformed (the message never echoes it: it may hold a password).
    """
    psycopg = _psycopg()
    try:
        psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        reason = _first_line(exc).replace(dsn, "<dsn>") if dsn else _first_line(exc)
        raise ConfigError(f"invalid PostgreSQL DSN: {reason}") from None


def connect(dsn: str, *, connect_timeout_s: int = 10, autocommit: bool = False) -> Any:
    """A psycopg connection to ``dsn`` (``application_name=marketlake``).

    Raises:
        SinkError: the server cannot be reached or refuses the login.
    """
    psycopg = _psycopg()
    try:
        return psycopg.connect(
            dsn, connect_timeout=connect_timeout_s, application_name="marketlake", autocommit=autocommit
        )
    except psycopg.Error as exc:
        raise SinkError(f"postgres {mask_dsn(dsn)}: cannot connect: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def ensure_schema(con: Any) -> None:
    """Create or extend the ``trades`` and ``candles`` tables (idempotent; safe when several
    processes do it at once).

    Raises:
        SinkError: the tables cannot be created, e.g. an old table already holds two rows with the
            same key, so the unique index cannot be built.
    """
    psycopg = _psycopg()
    try:
        with con.transaction():
            con.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            for statement in (s.strip() for s in SCHEMA_SQL.split(";")):
                if statement:
                    con.execute(statement)
    except psycopg.errors.UniqueViolation as exc:
        raise SinkError(
            f"an existing table holds rows with the same key, so the unique index cannot be built: "
            f"{_first_line(exc)}; remove the duplicates first"
        ) from exc
    except psycopg.Error as exc:
        raise SinkError(f"cannot create the tables: {_first_line(exc)}") from exc


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """Where an export is (passed to ``on_batch`` hooks).

    Attributes:
        series: The series label (``bybit/linear/BTCUSDT/1``).
        dataset: ``candles`` or ``trades``.
        rows: Rows in this batch.
        attempt: 1 for the first try of the batch, then 2, 3 ...
        pid: The backend process id of the connection that is sending it.
        stage: ``copying`` (COPY has begun, before the rows) or ``copied`` (after them).
    """

    series: str
    dataset: str
    rows: int
    attempt: int
    pid: int
    stage: str


@dataclass(slots=True)
class SeriesExport:
    """One series' figures."""

    series: str
    dataset: str
    rows_read: int = 0
    rows_inserted: int = 0
    rows_updated: int = 0
    batches: int = 0

    @property
    def rows_present(self) -> int:
        """Rows PostgreSQL already held with the lake's values (left untouched)."""
        return self.rows_read - self.rows_inserted - self.rows_updated


@dataclass(slots=True)
class ExportReport:
    """What :func:`export_postgres` did."""

    target: str
    series: list[SeriesExport] = field(default_factory=list)
    retries: int = 0
    seconds: float = 0.0

    @property
    def rows_read(self) -> int:
        """Rows read from the lake."""
        return sum(s.rows_read for s in self.series)

    @property
    def rows_inserted(self) -> int:
        """Rows PostgreSQL did not have before."""
        return sum(s.rows_inserted for s in self.series)

    @property
    def rows_updated(self) -> int:
        """Rows PostgreSQL held with other values than the lake's now (corrected)."""
        return sum(s.rows_updated for s in self.series)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``--json``."""
        return {
            "target": self.target,
            "rows_read": self.rows_read,
            "rows_inserted": self.rows_inserted,
            "rows_updated": self.rows_updated,
            "rows_present": self.rows_read - self.rows_inserted - self.rows_updated,
            "retries": self.retries,
            "seconds": round(self.seconds, 3),
            "series": [
                {"series": s.series, "dataset": s.dataset, "rows_read": s.rows_read,
                 "rows_inserted": s.rows_inserted, "rows_updated": s.rows_updated, "batches": s.batches}
                for s in self.series
            ],
        }


def _to_csv(frame: pl.DataFrame, dataset: str, exchange: str, category: str, symbol: str, tf: str | None) -> bytes:
    """A lake frame as COPY CSV in :data:`COLUMNS` order (ISO UTC times, shortest float text)."""
    lits = {"exchange": exchange, "category": category, "symbol": symbol}
    if tf is not None:
        lits["timeframe"] = tf
    out = frame.with_columns(
        *(pl.lit(v).alias(k) for k, v in lits.items()),
        pl.col("ts").dt.convert_time_zone("UTC").dt.strftime("%Y-%m-%d %H:%M:%S%.6f+00").alias("timestamp"),
    ).select(COLUMNS[dataset])
    return out.write_csv(include_header=False, float_scientific=None).encode()


class _Sender:
    """One connection, its staging tables, and the retry loop around a batch."""

    def __init__(self, dsn: str, retries: int, on_batch: Callable[[BatchInfo], None] | None) -> None:
        self.psycopg = _psycopg()
        self.dsn = dsn
        self.retries = retries
        self.on_batch = on_batch
        self.con: Any = None
        self.retried = 0
        # Retries are for a connection that broke mid-export; when the very first connect fails
        # (a wrong host, port, password or database) retrying only repeats the same error.
        self.connected_once = False

    def close(self) -> None:
        if self.con is not None:
            with contextlib.suppress(Exception):
                self.con.close()
            self.con = None

    def _open(self) -> Any:
        if self.con is None or self.con.closed or self.con.broken:
            self.close()
            self.con = connect(self.dsn)
            self.connected_once = True
            ensure_schema(self.con)
            with self.con.transaction():
                for ds, cols in COLUMNS.items():
                    typed = ", ".join(f"{c} {_STAGE_TYPES.get(c, 'numeric')}" for c in cols)
                    # ON COMMIT DELETE ROWS: each batch's transaction leaves the stage empty.
                    self.con.execute(f"CREATE TEMP TABLE IF NOT EXISTS ml_stage_{ds} ({typed}) ON COMMIT DELETE ROWS")
        return self.con

    def send(self, label: str, dataset: str, rows: int, payload: bytes) -> tuple[int, int]:
        """COPY ``payload`` (CSV rows) into the stage, insert what is new, update what differs;
        returns (rows inserted, rows updated)."""
        cols = ", ".join(COLUMNS[dataset])
        insert = f"WITH written AS ({upsert_sql(dataset, f'SELECT {cols} FROM ml_stage_{dataset}')} " + (
            "RETURNING (xmax = 0) AS inserted) "  # xmax = 0: a fresh tuple, not an updated one
            "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM written"
        )
        attempt = 0
        while True:
            attempt += 1
            try:
                con = self._open()
                with con.transaction(), con.cursor() as cur:
                    with cur.copy(f"COPY ml_stage_{dataset} ({cols}) FROM STDIN (FORMAT csv)") as copy:
                        self._hook(label, dataset, rows, attempt, con, "copying")
                        for i in range(0, len(payload), 1 << 20):
                            copy.write(payload[i : i + (1 << 20)])
                        self._hook(label, dataset, rows, attempt, con, "copied")
                    cur.execute(insert)
                    inserted, updated = cur.fetchone()
                    return int(inserted), int(updated)
            except (self.psycopg.OperationalError, SinkError) as exc:
                # The connection broke (or could not be made): the transaction is gone with it.
                self.close()
                if not self.connected_once:
                    if isinstance(exc, SinkError):
                        raise  # connect() already says which server and why
                    raise SinkError(f"postgres {mask_dsn(self.dsn)}: {_first_line(exc)}") from exc
                if attempt > self.retries:
                    raise SinkError(
                        f"postgres {mask_dsn(self.dsn)}: {label}: gave up after {attempt} attempts: {_first_line(exc)}"
                    ) from exc
                self.retried += 1
                log.warning("postgres: %s: batch of %d rows failed (%s); retrying", label, rows, _first_line(exc))
                time.sleep(min(5.0, 0.1 * 2 ** (attempt - 1)))
            except self.psycopg.Error as exc:
                self.close()
                raise SinkError(f"postgres {mask_dsn(self.dsn)}: {label}: {_first_line(exc)}") from exc

    def _hook(self, label: str, dataset: str, rows: int, attempt: int, con: Any, stage: str) -> None:
        if self.on_batch is not None:
            self.on_batch(BatchInfo(label, dataset, rows, attempt, con.info.backend_pid, stage))


def upsert_sql(dataset: str, source: str) -> str:
    """``INSERT INTO dataset ... source ON CONFLICT (key) DO UPDATE`` of the value columns, only
    where a value differs (``IS DISTINCT FROM``: nulls compare equal), so re-runs write nothing."""
    cols = COLUMNS[dataset]
    values = [c for c in cols if c not in KEYS[dataset]]
    mine = ", ".join(f"{dataset}.{c}" for c in values)
    theirs = ", ".join(f"EXCLUDED.{c}" for c in values)
    return (
        f"INSERT INTO {dataset} ({', '.join(cols)}) {source} "
        f"ON CONFLICT ({', '.join(KEYS[dataset])}) DO UPDATE SET "
        + ", ".join(f"{c} = EXCLUDED.{c}" for c in values)
        + f" WHERE ({mine}) IS DISTINCT FROM ({theirs})"
    )


def _windows(first_ms: int, last_ms: int, step_ms: int) -> Iterator[tuple[int, int]]:
    a = first_ms
    while a <= last_ms:
        yield a, a + step_ms
        a += step_ms


def _rebatch(frames: Iterable[pl.DataFrame], rows: int) -> Iterator[pl.DataFrame]:
    """Frames of exactly ``rows`` rows (the last one shorter) from frames of any size."""
    pending: list[pl.DataFrame] = []
    held = 0
    for frame in frames:
        if frame.is_empty():
            continue
        pending.append(frame)
        held += frame.height
        if held >= rows:
            whole = pl.concat(pending)
            cut = held - held % rows
            for i in range(0, cut, rows):
                yield whole.slice(i, rows)
            pending, held = ([whole.slice(cut)], held - cut) if held > cut else ([], 0)
    if held:
        yield pl.concat(pending)


def export_postgres(
    lake: Lake,
    dsn: str,
    *,
    symbols: str | Sequence[str] | None = None,
    timeframes: str | Sequence[str] | None = None,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    exchange: str | None = None,
    category: str | None = None,
    candles: bool = True,
    trades: bool = False,
    batch_rows: int = 100_000,
    retries: int = 5,
    on_batch: Callable[[BatchInfo], None] | None = None,
) -> ExportReport:
    """Copy lake series into PostgreSQL's ``candles`` (and ``trades``) tables.

    Args:
        lake: The lake (only read).
        dsn: libpq connection string or URL; a password is better kept in ``PGPASSWORD`` or
            ``~/.pgpass`` than on a command line.
        symbols: Symbols to export (all stored when None).
        timeframes: Candle timeframes (all stored when None).
        start: Inclusive lower bound on the row time.
        end: Exclusive upper bound.
        exchange: Defaults to the lake's settings (``bybit``).
        category: Defaults to the lake's settings (``linear``).
        candles: Export candles.
        trades: Export trades.
        batch_rows: Rows per COPY batch (one transaction each).
        retries: Attempts after the first when the connection breaks.
        on_batch: Called at each stage of each batch (progress; tests inject faults here).

    Returns:
        Per-series counts of rows read and inserted.

    Raises:
        SinkError: PostgreSQL refused, or the connection kept failing. Batches committed before
            the failure stay; a re-run inserts the rest.
    """
    lake = lake.pinned()  # every batch reads the same table version, whatever writers commit meanwhile
    if batch_rows < 1 or retries < 0:
        raise ConfigError("batch_rows must be >= 1 and retries >= 0")
    _check_dsn(dsn)
    exchange = exchange or lake.settings.exchange
    category = category or lake.settings.category
    lo = None if start is None else to_ms(start, what="start")
    hi = None if end is None else to_ms(end, what="end")
    want_sym = None if symbols is None else set(symbols.split(",") if isinstance(symbols, str) else symbols)
    want_tf = None
    if timeframes is not None:
        names = timeframes.split(",") if isinstance(timeframes, str) else timeframes
        want_tf = {parse_timeframe(t).name for t in names}
    report = ExportReport(target=mask_dsn(dsn))
    t0 = time.perf_counter()
    sender = _Sender(dsn, retries, on_batch)
    datasets = [d for d, on in (("candles", candles), ("trades", trades)) if on]
    try:
        for dataset in datasets:
            table = lake.series(dataset).filter(
                (pl.col("exchange") == exchange) & (pl.col("category") == category)
            ).sort("symbol", "timeframe")
            for row in table.iter_rows(named=True):
                sym, tf = row["symbol"], row["timeframe"]
                if (want_sym is not None and sym not in want_sym) or (
                    dataset == "candles" and want_tf is not None and tf not in want_tf
                ):
                    continue
                label = "/".join(x for x in (exchange, category, sym, tf) if x)
                item = SeriesExport(label, dataset)
                report.series.append(item)
                first = int(row["first_ts"].timestamp() * 1000)
                last = int(row["last_ts"].timestamp() * 1000)
                a, b = max(first, lo) if lo is not None else first, min(last, hi - 1) if hi is not None else last
                if dataset == "candles":
                    step = max(DAY_MS, batch_rows * (parse_timeframe(tf).duration_ms or 31 * DAY_MS))
                else:
                    step = DAY_MS  # a trading day of trades can be millions of rows: sliced below
                frames = (
                    lake.read_candles(sym, tf, wa, min(wb, hi) if hi is not None else wb,
                                      exchange=exchange, category=category)
                    if dataset == "candles"
                    else lake.read_trades(sym, wa, min(wb, hi) if hi is not None else wb,
                                          exchange=exchange, category=category)
                    for wa, wb in _windows(a, b, step)
                )
                for part in _rebatch(frames, batch_rows):
                    payload = _to_csv(part, dataset, exchange, category, sym, tf if dataset == "candles" else None)
                    inserted, updated = sender.send(label, dataset, part.height, payload)
                    item.rows_inserted += inserted
                    item.rows_updated += updated
                    item.rows_read += part.height
                    item.batches += 1
    finally:
        sender.close()
        report.retries = sender.retried
        report.seconds = time.perf_counter() - t0
    return report
