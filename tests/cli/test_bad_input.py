"""Every command, every kind of bad value: one line on stderr, the documented code, nothing written.

The exit codes are the README's: 2 bad input or settings, 3 lake, 4 exchange, 5 sink. Each case
asserts exactly one non-empty line on stderr, no "Traceback" anywhere, no hang (a timeout) and
that the module's lake directory is byte-for-byte what it was.

Most cases run in-process through ``marketlake.cli.app.main`` (fast); those that would hang if
the guard regressed (a FIFO, ``/dev/zero``) run as a subprocess with a timeout, and the two slow
ones (an unreachable host: the client retries for ~20 s) are started when the module starts and
collected by the last test, so they overlap with the rest.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from marketlake.cli.app import main
from tests.integration.emulated import emulator_thread
from tests.unit.test_csv_interop import HEADER, ROW1, ROW2

SUBPROCESS_TIMEOUT_S = 30
CATEGORIES = "linear, inverse, spot, option"


@dataclass(frozen=True)
class Env:
    """The module's scratch directory and what the cases point at."""

    root: Path
    lake: Path  # a lake with one stored series; must never change
    bad_lake: Path  # the same, with its Parquet files overwritten by junk
    emu_url: str


def _env_vars() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARKETLAKE_") or k.startswith("MARKETLAKE_TEST_")}
    env["COLUMNS"] = "200"
    return env


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and mtime: "nothing written" is this unchanged."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath, name)
            st = p.stat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def _slow(root: Path, argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "marketlake", *argv],
        cwd=root,
        env=_env_vars(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


_SLOW: dict[str, tuple[subprocess.Popen[str], int, str]] = {}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("bad_input")
    # Slow cases first, so they run while the others do. Both hosts refuse connections at once.
    _SLOW["archive-unreachable-host"] = (
        _slow(root, ["archive", "--symbols", "BTCUSDT", "--days", "1", "--archive-url", "http://127.0.0.1:9",
                     "--lake", str(root / "slow-a")]),
        4,
        "",
    )
    _SLOW["ingest-unreachable-host"] = (
        _slow(root, ["ingest", "--symbols", "BTCUSDT", "--days", "1", "--base-url", "http://127.0.0.1:9",
                     "--lake", str(root / "slow-b")]),
        4,
        "",
    )
    src = root / "BTCUSDT_1.csv"
    src.write_text(f"{HEADER}\n{ROW1}\n{ROW2}\n")
    lake, bad = root / "lake", root / "bad-lake"
    for target in (lake, bad):
        assert main(["import-csv", str(src), "--lake", str(target)]) == 0
    # Compile the check kernels now (numba caches them): a cold cache prints a one-time notice.
    assert main(["check", "--lake", str(lake)]) in (0, 1)
    # The store keeps a footer-statistics cache (_meta/filestats.sqlite) that its first listing
    # creates; make it now, so "nothing written" below means nothing at all.
    assert main(["info", "--lake", str(lake)]) == 0
    for f in (bad / "candles").rglob("*.parquet"):
        f.write_bytes(b"PAR1 this is not a parquet file PAR1")
    # A damaged ledger (what a disk that filled up mid-write can leave): SQLite refuses it.
    (bad / "_meta").mkdir(exist_ok=True)
    (bad / "_meta" / "ledger.sqlite").write_bytes(b"this is not an SQLite database" * 100)
    (root / "afile").write_text("x\n")
    (root / "adir").mkdir()
    os.mkfifo(root / "fifo")
    (root / "deep.toml").write_text("a = " + "[" * 200_000 + "]" * 200_000 + "\n")
    (root / "nan.toml").write_text("gc_grace_seconds = nan\n")
    (root / "inf.toml").write_text("memory_limit_percent = inf\n")
    (root / "typo.toml").write_text("lake_rot = 'x'\n")
    (root / "type.toml").write_text("rate_limit_per_5s = 'many'\n")
    (root / "huge.toml").write_bytes(b"# " + b"x" * (2 << 20) + b"\n")
    (root / "binary.toml").write_bytes(bytes(range(256)) * 4)
    (root / "empty.csv").write_text("")
    (root / "NOPE_1.csv").write_bytes(b"\x00\xff" * 100)
    with emulator_thread(symbols=3) as emu:
        yield Env(root, lake, bad, emu.url)


def run(env: Env, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``main(argv)`` in-process, from the scratch directory, without MARKETLAKE_* settings."""
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_subprocess(env: Env, argv: list[str]) -> tuple[int, str, str]:
    """``python -m marketlake argv``; a hang fails the case instead of blocking the suite."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "marketlake", *argv],
            cwd=env.root,
            env=_env_vars(),
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"marketlake {' '.join(argv)} hung for {SUBPROCESS_TIMEOUT_S} s")
    return proc.returncode, proc.stdout, proc.stderr


def assert_one_line(code: int, out: str, err: str, want_code: int, want_text: str, argv: list[str]) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    shown = f"marketlake {' '.join(argv)} -> {code}\nstdout: {out[-500:]}\nstderr: {err[-2000:]}"
    assert "Traceback" not in out + err, shown
    assert len(lines) == 1, shown
    assert lines[0].startswith("error: "), shown
    assert code == want_code, shown
    assert want_text.lower() in lines[0].lower(), shown


# --- the table ---------------------------------------------------------------------------------
# (argv with {lake} {bad} {root} {emu} placeholders, exit code, text the error line must contain)

_NUMBERS = ["nan", "NaN", "inf", "-inf", "1e308", "-1", "", "abc", "0x10"]
_INTS = ["nan", "inf", "-1", "1e3", "", "abc", "99999999999999999999999"]

CASES: list[tuple[str, list[str], int, str]] = []


def case(name: str, argv: list[str], code: int, text: str = "") -> None:
    CASES.append((name, argv, code, text))


for v in _NUMBERS:
    case(f"ingest --days {v!r}", ["ingest", "--symbols", "BTCUSDT", "--days", v, "--lake", "{lake}"], 2, "--days")
    case(f"stream --flush-interval {v!r}", ["stream", "--symbols", "BTCUSDT", "--flush-interval", v, "--lake", "{lake}"],
         2, "--flush-interval")
    case(f"stream --status-interval {v!r}", ["stream", "--symbols", "BTCUSDT", "--status-interval", v, "--lake", "{lake}"],
         2, "--status-interval")
    case(f"demo --days {v!r}", ["demo", "--days", v, "--lake", "{root}/demo"], 2, "--days")
case("ingest --days 0", ["ingest", "--symbols", "BTCUSDT", "--days", "0", "--lake", "{lake}"], 2, "--days")
case("ingest --days 1e6", ["ingest", "--symbols", "BTCUSDT", "--days", "1e6", "--lake", "{lake}"], 2, "--days")
for v in [*_INTS, "0", "1000000"]:
    case(f"ingest --concurrency {v!r}", ["ingest", "--symbols", "BTCUSDT", "--concurrency", v, "--lake", "{lake}"],
         2, "--concurrency")
    case(f"archive --concurrency {v!r}", ["archive", "--symbols", "BTCUSDT", "--days", "1", "--concurrency", v,
                                          "--lake", "{lake}"], 2, "--concurrency")
for v in [*_INTS, "0"]:
    case(f"archive --days {v!r}", ["archive", "--symbols", "BTCUSDT", "--days", v, "--lake", "{lake}"], 2, "--days")
    case(f"export-postgres --batch-rows {v!r}", ["export-postgres", "--dsn", "postgresql://x@127.0.0.1:9/db",
                                                 "--batch-rows", v, "--lake", "{lake}"], 2, "--batch-rows")
for v in ["nan", "-1", "1000"]:
    case(f"export-postgres --retries {v!r}", ["export-postgres", "--dsn", "postgresql://x@127.0.0.1:9/db",
                                              "--retries", v, "--lake", "{lake}"], 2, "--retries")
for v in ["yesterday", "1e30", "2024-13-45", "", "nan"]:
    case(f"export-csv --start {v!r}", ["export-csv", "{root}/out-start", "--start", v, "--lake", "{lake}"], 2, "")
    case(f"archive --start {v!r}", ["archive", "--symbols", "BTCUSDT", "--start", v, "--lake", "{lake}"], 2, "")

# Names: every value the allowlist refuses is one line naming the accepted ones.
for cmd in (["check"], ["export-csv", "{root}/out-cat"], ["ingest", "--symbols", "BTCUSDT", "--days", "1"],
            ["stream", "--symbols", "BTCUSDT"]):
    case(f"{cmd[0]} --category futures", [*cmd, "--category", "futures", "--lake", "{lake}"], 2, CATEGORIES)
case("archive --category option", ["archive", "--symbols", "BTCUSDT", "--days", "1", "--category", "option",
                                   "--lake", "{lake}"], 2, "linear, inverse, spot")
for cmd in (["check"], ["export-csv", "{root}/out-tf"], ["ingest", "--symbols", "BTCUSDT"]):
    case(f"{cmd[0]} --timeframes 7", [*cmd, "--timeframes", "7", "--lake", "{lake}"], 2, "timeframe")
case("ingest --symbols '../x'", ["ingest", "--symbols", "../x", "--lake", "{lake}"], 2, "symbol")
case("ingest without symbols", ["ingest", "--lake", "{lake}"], 2, "")
case("archive without --symbols", ["archive", "--days", "1", "--lake", "{lake}"], 2, "--symbols")
case("archive --symbols ''", ["archive", "--symbols", "", "--days", "1", "--lake", "{lake}"], 2, "symbol")
case("stream without --symbols", ["stream", "--lake", "{lake}"], 2, "--symbols")
case("sql without a query", ["sql", "--lake", "{lake}"], 2, "query")
case("sql bad --format", ["sql", "select 1", "--format", "xml", "--lake", "{lake}"], 2, "--format")
case("unknown option", ["info", "--frobnicate"], 2, "--frobnicate")
case("unknown command", ["frobnicate"], 2, "frobnicate")
case("export-postgres --dsn ''", ["export-postgres", "--dsn", "", "--lake", "{lake}"], 2, "--dsn")
case("export-postgres malformed DSN", ["export-postgres", "--dsn", "garbage dsn", "--lake", "{lake}"], 2, "DSN")
case("export-postgres unreachable server", ["export-postgres", "--dsn", "postgresql://x@127.0.0.1:9/db",
                                            "--lake", "{lake}"], 5, "cannot connect")
case("ingest unknown symbol", ["ingest", "--symbols", "NOPEUSDT", "--days", "1", "--base-url", "{emu}",
                               "--lake", "{root}/lake-nope"], 2, "NOPEUSDT")

# Paths: unwritable, missing, a directory for a file and a file for a directory, a FIFO.
for flag, cmd in (("--output", ["sql", "select 1 as x", "--format", "csv"]), ("--report", ["check"])):
    for label, target, text in (
        ("missing folder", "{root}/no/such/dir/x.json", "no such"),
        ("directory for a file", "{root}/adir", "directory"),
        ("under a file", "{root}/afile/x.json", "not a directory"),
        ("a FIFO nobody reads", "{root}/fifo", "FIFO"),
        ("unwritable (procfs)", "/proc/version", ""),
    ):
        case(f"{cmd[0]} {flag} {label}", [*cmd, flag, target, "--lake", "{lake}"], 2, text)
case("sql --output /sys", ["sql", "select 1", "--format", "csv", "--output", "/sys", "--lake", "{lake}"], 2, "directory")
for label, target, text in (
    ("a file for a directory", "{root}/afile", "not a directory"),
    ("under a file", "{root}/afile/sub", "not a directory"),
    ("unwritable (procfs)", "/proc/marketlake-out", ""),
):
    case(f"export-csv into {label}", ["export-csv", target, "--lake", "{lake}"], 2, text)
for label, target, text in (
    ("a missing directory", "{root}/nosuchdir/", "no such file or directory"),
    ("a missing file", "{root}/nosuch_1.csv", "no such file or directory"),
    ("/dev/null", "/dev/null", "not a regular file"),
):
    case(f"import-csv {label}", ["import-csv", target, "--lake", "{lake}"], 2, text)
case("import-csv an empty file", ["import-csv", "{root}/empty.csv", "--symbol", "BTCUSDT", "--timeframe", "1",
                                  "--lake", "{root}/lake-empty"], 2, "")
case("import-csv a binary file", ["import-csv", "{root}/NOPE_1.csv", "--lake", "{root}/lake-bin"], 2, "")

# Settings files: missing, a directory, nested too deep, too big, not TOML, bad values.
for label, target, text in (
    ("missing", "{root}/nosuch.toml", "not found"),
    ("a directory", "{root}/adir", "directory"),
    ("nested 200000 deep", "{root}/deep.toml", "nested"),
    ("3 MiB", "{root}/huge.toml", "limit"),
    ("binary", "{root}/binary.toml", "config"),
    ("gc_grace_seconds = nan", "{root}/nan.toml", "gc_grace_seconds"),
    ("memory_limit_percent = inf", "{root}/inf.toml", "memory_limit_percent"),
    ("an unknown key", "{root}/typo.toml", "lake_rot"),
    ("a wrong type", "{root}/type.toml", "rate_limit_per_5s"),
):
    for cmd in (["info"], ["check"], ["sql", "select 1"]):
        case(f"{cmd[0]} --config {label}", [*cmd, "--config", target, "--lake", "{lake}"], 2, text)

# The lake itself: a file where the lake should be, damaged Parquet files.
for cmd in (["info"], ["check"], ["sql", "select 1"], ["export-csv", "{root}/out-file"], ["fsck"]):
    case(f"{cmd[0]} --lake <a file>", [*cmd, "--lake", "{root}/afile"], 3, "not a directory")
for cmd in (["sql", "select count(*) from candles"], ["export-csv", "{root}/out-bad"], ["check"]):
    case(f"{cmd[0]} over damaged Parquet", [*cmd, "--lake", "{bad}"], 3, "")
case("ingest over a damaged ledger", ["ingest", "--symbols", "BTCUSDT", "--days", "1", "--dry-run",
                                      "--base-url", "{emu}", "--lake", "{bad}"], 3, "")

# Cases that would hang (or eat the memory) if a guard regressed: run in a subprocess.
SUBPROCESS_CASES: list[tuple[str, list[str], int, str]] = [
    ("info --config FIFO", ["info", "--config", "{root}/fifo", "--lake", "{lake}"], 2, "not a regular file"),
    ("info --config /dev/zero", ["info", "--config", "/dev/zero", "--lake", "{lake}"], 2, "not a regular file"),
    ("ingest --config FIFO", ["ingest", "--symbols", "BTCUSDT", "--config", "{root}/fifo", "--lake", "{lake}"], 2,
     "not a regular file"),
    ("import-csv FIFO", ["import-csv", "{root}/fifo", "--lake", "{lake}"], 2, "FIFO"),
    ("import-csv /dev/zero", ["import-csv", "/dev/zero", "--symbol", "BTCUSDT", "--timeframe", "1",
                              "--lake", "{lake}"], 2, "not a regular file"),
    ("stream --flush-interval nan", ["stream", "--symbols", "BTCUSDT", "--flush-interval", "nan",
                                     "--base-url", "{emu}", "--lake", "{lake}"], 2, "--flush-interval"),
    ("sql --output FIFO", ["sql", "select 1", "--format", "csv", "--output", "{root}/fifo", "--lake", "{lake}"], 2,
     "FIFO"),
]


def _fill(argv: list[str], env: Env) -> list[str]:
    subs = {"{lake}": str(env.lake), "{bad}": str(env.bad_lake), "{root}": str(env.root), "{emu}": env.emu_url}
    out = []
    for a in argv:
        for k, v in subs.items():
            a = a.replace(k, v)
        out.append(a)
    return out


@pytest.fixture
def in_scratch(env: Env, monkeypatch: pytest.MonkeyPatch) -> Env:
    for key in list(os.environ):
        if key.startswith("MARKETLAKE_") and not key.startswith("MARKETLAKE_TEST_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(env.root)
    return env


@pytest.mark.parametrize(("name", "argv", "code", "text"), CASES, ids=[c[0] for c in CASES])
def test_bad_value_in_process(
    in_scratch: Env, capsys: pytest.CaptureFixture[str], name: str, argv: list[str], code: int, text: str
) -> None:
    env = in_scratch
    before = _snapshot(env.lake)
    filled = _fill(argv, env)
    got, out, err = run(env, filled, capsys)
    assert_one_line(got, out, err, code, text, filled)
    assert _snapshot(env.lake) == before, f"marketlake {' '.join(filled)} wrote into the lake"


@pytest.mark.parametrize(("name", "argv", "code", "text"), SUBPROCESS_CASES, ids=[c[0] for c in SUBPROCESS_CASES])
def test_bad_value_in_a_subprocess(env: Env, name: str, argv: list[str], code: int, text: str) -> None:
    before = _snapshot(env.lake)
    filled = _fill(argv, env)
    got, out, err = run_subprocess(env, filled)
    assert_one_line(got, out, err, code, text, filled)
    assert _snapshot(env.lake) == before


def test_settings_from_the_environment_are_validated_too(
    in_scratch: Env, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in (("MARKETLAKE_GC_GRACE_SECONDS", "nan"), ("MARKETLAKE_RATE_LIMIT_PER_5S", "1e9"),
                       ("MARKETLAKE_LAKE_RUT", "x")):
        monkeypatch.setenv(key, value)
        got, out, err = run(in_scratch, ["info", "--lake", str(in_scratch.lake)], capsys)
        assert_one_line(got, out, err, 2, key[len("MARKETLAKE_"):].lower(), ["info", f"({key}={value})"])
        monkeypatch.delenv(key)


def test_read_only_commands_on_a_mistyped_lake_create_nothing(in_scratch: Env, capsys: pytest.CaptureFixture[str]) -> None:
    typo = in_scratch.root / "typo-lake"
    got, out, err = run(in_scratch, ["info", "--lake", str(typo)], capsys)
    assert got == 0 and "no series stored yet" in out and not err
    assert not typo.exists()


def test_the_slow_failures_exit_4_with_one_line(env: Env) -> None:
    """An unreachable archive host or REST host: the exchange's code, one line, no traceback."""
    for name, (proc, code, text) in _SLOW.items():
        try:
            out, err = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"{name}: hung")
        assert_one_line(proc.returncode, out, err, code, text, [name])

