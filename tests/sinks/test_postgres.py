"""PostgreSQL sink against a real server: export, re-run, existing rows, killed connections."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from marketlake.errors import ConfigError, SinkError
from marketlake.interop.postgres import BatchInfo, ensure_schema, export_postgres, mask_dsn
from marketlake.store import Lake
from tests.helpers import T0, candles
from tests.servers import free_port

psycopg = pytest.importorskip("psycopg", reason="POSTGRESQL TESTS SKIPPED: the psycopg package is missing")


def trades_frame(n: int, start_us: int = T0 * 1000) -> pl.DataFrame:
    # Several trades share a microsecond, price and size: only the id tells them apart.
    return pl.DataFrame({
        "ts": [start_us + (i // 3) * 250 for i in range(n)],
        "price": [100.0 + (i % 7) * 0.5 for i in range(n)],
        "size": [0.001 * (1 + i % 2) for i in range(n)],
        "side": ["Buy" if i % 2 else "Sell" for i in range(n)],
        "trade_id": [f"t-{i:06d}" for i in range(n)],
    }).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))


@pytest.fixture
def filled(lake: Lake) -> Lake:
    lake.write_candles(candles(2500), symbol="BTCUSDT", timeframe="1")
    lake.write_candles(candles(700, seed=2), symbol="ETHUSDT", timeframe="1")
    lake.write_candles(candles(300, step=300_000, seed=3), symbol="BTCUSDT", timeframe="5")
    lake.write_candles(candles(50, seed=4), symbol="BTCUSDT", timeframe="1", category="spot")
    lake.write_trades(trades_frame(1200), symbol="BTCUSDT")
    return lake


def count(dsn: str, table: str, where: str = "TRUE") -> int:
    with psycopg.connect(dsn) as con:
        return con.execute(f"SELECT count(*) FROM {table} WHERE {where}").fetchone()[0]


def lake_rows(lake: Lake) -> int:
    return lake.read_candles().height


def test_export_then_rerun_adds_nothing(filled: Lake, pg_dsn: str) -> None:
    report = export_postgres(filled, pg_dsn, trades=True, batch_rows=1000)
    assert report.rows_read == report.rows_inserted == 2500 + 700 + 300 + 1200
    assert count(pg_dsn, "candles") == lake_rows(filled) == 3500
    assert count(pg_dsn, "trades") == 1200
    assert [(s.series, s.batches) for s in report.series] == [
        ("bybit/linear/BTCUSDT/1", 3), ("bybit/linear/BTCUSDT/5", 1), ("bybit/linear/ETHUSDT/1", 1),
        ("bybit/linear/BTCUSDT", 2),
    ]
    again = export_postgres(filled, pg_dsn, trades=True, batch_rows=700)
    assert (again.rows_read, again.rows_inserted, again.rows_updated) == (4700, 0, 0)
    assert count(pg_dsn, "candles") == 3500 and count(pg_dsn, "trades") == 1200
    # Values and times survive exactly (DECIMAL holds the float's shortest text).
    src = candles(2500).row(1234, named=True)
    with psycopg.connect(pg_dsn) as con:
        row = con.execute(
            "SELECT timestamp, open, high, low, close, volume, turnover, symbol, timeframe, category FROM candles "
            "WHERE symbol = 'BTCUSDT' AND timeframe = '1' AND timestamp = %s",
            (dt.datetime.fromtimestamp(src["ts"] / 1000, dt.UTC),),
        ).fetchone()
        trade = con.execute("SELECT timestamp, price, size, side FROM trades WHERE trade_id = 't-000007'").fetchone()
    assert row[1:7] == tuple(Decimal(repr(src[k])) for k in ("open", "high", "low", "close", "volume", "turnover"))
    assert row[7:] == ("BTCUSDT", "1", "linear")
    assert trade == (dt.datetime.fromtimestamp((T0 * 1000 + 2 * 250) / 1e6, dt.UTC), Decimal("100.0"),
                     Decimal("0.002"), "Buy")
    spot = export_postgres(filled, pg_dsn, category="spot")
    assert spot.rows_inserted == 50 and count(pg_dsn, "candles", "category = 'spot'") == 50


def test_batch_holding_existing_rows(filled: Lake, pg_dsn: str) -> None:
    """Rows PostgreSQL holds with other values are corrected to the lake's (the lake wins), every
    new row lands."""
    with psycopg.connect(pg_dsn) as con:
        ensure_schema(con)
        first = dt.datetime.fromtimestamp(T0 / 1000, dt.UTC)
        con.execute(
            "INSERT INTO candles (symbol, timeframe, timestamp, open, high, low, close, volume) "
            "VALUES ('BTCUSDT', '1', %s, 1, 1, 1, 1, 1)", (first,),
        )
        con.execute("INSERT INTO trades (symbol, trade_id, timestamp, price, size, side) "
                    "VALUES ('BTCUSDT', 't-000003', %s, 1, 1, 'Buy')", (first,))
        con.commit()
    report = export_postgres(filled, pg_dsn, symbols="BTCUSDT", timeframes="1m", trades=True)
    assert report.rows_read == 2500 + 1200 and report.rows_inserted == 2500 + 1200 - 2
    assert report.rows_updated == 2
    assert count(pg_dsn, "candles") == 2500 and count(pg_dsn, "trades") == 1200
    assert count(pg_dsn, "candles", "open = 1 AND timeframe = '1'") == 0
    assert count(pg_dsn, "trades", "price = 1") == 0


def test_a_candle_corrected_in_the_lake_is_corrected_by_the_next_export_and_nothing_else_is_rewritten(
    filled: Lake, pg_dsn: str
) -> None:
    export_postgres(filled, pg_dsn, symbols="BTCUSDT", timeframes="1")
    with psycopg.connect(pg_dsn) as con:
        before = dict(con.execute("SELECT timestamp, xmin::text FROM candles").fetchall())
    fixed = filled.read_candles("BTCUSDT", "1").slice(100, 1).with_columns(pl.col("close") + 0.5)
    filled.write_candles(fixed.drop("symbol", "timeframe"), symbol="BTCUSDT", timeframe="1")  # as repair does
    report = export_postgres(filled, pg_dsn, symbols="BTCUSDT", timeframes="1")
    assert (report.rows_inserted, report.rows_updated, report.series[0].rows_present) == (0, 1, 2499)
    with psycopg.connect(pg_dsn) as con:
        after = dict(con.execute("SELECT timestamp, xmin::text FROM candles").fetchall())
        close = con.execute("SELECT close FROM candles WHERE timestamp = %s", (fixed["ts"][0],)).fetchone()[0]
    assert close == Decimal(repr(fixed["close"][0]))
    changed = [t for t in before if before[t] != after[t]]
    assert changed == [fixed["ts"][0]]  # only the corrected row got a new tuple


def test_connection_killed_mid_copy_is_retried(filled: Lake, pg_dsn: str) -> None:
    """pg_terminate_backend from a second connection while COPY is sending: the batch rolls back
    and is sent again; every row lands once; lake and PostgreSQL counts are equal."""
    killed: list[int] = []
    seen: list[BatchInfo] = []

    def kill_second_batch(info: BatchInfo) -> None:
        seen.append(info)
        if info.stage == "copied" and len([s for s in seen if s.stage == "copied"]) == 2 and info.attempt == 1:
            with psycopg.connect(pg_dsn, autocommit=True) as admin:
                assert admin.execute("SELECT pg_terminate_backend(%s)", (info.pid,)).fetchone()[0]
            killed.append(info.pid)

    files_before = sorted(p.name for p in filled.root.rglob("*.parquet"))
    report = export_postgres(filled, pg_dsn, symbols="BTCUSDT", timeframes="1", batch_rows=1000,
                             on_batch=kill_second_batch)
    assert len(killed) == 1 and report.retries == 1
    retried = [s for s in seen if s.attempt == 2]
    assert retried and retried[0].pid != killed[0]  # a new connection
    assert report.rows_inserted == report.rows_read == 2500
    assert count(pg_dsn, "candles") == filled.read_candles("BTCUSDT", "1").height == 2500
    assert sorted(p.name for p in filled.root.rglob("*.parquet")) == files_before


def test_persistent_failure_raises_sink_error_and_rerun_completes(filled: Lake, pg_dsn: str) -> None:
    def kill_third_batch_always(info: BatchInfo) -> None:
        if info.stage == "copying" and info.series.endswith("BTCUSDT/1"):
            kill_third_batch_always.n += 1  # type: ignore[attr-defined]
            if kill_third_batch_always.n >= 3:  # type: ignore[attr-defined]
                with psycopg.connect(pg_dsn, autocommit=True) as admin:
                    admin.execute("SELECT pg_terminate_backend(%s)", (info.pid,))

    kill_third_batch_always.n = 0  # type: ignore[attr-defined]
    with pytest.raises(SinkError, match=r"BTCUSDT/1: gave up after 3 attempts") as err:
        export_postgres(filled, pg_dsn, symbols="BTCUSDT", timeframes="1", batch_rows=1000, retries=2,
                        on_batch=kill_third_batch_always)
    assert err.value.exit_code == 5
    assert count(pg_dsn, "candles") == 2000  # the two committed batches stay
    report = export_postgres(filled, pg_dsn, symbols="BTCUSDT", timeframes="1")
    assert (report.rows_read, report.rows_inserted) == (2500, 500)
    assert count(pg_dsn, "candles") == 2500


def test_old_tables_are_extended(filled: Lake, pg_dsn: str) -> None:
    """Tables created by the old system (seed schema) gain the key columns and keep their rows."""
    with psycopg.connect(pg_dsn) as con:
        con.execute("CREATE TABLE candles (id SERIAL PRIMARY KEY, symbol VARCHAR(20), timestamp TIMESTAMPTZ, "
                    "open DECIMAL, high DECIMAL, low DECIMAL, close DECIMAL, volume DECIMAL, "
                    "created_at TIMESTAMPTZ DEFAULT NOW())")
        con.execute("INSERT INTO candles (symbol, timestamp, open, high, low, close, volume) "
                    "VALUES ('OLDUSDT', now(), 1, 1, 1, 1, 1)")
        con.commit()
    export_postgres(filled, pg_dsn, symbols="ETHUSDT")
    assert count(pg_dsn, "candles") == 701
    assert count(pg_dsn, "candles", "symbol = 'OLDUSDT' AND timeframe = '1' AND exchange = 'bybit'") == 1


def test_old_table_with_duplicate_keys_is_refused(lake: Lake, pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as con:
        con.execute("CREATE TABLE candles (id SERIAL PRIMARY KEY, symbol VARCHAR(20), timestamp TIMESTAMPTZ, "
                    "open DECIMAL, high DECIMAL, low DECIMAL, close DECIMAL, volume DECIMAL)")
        con.execute("INSERT INTO candles (symbol, timestamp) VALUES ('A', '2024-01-01'), ('A', '2024-01-01')")
        con.commit()
        with pytest.raises(SinkError, match="same key"):
            ensure_schema(con)


def test_unreachable_and_bad_arguments(filled: Lake) -> None:
    dsn = f"postgresql://bob:hunter2@127.0.0.1:{free_port()}/db"
    with pytest.raises(SinkError, match=r"bob@127.0.0.1:\d+/db: .*gave up|cannot connect") as err:
        export_postgres(filled, dsn, retries=0)
    assert "hunter2" not in str(err.value)
    assert mask_dsn(dsn).startswith("bob@127.0.0.1:") and "hunter2" not in mask_dsn(dsn)
    assert mask_dsn("host=h port=1 dbname=d password=x user=u") == "u@h:1/d"
    with pytest.raises(ConfigError):
        export_postgres(filled, dsn, batch_rows=0)


def test_cli_export_postgres(filled: Lake, pg_dsn: str, tmp_path: Path) -> None:
    from marketlake.cli.app import main

    args = ["export-postgres", "--dsn", pg_dsn, "--lake", str(filled.root), "--symbols", "ETHUSDT", "--json"]
    assert main(args) == 0
    assert count(pg_dsn, "candles") == 700
    assert main([*args[:-1], "--trades", "--symbols", "BTCUSDT", "--timeframes", "5"]) == 0
    assert count(pg_dsn, "candles") == 1000 and count(pg_dsn, "trades") == 1200
    bad = ["export-postgres", "--dsn", f"postgresql://127.0.0.1:{free_port()}/x", "--lake", str(filled.root),
           "--retries", "0"]
    assert main(bad) == 5
    assert main(["export-postgres", "--dsn", " ", "--lake", str(filled.root)]) == 2
