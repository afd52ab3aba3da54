"""CSV import streams files in chunks: all-or-nothing per file, exact lines, bounded memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from marketlake.errors import ImportRejectedError
from marketlake.interop import _csv_stream
from marketlake.interop._csv_stream import DistinctTimes, background, read_chunks
from marketlake.interop.csv import import_csv, parse_old_csv
from marketlake.store import Lake
from tests.unit.test_csv_interop import HEADER

REPO = Path(__file__).resolve().parents[2]
T0 = 1_640_995_200_000  # 2022-01-01
MINUTE = 60_000


def line(ts: int, close: float = 47000.0, symbol: str | None = None) -> str:
    dt = pl.Series([ts]).cast(pl.Datetime("ms")).dt.strftime("%Y-%m-%d %H:%M:%S")[0]
    row = f"{ts},{dt},{close},{close + 10},{close - 10},{close},1.5,70000.0"
    return row if symbol is None else f"{row},{symbol}"


def lines(n: int, start: int = T0) -> list[str]:
    return [line(start + i * MINUTE, 47000.0 + i) for i in range(n)]


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> int:
    """4 KiB chunks (~40 lines): a few thousand lines make many chunks."""
    monkeypatch.setattr(_csv_stream, "CHUNK_BYTES", 4096)
    return 4096


def write(path: Path, body: list[str], header: str = HEADER, end: str = "\n") -> Path:
    path.write_text(end.join([header, *body]) + end)
    return path


def test_a_file_is_read_in_many_chunks_and_imports_whole(lake: Lake, tmp_path: Path, small_chunks: int):
    f = write(tmp_path / "BTCUSDT_1.csv", lines(3000))
    chunks = list(read_chunks(f))
    assert len(chunks) > 20
    assert all(c.data.startswith(HEADER.encode()) for c in chunks)  # every chunk parses alone
    assert chunks[-1].first_line - chunks[0].first_line == sum(c.data.count(b"\n") - 1 for c in chunks[:-1])
    report = import_csv(lake, [f])
    assert report.ok and report.imported[0].rows == 3000
    assert lake.read_candles().equals(lake.read_candles().sort("ts"))
    assert lake.read_candles()["close"].to_list() == [47000.0 + i for i in range(3000)]


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("1641175140000,2022-01-03 01:59:00,1,abc,1,1,1,1", "'abc' is not a number"),
        ("1641175140,2022-01-03 01:59:00,1,1,1,1,1,1", "mixed time units: line {n} has seconds (1641175140) while line 2 has"),
        ("1641175140000,2022-01-03 02:00:00,1,1,1,1,1,1", "disagrees with timestamp"),
        ("1641175140000,2022-01-03 01:59:00,1,1,1,1,1,1,9", "well-formed"),
        ("16411\x0075140000,2022-01-03 01:59:00,1,1,1,1,1,1", "NUL"),
        ("1641175140000,2022-01-03 01:59:00," + "9" * 70_000 + ",1,1,1,1,1", "holds a field of 70000 bytes"),
    ],
    ids=["number", "seconds", "datetime", "ragged", "nul", "huge-field"],
)
def test_a_bad_last_line_many_chunks_in_names_its_line_and_stores_nothing(
    lake: Lake, tmp_path: Path, small_chunks: int, bad: str, reason: str
):
    # Blank lines and CRLF in earlier chunks must not shift the line numbers of later ones.
    body = lines(1500)
    body[100:100] = ["", ""]
    body.append(bad)
    f = write(tmp_path / "BTCUSDT_1.csv", body, end="\r\n")
    n = len(body) + 1  # header is line 1
    report = import_csv(lake, [f])
    assert not report.imported
    err = report.rejected[0]
    assert reason.format(n=n) in err.reason
    if "well-formed" not in reason:  # (polars names no line for a ragged row)
        assert err.line == n
    assert lake.read_candles().is_empty() and lake.series("candles").is_empty()


def test_the_first_bad_line_of_a_later_chunk_is_named(lake: Lake, tmp_path: Path, small_chunks: int):
    body = lines(2000)
    body[1234] = body[1234].replace(",1.5,", ",,")  # empty volume
    body[1800] = body[1800].replace(",1.5,", ",x,")
    f = write(tmp_path / "BTCUSDT_1.csv", body)
    err = import_csv(lake, [f]).rejected[0]
    # (the chunk holding line 1236 is checked, and rejected, before the one holding line 1802)
    assert (err.line, "'volume' is empty" in err.reason) == (1236, True)
    assert lake.read_candles().is_empty()


def test_repeated_timestamps_across_chunks_keep_the_last_row_and_are_counted(
    lake: Lake, tmp_path: Path, small_chunks: int
):
    body = lines(1000)
    later = [line(T0 + i * MINUTE, 1.0 + i) for i in (5, 999, 500, 5)]  # back in time, twice for 5
    f = write(tmp_path / "BTCUSDT_1.csv", body + later + lines(200, start=T0 + 1000 * MINUTE))
    report = import_csv(lake, [f])
    assert report.ok, report.rejected
    item = report.imported[0]
    assert (item.rows, item.duplicates) == (1204, 4)
    back = lake.read_candles()
    assert back.height == 1200
    closes = dict(zip(back["ts"].dt.epoch("ms").to_list(), back["close"].to_list()))
    assert closes[T0 + 5 * MINUTE] == 6.0 and closes[T0 + 999 * MINUTE] == 1000.0
    assert closes[T0 + 500 * MINUTE] == 501.0 and closes[T0 + 6 * MINUTE] == 47006.0


@pytest.mark.parametrize("kind", ["regular", "gappy", "irregular", "shuffled"])
def test_distinct_times_counts_exactly_like_a_set(kind: str):
    rng = np.random.default_rng(len(kind))
    if kind == "regular":
        ts = np.repeat(np.arange(0, 50_000, 60), 1)
    elif kind == "gappy":
        ts = np.sort(rng.choice(np.arange(0, 600_000, 60), 5000, replace=True))
    elif kind == "irregular":
        ts = np.sort(rng.integers(0, 10**9, 5000))
    else:
        ts = rng.integers(0, 3000, 8000) * 60
    counter = DistinctTimes()
    cuts = np.sort(rng.integers(0, ts.size, 12))
    for piece in np.split(ts.astype(np.int64), cuts):
        counter.add(piece)
    assert counter.repeated == ts.size - len(set(ts.tolist()))


def test_a_symbol_column_must_name_the_files_symbol(lake: Lake, tmp_path: Path, small_chunks: int):
    header = HEADER + ",symbol"
    good = [line(T0 + i * MINUTE, symbol="BTCUSDT" if i % 2 else " btcusdt") for i in range(800)]
    assert import_csv(lake, [write(tmp_path / "BTCUSDT_1.csv", good, header)]).ok
    bad = [line(T0 + i * MINUTE, symbol="ETHUSDT" if i == 700 else "BTCUSDT") for i in range(800)]
    other = tmp_path / "other"
    other.mkdir()
    report = import_csv(lake, [write(other / "BTCUSDT_5.csv", bad, header)])
    err = report.rejected[0]
    assert err.line == 702 and "'ETHUSDT'" in err.reason and "BTCUSDT" in err.reason
    assert lake.series("candles")["timeframe"].to_list() == ["1"]  # nothing of the 5m file
    # --symbol/--timeframe given: the column must agree with that symbol.
    report = import_csv(lake, [other / "BTCUSDT_5.csv"], symbol="ETHUSDT", timeframe="5")
    assert report.rejected[0].line == 2


def _finishes(fn, timeout: float = 10.0):
    """``fn()``, run where a hang fails the test instead of blocking it (a FIFO open would)."""
    out: list = []

    def run() -> None:
        try:
            out.append((True, fn()))
        except BaseException as exc:  # handed back to the test
            out.append((False, exc))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "hung"
    ok, value = out[0]
    if not ok:
        raise value
    return value


def test_fifos_devices_and_directories_are_refused_without_opening(lake: Lake, tmp_path: Path):
    fifo = tmp_path / "BTCUSDT_1.csv"
    os.mkfifo(fifo)
    zero = tmp_path / "z"
    zero.mkdir()
    (zero / "ETHUSDT_1.csv").symlink_to("/dev/zero")
    named_dir = tmp_path / "d"
    named_dir.mkdir()
    (named_dir / "SOLUSDT_1.csv").mkdir()
    report = _finishes(lambda: import_csv(lake, [fifo, zero / "ETHUSDT_1.csv", named_dir]))
    assert [(Path(r.path).name, "not a regular file" in r.reason) for r in report.rejected] == [
        ("BTCUSDT_1.csv", True), ("ETHUSDT_1.csv", True)
    ]  # (a directory named like a file inside a directory is not a CSV file: skipped)
    with pytest.raises(ImportRejectedError, match="not a regular file"):
        _finishes(lambda: parse_old_csv(fifo))
    with pytest.raises(ImportRejectedError, match="a directory"):
        _csv_stream.open_regular(named_dir / "SOLUSDT_1.csv")


class _ReplayingLake(Lake):
    """Reads part of the stream, then starts over, as the store does after a concurrent commit."""

    def write_candles_chunks(self, chunks, **kw):  # type: ignore[override]
        it = iter(chunks())
        next(it)
        del it  # the first pass is abandoned half-way: its reader thread must stop
        return super().write_candles_chunks(chunks, **kw)


def test_a_replayed_stream_reopens_the_file_and_counts_once(tmp_path: Path, small_chunks: int):
    from marketlake.settings import Settings

    lake = _ReplayingLake(tmp_path / "lake", settings=Settings.load(environ={}))
    f = write(tmp_path / "BTCUSDT_1.csv", lines(900) + [line(T0)])
    threads = threading.active_count()
    report = import_csv(lake, [f])
    assert report.ok and (report.imported[0].rows, report.imported[0].duplicates) == (901, 1)
    assert lake.read_candles().height == 900
    assert threading.active_count() == threads


def test_the_reader_thread_hands_over_errors_and_stops_with_its_consumer():
    def failing():
        yield 1
        raise ValueError("bad line")

    with pytest.raises(ValueError, match="bad line"):
        list(background(failing))
    produced: list[int] = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    threads = threading.active_count()
    it = background(endless, depth=1)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()
    assert threading.active_count() == threads
    assert len(produced) <= 6  # bounded read-ahead


def _generate(path: Path, rows: int) -> Path:
    """An old-format file of ``rows`` 1m candles, written by polars in a second or two."""
    rng = np.random.default_rng(1)
    close = np.round(20_000 + np.cumsum(rng.normal(0, 5, rows)), 1)
    pl.DataFrame({"timestamp": T0 + np.arange(rows, dtype=np.int64) * MINUTE}).with_columns(
        pl.from_epoch("timestamp", time_unit="ms").dt.strftime("%Y-%m-%d %H:%M:%S").alias("datetime"),
        pl.Series("open", close), pl.Series("high", close + 1.5), pl.Series("low", close - 1.5),
        pl.Series("close", close), pl.Series("volume", np.round(rng.random(rows) * 100, 3)),
        pl.Series("turnover", np.round(rng.random(rows) * 1e6, 2)),
    ).write_csv(path)
    return path


def _rss_growth(mode: str, tmp_path: Path, big: Path) -> dict:
    warm = _generate(tmp_path / f"warm-{mode}.csv", 20_000)
    proc = subprocess.run(
        [sys.executable, "-m", "tests.unit.csv_import_rss", mode, str(tmp_path / f"lake-{mode}"), str(warm), str(big)],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# 20 chunks: the streaming import measured 103-117 MiB of growth for files of 1 M and 2.5 M rows;
# the whole-file design grew 243 MiB for 1 M rows (82 MB) and 572 MiB for 2.5 M rows (206 MB).
BOUND_MIB = 20 * _csv_stream.CHUNK_BYTES / 2**20


def test_import_memory_stays_bounded_for_an_80_mb_file(tmp_path: Path):
    big = _generate(tmp_path / "big.csv", 1_000_000)
    got = _rss_growth("streaming", tmp_path, big)
    assert got["rows"] == 1_000_000
    assert got["growth_mib"] < BOUND_MIB, got


@pytest.mark.slow
def test_import_memory_does_not_grow_with_a_200_mb_file_where_the_whole_file_reader_did(tmp_path: Path):
    big = _generate(tmp_path / "big.csv", 2_500_000)
    assert big.stat().st_size > 200e6
    streaming = _rss_growth("streaming", tmp_path, big)
    whole = _rss_growth("whole", tmp_path, big)
    assert streaming["rows"] == whole["rows"] == 2_500_000
    assert streaming["growth_mib"] < BOUND_MIB < whole["growth_mib"], (streaming, whole)
